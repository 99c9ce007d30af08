package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/store"
)

func key(i int) store.MessageKey {
	return store.MessageKey{Device: int32(i % 3), ID: fmt.Sprint("m-", i)}
}

// TestDedupeForgetsByAgeAndSize: keys are forgotten once older than the
// window, oldest first, and beyond max the oldest goes early and is counted.
func TestDedupeForgetsByAgeAndSize(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	d := newDedupe(5000, nil)
	for i := range 4000 {
		d.add(key(i), t0.Add(time.Duration(i)*time.Second).UnixNano())
	}
	d.add(key(10), t0.Add(time.Hour).UnixNano()) // already there: no change
	d.forget(t0.Add(1000 * time.Second))
	if d.len() != 3000 || d.has(key(999)) || !d.has(key(1000)) || !d.has(key(3999)) {
		t.Fatalf("after forgetting the first 1000 s: %d keys, has 999 %v, 1000 %v", d.len(), d.has(key(999)), d.has(key(1000)))
	}
	for i := 4000; i < 7000; i++ {
		d.add(key(i), t0.Add(time.Duration(i)*time.Second).UnixNano())
	}
	if d.len() != 5000 || d.evicted != 1000 || d.has(key(1999)) || !d.has(key(2000)) || !d.has(key(6999)) {
		t.Fatalf("over the cap: %d keys, %d evicted, has 1999 %v, 2000 %v", d.len(), d.evicted, d.has(key(1999)), d.has(key(2000)))
	}
	if len(d.queue)-d.head != d.len() || d.head > len(d.queue)/2+1024 {
		t.Fatalf("queue holds %d entries from %d for %d keys: its spent front is not reused", len(d.queue), d.head, d.len())
	}
	d.forget(t0.Add(24 * time.Hour))
	if d.len() != 0 {
		t.Fatalf("%d keys left after the window passed all of them", d.len())
	}
}

// TestDedupeStartsWithTheNewest: at a restart with more stored ids than the
// cap, the newest are remembered.
func TestDedupeStartsWithTheNewest(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	recent := map[store.MessageKey]time.Time{}
	for i := range 100 {
		recent[key(i)] = t0.Add(time.Duration(i) * time.Second)
	}
	d := newDedupe(10, recent)
	for i := range 100 {
		if d.has(key(i)) != (i >= 90) {
			t.Fatalf("key %d remembered: %v; want only the newest 10", i, d.has(key(i)))
		}
	}
}

// TestDedupeCapInTheBatcher: with room for 3 ids, a resend of a message
// whose id was pushed out is stored again, and the eviction is counted; a
// resend of a remembered one is not.
func TestDedupeCapInTheBatcher(t *testing.T) {
	s := newStore(t)
	cfg := testConfig(1000, 5*time.Millisecond, 16)
	cfg.DedupeIDs = 3
	b, err := NewBatcher(cfg, s, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	send := func(id string) {
		done := make(chan error, 1)
		if err := b.Submit(context.Background(), gateway.Message{Device: gateway.Device{ID: 1}, ID: id, Body: []byte(`{"a": 1}`), Received: time.Now(), Settle: func(err error) { done <- err }}); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"m-1", "m-2", "m-3", "m-4", "m-4", "m-1"} {
		send(id)
	}
	b.Close(context.Background())
	st := b.Stats()
	if st.Duplicates != 1 || st.DedupeEvicted != 2 {
		t.Fatalf("stats %+v: want 1 duplicate (m-4) and 2 ids evicted (m-1, then m-2 for m-1's return)", st)
	}
	if n := count(t, s, `SELECT count(*) FROM telemetry`); n != 5 {
		t.Fatalf("%d readings stored, want 5 (m-1 twice)", n)
	}
}

// BenchmarkDedupePrune measures one prune tick (the batcher prunes every
// window/60) with 2M remembered ids, a minute's worth of them expiring:
// vigil's queue, oldest first, against walking a map of every id as the
// batcher used to.
func BenchmarkDedupePrune(b *testing.B) {
	const ids, perMinute = 2_000_000, 2_000_000 / 60
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Hour / ids) }
	b.Run("vigil_queue", func(b *testing.B) {
		d := newDedupe(4*ids, nil)
		for i := range ids {
			d.add(key(i), at(i).UnixNano())
		}
		next := ids
		b.ResetTimer()
		for n := 0; b.Loop(); n++ {
			d.forget(at((n + 1) * perMinute))
			b.StopTimer()
			for range perMinute { // the next minute's messages
				d.add(key(next), at(next).UnixNano())
				next++
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/prune")
	})
	b.Run("map_walk", func(b *testing.B) {
		m := make(map[store.MessageKey]time.Time, ids)
		for i := range ids {
			m[key(i)] = at(i)
		}
		next := ids
		b.ResetTimer()
		for n := 0; b.Loop(); n++ {
			cut := at((n + 1) * perMinute)
			for k, t := range m {
				if t.Before(cut) {
					delete(m, k)
				}
			}
			b.StopTimer()
			for range perMinute {
				m[key(next)] = at(next)
				next++
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/prune")
	})
}
