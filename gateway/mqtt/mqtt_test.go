package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/sim"
)

// keys is a fixed registry: device name → key; "off" is disabled.
type keys map[string]string

func (k keys) AuthenticateDevice(name, key string) (gateway.Device, error) {
	want, ok := k[name]
	switch {
	case !ok:
		return gateway.Device{}, gateway.ErrUnknownDevice
	case name == "off":
		return gateway.Device{}, gateway.ErrDeviceDisabled
	case key != want:
		return gateway.Device{}, gateway.ErrWrongKey
	}
	return gateway.Device{ID: int32(len(name)), Name: name}, nil
}

// heldSink hands every message to the test, which settles it.
type heldSink chan gateway.Message

func (s heldSink) Submit(_ context.Context, m gateway.Message) error { s <- m; return nil }

type ackSink chan gateway.Ack

func (s ackSink) HandleAck(_ context.Context, a gateway.Ack) error { s <- a; return nil }

func start(t *testing.T) (*Gateway, heldSink, ackSink) {
	t.Helper()
	sink, acks := make(heldSink, 16), make(ackSink, 16)
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	g := New(cfg, keys{"dev-1": "key-one-1", "dev-2": "key-two-2", "off": "key-off-0"}, sink, acks, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, sink, acks
}

func connect(t *testing.T, g *Gateway, name, key string, onPublish func(*paho.Publish)) *paho.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sim.Connect(ctx, g.Addr(), name, key, onPublish)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c
}

func TestConnectionsRefused(t *testing.T) {
	g, _, _ := start(t)
	tests := []struct {
		name, dev, key string
		counter        func(Stats) int64
	}{
		{"unknown device", "dev-9", "key-one-1", func(s Stats) int64 { return s.RefusedUnknown }},
		{"wrong key", "dev-1", "key-two-2", func(s Stats) int64 { return s.RefusedKey }},
		{"disabled", "off", "key-off-0", func(s Stats) int64 { return s.RefusedOff }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.counter(g.Stats())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := sim.Connect(ctx, g.Addr(), tc.dev, tc.key, nil)
			if err == nil {
				c.Disconnect(&paho.Disconnect{})
				t.Fatal("connection accepted")
			}
			if got := tc.counter(g.Stats()); got != before+1 {
				t.Fatalf("counter %d, want %d", got, before+1)
			}
		})
	}
	if g.Stats().Connected != 0 {
		t.Fatal("a refused device was counted as connected")
	}
}

func TestPubackWaitsForSettle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		settle  error
		wantErr bool
	}{{"stored", nil, false}, {"store failed", errors.New("disk full"), true}} {
		t.Run(tc.name, func(t *testing.T) {
			g, sink, _ := start(t)
			c := connect(t, g, "dev-1", "key-one-1", nil)
			done := make(chan error, 1)
			go func() {
				_, err := c.Publish(context.Background(), &paho.Publish{QoS: 1, Topic: "devices/dev-1/messages/events/%24.mid=m-1&src=test", Payload: []byte(`{"t": 1}`)})
				done <- err
			}()
			m := <-sink
			if m.Device.Name != "dev-1" || m.Device.ID != 5 || m.ID != "m-1" || string(m.Body) != `{"t": 1}` {
				t.Fatalf("message %+v", m)
			}
			select {
			case err := <-done:
				t.Fatalf("publish completed (%v) before the message was settled", err)
			default:
			}
			m.Settle(tc.settle)
			if err := <-done; (err != nil) != tc.wantErr {
				t.Fatalf("publish returned %v, want error: %v", err, tc.wantErr)
			}
		})
	}
}

func TestDeviceIsConfinedToItsTopics(t *testing.T) {
	g, sink, _ := start(t)
	c := connect(t, g, "dev-1", "key-one-1", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: "devices/dev-2/messages/events/", Payload: []byte(`{"t": 1}`)}); err == nil {
		t.Fatal("dev-1 published as dev-2")
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/dev-2/messages/devicebound/#", QoS: 1},
		{Topic: "devices/+/messages/devicebound/#", QoS: 1},
		{Topic: "devices/dev-1/messages/devicebound/#", QoS: 1},
	}})
	if err != nil && sa == nil {
		t.Fatal(err)
	}
	if len(sa.Reasons) != 3 || sa.Reasons[0] < 0x80 || sa.Reasons[1] < 0x80 || sa.Reasons[2] >= 0x80 {
		t.Fatalf("suback reasons %v: want the two foreign filters refused and the own one granted", sa.Reasons)
	}
	select {
	case m := <-sink:
		t.Fatalf("a denied publish reached the sink: %+v", m)
	default:
	}
	if g.Stats().Denied != 3 {
		t.Fatalf("denied %d, want 3", g.Stats().Denied)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	g, _, acks := start(t)
	got := make(chan *paho.Publish, 1)
	c := connect(t, g, "dev-2", "key-two-2", func(p *paho.Publish) { got <- p })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := gateway.Command{ID: "42", Device: "dev-2", Name: "reduce_load", Payload: json.RawMessage(`{"percent":30}`)}
	if err := g.Send(ctx, cmd); !errors.Is(err, gateway.ErrDeviceOffline) {
		t.Fatalf("send before subscribing: %v, want ErrDeviceOffline", err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev-2/messages/devicebound/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := g.Send(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	p := <-got
	if !strings.HasPrefix(p.Topic, "devices/dev-2/messages/devicebound/") || !strings.Contains(p.Topic, "%24.mid=42") {
		t.Fatalf("command topic %q", p.Topic)
	}
	var body struct {
		ID, Name string
		Payload  map[string]int
	}
	if err := json.Unmarshal(p.Payload, &body); err != nil || body.ID != "42" || body.Name != "reduce_load" || body.Payload["percent"] != 30 {
		t.Fatalf("command body %s (%v)", p.Payload, err)
	}
	// The client's PUBACK of the command reports it delivered, before the
	// device has answered.
	if a := <-acks; a.CommandID != "42" || a.Status != gateway.AckDelivered || a.Device.Name != "dev-2" {
		t.Fatalf("delivery report %+v", a)
	}
	if _, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.AckTopic("dev-2", "42", "completed"), Payload: []byte(`{"detail":"done"}`)}); err != nil {
		t.Fatal(err)
	}
	a := <-acks
	if a.CommandID != "42" || a.Status != gateway.AckCompleted || a.Device.Name != "dev-2" || a.Detail != "done" {
		t.Fatalf("ack %+v", a)
	}
}

// TestInflightCommandsForgotten: the packet-to-command map the delivery
// reports use forgets a publish mochi dropped and every publish of a
// session that expired, so devices that never come back leak nothing.
func TestInflightCommandsForgotten(t *testing.T) {
	g := New(DefaultConfig(), nil, nil, nil, nil)
	h := &hook{g: g}
	a, b := &mochi.Client{ID: "dev-a"}, &mochi.Client{ID: "dev-b"}
	publish := func(cl *mochi.Client, packet uint16, cmd string) {
		c := gateway.Command{ID: cmd, Device: cl.ID, Name: "reduce_load"}
		h.OnQosPublish(cl, packets.Packet{PacketID: packet, TopicName: CommandTopic(c)}, 0, 0)
	}
	publish(a, 1, "10")
	publish(a, 2, "11")
	publish(b, 1, "20")
	count := func() (n int) {
		g.inflight.Range(func(any, any) bool { n++; return true })
		return n
	}
	if n := count(); n != 3 {
		t.Fatalf("%d publishes remembered, want 3", n)
	}
	h.OnQosDropped(a, packets.Packet{PacketID: 1})
	if _, ok := g.inflight.Load(inflightKey{"dev-a", 1}); ok || count() != 2 {
		t.Fatal("a dropped publish is still remembered")
	}
	h.OnClientExpired(a)
	if _, ok := g.inflight.Load(inflightKey{"dev-b", 1}); !ok || count() != 1 {
		t.Fatalf("after dev-a expired: %d remembered, dev-b's kept: %v", count(), ok)
	}
}

// persistentConnect connects name with a session that outlives the
// connection (MQTT 5 clean start off, session expiry 5 minutes).
func persistentConnect(t *testing.T, g *Gateway, name, key string, onPublish func(*paho.Publish)) *paho.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := net.Dial("tcp", g.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: name, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { onPublish(pr.Packet); return true, nil },
	}})
	expiry := uint32(300)
	if _, err := c.Connect(ctx, &paho.Connect{
		ClientID: name, Username: name, UsernameFlag: true, Password: []byte(key), PasswordFlag: true,
		KeepAlive: 60, CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry},
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCommandsExpireInTheBroker: commands carry their expiry as MQTT 5
// message expiry; one that waits in an offline device's session past it is
// dropped by the broker, so the device never runs it late, while a command
// still valid is delivered when the device comes back, with the seconds it
// has left. A command already expired is not sent.
func TestCommandsExpireInTheBroker(t *testing.T) {
	g, _, _ := start(t)
	c := persistentConnect(t, g, "dev-1", "key-one-1", func(*paho.Publish) {})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev-1/messages/devicebound/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the device to be disconnected", func() bool { return atomic.LoadInt64(&g.server.Info.ClientsConnected) == 0 })

	now := time.Now()
	short := gateway.Command{ID: "short", Device: "dev-1", Name: "reduce_load", Expires: now.Add(time.Second)}
	long := gateway.Command{ID: "long", Device: "dev-1", Name: "reduce_load", Expires: now.Add(time.Minute)}
	for _, cmd := range []gateway.Command{short, long} {
		if err := g.Send(ctx, cmd); err != nil { // the session's subscription takes them
			t.Fatal(err)
		}
	}
	stale := gateway.Command{ID: "stale", Device: "dev-1", Name: "reduce_load", Expires: now.Add(-time.Second)}
	if err := g.Send(ctx, stale); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("sending an expired command: %v, want an error saying it expired", err)
	}
	// The broker checks its sessions' waiting messages once a second.
	remembered := func(id string) (found bool) {
		g.inflight.Range(func(_, v any) bool { found = found || v == id; return !found })
		return found
	}
	waitFor("the broker to drop the expired command", func() bool { return !remembered("short") })
	if !remembered("long") {
		t.Fatal("the command still valid was dropped too")
	}

	got := make(chan *paho.Publish, 4)
	persistentConnect(t, g, "dev-1", "key-one-1", func(p *paho.Publish) { got <- p })
	select {
	case p := <-got:
		if !strings.Contains(p.Topic, "%24.mid=long") {
			t.Fatalf("first command after reconnecting: %s, want the one still valid", p.Topic)
		}
		if p.Properties == nil || p.Properties.MessageExpiry == nil || *p.Properties.MessageExpiry == 0 || *p.Properties.MessageExpiry > 60 {
			t.Fatalf("command expiry property %+v, want 1-60 s left", p.Properties)
		}
	case <-ctx.Done():
		t.Fatal("the waiting command was not delivered after the device reconnected")
	}
}

// notRecordedOnce answers the first device acknowledgement with
// gateway.ErrAckNotRecorded, as a controller whose store failed, and hands
// the rest to acks.
type notRecordedOnce struct {
	refused atomic.Bool
	acks    ackSink
}

func (n *notRecordedOnce) HandleAck(ctx context.Context, a gateway.Ack) error {
	if a.Status != gateway.AckDelivered && n.refused.CompareAndSwap(false, true) {
		return errors.Join(gateway.ErrAckNotRecorded, errors.New("disk full"))
	}
	return n.acks.HandleAck(ctx, a)
}

// TestAckNotRecordedIsSentAgain: an acknowledgement vigil could not record
// gets an error PUBACK (MQTT 5), so the device sends it again; the second
// is recorded.
func TestAckNotRecordedIsSentAgain(t *testing.T) {
	handler := &notRecordedOnce{acks: make(ackSink, 16)}
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	g := New(cfg, keys{"dev-1": "key-one-1"}, make(heldSink, 16), handler, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	c := connect(t, g, "dev-1", "key-one-1", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack := &paho.Publish{QoS: 1, Topic: sim.AckTopic("dev-1", "7", "completed")}
	pr, err := c.Publish(ctx, ack)
	if err == nil && (pr == nil || pr.ReasonCode < 0x80) {
		t.Fatalf("PUBACK %+v for an acknowledgement not recorded: want an error reason code", pr)
	}
	if pr != nil && pr.ReasonCode != packets.ErrServerUnavailable.Code {
		t.Fatalf("reason code %#x, want server unavailable (%#x)", pr.ReasonCode, packets.ErrServerUnavailable.Code)
	}
	select {
	case a := <-handler.acks:
		t.Fatalf("acknowledgement %+v passed on although refused", a)
	default:
	}
	if pr, err := c.Publish(ctx, ack); err != nil || pr.ReasonCode >= 0x80 {
		t.Fatalf("the acknowledgement sent again: %+v, %v", pr, err)
	}
	if a := <-handler.acks; a.CommandID != "7" || a.Status != gateway.AckCompleted {
		t.Fatalf("ack %+v", a)
	}
}
