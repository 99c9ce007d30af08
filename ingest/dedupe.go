package ingest

import (
	"sort"
	"time"

	"github.com/vigil-iot/vigil/store"
)

// dedupe remembers the keys of committed messages, oldest first, so that
// forgetting the ones past the dedupe window costs only their number (not a
// walk over every key) and memory stays bounded: beyond max keys the oldest
// is forgotten early, which shortens the window the batcher can honour to
// max / message rate. It is owned by the batcher's run goroutine.
type dedupe struct {
	max     int
	ids     map[store.MessageKey]struct{}
	queue   []dedupeEntry // in the order added; queue[head:] are remembered
	head    int
	evicted int64 // keys forgotten before their window ended
}

// dedupeEntry is a remembered key and when its message was received.
type dedupeEntry struct {
	key store.MessageKey
	at  int64 // Unix nanoseconds
}

// newDedupe returns a dedupe holding at most max keys, starting with the
// newest of recent.
func newDedupe(max int, recent map[store.MessageKey]time.Time) *dedupe {
	d := &dedupe{max: max, ids: make(map[store.MessageKey]struct{}, min(len(recent), max))}
	entries := make([]dedupeEntry, 0, len(recent))
	for k, at := range recent {
		entries = append(entries, dedupeEntry{k, at.UnixNano()})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].at < entries[j].at })
	if len(entries) > max {
		entries = entries[len(entries)-max:]
	}
	for _, e := range entries {
		d.add(e.key, e.at)
	}
	return d
}

// has reports whether k is remembered.
func (d *dedupe) has(k store.MessageKey) bool {
	_, ok := d.ids[k]
	return ok
}

// len returns the number of keys remembered.
func (d *dedupe) len() int { return len(d.ids) }

// add remembers k, received at (Unix nanoseconds), forgetting the oldest
// key first if max are already remembered.
func (d *dedupe) add(k store.MessageKey, at int64) {
	if _, ok := d.ids[k]; ok {
		return
	}
	if len(d.ids) >= d.max {
		d.pop()
		d.evicted++
	}
	d.ids[k] = struct{}{}
	d.queue = append(d.queue, dedupeEntry{k, at})
}

// forget drops the keys of messages received before t. Keys are in commit
// order, which follows reception order to within a batch, so a key may
// outlive its window by the length of a batch.
func (d *dedupe) forget(t time.Time) {
	before := t.UnixNano()
	for d.head < len(d.queue) && d.queue[d.head].at < before {
		d.pop()
	}
}

// pop forgets the oldest key.
func (d *dedupe) pop() {
	delete(d.ids, d.queue[d.head].key)
	d.queue[d.head] = dedupeEntry{}
	d.head++
	// Reuse the slice's front once half of it is spent.
	if d.head >= 1024 && d.head*2 >= len(d.queue) {
		n := copy(d.queue, d.queue[d.head:])
		clear(d.queue[n:])
		d.queue, d.head = d.queue[:n], 0
	}
}
