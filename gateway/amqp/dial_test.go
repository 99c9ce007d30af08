package amqp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/internal/proxytest"
	"github.com/vigil-iot/vigil/internal/tlstest"
)

// gatedConn is the network side of a coalescer in a test: it records
// every Write, and the first one blocks until release is closed.
type gatedConn struct {
	net.Conn // nil: only Write, Close and SetWriteDeadline are used
	release  chan struct{}
	fail     error // returned by every Write when set

	mu     sync.Mutex
	writes [][]byte
	closed bool
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	first := len(c.writes) == 0
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	if first {
		<-c.release
	}
	if c.fail != nil {
		return 0, c.fail
	}
	return len(p), nil
}

func (c *gatedConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *gatedConn) SetWriteDeadline(time.Time) error { return nil }

func (c *gatedConn) snapshot() (writes [][]byte, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...), c.closed
}

// TestCoalescerGathersWrites: frames written while a write is in progress
// leave together, in order, in one write; Close writes what is queued
// before closing.
func TestCoalescerGathersWrites(t *testing.T) {
	gc := &gatedConn{release: make(chan struct{})}
	w := newCoalescer(gc)
	var want bytes.Buffer
	frame := func(i int) {
		t.Helper()
		p := fmt.Appendf(nil, "frame-%03d;", i)
		want.Write(p)
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	frame(0)
	// The writer goroutine takes frame 0 and blocks in the network write.
	for {
		if ws, _ := gc.snapshot(); len(ws) == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < 100; i++ {
		frame(i)
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	close(gc.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	ws, isClosed := gc.snapshot()
	if len(ws) != 2 {
		t.Fatalf("%d network writes for 100 frames, want 2 (the first, then the 99 queued behind it)", len(ws))
	}
	if got := bytes.Join(ws, nil); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("the network got %q, want %q", got, want.Bytes())
	}
	if !isClosed {
		t.Fatal("Close did not close the connection")
	}
	if _, err := w.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// TestCoalescerReportsWriteErrors: a failed network write closes the
// connection and every later Write returns the error.
func TestCoalescerReportsWriteErrors(t *testing.T) {
	broken := errors.New("connection reset by peer")
	gc := &gatedConn{release: make(chan struct{}), fail: broken}
	close(gc.release)
	w := newCoalescer(gc)
	if _, err := w.Write([]byte("frame")); err != nil {
		t.Fatalf("first write is only queued: %v", err)
	}
	<-w.done // the writer goroutine ends on the error
	if _, err := w.Write([]byte("next")); !errors.Is(err, broken) {
		t.Fatalf("write after a network error: %v, want %v", err, broken)
	}
	if _, closed := gc.snapshot(); !closed {
		t.Fatal("the connection was not closed after the network error")
	}
}

// TestCoalescerOwnsTheWriteDeadline: a write deadline the caller sets
// does not cut bytes already queued. crypto/tls, on top of the coalescer
// for amqps://, sets the deadline to now right after queueing its
// close_notify; when the coalescer let that reach its socket, the writer's
// next write failed and what was queued — the last frames, the alert — was
// lost.
func TestCoalescerOwnsTheWriteDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	w := newCoalescer(nc)
	defer w.Close()
	if err := w.SetWriteDeadline(time.Now()); err != nil { // as tls.Conn.Close does
		t.Fatal(err)
	}
	want := []byte("the last frames")
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the peer read %q, %v; want %q", got, err, want)
	}
}

// TestCoalescerUnderTLSDeliversTheLastBytes: with TLS on top of the
// coalescer, as for amqps://, what is written right before Close — the
// last frames, then TLS's close_notify — reaches the peer, which reads
// every byte and a clean end of stream.
func TestCoalescerUnderTLSDeliversTheLastBytes(t *testing.T) {
	cert := tlstest.SelfSigned(t, "peer")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		got []byte
		err error
	}
	received := make(chan result, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			got, err := io.ReadAll(tls.Server(c, cert.ServerConfig(t))) // nil error: close_notify came
			c.Close()
			received <- result{got, err}
		}
	}()
	clientCfg := cert.ClientConfig()
	clientCfg.ServerName = "localhost"
	for round := range 5 {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(newCoalescer(nc), clientCfg)
		want := bytes.Repeat(fmt.Appendf(nil, "frame-%02d;", round), 2000)
		if _, err := tc.Write(want); err != nil {
			t.Fatal(err)
		}
		if err := tc.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
		if r := <-received; r.err != nil || !bytes.Equal(r.got, want) {
			t.Fatalf("round %d: the peer read %d of %d bytes, then %v; want all of them and a clean close_notify", round, len(r.got), len(want), r.err)
		}
	}
}

// TestAMQPSLink: with an amqps:// URL vigil links to the broker over TLS
// (here a TLS proxy in front of the test broker), verifying the broker's
// certificate against Config.TLS, and telemetry flows through it.
func TestAMQPSLink(t *testing.T) {
	b := needBroker(t)
	names := []string{"tls-dev-1"}
	vhost, keys := b.Provision(t, names...)
	cert := tlstest.SelfSigned(t, "broker")
	u, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := proxytest.Start(t, tls.NewListener(proxytest.Listen(t), cert.ServerConfig(t)), u.Host)
	u.Scheme, u.Host = "amqps", proxy.Addr

	// A client that does not trust the certificate is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := dial(ctx, u.String(), nil, amqp.ConnOptions{HostName: "vhost:" + vhost}); err == nil {
		c.Close()
		t.Fatal("dialled a broker whose certificate is not trusted")
	}

	v := startVigil(t, b, vhost, names, func(c *Config) { c.URL, c.TLS = u.String(), cert.ClientConfig() })
	if proxy.Handshakes.Load() == 0 {
		t.Fatal("the gateway connected without a TLS handshake at the proxy")
	}
	msg := amqp.NewMessage([]byte(`{"temperature": 70.5}`))
	msg.Properties = &amqp.MessageProperties{MessageID: "tls-1", UserID: []byte(names[0])}
	sendAs(t, b, vhost, names[0], keys[names[0]], msg)
	waitFor(t, 20*time.Second, "the reading to be stored", func() bool { return v.storedReadings(t)[names[0]] == 1 })
}
