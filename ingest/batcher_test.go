package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/store"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testConfig(rows int, delay time.Duration, queue int) Config {
	return Config{MaxRows: rows, MaxDelay: delay, Queue: queue, DedupeWindow: time.Hour, DedupeIDs: 1_000_000}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func count(t *testing.T, s *store.Store, q string) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSettleOnlyAfterCommit checks the promise devices rely on: when a
// message is settled, its readings are already in the store.
func TestSettleOnlyAfterCommit(t *testing.T) {
	s := newStore(t)
	cfg := testConfig(1_000_000, 20*time.Millisecond, 16)
	b, err := NewBatcher(cfg, s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	settled := make(chan error, 1)
	var seen int
	err = b.Submit(context.Background(), gateway.Message{
		Device: gateway.Device{ID: 1, Name: "d1"}, Body: []byte(`{"a": 1, "b": 2}`), Received: time.Now(),
		Settle: func(err error) {
			// Runs on the batcher goroutine right after the commit.
			seen = count(t, s, `SELECT count(*) FROM telemetry`)
			settled <- err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-settled; err != nil {
		t.Fatal(err)
	}
	if seen != 2 {
		t.Fatalf("at settle time the store held %d readings, want 2", seen)
	}
}

// batchSizes returns an Observer that sends the size of every committed
// batch to the channel it also returns.
func batchSizes() (<-chan int64, Observer) {
	sizes := make(chan int64, 8)
	return sizes, func(rec arrow.RecordBatch) {
		sizes <- rec.NumRows()
		rec.Release()
	}
}

// TestFlushBySize: with an hour-long delay, only the row limit can trigger
// commits, so exactly the full batches are committed before Close.
func TestFlushBySize(t *testing.T) {
	s := newStore(t)
	sizes, observe := batchSizes()
	b, err := NewBatcher(testConfig(10, time.Hour, 64), s, observe, quiet)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(12)
	for i := 0; i < 12; i++ { // 12 messages × 2 readings
		body := fmt.Sprintf(`{"a": %d, "b": %d}`, i, -i)
		err := b.Submit(context.Background(), gateway.Message{Device: gateway.Device{ID: 1}, Body: []byte(body), Received: time.Now(), Settle: func(error) { wg.Done() }})
		if err != nil {
			t.Fatal(err)
		}
	}
	// 24 readings: two full batches of 10 commit by size; 4 stay pending
	// until Close, since the delay is an hour.
	if a, b := <-sizes, <-sizes; a != 10 || b != 10 {
		t.Fatalf("first batches have %d and %d rows, want 10 and 10", a, b)
	}
	select {
	case n := <-sizes:
		t.Fatalf("a batch of %d rows was committed before Close", n)
	default:
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if got := count(t, s, `SELECT count(*) FROM telemetry`); got != 24 {
		t.Fatalf("after close %d readings stored, want 24", got)
	}
	if n := <-sizes; n != 4 {
		t.Fatalf("last batch has %d rows, want 4", n)
	}
	if err := b.Submit(context.Background(), gateway.Message{Body: []byte(`{"a":1}`)}); err != ErrClosed {
		t.Fatalf("submit after close: %v", err)
	}
}

// TestBadMessageIsDeadLetteredBesideGoodOnes: an invalid body in a batch is
// stored as a dead letter with its reason and settled with that reason, and
// the valid messages around it are stored as usual.
func TestBadMessageIsDeadLetteredBesideGoodOnes(t *testing.T) {
	s := newStore(t)
	b, err := NewBatcher(testConfig(1000, time.Hour, 16), s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	bodies := []string{`{"temperature": 70}`, `{"temperature": "hot"}`, `{"temperature": 71}`}
	errs := make([]error, len(bodies))
	var wg sync.WaitGroup
	for i, body := range bodies {
		wg.Add(1)
		err := b.Submit(context.Background(), gateway.Message{
			Device: gateway.Device{ID: 4, Name: "dev-4"}, Source: "devices/dev-4/messages/events/", Body: []byte(body), Received: time.Now(),
			Settle: func(err error) { errs[i] = err; wg.Done() },
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	const why = `metric "temperature" is a JSON string: values must be JSON numbers, e.g. {"temperature": 71.2}`
	for i, err := range errs {
		reason, invalid := gateway.Invalid(err)
		switch {
		case i == 1 && (!invalid || reason != why):
			t.Fatalf("the bad message settled with %v, want a *gateway.InvalidError saying %q", err, why)
		case i != 1 && err != nil:
			t.Fatalf("message %d settled with %v", i, err)
		}
	}
	if n := count(t, s, `SELECT count(*) FROM telemetry`); n != 2 {
		t.Fatalf("%d readings stored, want 2", n)
	}
	var reason, device string
	var body []byte
	if err := s.DB().QueryRow(`SELECT reason, body, device FROM dead_letters`).Scan(&reason, &body, &device); err != nil {
		t.Fatal(err)
	}
	if string(body) != `{"temperature": "hot"}` || device != "dev-4" || reason != why {
		t.Fatalf("dead letter: %q %q %q", device, body, reason)
	}
	if st := b.Stats(); st.DeadLetters != 1 || st.Messages != 3 || st.Readings != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// failingStore refuses every commit, as a full disk would.
type failingStore struct{ *store.Store }

func (failingStore) Commit(context.Context, store.Batch) error { return fmt.Errorf("disk full") }

func TestCommitFailureSettlesWithError(t *testing.T) {
	s := newStore(t)
	b, err := NewBatcher(testConfig(2, time.Hour, 4), failingStore{s}, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 3)
	// A message, a copy of it and another, one batch of two readings: the
	// copy is no duplicate of anything stored, since nothing is.
	for _, id := range []string{"m1", "m1", "m2"} {
		b.Submit(context.Background(), gateway.Message{ID: id, Body: []byte(`{"a": 1}`), Received: time.Now(), Settle: func(err error) { got <- err }})
	}
	for range 3 {
		if err := <-got; err == nil {
			t.Fatal("a message was settled as stored although the commit failed")
		}
	}
	b.Close(context.Background())
	if st := b.Stats(); st.CommitErrors != 1 || st.Messages != 0 || st.Duplicates != 0 || sum(st.CommitDurations[:]) != 1 {
		t.Fatalf("stats %+v: want one failed commit, timed, and no duplicate", st)
	}
}

// slowStore takes at least delay to commit.
type slowStore struct {
	*store.Store
	delay time.Duration
}

func (s slowStore) Commit(ctx context.Context, b store.Batch) error {
	time.Sleep(s.delay) // the commit's cost, not a wait for another goroutine
	return s.Store.Commit(ctx, b)
}

func sum(xs []int64) int64 {
	var n int64
	for _, x := range xs {
		n += x
	}
	return n
}

// TestCommitDurationsAreTimed: each commit is counted in the bucket of the
// time it took, and its time is added to the sum.
func TestCommitDurationsAreTimed(t *testing.T) {
	const delay = 30 * time.Millisecond
	b, err := NewBatcher(testConfig(1, time.Hour, 4), slowStore{newStore(t), delay}, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got := make(chan error, 1)
		b.Submit(context.Background(), gateway.Message{Body: []byte(`{"a": 1}`), Received: time.Now(), Settle: func(err error) { got <- err }})
		if err := <-got; err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	b.Close(context.Background())
	st := b.Stats()
	if n := sum(st.CommitDurations[:]); n != st.Batches || n != 3 {
		t.Fatalf("%d commits timed, %d batches committed; want 3 each", n, st.Batches)
	}
	if st.CommitSeconds < 3*delay.Seconds() {
		t.Fatalf("commits took %.3f s in all, less than the %s each one waited", st.CommitSeconds, delay)
	}
	for i, bound := range CommitBounds {
		if bound < delay.Seconds() && st.CommitDurations[i] != 0 {
			t.Fatalf("%d commits counted as taking at most %g s; each took at least %s: %v", st.CommitDurations[i], bound, delay, st.CommitDurations)
		}
	}
}

// TestDuplicatesAreStoredOnce: a message delivered again with the same
// device and message id — in the same batch, in a later batch, or after a
// restart — is acknowledged but stored once.
func TestDuplicatesAreStoredOnce(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	submit := func(b *Batcher, dev int32, id, body string) chan error {
		done := make(chan error, 1)
		err := b.Submit(context.Background(), gateway.Message{Device: gateway.Device{ID: dev}, ID: id, Body: []byte(body), Received: time.Now(), Settle: func(err error) { done <- err }})
		if err != nil {
			t.Fatal(err)
		}
		return done
	}
	b, err := NewBatcher(testConfig(1000, time.Hour, 16), s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	first := []chan error{
		submit(b, 1, "m-1", `{"a": 1}`),
		submit(b, 1, "m-1", `{"a": 1}`), // same batch
		submit(b, 2, "m-1", `{"a": 2}`), // same id, other device: not a duplicate
		submit(b, 1, "", `{"a": 3}`),    // no id: never deduplicated
		submit(b, 1, "", `{"a": 3}`),
		submit(b, 1, "bad-1", `{"a": "x"}`),
		submit(b, 1, "bad-1", `{"a": "x"}`), // a dead letter is not kept twice either
	}
	b.Close(context.Background())
	for i, c := range first {
		err := <-c
		if _, invalid := gateway.Invalid(err); i >= 5 && !invalid {
			t.Fatalf("message %d (a dead letter, or its duplicate) settled with %v, want a *gateway.InvalidError", i, err)
		} else if i < 5 && err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if st := b.Stats(); st.Duplicates != 2 || st.Messages != 5 {
		t.Fatalf("stats %+v", st)
	}
	s.Close()

	// A restart: the ids come back from the store.
	s, err = store.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err = NewBatcher(testConfig(1000, 10*time.Millisecond, 16), s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-submit(b, 1, "m-1", `{"a": 1}`); err != nil {
		t.Fatal(err)
	}
	if err := <-submit(b, 1, "m-2", `{"a": 4}`); err != nil {
		t.Fatal(err)
	}
	if _, invalid := gateway.Invalid(<-submit(b, 1, "bad-1", `{"a": "x"}`)); !invalid {
		t.Fatal("a dead letter sent again after a restart was not settled as invalid")
	}
	b.Close(context.Background())
	if n := count(t, s, `SELECT count(*) FROM telemetry`); n != 5 { // a=1, a=2, a=3 twice, a=4
		t.Fatalf("%d readings stored, want 5", n)
	}
	if n := count(t, s, `SELECT count(*) FROM dead_letters`); n != 1 {
		t.Fatalf("%d dead letters, want 1", n)
	}
	if b.Stats().Duplicates != 2 {
		t.Fatalf("after restart: %+v", b.Stats())
	}
}

// TestIdleCommit: with MaxDelay an hour away, a batch that stops growing is
// committed once it is MinDelay old and Idle has passed without a message.
func TestIdleCommit(t *testing.T) {
	s := newStore(t)
	cfg := testConfig(1_000_000, time.Hour, 16)
	cfg.Idle, cfg.MinDelay = 5*time.Millisecond, 10*time.Millisecond
	b, err := NewBatcher(cfg, s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	done := make(chan error, 1)
	b.Submit(context.Background(), gateway.Message{Body: []byte(`{"a": 1}`), Received: time.Now(), Settle: func(err error) { done <- err }})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT count(*) FROM telemetry`); n != 1 {
		t.Fatalf("%d readings stored", n)
	}
}

// TestEveryReadingKeepsItsMetric: a message naming more metrics than the
// batcher's per-message lookup cache holds, in several objects, is stored
// with each value under its own metric name.
func TestEveryReadingKeepsItsMetric(t *testing.T) {
	s := newStore(t)
	b, err := NewBatcher(testConfig(1_000_000, 5*time.Millisecond, 16), s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	const metrics, objects = 12, 3
	body := "["
	for o := range objects {
		if o > 0 {
			body += ","
		}
		body += fmt.Sprintf(`{"ts": "2026-11-29T00:00:0%dZ"`, o)
		for m := range metrics {
			body += fmt.Sprintf(`, "m%02d": %d`, m, 1000*o+m)
		}
		body += "}"
	}
	body += "]"
	settled := make(chan error, 1)
	if err := b.Submit(context.Background(), gateway.Message{
		Device: gateway.Device{ID: 7, Name: "d7"}, Body: []byte(body), Received: time.Now(),
		Settle: func(err error) { settled <- err },
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-settled; err != nil {
		t.Fatal(err)
	}
	b.Close(context.Background())
	rows, err := s.DB().Query(`SELECT m.name, t.value, epoch(t.ts)::BIGINT FROM telemetry t JOIN metrics m ON m.id = t.metric_id ORDER BY t.ts, m.name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var metric string
		var value float64
		var sec int64
		if err := rows.Scan(&metric, &value, &sec); err != nil {
			t.Fatal(err)
		}
		o, m := int(value)/1000, int(value)%1000
		if want := fmt.Sprintf("m%02d", m); metric != want || sec%60 != int64(o) {
			t.Errorf("reading %d: %s = %v at second %d; the body says %s = %v at second %d", n, metric, value, sec%60, want, value, o)
		}
		n++
	}
	if n != metrics*objects {
		t.Fatalf("stored %d readings, want %d", n, metrics*objects)
	}
}

// TestPatientMessages: messages no device waits for (gateway.Message.Patient)
// are held past MaxDelay until the batch is full; a message a device waits
// for pulls the batch forward to its own MaxDelay; and a patient batch still
// commits once its stream goes quiet for PatientIdle.
func TestPatientMessages(t *testing.T) {
	s := newStore(t)
	sizes, observe := batchSizes()
	cfg := testConfig(10, 5*time.Millisecond, 64)
	cfg.PatientDelay = time.Hour
	b, err := NewBatcher(cfg, s, observe, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	submit := func(patient bool, settled func(error)) {
		t.Helper()
		m := gateway.Message{Device: gateway.Device{ID: 1}, Body: []byte(`{"a": 1, "b": 2}`), Received: time.Now(), Settle: settled, Patient: patient}
		if err := b.Submit(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	nop := func(error) {}
	for range 4 {
		submit(true, nop)
	}
	// Nothing signals that a batch was not committed: give the batcher
	// twenty times MaxDelay to show it holds the patient messages.
	select {
	case n := <-sizes:
		t.Fatalf("a batch of %d patient readings was committed after MaxDelay; it should wait to fill %d rows", n, cfg.MaxRows)
	case <-time.After(20 * cfg.MaxDelay):
	}
	submit(true, nop)
	if n := <-sizes; n != 10 {
		t.Fatalf("full batch of patient messages: %d rows, want 10", n)
	}

	submit(true, nop)
	urgent := make(chan error, 1)
	submit(false, func(err error) { urgent <- err })
	settledWithin(t, urgent, "a message a device waits for was held with patient ones past MaxDelay")
	if n := <-sizes; n != 4 {
		t.Fatalf("the urgent message's batch has %d rows, want 4 (the patient message before it too)", n)
	}

	cfg.PatientIdle = 5 * time.Millisecond
	b2, err := NewBatcher(cfg, s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close(context.Background())
	quietDone := make(chan error, 1)
	m := gateway.Message{Device: gateway.Device{ID: 1}, Body: []byte(`{"a": 3}`), Received: time.Now(), Patient: true, Settle: func(err error) { quietDone <- err }}
	if err := b2.Submit(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	settledWithin(t, quietDone, "a patient batch was not committed after its stream went quiet for PatientIdle")
}

// settledWithin waits (at most 10 s, far beyond any deadline the test
// sets) for a settlement and fails with why if there is none.
func settledWithin(t *testing.T, settled <-chan error, why string) {
	t.Helper()
	select {
	case err := <-settled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal(why)
	}
}

// TestObservedBatchesKeepTheirReadings: a record the observer still holds
// keeps its readings while later batches fill and commit (the batcher must
// not write the next batch into columns the observer was given), and every
// reading reaches the observer with its device and value.
func TestObservedBatchesKeepTheirReadings(t *testing.T) {
	s := newStore(t)
	held := make(chan arrow.RecordBatch, 8)
	b, err := NewBatcher(testConfig(4, time.Hour, 64), s, func(rec arrow.RecordBatch) { held <- rec }, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 { // 12 messages × 2 readings: six batches of 4
		body := fmt.Sprintf(`{"a": %d, "b": %d}`, i, 100+i)
		if err := b.Submit(context.Background(), gateway.Message{Device: gateway.Device{ID: int32(i + 1)}, Body: []byte(body), Received: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(held)
	i := 0
	for rec := range held {
		devs := rec.Column(1).(*array.Int32)
		vals := rec.Column(3).(*array.Float64)
		for r := range int(rec.NumRows()) {
			msg := i / 2
			want := float64(msg)
			if i%2 == 1 {
				want = float64(100 + msg)
			}
			if devs.Value(r) != int32(msg+1) || vals.Value(r) != want {
				t.Errorf("reading %d: device %d value %v, want device %d value %v", i, devs.Value(r), vals.Value(r), msg+1, want)
			}
			i++
		}
		rec.Release()
	}
	if i != 24 {
		t.Fatalf("the observer saw %d readings, want 24", i)
	}
}

// stuckStore holds every commit until release is closed, as a stalled
// disk would.
type stuckStore struct {
	*store.Store
	committing chan struct{} // receives when a commit starts
	release    chan struct{}
}

func (s stuckStore) Commit(ctx context.Context, b store.Batch) error {
	s.committing <- struct{}{}
	<-s.release
	return s.Store.Commit(ctx, b)
}

// doneSignal is a context that closes asked the first time its Done is
// called, which Submit does when it waits for room in the queue.
type doneSignal struct {
	context.Context
	once  sync.Once
	asked chan struct{}
}

func (c *doneSignal) Done() <-chan struct{} {
	c.once.Do(func() { close(c.asked) })
	return c.Context.Done()
}

// TestCloseWhileSubmitWaits: with the store stalled and the queue full, a
// Submit waits for room; Close must not wait for that Submit (it did: the
// waiting Submit held the lock Close takes, and every later Submit queued
// behind Close). Close returns when its context ends, the waiting Submit
// and any later one get ErrClosed, and once the store moves again every
// message that was queued is committed and settled.
func TestCloseWhileSubmitWaits(t *testing.T) {
	st := stuckStore{newStore(t), make(chan struct{}, 1), make(chan struct{})}
	b, err := NewBatcher(testConfig(1, time.Hour, 1), st, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	settled := make(chan error, 3)
	msg := func(i int) gateway.Message {
		return gateway.Message{Body: []byte(fmt.Sprintf(`{"a": %d}`, i)), Received: time.Now(), Settle: func(err error) { settled <- err }}
	}
	ctx := context.Background()
	if err := b.Submit(ctx, msg(1)); err != nil {
		t.Fatal(err)
	}
	<-st.committing                               // message 1's commit hangs
	if err := b.Submit(ctx, msg(2)); err != nil { // fills the queue of 1
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	sctx := &doneSignal{Context: ctx, asked: make(chan struct{})}
	go func() { waiting <- b.Submit(sctx, msg(3)) }() // no room: waits
	<-sctx.asked                                      // it is at its wait

	closeCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- b.Close(closeCtx) }()
	select {
	case err := <-closed:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close with the store stalled: %v, want its context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return when its context ended: it waits for a Submit that waits for room")
	}
	select {
	case err := <-waiting:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("the waiting Submit returned %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Submit waiting for room still waits after Close")
	}
	if err := b.Submit(ctx, msg(4)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v, want ErrClosed", err)
	}

	close(st.release)
	<-b.Done()
	for i := range 2 {
		if err := <-settled; err != nil {
			t.Fatalf("queued message %d settled with %v", i+1, err)
		}
	}
	if n := count(t, st.Store, `SELECT count(*) FROM telemetry`); n != 2 {
		t.Fatalf("%d readings stored, want the 2 queued ones", n)
	}
}

// flakyMetrics fails to register a metric name the first time, as a
// store with a passing I/O error would.
type flakyMetrics struct {
	*store.Store
	failed map[string]bool
}

func (s flakyMetrics) MetricID(ctx context.Context, name string) (int16, error) {
	if !s.failed[name] {
		s.failed[name] = true
		return 0, fmt.Errorf("register metric %q: IO Error: could not write", name)
	}
	return s.Store.MetricID(ctx, name)
}

// TestStoreFailureIsNotADeadLetter: when the store fails to register a
// metric, the message is not kept as a dead letter nor remembered by its
// id, and is settled with an error that asks for it again, not as
// invalid; sent again, it is stored. (It was dead-lettered with the
// store's error as its reason, its device told not to resend, and a
// resend was then acknowledged as a duplicate: the readings were lost.)
func TestStoreFailureIsNotADeadLetter(t *testing.T) {
	st := flakyMetrics{newStore(t), map[string]bool{}}
	b, err := NewBatcher(testConfig(1, 20*time.Millisecond, 4), st, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	send := func() error {
		got := make(chan error, 1)
		m := gateway.Message{Device: gateway.Device{ID: 7, Name: "d7"}, ID: "msg-1", Body: []byte(`{"rpm": 1200}`), Received: time.Now(), Settle: func(err error) { got <- err }}
		if err := b.Submit(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		return <-got
	}
	err = send()
	if err == nil {
		t.Fatal("a message whose metric the store failed to register was acknowledged")
	}
	if _, invalid := gateway.Invalid(err); invalid {
		t.Fatalf("the store's failure was blamed on the message: %v", err)
	}
	if err := send(); err != nil {
		t.Fatalf("the resend: %v", err)
	}
	if n := count(t, st.Store, `SELECT count(*) FROM telemetry`); n != 1 {
		t.Fatalf("%d readings stored after the resend, want 1", n)
	}
	if n := count(t, st.Store, `SELECT count(*) FROM dead_letters`); n != 0 {
		t.Fatalf("%d dead letters for a message that was valid", n)
	}
}

// TestStrayBytesInAnIDSpoilNoBatch: a message id or source that is not
// valid UTF-8 (DuckDB's text columns take nothing else, and a batch is
// stored whole) neither fails the batch for the other devices' messages
// nor escapes dedupe: the same id sent again is recognised.
func TestStrayBytesInAnIDSpoilNoBatch(t *testing.T) {
	s := newStore(t)
	b, err := NewBatcher(testConfig(1000, time.Hour, 16), s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	submit := func(dev int32, id, source, body string) chan error {
		done := make(chan error, 1)
		if err := b.Submit(context.Background(), gateway.Message{Device: gateway.Device{ID: dev}, ID: id, Source: source,
			Body: []byte(body), Received: time.Now(), Settle: func(err error) { done <- err }}); err != nil {
			t.Fatal(err)
		}
		return done
	}
	settled := []chan error{
		submit(1, "m-\xff", "events", `{"a": 1}`),
		submit(1, "m-\xff", "events", `{"a": 1}`), // the same id again
		submit(1, "m-\xfe", "events", `{"a": 2}`), // another stray byte: another id
		submit(2, "m-1", "events", `{"a": 3}`),    // another device in the same batch
		submit(2, "m-2", "ev\xffents", `{"a": "x"}`),
	}
	b.Close(context.Background())
	for i, c := range settled {
		if err := <-c; err != nil {
			if _, invalid := gateway.Invalid(err); !(i == 4 && invalid) {
				t.Fatalf("message %d settled with %v", i, err)
			}
		}
	}
	if n := count(t, s, `SELECT count(*) FROM telemetry`); n != 3 {
		t.Fatalf("%d readings stored, want 3", n)
	}
	if n := count(t, s, `SELECT count(*) FROM dead_letters`); n != 1 {
		t.Fatalf("%d dead letters, want 1", n)
	}
	if st := b.Stats(); st.Duplicates != 1 || st.CommitErrors != 0 {
		t.Fatalf("stats %+v, want 1 duplicate and no commit error", st)
	}
}
