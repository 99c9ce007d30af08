package amqp

import (
	"net"
	"runtime"
	"sync"
	"time"
)

// coalescer is a net.Conn whose writes are gathered and written to the
// network by one goroutine. go-amqp writes every frame on its own (one
// disposition per message accepted), each a system call and a TCP segment
// the broker must process; through a coalescer, the frames written while
// one write is in the kernel leave together in the next.
//
// Write returns once the bytes are queued. A network error is returned by
// the next Write and closes the connection, so go-amqp's reader fails too
// and the link reconnects; frames queued when it happened are lost, as
// they would be in the kernel's send buffer, and unsettled messages are
// redelivered by the broker.
//
// The coalescer owns the connection's write deadline: a write deadline
// set by the caller would apply to bytes queued before it and written
// after, so it is ignored. crypto/tls, which runs on top of the coalescer
// for amqps://, sets it to now right after queueing its close_notify;
// applied, it made the writer drop that alert and the last frames queued
// before it.
type coalescer struct {
	net.Conn
	mu      sync.Mutex
	space   *sync.Cond // signalled when buf is taken or an error is set
	buf     []byte     // bytes queued for the next write
	err     error      // the first write error, returned from then on
	closing bool
	flushBy time.Time     // once closing: when the writer gives up
	wake    chan struct{} // one pending signal: buf has bytes
	done    chan struct{} // closed when the writer goroutine ends
}

// coalesceMax bounds the bytes queued: Write blocks beyond it.
const coalesceMax = 1 << 20

// coalesceWriteTimeout bounds one network write of the queued bytes, as
// go-amqp's own write timeout would one frame's.
const coalesceWriteTimeout = 30 * time.Second

// SetWriteDeadline is ignored: the writer sets its own (see coalescer).
func (w *coalescer) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only (see coalescer).
func (w *coalescer) SetDeadline(t time.Time) error { return w.Conn.SetReadDeadline(t) }

func newCoalescer(c net.Conn) *coalescer {
	w := &coalescer{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.space = sync.NewCond(&w.mu)
	go w.writer()
	return w
}

// Write queues p for the writer goroutine.
func (w *coalescer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.buf) >= coalesceMax && w.err == nil && !w.closing {
		w.space.Wait()
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.closing {
		return 0, net.ErrClosed
	}
	w.buf = append(w.buf, p...)
	select {
	case w.wake <- struct{}{}:
	default: // a signal is already pending
	}
	return len(p), nil
}

func (w *coalescer) writer() {
	defer close(w.done)
	var out []byte
	for range w.wake {
		// Let the goroutines that are about to write (go-amqp's writer
		// draining its queue) run first, so that more leaves in one write.
		runtime.Gosched()
		w.mu.Lock()
		out, w.buf = w.buf, out[:0]
		deadline := time.Now().Add(coalesceWriteTimeout)
		if w.closing && w.flushBy.Before(deadline) {
			deadline = w.flushBy
		}
		w.mu.Unlock()
		w.space.Broadcast()
		if len(out) == 0 {
			continue
		}
		_ = w.Conn.SetWriteDeadline(deadline)
		if _, err := w.Conn.Write(out); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			w.space.Broadcast()
			w.Conn.Close()
			return
		}
	}
}

// Close writes what is queued (for at most a second) and closes the
// connection.
func (w *coalescer) Close() error {
	w.mu.Lock()
	if !w.closing {
		w.closing = true
		w.flushBy = time.Now().Add(time.Second)
		close(w.wake)
	}
	flushBy := w.flushBy
	w.mu.Unlock()
	w.space.Broadcast()
	_ = w.Conn.SetWriteDeadline(flushBy) // a write in progress too
	<-w.done
	return w.Conn.Close()
}
