package gateway

import (
	"net"
	"sync"
	"time"
)

// Throttle slows down the guessing of device keys. After Free failed
// sign-ins in a row as one device from one host, that device and host must
// wait before the next attempt, a wait that starts at Base and doubles with
// each further failure, up to Max; a sign-in during the wait is refused
// without its key being checked. A success forgets the pair. The pair, not
// the device alone, is throttled, so that wrong guesses from one host do
// not lock the device out from its own.
//
// The zero value is not ready; use NewThrottle. A Throttle is safe for
// concurrent use.
type Throttle struct {
	// Free is how many failures in a row cost no wait; the next attempt
	// waits.
	Free int
	// Base is the first wait, Max the longest.
	Base, Max time.Duration

	now     func() time.Time
	mu      sync.Mutex
	entries map[throttleKey]*throttleEntry
}

// maxThrottled bounds the pairs a Throttle follows; past it, pairs whose
// wait is over are forgotten first, and a new pair is not followed while
// none can be.
const maxThrottled = 1 << 16

type throttleKey struct{ device, host string }

type throttleEntry struct {
	failures int
	until    time.Time // no attempt before
}

// NewThrottle returns a Throttle that lets 5 failures in a row go, then
// waits 1 s, 2 s, 4 s, … up to 5 minutes.
func NewThrottle() *Throttle {
	return &Throttle{Free: 5, Base: time.Second, Max: 5 * time.Minute, now: time.Now, entries: map[throttleKey]*throttleEntry{}}
}

// Host returns the host of a remote address "host:port", or the address
// itself when it has no port.
func Host(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// Wait returns how long device must wait before it may try to sign in
// again from host; 0 means it may now.
func (t *Throttle) Wait(device, host string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[throttleKey{device, host}]
	if !ok {
		return 0
	}
	return max(0, e.until.Sub(t.now()))
}

// Failed records a failed sign-in as device from host.
func (t *Throttle) Failed(device, host string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := throttleKey{device, host}
	e, ok := t.entries[k]
	if !ok {
		if len(t.entries) >= maxThrottled && !t.prune() {
			return
		}
		e = &throttleEntry{}
		t.entries[k] = e
	}
	e.failures++
	if over := e.failures - t.Free + 1; over > 0 {
		wait := t.Max
		if over <= 30 && t.Base<<(over-1) < t.Max {
			wait = t.Base << (over - 1)
		}
		e.until = t.now().Add(wait)
	}
}

// Succeeded forgets the failures of device from host.
func (t *Throttle) Succeeded(device, host string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.entries, throttleKey{device, host})
}

// prune forgets the pairs that may try again now and have waited at least
// Max since (their failures are stale), and reports whether any went.
// t.mu is held.
func (t *Throttle) prune() bool {
	stale := t.now().Add(-t.Max)
	n := len(t.entries)
	for k, e := range t.entries {
		if e.until.Before(stale) {
			delete(t.entries, k)
		}
	}
	return len(t.entries) < n
}
