package amqp

import (
	"context"
	"fmt"
	"time"
)

// A telemetry link can stop for good on RabbitMQ 3.10 with go-amqp.
// go-amqp tops a link's credit up only once the messages settled since the
// last top-up reach the credit it believes is left, and counts that credit
// down with each message received, in an unsigned integer. RabbitMQ 3.10
// grants the credit of a flow from its own delivery count rather than the
// receiver's, so the messages already on the wire when a flow leaves are
// delivered on top of it. When a consumer holds most of its credit
// unsettled (vigil holds a batch until it commits), the credit go-amqp
// believes is left goes below zero and wraps around, no settlement count
// reaches it again, and the broker, its credit spent, sends nothing more:
// the link stands still with messages in the queue and none unsettled.
// TestSmallMessagesDoNotStallTheLink stopped part-way in about half of its
// drains of 20,000 ten-reading messages. Two things keep it away. First,
// a message received while half the credit is held unsettled is not
// patient (gateway.Message.Patient), so its batch commits within ingest's
// short delay and the settlements let go-amqp top the credit up before it
// runs out: nine drains of that test with nothing else stalled none.
// Second, since that only makes a stall unlikely, vigil watches (granting
// credit by hand would need a drain to learn where the broker stands, and
// a drain on a classic queue crashes RabbitMQ 3.10's session:
// rabbit_classic_queue:handle_event has no clause for send_drained): a
// source that has delivered at least its credit on this link (a stall
// needs the whole credit delivered), holds nothing unsettled and has
// delivered nothing for Config.StallAfter ends the connection, and the
// next one starts with fresh credit on both sides. Nothing is lost
// (nothing is unsettled, and the queue keeps its messages). A busy queue
// that simply ran empty costs one reconnection after its last message; a
// quiet one, whose link has not yet delivered its credit, none.

// watchStall ends the link, with an error saying why, when its source
// looks stalled; it returns the link's cause when ctx ends.
func (src *source) watchStall(ctx context.Context) error {
	after := src.l.g.cfg.StallAfter
	t := time.NewTicker(after / 4)
	defer t.Stop()
	got := func() int64 { return src.count.received.Load() - src.before } // on this link
	last, since := got(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case now := <-t.C:
			n := got()
			if n != last {
				last, since = n, now
				continue
			}
			if n >= int64(src.l.g.cfg.Credit) && src.held.Load() == 0 && now.Sub(since) >= after {
				src.l.g.stalls.Add(1)
				return fmt.Errorf("%s has delivered nothing for %s, with nothing unsettled, after %d messages on this connection: reconnecting in case the broker has stopped honouring the link's credit (RabbitMQ 3.10 with go-amqp; the queue keeps its messages)", src.addr, after, n)
			}
		}
	}
}
