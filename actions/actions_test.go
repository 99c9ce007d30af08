package actions

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/store"
)

// sender records commands; devices listed in offline refuse them.
type sender struct {
	sent    []gateway.Command
	offline map[string]bool
}

func (s *sender) Send(_ context.Context, c gateway.Command) error {
	if s.offline[c.Device] {
		return gateway.ErrDeviceOffline
	}
	s.sent = append(s.sent, c)
	return nil
}

type fixture struct {
	st    *store.Store
	dir   string
	send  *sender
	ctrl  *Controller
	clock time.Time
	temp  int16
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st, dir: dir, send: &sender{offline: map[string]bool{}}, clock: time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)}
	f.temp, _ = st.MetricID(context.Background(), "temperature")
	f.ctrl = f.controller(t)
	return f
}

func (f *fixture) controller(t *testing.T) *Controller {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Cooldown, cfg.TTL, cfg.RecoveryWindow = 30*time.Second, 10*time.Second, 60*time.Second
	c, err := New(context.Background(), cfg, f.st, f.send, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return f.clock }
	return c
}

func (f *fixture) anomaly(dev int32, metric int16) store.Anomaly {
	return store.Anomaly{ID: 1, DeviceID: dev, MetricID: metric, TS: f.clock}
}

func (f *fixture) row(t *testing.T, id int64) (state, verification string) {
	t.Helper()
	if err := f.st.DB().QueryRow(`SELECT state, verification FROM commands WHERE id = ?`, id).Scan(&state, &verification); err != nil {
		t.Fatal(err)
	}
	return state, verification
}

func TestRuleAndCooldown(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	hum, _ := f.st.MetricID(ctx, "humidity")
	if cmd, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(1, hum), "d1", "humidity"); cmd != nil {
		t.Fatal("a metric without a rule produced a command")
	}
	cmd, err := f.ctrl.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature")
	if err != nil || cmd == nil || cmd.State != store.CommandSent {
		t.Fatalf("first anomaly: %+v %v", cmd, err)
	}
	if len(f.send.sent) != 1 || f.send.sent[0].Name != "reduce_load" || string(f.send.sent[0].Payload) != `{"percent":30}` || f.send.sent[0].Device != "d1" {
		t.Fatalf("sent %+v", f.send.sent)
	}
	f.clock = f.clock.Add(29 * time.Second)
	if again, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature"); again != nil {
		t.Fatal("a second command inside the cooldown")
	}
	if other, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(2, f.temp), "d2", "temperature"); other == nil {
		t.Fatal("the cooldown of one device blocked another")
	}
	f.clock = f.clock.Add(2 * time.Second)
	if later, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature"); later == nil {
		t.Fatal("no command after the cooldown")
	}
	if s := f.ctrl.Stats(); s.Sent != 3 || s.Suppressed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAckMovesLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cmd, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature")
	id := f.send.sent[0].ID
	if err := f.ctrl.HandleAck(ctx, gateway.Ack{Device: gateway.Device{ID: 2, Name: "d2"}, CommandID: id, Status: gateway.AckCompleted}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("ack by another device: %v", err)
	}
	if err := f.ctrl.HandleAck(ctx, gateway.Ack{Device: gateway.Device{ID: 1, Name: "d1"}, CommandID: id, Status: "maybe"}); err == nil {
		t.Fatal("an unknown ack status was accepted")
	}
	// A detail with a stray byte (an HTTP device's detail=%FF) is kept as
	// text rather than failing the store every time.
	if err := f.ctrl.HandleAck(ctx, gateway.Ack{Device: gateway.Device{ID: 1, Name: "d1"}, CommandID: id, Status: gateway.AckCompleted, Received: f.clock, Detail: "cooled \xff"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.row(t, cmd.ID); st != "acknowledged" {
		t.Fatalf("state %s, want acknowledged", st)
	}
	var detail string
	if err := f.st.DB().QueryRow(`SELECT detail FROM commands WHERE id = ?`, cmd.ID).Scan(&detail); err != nil || detail != "cooled \uFFFD" {
		t.Fatalf("detail %q (%v)", detail, err)
	}
	if err := f.ctrl.HandleAck(ctx, gateway.Ack{Device: gateway.Device{ID: 1, Name: "d1"}, CommandID: id, Status: gateway.AckCompleted}); err == nil {
		t.Fatal("a second ack was accepted")
	}
}

func TestExpiryAndVerification(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	healed, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature")
	stuck, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(2, f.temp), "d2", "temperature")
	f.send.offline["d3"] = true
	failed, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(3, f.temp), "d3", "temperature")

	f.clock = f.clock.Add(11 * time.Second) // past the TTL, inside the recovery window
	if err := f.ctrl.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if st, v := f.row(t, stuck.ID); st != "expired" || v != "pending" {
		t.Fatalf("unacknowledged command: %s/%s, want expired/pending", st, v)
	}
	if err := f.ctrl.OnRecovered(ctx, 1, f.temp, f.clock); err != nil {
		t.Fatal(err)
	}
	if _, v := f.row(t, healed.ID); v != "recovered" {
		t.Fatalf("device 1: %s, want recovered", v)
	}
	f.clock = f.clock.Add(60 * time.Second) // past the recovery window
	f.ctrl.Tick(ctx)
	if _, v := f.row(t, stuck.ID); v != "not_recovered" {
		t.Fatalf("device 2: %s, want not_recovered", v)
	}
	if st, _ := f.row(t, failed.ID); st != "failed" {
		t.Fatalf("command to an offline device: %s, want failed", st)
	}
	s := f.ctrl.Stats()
	if s.Recovered != 1 || s.NotRecovered != 1 || s.Expired != 2 || s.Failed != 1 || s.DevicesHealed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestResumeAfterRestart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cmd, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature")
	restarted := f.controller(t) // a new process over the same store
	if c, _ := restarted.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature"); c != nil {
		t.Fatal("the cooldown was forgotten across a restart")
	}
	if err := restarted.HandleAck(ctx, gateway.Ack{Device: gateway.Device{ID: 1}, CommandID: f.send.sent[0].ID, Status: gateway.AckCompleted}); err != nil {
		t.Fatalf("ack after restart: %v", err)
	}
	if st, _ := f.row(t, cmd.ID); st != "acknowledged" {
		t.Fatalf("state %s", st)
	}
}

// TestQueuedCommandIsClosedOnResume: a command stored as queued but never
// recorded as sent (vigil stopped in between) is closed as failed when the
// next run resumes, with its verification, instead of staying open forever
// with nothing to move it.
func TestQueuedCommandIsClosedOnResume(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cmd := &store.Command{DeviceID: 1, MetricID: f.temp, AnomalyID: 1, Name: "reduce_load", Payload: json.RawMessage(`{}`),
		State: store.CommandQueued, Created: f.clock, Expires: f.clock.Add(10 * time.Second), Verification: store.VerifyPending}
	if err := f.st.AddCommand(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	restarted := f.controller(t)
	if st, ver := f.row(t, cmd.ID); st != "failed" || ver != "not_recovered" {
		t.Fatalf("a queued command after a restart: state %s, verification %s; want failed, not_recovered", st, ver)
	}
	if len(restarted.open) != 0 || len(f.send.sent) != 0 {
		t.Fatalf("%d commands tracked, %d sent; want none", len(restarted.open), len(f.send.sent))
	}
	if left, err := f.st.UnfinishedCommands(ctx); err != nil || len(left) != 0 {
		t.Fatalf("unfinished commands in the store: %d (%v)", len(left), err)
	}
}

// TestDeliveredBetweenSentAndAnswered: a delivery report moves a sent
// command to delivered (with its time, persisted and resumed after a
// restart); the device's answer then closes it; a late or repeated
// delivery report changes nothing; a delivered command that is never
// answered expires.
func TestDeliveredBetweenSentAndAnswered(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	d1 := gateway.Device{ID: 1, Name: "d1"}
	answered, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature")
	silent, _ := f.ctrl.OnAnomaly(ctx, f.anomaly(2, f.temp), "d2", "temperature")
	delivered := f.clock.Add(time.Second)
	for _, a := range []gateway.Ack{
		{Device: d1, CommandID: f.send.sent[0].ID, Status: gateway.AckDelivered, Received: delivered},
		{Device: d1, CommandID: f.send.sent[0].ID, Status: gateway.AckDelivered, Received: delivered.Add(time.Second)}, // a resend's PUBACK
		{Device: gateway.Device{ID: 2, Name: "d2"}, CommandID: f.send.sent[1].ID, Status: gateway.AckDelivered, Received: delivered},
	} {
		if err := f.ctrl.HandleAck(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := f.row(t, answered.ID); st != "delivered" {
		t.Fatalf("state %s, want delivered", st)
	}
	var at time.Time
	if err := f.st.DB().QueryRow(`SELECT delivered FROM commands WHERE id = ?`, answered.ID).Scan(&at); err != nil || !at.Equal(delivered) {
		t.Fatalf("delivered at %v (%v), want %v (the first report)", at, err, delivered)
	}
	if s := f.ctrl.Stats(); s.Delivered != 2 {
		t.Fatalf("stats %+v, want 2 delivered", s)
	}
	f.ctrl = f.controller(t) // a restart: the delivered commands are resumed
	if err := f.ctrl.HandleAck(ctx, gateway.Ack{Device: d1, CommandID: f.send.sent[0].ID, Status: gateway.AckCompleted, Received: f.clock}); err != nil {
		t.Fatalf("answer to a delivered command after a restart: %v", err)
	}
	if st, _ := f.row(t, answered.ID); st != "acknowledged" {
		t.Fatalf("state %s, want acknowledged", st)
	}
	if err := f.ctrl.HandleAck(ctx, gateway.Ack{Device: d1, CommandID: f.send.sent[0].ID, Status: gateway.AckDelivered, Received: f.clock}); err != nil {
		t.Fatalf("a delivery report after the answer: %v", err)
	}
	if st, _ := f.row(t, answered.ID); st != "acknowledged" {
		t.Fatalf("a late delivery report moved an answered command to %s", st)
	}
	f.clock = f.clock.Add(11 * time.Second) // past the TTL
	if err := f.ctrl.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.row(t, silent.ID); st != "expired" {
		t.Fatalf("unanswered delivered command: %s, want expired", st)
	}
}

// failingStore is the real store whose command updates fail while fail is
// set, as a store whose disk is full would.
type failingStore struct {
	*store.Store
	fail bool
}

func (s *failingStore) UpdateCommand(ctx context.Context, c store.Command) error {
	if s.fail {
		return errors.New("disk full")
	}
	return s.Store.UpdateCommand(ctx, c)
}

// TestStoreFailureLeavesTheChangeToMakeAgain: while the store cannot
// record a change, the controller does not make it in memory either, so
// an acknowledgement sent again (HandleAck asks for it), or the next Tick,
// makes it once the store is back, and the counters count it once.
func TestStoreFailureLeavesTheChangeToMakeAgain(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	st := &failingStore{Store: f.st}
	c, err := New(ctx, f.ctrl.cfg, st, f.send, f.ctrl.log)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return f.clock }
	acked, _ := c.OnAnomaly(ctx, f.anomaly(1, f.temp), "d1", "temperature")
	expiring, _ := c.OnAnomaly(ctx, f.anomaly(2, f.temp), "d2", "temperature")
	ack := gateway.Ack{Device: gateway.Device{ID: 1, Name: "d1"}, CommandID: f.send.sent[0].ID, Status: gateway.AckCompleted, Received: f.clock}

	st.fail = true
	if err := c.HandleAck(ctx, ack); !errors.Is(err, gateway.ErrAckNotRecorded) {
		t.Fatalf("an acknowledgement the store did not record: %v, want ErrAckNotRecorded (send it again)", err)
	}
	f.clock = f.clock.Add(11 * time.Second) // past the TTL
	if err := c.Tick(ctx); err == nil {
		t.Fatal("an expiry the store did not record was taken")
	}
	if a, _ := f.row(t, acked.ID); a != "sent" {
		t.Fatalf("acknowledged command in the store: %s, want still sent", a)
	}
	if s := c.Stats(); s.Acknowledged != 0 || s.Expired != 0 {
		t.Fatalf("stats %+v: counted what was not recorded", s)
	}

	st.fail = false
	if err := c.HandleAck(ctx, ack); err != nil {
		t.Fatalf("the acknowledgement sent again: %v", err)
	}
	if err := c.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if a, _ := f.row(t, acked.ID); a != "acknowledged" {
		t.Fatalf("acknowledged command: %s", a)
	}
	if e, _ := f.row(t, expiring.ID); e != "expired" {
		t.Fatalf("overdue command: %s, want expired", e)
	}
	if s := c.Stats(); s.Acknowledged != 1 || s.Expired != 1 {
		t.Fatalf("stats %+v: want one acknowledged, one expired", s)
	}
}
