package amqp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/internal/logtest"
	"github.com/vigil-iot/vigil/internal/proxytest"
)

// TestFrontierWaitsForGaps: settled out of order, the frontier stays
// before the earliest message not settled, then moves past every settled
// one after it at once; a second settle of a message changes nothing.
func TestFrontierWaitsForGaps(t *testing.T) {
	f := newFrontier()
	var m []mark
	for _, off := range []string{"10", "20", "30", "40"} {
		m = append(m, f.add(off))
	}
	offset := func() string { o, _ := f.unsaved(); return o }
	f.settle(m[1])
	f.settle(m[2])
	if got := offset(); got != "" {
		t.Fatalf("offset %q with the first message unsettled, want none", got)
	}
	f.settle(m[0])
	if got := offset(); got != "30" {
		t.Fatalf("offset %q after the gap closed, want 30", got)
	}
	f.settle(m[1])
	if got := offset(); got != "30" {
		t.Fatalf("offset %q after a second settle, want 30", got)
	}
	f.markSaved("30")
	if _, moved := f.unsaved(); moved {
		t.Fatal("unsaved after the save")
	}
	f.settle(m[3])
	if got, moved := f.unsaved(); got != "40" || !moved {
		t.Fatalf("unsaved = %q, %v; want 40, true", got, moved)
	}
}

// TestLogOffset takes an offset only where it can be put in a filter.
func TestLogOffset(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
		ok   bool
	}{
		{"4096", "4096", true}, {int64(12), "12", true}, {uint64(7), "7", true},
		{nil, "", false}, {"", "", false}, {"1' OR '1' = '1", "", false}, {"1\n2", "", false}, {3.5, "", false},
	} {
		msg := &amqp.Message{}
		if tc.v != nil {
			msg.Annotations = amqp.Annotations{offsetAnnotation: tc.v}
		}
		if got, ok := logOffset(msg); got != tc.want || ok != tc.ok {
			t.Errorf("logOffset(%#v) = %q, %v; want %q, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

// TestLogSourceResumesAfterTheLastSettled reads a log-like source as an
// Event Hubs partition (a RabbitMQ queue whose messages carry x-opt-offset,
// as Event Hubs stamps them): vigil saves the offset of the last message
// settled, a dead letter included, and its next link asks for the events
// after it. RabbitMQ ignores that filter, and the test sends the tail of
// the log again as a log read from an older position would deliver it:
// events seen before are recognised, by message-id or, without one, by
// their offset, and every reading is stored once.
func TestLogSourceResumesAfterTheLastSettled(t *testing.T) {
	b := needBroker(t)
	const dev, part = "hub-dev", "/amq/queue/hub.partition.0"
	vhost, keys := b.Provision(t, dev)
	ctx := context.Background()
	via := func(p *proxytest.Proxy) string {
		u, err := url.Parse(b.URL)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = p.Addr
		return u.String()
	}
	bu, _ := url.Parse(b.URL)
	first := proxytest.Start(t, proxytest.Listen(t), bu.Host)
	v := startVigil(t, b, vhost, []string{dev}, func(c *Config) { c.URL, c.Sources = via(first), []string{part} })
	type event struct {
		offset int
		id     bool
		body   string
	}
	const good = `{"temperature": 70.5, "vibration": 0.3}` // 2 readings
	send := func(events ...event) {
		for _, e := range events {
			m := amqp.NewMessage([]byte(e.body))
			m.Properties = &amqp.MessageProperties{UserID: []byte(dev)}
			if e.id {
				m.Properties.MessageID = fmt.Sprintf("msg-%d", e.offset)
			}
			m.Annotations = amqp.Annotations{offsetAnnotation: strconv.Itoa(e.offset)}
			sendTo(t, b, vhost, dev, keys[dev], part, m)
		}
	}
	saved := func(want string) func() bool {
		return func() bool { off, ok, err := v.store.SourcePosition(ctx, part); return err == nil && ok && off == want }
	}
	send(event{100, true, good}, event{200, false, good}, event{300, false, "not telemetry"}, event{400, false, good}, event{500, true, good})
	waitFor(t, 10*time.Second, "the first events", func() bool { s := v.gw.Stats(); return s.Accepted == 4 && s.Invalid == 1 })
	waitFor(t, 10*time.Second, "offset 500 saved", saved("500"))
	if err := v.gw.Close(); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(first.ClientSent(), []byte(offsetAnnotation)) {
		t.Fatal("the first link asked for a position, with none saved")
	}

	send(event{400, false, good}, event{500, true, good}, event{600, false, good})
	second := proxytest.Start(t, proxytest.Listen(t), bu.Host)
	cfg := DefaultConfig()
	cfg.URL, cfg.VHost, cfg.Sources = via(second), vhost, []string{part}
	g := New(cfg, storeRegistry{v.store}, v.batcher, v.acks, testLogger())
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	waitFor(t, 20*time.Second, "the tail of the log", func() bool { return g.Stats().Accepted == 3 })
	waitFor(t, 10*time.Second, "offset 600 saved", saved("600"))
	if want := []byte("amqp.annotation.x-opt-offset > '500'"); !bytes.Contains(second.ClientSent(), want) {
		t.Fatalf("the second link did not ask for the events after offset 500 (%q)", want)
	}
	if got := v.storedReadings(t)[dev]; got != 10 {
		t.Fatalf("stored %d readings, want 10: the events at 100, 200, 400, 500 and 600 once each", got)
	}
	if d := v.batcher.Stats().Duplicates; d != 2 {
		t.Fatalf("%d duplicates recognised, want 2 (400 by its offset, 500 by its message-id)", d)
	}
}

// failingPositions is a registry whose store cannot say where a source was
// left: reading a saved position times out.
type failingPositions struct{ fixedRegistry }

func (failingPositions) SourcePosition(context.Context, string) (string, bool, error) {
	return "", false, fmt.Errorf("store: source position: %w", context.DeadlineExceeded)
}

func (failingPositions) SaveSourcePosition(context.Context, string, string) error { return nil }

// TestPositionErrorBlamesTheStore: when vigil's store cannot say where to
// resume a source, the gateway keeps retrying and its log blames the
// store, not the broker. (It said the broker did not answer in time, and
// sent the operator to look at the broker.)
func TestPositionErrorBlamesTheStore(t *testing.T) {
	b := needBroker(t)
	vhost, _ := b.Provision(t)
	cfg := DefaultConfig()
	cfg.URL, cfg.VHost = b.URL, vhost
	log := &logtest.Buffer{}
	g := New(cfg, failingPositions{}, nil, nil, slog.New(slog.NewTextHandler(log, nil)))
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitFor(t, 20*time.Second, "a warning about the connection attempt", func() bool { return strings.Contains(log.String(), "retrying") })
	s := log.String()
	if !strings.Contains(s, "could not read from vigil's store where to resume "+DefaultSource+", retrying") || !strings.Contains(s, "not the broker") || strings.Contains(s, "the broker did not answer") {
		t.Fatalf("a store that failed was not blamed for it:\n%s", s)
	}
	if g.Connected() {
		t.Fatal("connected without knowing where to resume")
	}
}
