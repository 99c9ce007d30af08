package amqp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/ingest"
	"github.com/vigil-iot/vigil/internal/rabbittest"
	"github.com/vigil-iot/vigil/store"
)

// testBroker is the RabbitMQ node .ci/rabbitmq runs.
type testBroker = rabbittest.Broker

func needBroker(tb testing.TB) *testBroker { return rabbittest.Need(tb) }

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// storeRegistry resolves devices with the store's registry and keeps the
// positions of log sources in the store, as the server does.
type storeRegistry struct{ s *store.Store }

func (r storeRegistry) LookupDevice(name string) (gateway.Device, error) {
	d, ok := r.s.Device(name)
	switch {
	case !ok:
		return gateway.Device{}, fmt.Errorf("%q: %w", name, gateway.ErrUnknownDevice)
	case d.Status == store.Disabled:
		return gateway.Device{}, fmt.Errorf("%q: %w", name, gateway.ErrDeviceDisabled)
	}
	return gateway.Device{ID: d.ID, Name: d.Name}, nil
}

func (r storeRegistry) SourcePosition(ctx context.Context, source string) (string, bool, error) {
	return r.s.SourcePosition(ctx, source)
}

func (r storeRegistry) SaveSourcePosition(ctx context.Context, source, position string) error {
	return r.s.SaveSourcePosition(ctx, source, position)
}

// ackChan hands acknowledgements to the test.
type ackChan chan gateway.Ack

func (c ackChan) HandleAck(_ context.Context, a gateway.Ack) error {
	select {
	case c <- a:
	default:
	}
	return nil
}

// vigil is a gateway writing through a real Batcher into a real store.
type vigil struct {
	store   *store.Store
	batcher *ingest.Batcher
	gw      *Gateway
	acks    ackChan
}

// startVigil opens a store in a temporary directory, registers devices,
// and starts a Batcher and a gateway on vhost. edit, if not nil, changes
// the gateway's configuration.
func startVigil(tb testing.TB, b *testBroker, vhost string, devices []string, edit func(*Config)) *vigil {
	tb.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	for _, d := range devices {
		if _, err := s.AddDevice(ctx, d, "device-key-"+d); err != nil {
			tb.Fatal(err)
		}
	}
	bt, err := ingest.NewBatcher(ingest.DefaultConfig(), s, nil, testLogger())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := bt.Close(cctx); err != nil {
			tb.Error(err)
		}
	})
	cfg := DefaultConfig()
	cfg.URL, cfg.VHost = b.URL, vhost
	if edit != nil {
		edit(&cfg)
	}
	v := &vigil{store: s, batcher: bt, acks: make(ackChan, 16)}
	v.gw = New(cfg, storeRegistry{s}, bt, v.acks, testLogger())
	if err := v.gw.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := v.gw.Close(); err != nil {
			tb.Error(err)
		}
	})
	waitFor(tb, 20*time.Second, "the gateway to connect", v.gw.Connected)
	return v
}

// storedReadings returns the number of stored readings per device name.
func (v *vigil) storedReadings(tb testing.TB) map[string]int64 {
	tb.Helper()
	rows, err := v.store.DB().Query(`SELECT d.name, count(*) FROM telemetry t JOIN devices d ON d.id = t.device_id GROUP BY d.name`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			tb.Fatal(err)
		}
		out[name] = n
	}
	return out
}

// sendAs sends one message to the telemetry queue as a device user and
// waits for the broker to accept it.
func sendAs(tb testing.TB, b *testBroker, vhost, user, key string, msg *amqp.Message) {
	tb.Helper()
	sendTo(tb, b, vhost, user, key, DefaultSource, msg)
}

// sendTo is sendAs to the address addr.
func sendTo(tb testing.TB, b *testBroker, vhost, user, key, addr string, msg *amqp.Message) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	u, _ := url.Parse(b.DeviceURL())
	u.User = url.UserPassword(user, key)
	conn, err := amqp.Dial(ctx, u.String(), &amqp.ConnOptions{HostName: "vhost:" + vhost})
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close() // closes the sender too (a link close would hang)
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	snd, err := sess.NewSender(ctx, addr, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := snd.Send(ctx, msg, nil); err != nil {
		var le *amqp.LinkError
		if errors.As(err, &le) {
			tb.Fatalf("broker refused the message: %v", err)
		}
		tb.Fatal(err)
	}
}

// adminSession opens a session on vhost as vigil's broker user, on a
// connection closed when the test ends.
func adminSession(ctx context.Context, tb testing.TB, b *testBroker, vhost string) *amqp.Session {
	tb.Helper()
	conn, err := amqp.Dial(ctx, b.URL, &amqp.ConnOptions{HostName: "vhost:" + vhost})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return sess
}
