package proxytest

import (
	"crypto/tls"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards the connections it accepts to a target.
type Proxy struct {
	// Addr is where clients connect.
	Addr string
	// Handshakes counts the TLS handshakes that succeeded (with a TLS
	// listener).
	Handshakes atomic.Int64

	held chan struct{}
	once sync.Once

	mu   sync.Mutex
	sent []byte // the first recordMax bytes clients sent, all connections together
}

// recordMax bounds what a Proxy keeps of what clients send.
const recordMax = 1 << 20

// Start forwards the connections ln accepts to target until the test
// ends. With a TLS listener (tls.NewListener) it completes each handshake
// before dialling the target, and forwards the plain stream.
func Start(tb testing.TB, ln net.Listener, target string) *Proxy {
	tb.Helper()
	tb.Cleanup(func() { ln.Close() })
	p := &Proxy{Addr: ln.Addr().String(), held: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p
}

// Listen returns a listener on a free local port, or fails the test.
func Listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

func (p *Proxy) serve(c net.Conn, target string) {
	defer c.Close()
	if tc, ok := c.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			return
		}
		p.Handshakes.Add(1)
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(c, up); c.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		if room := recordMax - len(p.sent); room > 0 {
			p.sent = append(p.sent, buf[:min(n, room)]...)
		}
		p.mu.Unlock()
		select {
		case <-p.held: // lost
		default:
			if _, err := up.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}

// ClientSent returns what clients have sent through the proxy so far (the
// first MB, the connections' bytes in the order they arrived), for a test
// to look for a frame a client must have sent.
func (p *Proxy) ClientSent() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sent)
}

// Hold drops everything clients send from now on; what the target sends
// still reaches them, and connections stay open.
func (p *Proxy) Hold() { p.once.Do(func() { close(p.held) }) }
