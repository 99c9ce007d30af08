package gateway

import (
	"strconv"
	"testing"
	"time"
)

// TestThrottle: five failures in a row are free, then each costs a wait
// that doubles up to the maximum; a success forgets them; another host, or
// another device from the same host, is not held back.
func TestThrottle(t *testing.T) {
	th := NewThrottle()
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	th.now = func() time.Time { return now }
	for i := range 5 {
		if w := th.Wait("d1", "10.0.0.9"); w != 0 {
			t.Fatalf("attempt %d held back %s", i+1, w)
		}
		th.Failed("d1", "10.0.0.9")
	}
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if w := th.Wait("d1", "10.0.0.9"); w != want {
			t.Fatalf("wait %s, want %s", w, want)
		}
		now = now.Add(want)
		th.Failed("d1", "10.0.0.9")
	}
	if w := th.Wait("d1", "10.0.0.9"); w != 8*time.Second {
		t.Fatalf("after 8 failures: wait %s, want 8s", w)
	}
	if th.Wait("d1", "10.0.0.7") != 0 || th.Wait("d2", "10.0.0.9") != 0 {
		t.Fatal("another host, or another device, held back")
	}
	for range 40 {
		th.Failed("d1", "10.0.0.9")
	}
	if w := th.Wait("d1", "10.0.0.9"); w != th.Max {
		t.Fatalf("after many failures: wait %s, want the maximum %s", w, th.Max)
	}
	th.Succeeded("d1", "10.0.0.9")
	if w := th.Wait("d1", "10.0.0.9"); w != 0 {
		t.Fatalf("after a success: wait %s", w)
	}
	if Host("[::1]:4000") != "::1" || Host("10.0.0.9:1883") != "10.0.0.9" || Host("pipe") != "pipe" {
		t.Fatal("Host")
	}
}

// TestThrottleIsBounded: the pairs followed stay bounded, those still
// waiting kept; those whose wait is long over make room for new ones.
func TestThrottleIsBounded(t *testing.T) {
	th := NewThrottle()
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	th.now = func() time.Time { return now }
	for i := range maxThrottled + 10 {
		for range th.Free + 1 { // each pair waiting
			th.Failed("d", strconv.Itoa(i))
		}
	}
	if len(th.entries) != maxThrottled {
		t.Fatalf("%d pairs followed, want at most %d", len(th.entries), maxThrottled)
	}
	now = now.Add(2 * th.Max)
	th.Failed("d", "new host")
	if _, ok := th.entries[throttleKey{"d", "new host"}]; !ok || len(th.entries) != 1 {
		t.Fatalf("stale pairs not forgotten for a new one: %d followed", len(th.entries))
	}
}
