package amqp

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// Positions keeps how far log-like sources have been read. A source is a
// log when the broker keeps what it delivered and stamps every message with
// its offset (the x-opt-offset annotation): an Event Hubs partition, IoT
// Hub's built-in endpoint. Accepting a message does not remove it there,
// and a new link reads from the start of the log's retention unless told
// where to resume. When the Registry given to New implements Positions,
// the gateway saves, per source, the offset of the last message of the
// unbroken run it has settled (each stored, dead-lettered or refused), and
// a new link — after a reconnection or a restart — asks for the messages
// after it. A queue (RabbitMQ) stamps no offset, and nothing is saved.
type Positions interface {
	// SourcePosition returns the position saved for source, and false
	// when there is none.
	SourcePosition(ctx context.Context, source string) (string, bool, error)
	// SaveSourcePosition records position as how far source has been read.
	SaveSourcePosition(ctx context.Context, source, position string) error
}

// offsetAnnotation is the message annotation in which Event Hubs gives an
// event's offset in its partition.
const offsetAnnotation = "x-opt-offset"

// resumeFilter is the source filter that has Event Hubs deliver the events
// of a partition after the one at offset (its documented selector on the
// offset annotation).
func resumeFilter(offset string) amqp.LinkFilter {
	return amqp.NewSelectorFilter(fmt.Sprintf("amqp.annotation.%s > '%s'", offsetAnnotation, offset))
}

// logOffset returns a message's offset in its log, and false when it has
// none that can be resumed after.
func logOffset(msg *amqp.Message) (string, bool) {
	var off string
	switch v := msg.Annotations[offsetAnnotation].(type) {
	case string:
		off = v
	case int64:
		off = strconv.FormatInt(v, 10)
	case uint64:
		off = strconv.FormatUint(v, 10)
	default:
		return "", false
	}
	// It goes into a filter expression between quotes.
	if off == "" || len(off) > 64 || strings.ContainsFunc(off, func(r rune) bool { return r == '\'' || r < ' ' }) {
		return "", false
	}
	return off, true
}

// mark is a received message's place in its source's frontier.
type mark struct {
	index  uint64
	offset string
	ok     bool // the message has an offset and is followed
}

// frontier follows the messages of one source that carry an offset, in the
// order they were received on one link, and says how far they are all
// settled. Messages are settled out of order (several goroutines decode
// them, a dead letter may be committed before the batch received before
// it), so the offset to resume after is that of the last message before
// the first one not settled.
type frontier struct {
	mu      sync.Mutex
	next    uint64            // the index the next message gets
	first   uint64            // the index of the earliest message not settled
	settled map[uint64]string // settled messages from first on: index → offset
	offset  string            // the offset of the message before first ("" for none)
	saved   string            // offset when it was last saved
}

func newFrontier() *frontier { return &frontier{settled: map[uint64]string{}} }

// add gives a received message its place.
func (f *frontier) add(offset string) mark {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := mark{index: f.next, offset: offset, ok: true}
	f.next++
	return m
}

// settle records that the message at m is settled and moves the frontier
// past every settled message that follows it without a gap.
func (f *frontier) settle(m mark) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.index < f.first {
		return // settled twice
	}
	f.settled[m.index] = m.offset
	for {
		off, ok := f.settled[f.first]
		if !ok {
			return
		}
		delete(f.settled, f.first)
		f.first++
		f.offset = off
	}
}

// unsaved returns the offset to save, and false when it is saved already.
func (f *frontier) unsaved() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.offset, f.offset != f.saved
}

func (f *frontier) markSaved(off string) {
	f.mu.Lock()
	f.saved = off
	f.mu.Unlock()
}

// savePosition saves how far the source's messages are settled, when that
// moved since the last save. A failure is logged and tried again at the
// next save: until then a restart reads some messages again, which are
// recognised by their ids.
func (src *source) savePosition() {
	g := src.l.g
	if g.positions == nil {
		return
	}
	off, ok := src.front.unsaved()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.positions.SaveSourcePosition(ctx, src.addr, off); err != nil {
		g.log.Warn("saving how far a source has been read", "source", src.addr, "offset", off, "err", err)
		return
	}
	src.front.markSaved(off)
}
