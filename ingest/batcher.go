package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/store"
)

// ErrClosed is returned by Submit once the Batcher is closing; it wraps
// gateway.ErrSinkClosed.
var ErrClosed = fmt.Errorf("ingest: batcher closed: %w", gateway.ErrSinkClosed)

// Committer writes a batch durably: when Commit returns nil every row is
// stored, when it returns an error none is. It is *store.Store in vigil.
type Committer interface {
	Commit(ctx context.Context, b store.Batch) error
	MetricID(ctx context.Context, name string) (int16, error)
	RecentMessageIDs(ctx context.Context, since time.Time) (map[store.MessageKey]time.Time, error)
	ForgetMessageIDs(ctx context.Context, before time.Time) error
}

// Observer receives every committed batch of readings (TelemetrySchema),
// in commit order. It must Release the record when done with it and should
// not block for long: the Batcher waits for it.
type Observer func(rec arrow.RecordBatch)

// Config sets when a Batcher commits.
type Config struct {
	// MaxRows commits as soon as a batch holds this many readings. DuckDB
	// pays a fixed ~2.5 ms per transaction, and writes a batch of at least
	// one row group (store.RowGroupRows) straight to the table instead of
	// through its write-ahead log, so large batches are what make high
	// rates affordable.
	MaxRows int
	// MaxDelay commits a non-empty batch at the latest this long after its
	// first message arrived, bounding how long a device waits for its
	// acknowledgement.
	MaxDelay time.Duration
	// Idle commits a batch early, once it is MinDelay old, when no message
	// has arrived for Idle: the devices that filled it are waiting for their
	// acknowledgements, so waiting longer only adds latency. Zero disables
	// the early commit (batches then wait for MaxRows or MaxDelay).
	Idle     time.Duration
	MinDelay time.Duration
	// PatientDelay and PatientIdle replace MaxDelay and Idle for a batch
	// that holds only patient messages (gateway.Message.Patient: a broker
	// has taken them from their devices, which are not waiting for the
	// commit). Holding such batches longer lets them reach MaxRows: DuckDB
	// writes a batch of at least one row group (store.RowGroupRows) straight
	// to its table, and a smaller one first to its write-ahead log and again
	// at the next checkpoint, which costs ~1.6× the CPU per reading. A
	// PatientDelay below MaxDelay counts as MaxDelay, a zero PatientIdle as
	// Idle. MinDelay does not apply.
	PatientDelay time.Duration
	PatientIdle  time.Duration
	// Queue is how many decoded messages may wait for the batcher before
	// Submit blocks (backpressure).
	Queue int
	// DedupeWindow is how long the id of a committed message is remembered:
	// a message that arrives again within it with the same device and
	// message id (a broker redelivery, an MQTT resend after a lost PUBACK)
	// is acknowledged without being stored twice.
	DedupeWindow time.Duration
	// DedupeIDs caps how many message ids are remembered (about 100 bytes
	// each): when devices send faster than DedupeIDs per DedupeWindow, the
	// oldest ids are forgotten early and the window honoured shrinks to
	// DedupeIDs / message rate (Stats.DedupeEvicted counts them).
	DedupeIDs int
}

// DefaultConfig returns the batching vigil runs with by default.
func DefaultConfig() Config {
	return Config{MaxRows: store.RowGroupRows, MaxDelay: 100 * time.Millisecond, Idle: 2 * time.Millisecond, MinDelay: 10 * time.Millisecond,
		PatientDelay: time.Second, PatientIdle: 20 * time.Millisecond,
		Queue: 4096, DedupeWindow: time.Hour, DedupeIDs: 2_000_000}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.MaxRows < 1 || c.MaxDelay <= 0 || c.Queue < 1 || c.DedupeWindow <= 0 || c.DedupeIDs < 1 {
		return fmt.Errorf("ingest: max rows, max delay, queue, dedupe window and dedupe ids must be positive (got %d, %s, %d, %s, %d)", c.MaxRows, c.MaxDelay, c.Queue, c.DedupeWindow, c.DedupeIDs)
	}
	if c.Idle < 0 || c.MinDelay < 0 || c.MinDelay > c.MaxDelay {
		return fmt.Errorf("ingest: idle (%s) and min delay (%s) must not be negative, and min delay not above max delay (%s)", c.Idle, c.MinDelay, c.MaxDelay)
	}
	if c.PatientIdle < 0 || c.PatientDelay < 0 {
		return fmt.Errorf("ingest: patient idle (%s) and patient delay (%s) must not be negative", c.PatientIdle, c.PatientDelay)
	}
	return nil
}

// Stats counts what a Batcher has done. All fields only grow.
type Stats struct {
	Messages     int64 // messages stored (as readings or dead letters)
	Readings     int64 // readings committed
	DeadLetters  int64 // messages committed as dead letters
	Batches      int64 // successful commits
	CommitErrors int64 // failed commits and metric registrations (their messages were settled with the error)
	Duplicates   int64 // messages recognised as already stored and not stored again
	// DedupeEvicted counts message ids forgotten before the end of the
	// dedupe window to stay within Config.DedupeIDs.
	DedupeEvicted int64
	// CommitSeconds is the time every commit took, failed ones included,
	// summed.
	CommitSeconds float64
	// CommitDurations counts commits by how long they took:
	// CommitDurations[i] those that took more than CommitBounds[i-1] and at
	// most CommitBounds[i] seconds, the last those that took longer than
	// every bound.
	CommitDurations [len(CommitBounds) + 1]int64
}

// CommitBounds are the upper bounds, in seconds, of the commit-duration
// histogram in Stats. A commit costs a few milliseconds however small it
// is and grows with the batch (the store's benchmarks); a commit of a
// second or more holds every device's messages unacknowledged that long.
var CommitBounds = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

type item struct {
	msg      gateway.Message
	readings Readings
	reason   string    // non-empty: dead letter
	columns  *Readings // from columnsPool: where readings' columns go back after add
}

// columnsPool holds decoded messages' columns for reuse: the batcher copies
// a message's readings into its batch, so its columns are free again
// right after, and reusing them spares the garbage collector ~3 KB per
// 100-reading message.
var columnsPool = sync.Pool{New: func() any { return new(Readings) }}

// maxPooledReadings bounds the columns kept for reuse: a rare huge
// message's are left to the garbage collector.
const maxPooledReadings = 4096

// Batcher micro-batches telemetry into Arrow records and commits them.
// Submit is safe for concurrent use.
type Batcher struct {
	cfg     Config
	store   Committer
	observe Observer
	log     *slog.Logger

	in      chan item
	mu      sync.Mutex // guards closed and senders.Add against Close
	closed  bool
	closing chan struct{}  // closed by Close: blocked Submits give up
	senders sync.WaitGroup // Submits between their check of closed and their send
	done    chan struct{}

	// seen holds the ids of committed messages within the dedupe window; it
	// is owned by the run goroutine.
	seen *dedupe
	// evicted mirrors seen.evicted for Stats.
	evicted atomic.Int64

	messages, readings, deadLetters, batches, commitErrors, duplicates atomic.Int64
	commitNanos                                                        atomic.Int64
	commitDurations                                                    [len(CommitBounds) + 1]atomic.Int64
}

var _ gateway.Sink = (*Batcher)(nil)

// NewBatcher starts a Batcher. Close it to commit what is pending and stop.
func NewBatcher(cfg Config, c Committer, observe Observer, log *slog.Logger) (*Batcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seen, err := c.RecentMessageIDs(context.Background(), time.Now().Add(-cfg.DedupeWindow))
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	b := &Batcher{cfg: cfg, store: c, observe: observe, log: log, in: make(chan item, cfg.Queue), closing: make(chan struct{}), done: make(chan struct{}), seen: newDedupe(cfg.DedupeIDs, seen)}
	go b.run()
	return b, nil
}

// Submit decodes a message and queues it for the next batch. The message is
// settled after that batch commits: with nil, or, when its body is not
// telemetry and it was kept as a dead letter, with a *gateway.InvalidError
// saying why. Decoding happens here, on the caller's goroutine, so many
// connections decode in parallel.
func (b *Batcher) Submit(ctx context.Context, m gateway.Message) error {
	// DuckDB takes only valid UTF-8 in its text columns, and a batch is
	// stored whole: one device's message id of stray bytes (an HTTP
	// Message-Id header, an MQTT %24.mid=%FF) failed every message of the
	// batch, every device's, again and again as they were sent again.
	m.ID, m.Source = validText(m.ID), validText(m.Source)
	it := item{msg: m, columns: columnsPool.Get().(*Readings)}
	rs, invalid := decodeInto(m.Body, m.Received, *it.columns)
	if invalid != nil {
		it.reason = invalid.Error()
	} else {
		it.readings = rs
	}
	// The lock is not held while the queue is full: a Submit waiting for
	// room must not keep Close (and, behind it, every other Submit) waiting.
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.senders.Add(1)
	b.mu.Unlock()
	defer b.senders.Done()
	select {
	case b.in <- it:
		return nil
	case <-b.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// validText returns s if it is valid UTF-8, else s quoted in Go syntax
// (its stray bytes as \x escapes): the same s always gives the same text,
// so a message id of stray bytes still recognises its message sent again.
func validText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strconv.Quote(s)
}

// Close stops taking messages, commits and settles everything already
// submitted, and returns when that is done or ctx ends. A Submit waiting
// for room in the queue returns ErrClosed. When ctx ends first, the last
// commit goes on in the background; Done says when it is over.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	first := !b.closed
	b.closed = true
	b.mu.Unlock()
	if first {
		close(b.closing)
		go func() {
			b.senders.Wait() // no Submit sends on b.in after this
			close(b.in)
		}()
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ingest: close: %w", ctx.Err())
	}
}

// Done returns a channel closed once the batcher has committed and
// settled everything submitted, after Close; the Observer is not called
// after that.
func (b *Batcher) Done() <-chan struct{} { return b.done }

// Stats returns the counters so far.
func (b *Batcher) Stats() Stats {
	st := Stats{
		Messages: b.messages.Load(), Readings: b.readings.Load(), DeadLetters: b.deadLetters.Load(),
		Batches: b.batches.Load(), CommitErrors: b.commitErrors.Load(), Duplicates: b.duplicates.Load(),
		DedupeEvicted: b.evicted.Load(), CommitSeconds: time.Duration(b.commitNanos.Load()).Seconds(),
	}
	for i := range st.CommitDurations {
		st.CommitDurations[i] = b.commitDurations[i].Load()
	}
	return st
}

type pending struct {
	cols   store.TelemetryColumns // the readings
	dead   []store.DeadLetter
	settle []func(error)
	nDead  int
	nMsgs  int // messages stored by this batch (not duplicates)
	nDups  int // copies of messages of this batch, counted as duplicates once it commits
	ids    *array.RecordBuilder
	keys   map[store.MessageKey]time.Time
}

func newPending() *pending {
	return &pending{
		ids:  array.NewRecordBuilder(memory.DefaultAllocator, store.MessageIDSchema),
		keys: map[store.MessageKey]time.Time{},
	}
}

// fresh gives the batch new columns with room for n readings: the old ones
// may live on in a record the observer holds.
func (p *pending) fresh(n int) {
	p.cols = store.TelemetryColumns{
		TS: make([]int64, 0, n), DeviceID: make([]int32, 0, n),
		MetricID: make([]int16, 0, n), Value: make([]float64, 0, n),
	}
}

// window is when the messages of a pending batch arrived.
type window struct {
	first, last time.Time // the first and the last message
	urgent      time.Time // the first message that is not patient; zero if none
}

// due returns when the batch should be committed.
func (b *Batcher) due(w window) time.Time {
	at := w.first.Add(max(b.cfg.PatientDelay, b.cfg.MaxDelay))
	if w.urgent.IsZero() { // patient messages only
		idle := b.cfg.PatientIdle
		if idle == 0 {
			idle = b.cfg.Idle
		}
		if idle > 0 {
			at = earliest(at, w.last.Add(idle))
		}
		return at
	}
	at = earliest(at, w.urgent.Add(b.cfg.MaxDelay))
	if b.cfg.Idle > 0 {
		soft := w.last.Add(b.cfg.Idle)
		if m := w.urgent.Add(b.cfg.MinDelay); m.After(soft) {
			soft = m
		}
		at = earliest(at, soft)
	}
	return at
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (b *Batcher) run() {
	defer close(b.done)
	p := newPending()
	defer p.ids.Release()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	disarm := func() {
		if armed && !timer.Stop() {
			<-timer.C
		}
		armed = false
	}
	var w window
	prune := time.NewTicker(max(b.cfg.DedupeWindow/60, time.Second))
	defer prune.Stop()
	for {
		select {
		case now := <-prune.C:
			b.forget(now.Add(-b.cfg.DedupeWindow))
		case it, ok := <-b.in:
			if !ok {
				disarm()
				if len(p.settle) > 0 {
					b.flush(p)
				}
				return
			}
			now := time.Now()
			w.last = now
			if len(p.settle) == 0 {
				w = window{first: now, last: now}
			}
			if !it.msg.Patient && w.urgent.IsZero() {
				// The deadline moves earlier once, when the batch takes
				// its first message a device waits for.
				w.urgent = now
				disarm()
			}
			if !armed {
				timer.Reset(b.due(w).Sub(now))
				armed = true
			}
			b.add(p, it)
			if p.cols.Len() >= b.cfg.MaxRows {
				disarm()
				b.flush(p)
			}
		case now := <-timer.C:
			armed = false
			if len(p.settle) == 0 {
				continue
			}
			// Past the first urgent message (which re-arms the timer on
			// arrival) the deadline only moves later as messages arrive,
			// so re-arm until it has passed.
			if d := b.due(w); now.Before(d) {
				timer.Reset(d.Sub(now))
				armed = true
				continue
			}
			b.flush(p)
		}
	}
}

// forget drops the ids of messages received before t, in memory and in the
// store.
func (b *Batcher) forget(t time.Time) {
	b.seen.forget(t)
	if err := b.store.ForgetMessageIDs(context.Background(), t); err != nil {
		b.log.Warn("pruning message ids", "err", err)
	}
}

// add appends one message to the pending batch: its readings, or a dead
// letter when it did not decode or names a metric the store refuses. A
// message already stored (same device and message id) is only settled: at
// once if it was committed earlier, with this batch if its first copy is in
// this batch.
func (b *Batcher) add(p *pending, it item) {
	m := it.msg
	key := store.MessageKey{Device: m.Device.ID, ID: m.ID}
	if m.ID != "" {
		if b.seen.has(key) {
			b.duplicates.Add(1)
			if m.Settle != nil {
				m.Settle(invalidOrNil(it.reason))
			}
			return
		}
		if _, ok := p.keys[key]; ok {
			p.nDups++
			p.settle = append(p.settle, settleInvalid(m.Settle, it.reason))
			return
		}
	}
	reason := it.reason
	rs := it.readings
	// A message names a few metrics many times: each name is looked up in
	// the store once per message.
	var idBuf [8]int16
	ids := idBuf[:0]
	if reason == "" {
		for _, name := range rs.Names {
			id, err := b.store.MetricID(context.Background(), name)
			var refused *store.MetricError
			if errors.As(err, &refused) {
				reason = err.Error()
				break
			}
			if err != nil {
				// The store failed, not the message: neither it nor its id
				// is kept, and it is settled with the error so that its
				// device sends it again.
				b.commitErrors.Add(1)
				b.log.Error("metric not registered; the message is not acknowledged and its device will resend", "metric", name, "err", err)
				if m.Settle != nil {
					m.Settle(fmt.Errorf("ingest: %w", err))
				}
				return
			}
			ids = append(ids, id)
		}
	}
	if m.ID != "" {
		p.keys[key] = m.Received
		p.ids.Field(0).(*array.Int32Builder).Append(m.Device.ID)
		p.ids.Field(1).(*array.StringBuilder).Append(m.ID)
		p.ids.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(m.Received.UnixMicro()))
	}
	p.nMsgs++
	if reason != "" {
		p.dead = append(p.dead, store.DeadLetter{
			Received: m.Received, DeviceID: m.Device.ID, Device: m.Device.Name,
			Source: m.Source, Reason: reason, Body: m.Body,
		})
		p.nDead++
	} else {
		rs.AppendTo(&p.cols, m.Device.ID, ids)
	}
	p.settle = append(p.settle, settleInvalid(m.Settle, reason))
	if it.columns != nil && cap(rs.Value) <= maxPooledReadings {
		*it.columns = rs
		columnsPool.Put(it.columns)
	}
}

// settleInvalid returns the Settle of a message whose body is not
// telemetry (reason; "" when it is): once the batch is stored, settle is
// told why. A duplicate is judged by its own body, like its first copy.
func settleInvalid(settle func(error), reason string) func(error) {
	if settle == nil || reason == "" {
		return settle
	}
	return func(err error) {
		if err == nil {
			err = invalidOrNil(reason)
		}
		settle(err)
	}
}

// timeCommit adds a commit that took d to the commit-duration counters.
func (b *Batcher) timeCommit(d time.Duration) {
	b.commitNanos.Add(int64(d))
	i, secs := 0, d.Seconds()
	for i < len(CommitBounds) && secs > CommitBounds[i] {
		i++
	}
	b.commitDurations[i].Add(1)
}

// invalidOrNil is the settlement of a stored message: nil, or why its body
// is not telemetry.
func invalidOrNil(reason string) error {
	if reason == "" {
		return nil
	}
	return &gateway.InvalidError{Reason: reason}
}

// flush commits the pending batch, settles its messages and hands the
// committed readings to the observer. The columns are kept for the next
// batch unless the observer took them.
func (b *Batcher) flush(p *pending) {
	rows := p.cols.Len()
	rec := p.cols.Record()
	defer rec.Release()
	ids := p.ids.NewRecordBatch()
	defer ids.Release()
	began := time.Now()
	err := b.store.Commit(context.Background(), store.Batch{Readings: rec, MessageIDs: ids, DeadLetters: p.dead})
	b.timeCommit(time.Since(began))
	if err != nil {
		b.commitErrors.Add(1)
		b.log.Error("commit failed; messages are not acknowledged and devices will resend", "messages", len(p.settle), "readings", rows, "err", err)
	} else {
		b.batches.Add(1)
		b.readings.Add(int64(rows))
		b.deadLetters.Add(int64(p.nDead))
		b.messages.Add(int64(p.nMsgs))
		b.duplicates.Add(int64(p.nDups))
		before := b.seen.evicted
		for k, at := range p.keys {
			b.seen.add(k, at.UnixNano())
		}
		if b.seen.evicted > before {
			if before == 0 {
				b.log.Warn("message ids are arriving faster than the dedupe memory holds them for the whole window: the oldest are forgotten early, and a duplicate older than them would be stored again",
					"dedupe_ids", b.cfg.DedupeIDs, "window", b.cfg.DedupeWindow)
			}
			b.evicted.Store(b.seen.evicted)
		}
	}
	for _, s := range p.settle {
		if s != nil {
			s(err)
		}
	}
	if err == nil && rec.NumRows() > 0 && b.observe != nil {
		rec.Retain()
		b.observe(rec)
		// The next batch will likely be as large as this one.
		p.fresh(min(max(rows, 1024), b.cfg.MaxRows+MaxReadingsPerMessage))
	} else {
		p.cols.Reset()
	}
	p.nDead, p.nMsgs, p.nDups = 0, 0, 0
	clear(p.keys)
	p.dead = p.dead[:0]
	clear(p.settle)
	p.settle = p.settle[:0]
}
