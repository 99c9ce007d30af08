package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/store"
)

// ErrClosed is returned by Submit once the Batcher is closing.
var ErrClosed = errors.New("ingest: batcher closed")

// Committer writes a batch durably: when Commit returns nil every row is
// stored, when it returns an error none is. It is *store.Store in vigil.
type Committer interface {
	Commit(ctx context.Context, b store.Batch) error
	MetricID(ctx context.Context, name string) (int16, error)
}

// Observer receives every committed batch of readings (TelemetrySchema),
// in commit order. It must Release the record when done with it and should
// not block for long: the Batcher waits for it.
type Observer func(rec arrow.RecordBatch)

// Config sets when a Batcher commits.
type Config struct {
	// MaxRows commits as soon as a batch holds this many readings. DuckDB
	// pays a fixed ~2.5 ms per transaction, so large batches are what make
	// high rates affordable.
	MaxRows int
	// MaxDelay commits a non-empty batch at the latest this long after its
	// first message arrived, bounding how long a device waits for its
	// acknowledgement.
	MaxDelay time.Duration
	// Queue is how many decoded messages may wait for the batcher before
	// Submit blocks (backpressure).
	Queue int
}

// DefaultConfig returns the batching vigil runs with by default.
func DefaultConfig() Config {
	return Config{MaxRows: 100_000, MaxDelay: 100 * time.Millisecond, Queue: 4096}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.MaxRows < 1 || c.MaxDelay <= 0 || c.Queue < 1 {
		return fmt.Errorf("ingest: max rows, max delay and queue must be positive (got %d, %s, %d)", c.MaxRows, c.MaxDelay, c.Queue)
	}
	return nil
}

// Stats counts what a Batcher has done. All fields only grow.
type Stats struct {
	Messages     int64 // messages settled successfully
	Readings     int64 // readings committed
	DeadLetters  int64 // messages committed as dead letters
	Batches      int64 // successful commits
	CommitErrors int64 // failed commits (their messages were settled with the error)
}

type item struct {
	msg      gateway.Message
	readings []Reading
	reason   string // non-empty: dead letter
}

// Batcher micro-batches telemetry into Arrow records and commits them.
// Submit is safe for concurrent use.
type Batcher struct {
	cfg     Config
	store   Committer
	observe Observer
	log     *slog.Logger

	in     chan item
	mu     sync.RWMutex // guards closed against Submit racing Close
	closed bool
	done   chan struct{}

	messages, readings, deadLetters, batches, commitErrors atomic.Int64
}

var _ gateway.Sink = (*Batcher)(nil)

// NewBatcher starts a Batcher. Close it to commit what is pending and stop.
func NewBatcher(cfg Config, c Committer, observe Observer, log *slog.Logger) (*Batcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Batcher{cfg: cfg, store: c, observe: observe, log: log, in: make(chan item, cfg.Queue), done: make(chan struct{})}
	go b.run()
	return b, nil
}

// Submit decodes a message and queues it for the next batch. The message is
// settled after that batch commits. Decoding happens here, on the caller's
// goroutine, so many connections decode in parallel.
func (b *Batcher) Submit(ctx context.Context, m gateway.Message) error {
	it := item{msg: m}
	rs, err := Decode(m.Body, m.Received)
	if err != nil {
		it.reason = err.Error()
	} else {
		it.readings = rs
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	select {
	case b.in <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops taking messages, commits and settles everything already
// submitted, and returns when that is done or ctx ends.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.in)
	}
	b.mu.Unlock()
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ingest: close: %w", ctx.Err())
	}
}

// Stats returns the counters so far.
func (b *Batcher) Stats() Stats {
	return Stats{
		Messages: b.messages.Load(), Readings: b.readings.Load(), DeadLetters: b.deadLetters.Load(),
		Batches: b.batches.Load(), CommitErrors: b.commitErrors.Load(),
	}
}

type pending struct {
	builder *array.RecordBuilder
	ts      *array.TimestampBuilder
	dev     *array.Int32Builder
	metric  *array.Int16Builder
	val     *array.Float64Builder
	rows    int
	dead    []store.DeadLetter
	settle  []func(error)
	nDead   int
}

func newPending() *pending {
	rb := array.NewRecordBuilder(memory.DefaultAllocator, store.TelemetrySchema)
	return &pending{
		builder: rb,
		ts:      rb.Field(0).(*array.TimestampBuilder),
		dev:     rb.Field(1).(*array.Int32Builder),
		metric:  rb.Field(2).(*array.Int16Builder),
		val:     rb.Field(3).(*array.Float64Builder),
	}
}

func (b *Batcher) run() {
	defer close(b.done)
	p := newPending()
	defer p.builder.Release()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	for {
		select {
		case it, ok := <-b.in:
			if !ok {
				if len(p.settle) > 0 {
					b.flush(p)
				}
				return
			}
			if len(p.settle) == 0 {
				timer.Reset(b.cfg.MaxDelay)
				armed = true
			}
			b.add(p, it)
			if p.rows >= b.cfg.MaxRows {
				b.flush(p)
				if armed && !timer.Stop() {
					<-timer.C
				}
				armed = false
			}
		case <-timer.C:
			armed = false
			if len(p.settle) > 0 {
				b.flush(p)
			}
		}
	}
}

// add appends one message to the pending batch: its readings, or a dead
// letter when it did not decode or names a metric the store refuses.
func (b *Batcher) add(p *pending, it item) {
	m := it.msg
	reason := it.reason
	var ids []int16
	if reason == "" {
		ids = make([]int16, len(it.readings))
		for i, r := range it.readings {
			id, err := b.store.MetricID(context.Background(), r.Metric)
			if err != nil {
				reason = err.Error()
				break
			}
			ids[i] = id
		}
	}
	if reason != "" {
		p.dead = append(p.dead, store.DeadLetter{
			Received: m.Received, DeviceID: m.Device.ID, Device: m.Device.Name,
			Source: m.Source, Reason: reason, Body: m.Body,
		})
		p.nDead++
	} else {
		for i, r := range it.readings {
			p.ts.Append(arrow.Timestamp(r.TS.UnixMicro()))
			p.dev.Append(m.Device.ID)
			p.metric.Append(ids[i])
			p.val.Append(r.Value)
		}
		p.rows += len(it.readings)
	}
	p.settle = append(p.settle, m.Settle)
}

// flush commits the pending batch, settles its messages and hands the
// committed readings to the observer. The builder is reset for reuse.
func (b *Batcher) flush(p *pending) {
	rec := p.builder.NewRecordBatch()
	defer rec.Release()
	err := b.store.Commit(context.Background(), store.Batch{Readings: rec, DeadLetters: p.dead})
	if err != nil {
		b.commitErrors.Add(1)
		b.log.Error("commit failed; messages are not acknowledged and devices will resend", "messages", len(p.settle), "readings", p.rows, "err", err)
	} else {
		b.batches.Add(1)
		b.readings.Add(int64(p.rows))
		b.deadLetters.Add(int64(p.nDead))
		b.messages.Add(int64(len(p.settle)))
	}
	for _, s := range p.settle {
		if s != nil {
			s(err)
		}
	}
	if err == nil && rec.NumRows() > 0 && b.observe != nil {
		rec.Retain()
		b.observe(rec)
	}
	p.rows, p.nDead = 0, 0
	p.dead = p.dead[:0]
	clear(p.settle)
	p.settle = p.settle[:0]
}
