package amqp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/gateway"
)

// Registry resolves a device id to the device vigil knows. LookupDevice
// returns an error wrapping gateway.ErrUnknownDevice or
// gateway.ErrDeviceDisabled when the device may not send. It must be safe
// for concurrent use and fast: it is called once per message.
type Registry interface {
	LookupDevice(name string) (gateway.Device, error)
}

// Stats counts what the gateway did. All fields only grow.
type Stats struct {
	Connects       int64 // connections established to the broker
	Disconnects    int64 // established connections that were lost
	Telemetry      int64 // telemetry messages handed to the sink
	Accepted       int64 // telemetry messages accepted after the sink stored them
	Released       int64 // telemetry messages released for redelivery (the sink could not store them)
	Unsettled      int64 // settlements that could not be sent (the connection gone, or then ended by vigil; the broker redelivers)
	RefusedNoID    int64 // messages rejected for carrying no device identity
	RefusedUnknown int64 // messages rejected from devices vigil does not know
	RefusedOff     int64 // messages rejected from disabled devices
	RefusedBody    int64 // messages rejected whose body is neither AMQP data nor a string
	RefusedClaim   int64 // messages rejected for naming another device in the trust property without being from a trusted gateway
	Invalid        int64 // messages whose body is not telemetry: stored as dead letters, then rejected with the reason
	Commands       int64 // commands the broker accepted
	CommandResets  int64 // command sessions ended to keep at most 256 command links attached (per-device command addresses)
	Acks           int64 // command acknowledgements handed to the AckHandler
	BadAcks        int64 // acknowledgements rejected as malformed or not applied by the handler
	Stalls         int64 // connections ended because a source looked stalled (see Config.StallAfter)
	// Sources counts each telemetry source's messages, by address.
	Sources map[string]SourceStats
}

// SourceStats counts what one telemetry source delivered.
type SourceStats struct {
	Received int64 // messages received on the source, refused ones included
	Accepted int64 // messages accepted after the sink stored them
}

// sourceCounters are the counters behind a SourceStats; they outlive
// connections.
type sourceCounters struct{ received, accepted atomic.Int64 }

// Gateway links vigil to an AMQP 1.0 broker. Create it with New, then
// Start; it is safe for concurrent use.
type Gateway struct {
	cfg Config
	reg Registry
	// positions, when the Registry implements it, keeps how far log-like
	// sources have been read.
	positions Positions
	sink      gateway.Sink
	acks      gateway.AckHandler
	log       *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	link  *link // the current connection; nil while disconnected
	clink *link // the current command connection (with a CommandURL); nil while disconnected

	connects, disconnects, telemetry, accepted, released, unsettled atomic.Int64
	refusedNoID, refusedUnknown, refusedOff, refusedBody, invalid   atomic.Int64
	refusedClaim                                                    atomic.Int64
	commands, ackCount, badAcks, commandResets                      atomic.Int64
	commandResetsDone                                               atomic.Int64 // of commandResets, those whose end completed
	stalls                                                          atomic.Int64

	perSource map[string]*sourceCounters // by address; fixed at New

	// recorded holds the acknowledgements (device and command id) the
	// AckHandler recorded from a feedback message that was then released,
	// another of its acknowledgements not recorded for now: when the
	// broker delivers it again they are skipped, not applied twice (a
	// command already answered refuses a second answer, which would count
	// as a bad acknowledgement). Only the feedback receiver uses it, one
	// connection after the other.
	recorded map[string]struct{}

	// sinkClosed is closed when the sink says it takes no more
	// (gateway.ErrSinkClosed): the receivers stop taking telemetry.
	sinkClosed chan struct{}
	stopTaking sync.Once
}

var _ gateway.Sender = (*Gateway)(nil)

// New builds a gateway; it connects when Start is called.
func New(cfg Config, reg Registry, sink gateway.Sink, acks gateway.AckHandler, log *slog.Logger) *Gateway {
	g := &Gateway{cfg: cfg, reg: reg, sink: sink, acks: acks, log: log.With("component", "amqp"), perSource: map[string]*sourceCounters{}, recorded: map[string]struct{}{}, sinkClosed: make(chan struct{})}
	g.positions, _ = reg.(Positions)
	for _, addr := range cfg.Sources {
		g.perSource[addr] = &sourceCounters{}
	}
	return g
}

// Start validates the configuration and connects to the broker in the
// background. It does not fail when the broker is unreachable: the gateway
// keeps trying (see Connected) until Close.
func (g *Gateway) Start() error {
	if err := g.cfg.Validate(); err != nil {
		return err
	}
	if g.done != nil {
		return errors.New("amqp gateway: already started")
	}
	for _, src := range g.cfg.Sources {
		if transientSource(src) {
			g.log.Warn("telemetry source is not a queue: RabbitMQ gives the link a queue of its own, deleted when vigil disconnects, so what devices send meanwhile is lost",
				"source", src, "hint", "bind a durable queue to the exchange and pass --amqp-source /amq/queue/NAME")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { g.run(ctx, roleTelemetry) })
	if g.cfg.CommandURL != "" {
		wg.Go(func() { g.run(ctx, roleCommands) })
	}
	go func() {
		wg.Wait()
		close(g.done)
	}()
	return nil
}

// role is what a connection carries.
type role int

const (
	// roleTelemetry receives telemetry, and carries commands and their
	// feedback too unless they have a connection of their own.
	roleTelemetry role = iota
	// roleCommands carries commands and their feedback (Config.CommandURL).
	roleCommands
)

func (r role) String() string {
	if r == roleCommands {
		return "commands"
	}
	return "telemetry"
}

// Connected reports whether the gateway is connected to the broker and its
// links are attached (and so is the command connection, when commands
// have one).
func (g *Gateway) Connected() bool {
	return g.current(roleTelemetry) != nil && g.current(g.commandRole()) != nil
}

// Close disconnects from the broker. The dispositions of the messages the
// sink has settled are sent first (for at most settleTimeout), so close
// the sink before the gateway: a message whose batch is committed is then
// accepted, not delivered again. Messages the sink has not settled yet
// stay unsettled and are redelivered to the next consumer.
func (g *Gateway) Close() error {
	if g.cancel == nil {
		return nil
	}
	g.cancel()
	select {
	case <-g.done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("amqp gateway: close: connection did not shut down within 10s")
	}
}

// Stats returns the counters so far.
func (g *Gateway) Stats() Stats {
	st := Stats{
		Connects: g.connects.Load(), Disconnects: g.disconnects.Load(), Telemetry: g.telemetry.Load(),
		Accepted: g.accepted.Load(), Released: g.released.Load(), Unsettled: g.unsettled.Load(),
		RefusedNoID: g.refusedNoID.Load(), RefusedUnknown: g.refusedUnknown.Load(), RefusedOff: g.refusedOff.Load(),
		RefusedBody: g.refusedBody.Load(), RefusedClaim: g.refusedClaim.Load(), Invalid: g.invalid.Load(), Commands: g.commands.Load(), CommandResets: g.commandResets.Load(), Acks: g.ackCount.Load(), BadAcks: g.badAcks.Load(), Stalls: g.stalls.Load(),
		Sources: make(map[string]SourceStats, len(g.perSource)),
	}
	for addr, c := range g.perSource {
		st.Sources[addr] = SourceStats{Received: c.received.Load(), Accepted: c.accepted.Load()}
	}
	return st
}

// addr is the URL a connection of role r goes to, without its password,
// for logs and errors.
func (g *Gateway) addr(r role) string {
	if r == roleCommands {
		return redact(g.cfg.CommandURL)
	}
	return redact(g.cfg.URL)
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid url)"
	}
	return u.Redacted()
}

// run connects the connection of role r, serves until it is lost, and
// reconnects with exponential backoff, until ctx ends.
func (g *Gateway) run(ctx context.Context, r role) {
	const firstBackoff = 100 * time.Millisecond
	backoff := firstBackoff
	for {
		l, err := g.connect(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			what, hint := diagnose(err, g.cfg, r)
			g.log.Warn(what+", retrying", "addr", g.addr(r), "role", r, "vhost", g.vhost(r), "in", backoff, "err", err, "hint", hint)
		} else {
			g.connects.Add(1)
			if r == roleCommands {
				g.log.Info("connected to broker", "addr", g.addr(r), "role", r, "commands", g.cfg.CommandAddress, "feedback", g.cfg.Feedback)
			} else {
				g.log.Info("connected to broker", "addr", g.addr(r), "role", r, "vhost", g.vhost(r), "sources", g.cfg.Sources, "feedback", g.feedback(r))
			}
			g.setLink(r, l)
			up := time.Now()
			err = l.serve(ctx)
			g.setLink(r, nil)
			if ctx.Err() != nil {
				return
			}
			g.disconnects.Add(1)
			// A connection that failed at once (say the sink is closed)
			// keeps backing off; one that served for a while starts over.
			if time.Since(up) > g.cfg.MaxBackoff {
				backoff = firstBackoff
			}
			g.log.Warn("broker connection lost, reconnecting", "addr", g.addr(r), "role", r, "in", backoff, "err", err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, g.cfg.MaxBackoff)
	}
}

func (g *Gateway) setLink(r role, l *link) {
	g.mu.Lock()
	if r == roleCommands {
		g.clink = l
	} else {
		g.link = l
	}
	g.mu.Unlock()
}

// current is the connection of role r, nil while it is down.
func (g *Gateway) current(r role) *link {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r == roleCommands {
		return g.clink
	}
	return g.link
}

// outcome is how a received message is settled.
type outcome int

const (
	accept outcome = iota
	release
	reject
)

// settlement is one pending disposition for a source's settler.
type settlement struct {
	msg     *amqp.Message
	outcome outcome
	err     *amqp.Error // reject only
	mark    mark        // the message's place in its source's frontier
}

// link is one connection to the broker with its session and links. It is
// never closed link by link (RabbitMQ 3.10 does not complete a detach):
// closing the connection closes everything.
type link struct {
	g        *Gateway
	conn     *amqp.Conn
	sess     *amqp.Session
	sources  []*source // one per Config.Sources, in its order
	feedback *amqp.Receiver
	work     chan gateway.Message

	// fail ends serve with its error: the connection is closed and made
	// again.
	fail func(error)
	// draining is closed when vigil closes the gateway: each source's
	// settler then says when it has sent what is queued (source.drained),
	// and the connection is closed after that.
	draining chan struct{}

	smu     sync.Mutex
	csess   *amqp.Session           // the commands' session, begun with the first command
	senders map[string]*commandLink // by address, on csess
}

// connect dials the broker for role r, declares the queues and attaches
// the receivers.
func (g *Gateway) connect(ctx context.Context, r role) (*link, error) {
	dctx, cancel := context.WithTimeout(ctx, g.cfg.DialTimeout)
	defer cancel()
	opts, tlsCfg := g.dialOptions(r)
	target := g.cfg.URL
	if r == roleCommands {
		var err error
		if target, err = g.commandURL(); err != nil {
			return nil, &stageError{stage: "dial", err: err}
		}
	}
	conn, err := dial(dctx, target, tlsCfg, opts)
	if err != nil {
		return nil, &stageError{stage: "dial", err: err}
	}
	l, err := g.attach(dctx, conn, r)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return l, nil
}

// dialOptions returns the connection options and the TLS settings of a
// connection of role r. The broker's virtual host and TLS settings
// (Config.VHost, Config.TLS: a private CA, a client certificate) are the
// telemetry broker's; a command connection signed in with a shared access
// signature goes to IoT Hub, which has no virtual hosts and a public
// certificate, checked against the system's roots.
func (g *Gateway) dialOptions(r role) (amqp.ConnOptions, *tls.Config) {
	opts := amqp.ConnOptions{ContainerID: "vigil-gateway"}
	tlsCfg := g.cfg.TLS
	if r == roleCommands && g.cfg.SAS != nil {
		tlsCfg = nil
	}
	if vhost := g.vhost(r); vhost != "" {
		opts.HostName = "vhost:" + vhost
	}
	return opts, tlsCfg
}

// vhost returns the virtual host the connection of role r asks for: the
// broker's, but none on a command connection signed in with a shared
// access signature (an IoT Hub, not the telemetry broker).
func (g *Gateway) vhost(r role) string {
	if r == roleCommands && g.cfg.SAS != nil {
		return g.cfg.commandVHost
	}
	return g.cfg.VHost
}

// commandURL is the command connection's URL, with a fresh shared access
// signature when Config.SAS is set.
func (g *Gateway) commandURL() (string, error) {
	if g.cfg.SAS == nil {
		return g.cfg.CommandURL, nil
	}
	u, err := url.Parse(g.cfg.CommandURL)
	if err != nil {
		return "", err
	}
	user, pass, err := g.cfg.SAS.credentials(g.cfg.SAS.clock())
	if err != nil {
		return "", err
	}
	u.User = url.UserPassword(user, pass)
	return u.String(), nil
}

func (g *Gateway) attach(ctx context.Context, conn *amqp.Conn, r role) (*link, error) {
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		return nil, &stageError{stage: "session", err: err}
	}
	l := &link{
		g: g, conn: conn, sess: sess, senders: map[string]*commandLink{},
		work: make(chan gateway.Message, g.cfg.Workers), draining: make(chan struct{}),
	}
	// A receiver attach to a missing queue takes the connection down:
	// declare (durable) first, with a sender attach to /queue/NAME.
	for _, addr := range g.addresses(r) {
		if q := queueToDeclare(addr); q != "" {
			if _, err := sess.NewSender(ctx, q, &amqp.SenderOptions{TargetDurability: amqp.DurabilityConfiguration}); err != nil {
				return nil, &stageError{stage: "declare", addr: q, err: err}
			}
		}
	}
	for _, addr := range g.sources(r) {
		opts := g.receiverOptions(addr)
		if g.positions != nil {
			off, ok, err := g.positions.SourcePosition(ctx, addr)
			if err != nil {
				return nil, &stageError{stage: "position", addr: addr, err: err}
			}
			if ok {
				opts.Filters = append(opts.Filters, resumeFilter(off))
				g.log.Info("resuming a log source after the last message settled", "source", addr, "offset", off)
			}
		}
		recv, err := sess.NewReceiver(ctx, addr, opts)
		if err != nil {
			return nil, &stageError{stage: "attach", addr: addr, err: err}
		}
		l.sources = append(l.sources, &source{
			l: l, addr: addr, recv: recv, count: g.perSource[addr], front: newFrontier(), before: g.perSource[addr].received.Load(),
			// At most Credit messages are unsettled at a time, so a
			// settlement never waits for room (twice that for a careless
			// double settle).
			settle:  make(chan settlement, 2*g.cfg.Credit),
			drained: make(chan struct{}),
		})
	}
	if g.feedback(r) == "" {
		return l, nil
	}
	if l.feedback, err = sess.NewReceiver(ctx, g.cfg.Feedback, g.receiverOptions(g.cfg.Feedback)); err != nil {
		return nil, &stageError{stage: "attach", addr: g.cfg.Feedback, err: err}
	}
	return l, nil
}

// sources are the telemetry sources a connection of role r receives from.
func (g *Gateway) sources(r role) []string {
	if r == roleCommands {
		return nil
	}
	return g.cfg.Sources
}

// feedback is the feedback address a connection of role r receives from,
// "" for none: feedback comes on the connection commands go out on.
func (g *Gateway) feedback(r role) string {
	if r != g.commandRole() {
		return ""
	}
	return g.cfg.Feedback
}

// addresses are the sources and the feedback address, if any: what a
// connection of role r receives from.
func (g *Gateway) addresses(r role) []string {
	if fb := g.feedback(r); fb != "" {
		return append(slices.Clone(g.sources(r)), fb)
	}
	return g.sources(r)
}

func (g *Gateway) receiverOptions(addr string) *amqp.ReceiverOptions {
	o := &amqp.ReceiverOptions{Credit: int32(g.cfg.Credit), Name: "vigil" + addr}
	if queueToDeclare(addr) != "" {
		o.SourceDurability = amqp.DurabilityConfiguration // a /queue/NAME attach redeclares: keep it durable
	}
	return o
}

// serve runs the link until the connection fails or ctx ends, and closes
// the connection: when ctx ends (vigil closes the gateway), once the
// dispositions already queued are sent (see drain).
func (l *link) serve(ctx context.Context) error {
	closing := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	fail := func(err error) { cancel(err) }
	l.fail = fail
	for _, src := range l.sources {
		wg.Go(func() { fail(src.receive(ctx)) })
		wg.Go(func() { fail(src.watchStall(ctx)) })
		wg.Go(src.settler)
	}
	if l.feedback != nil {
		wg.Go(func() { fail(l.receiveFeedback(ctx)) })
	}
	if len(l.sources) > 0 {
		for range l.g.cfg.Workers {
			wg.Go(func() { l.submitter(ctx, fail) })
		}
	}
	select {
	case <-ctx.Done():
	case <-l.conn.Done():
		fail(fmt.Errorf("connection closed: %w", l.conn.Err()))
	}
	err := context.Cause(ctx)
	if closing.Err() != nil {
		l.drain(settleTimeout)
	}
	l.conn.Close()
	wg.Wait()
	return err
}

// drain waits, for at most timeout, until each source's settler has sent
// the dispositions queued when vigil closes the gateway: the accepts of
// the sink's last commit, which vigil closes first, are among them, and
// closing the connection before they leave has the broker deliver stored
// messages again.
func (l *link) drain(timeout time.Duration) {
	close(l.draining)
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, src := range l.sources {
		select {
		case <-src.drained:
		case <-l.conn.Done():
			return
		case <-t.C:
			l.g.log.Warn("closing the connection with dispositions not yet sent: the broker delivers those messages again", "source", src.addr, "queued", len(src.settle), "waited", timeout)
			return
		}
	}
}

// source is one telemetry receiver and the queue of dispositions its
// settler sends, in the order the sink settles the messages.
type source struct {
	l      *link
	addr   string
	recv   *amqp.Receiver
	settle chan settlement
	count  *sourceCounters
	front  *frontier    // how far the messages with an offset are settled
	held   atomic.Int64 // messages received on this link and not settled yet
	before int64        // count.received when the link attached

	// drained is closed by the settler once, vigil closing the gateway
	// (link.draining), it has sent every disposition queued.
	drained chan struct{}
}

// receive hands every telemetry message of the source it may accept to the
// link's submitters and rejects the others.
func (src *source) receive(ctx context.Context) error {
	l, g := src.l, src.l.g
	for {
		msg, err := src.recv.Receive(ctx, nil)
		if err != nil {
			return fmt.Errorf("receive %s: %w", src.addr, err)
		}
		src.count.received.Add(1)
		src.held.Add(1)
		var mk mark
		if off, ok := logOffset(msg); ok {
			mk = src.front.add(off)
		}
		select {
		case <-g.sinkClosed:
			// Nothing more is taken: the broker has this one back, and
			// the rest of the credit waits unsettled until vigil closes
			// the connection, which gives them back too.
			src.settleLater(settlement{msg: msg, outcome: release, mark: mk})
			<-ctx.Done()
			return context.Cause(ctx)
		default:
		}
		dev, rej := g.identify(msg)
		if rej != nil {
			src.settleLater(settlement{msg: msg, outcome: reject, err: rej, mark: mk})
			continue
		}
		body, ok := messageBody(msg)
		if !ok {
			g.refusedBody.Add(1)
			src.settleLater(settlement{msg: msg, outcome: reject, mark: mk, err: &amqp.Error{
				Condition: amqp.ErrCondDecodeError, Description: "body must be AMQP data sections or a string value holding JSON telemetry",
			}})
			continue
		}
		if len(body) > g.cfg.MaxBody {
			g.refusedBody.Add(1)
			src.settleLater(settlement{msg: msg, outcome: reject, mark: mk, err: &amqp.Error{
				Condition:   amqp.ErrCondMessageSizeExceeded,
				Description: fmt.Sprintf("body of %d bytes is over the %d-byte limit: split the readings over several messages", len(body), g.cfg.MaxBody),
			}})
			continue
		}
		id := messageID(msg)
		if id == "" && mk.ok {
			// An event without a message-id is still one place in its
			// log: read again after a restart, it is recognised by it.
			id = src.addr + "@" + mk.offset
		}
		m := gateway.Message{
			Device: dev, Source: src.addr, ID: id, Body: body, Received: time.Now().UTC(),
			Settle: src.settleFunc(msg, mk),
			// Patient, so batches fill a row group — unless half the credit
			// is held already: then the batch commits soon, and the
			// settlements let go-amqp top the credit up before it runs out
			// (see watchStall).
			Patient: src.held.Load() < int64(g.cfg.Credit/2),
		}
		select {
		case l.work <- m:
		case <-ctx.Done():
			src.settleLater(settlement{msg: msg, outcome: release, mark: mk})
			return context.Cause(ctx)
		}
	}
}

// submitter hands messages to the sink; decoding happens in Submit, so
// several submitters decode in parallel.
func (l *link) submitter(ctx context.Context, fail func(error)) {
	for {
		select {
		case m := <-l.work:
			if err := l.g.sink.Submit(ctx, m); err != nil {
				if errors.Is(err, gateway.ErrSinkClosed) {
					// vigil is shutting down: take no more, but keep the
					// connection for the last commit's dispositions.
					// Said before the message is given back: a log
					// source ends its link for a release while telemetry
					// is still taken (see follow).
					l.g.stopTaking.Do(func() {
						close(l.g.sinkClosed)
						l.g.log.Info("telemetry no longer taken: vigil is shutting down")
					})
					m.Settle(err) // the sink will never settle it: give it back
					continue
				}
				// The sink will never settle it: give it back, and stop
				// taking messages until a new connection.
				m.Settle(err)
				fail(fmt.Errorf("sink refused telemetry: %w", err))
				return
			}
			l.g.telemetry.Add(1)
		case <-ctx.Done():
			return
		}
	}
}

// settleFunc returns the Settle function of msg: accept on nil; reject
// with the reason (amqp:decode-error) when the sink kept it as a dead
// letter, so a dead-letter exchange on the broker's queue gets it too;
// release on any other error, for the broker to deliver it again. It never
// blocks: the settler goroutine sends the disposition.
func (src *source) settleFunc(msg *amqp.Message, mk mark) func(error) {
	g := src.l.g
	return func(err error) {
		if reason, invalid := gateway.Invalid(err); invalid {
			g.invalid.Add(1)
			src.settleLater(settlement{msg: msg, outcome: reject, mark: mk, err: &amqp.Error{
				Condition:   amqp.ErrCondDecodeError,
				Description: reason + " (kept by vigil as a dead letter)",
			}})
			return
		}
		if err != nil {
			src.settleLater(settlement{msg: msg, outcome: release, mark: mk})
			return
		}
		src.settleLater(settlement{msg: msg, outcome: accept, mark: mk})
	}
}

func (src *source) settleLater(s settlement) {
	done := src.l.conn.Done()
	select {
	case <-done: // the broker redelivers what was not settled
		src.l.g.unsettled.Add(1)
		return
	default:
	}
	select {
	case src.settle <- s:
	case <-done:
		src.l.g.unsettled.Add(1)
	}
}

// settler sends the source's dispositions in the order the sink settles
// its messages.
func (src *source) settler() {
	l, g := src.l, src.l.g
	// Not the link's context: a disposition for a stored message is worth
	// sending while the connection lives, even when the link is shutting
	// down. One deadline serves a burst of dispositions (a commit settles
	// thousands of messages at once): a timer per disposition cost ~2.5 µs
	// of CPU per message (BenchmarkAMQPConsume's CPU profile).
	var sctx context.Context
	var renew time.Time // when sctx has settleTimeout less a second left
	cancel := context.CancelFunc(func() {})
	defer func() { cancel() }()
	draining := l.draining
	for {
		var s settlement
		select {
		case s = <-src.settle:
		default:
			cancel()
			sctx = nil
			src.savePosition() // a burst of settlements is over
			select {
			case s = <-src.settle:
			case <-draining:
				if len(src.settle) > 0 {
					continue // one came in meanwhile
				}
				close(src.drained)
				draining = nil
				continue
			case <-l.conn.Done():
				// What was queued for this connection is not settled.
				g.unsettled.Add(int64(len(src.settle)))
				return
			}
		}
		src.held.Add(-1)
		if s.mark.ok {
			src.follow(s)
		}
		if now := time.Now(); sctx == nil || now.After(renew) {
			cancel()
			sctx, cancel = context.WithTimeout(context.Background(), settleTimeout)
			renew = now.Add(time.Second)
		}
		var err error
		switch s.outcome {
		case accept:
			if err = src.recv.AcceptMessage(sctx, s.msg); err == nil {
				g.accepted.Add(1)
				src.count.accepted.Add(1)
			}
		case release:
			if err = src.recv.ReleaseMessage(sctx, s.msg); err == nil {
				g.released.Add(1)
			}
		case reject:
			err = src.recv.RejectMessage(sctx, s.msg, s.err)
		}
		if err != nil {
			g.unsettled.Add(1)
			select {
			case <-l.conn.Done():
			default:
				// The connection is up but the disposition was not sent
				// (a write stalled past settleTimeout): the message stays
				// unsettled on this link, holding its credit, until the
				// connection ends, so end it; the broker then delivers it
				// again.
				l.fail(fmt.Errorf("settle a message of %s: %w", src.addr, err))
			}
		}
	}
}

// follow moves the source's frontier with a settlement of a message that
// has an offset. A log does not deliver a released message again on the
// same link (only a queue does), so a release while vigil still takes
// telemetry (a store that failed) ends the connection: the next link
// resumes after the frontier, which stopped before that message.
func (src *source) follow(s settlement) {
	if s.outcome != release {
		src.front.settle(s.mark)
		return
	}
	select {
	case <-src.l.g.sinkClosed:
	default:
		src.l.fail(fmt.Errorf("a message of the log %s could not be stored: reading it again from the last message settled (offset %s)", src.addr, s.mark.offset))
	}
}

// settleTimeout bounds how long the settler waits to hand go-amqp a
// disposition; each gets at least this less a second.
const settleTimeout = 5 * time.Second

// rejectNoIdentity is the rejection of a message that names no device.
var rejectNoIdentity = &amqp.Error{Condition: amqp.ErrCondUnauthorizedAccess, Description: "no device identity: set the user-id property to the device id"}

// identify returns the device a message comes from, or the error to reject
// it with (counted).
func (g *Gateway) identify(msg *amqp.Message) (gateway.Device, *amqp.Error) {
	user := ""
	if msg.Properties != nil {
		user = string(msg.Properties.UserID)
	}
	name := user
	var claim any
	var where string
	switch {
	case g.cfg.DeviceAnnotation != "":
		claim, where = msg.Annotations[g.cfg.DeviceAnnotation], "annotation "+g.cfg.DeviceAnnotation
	case g.cfg.TrustProperty != "":
		claim, where = msg.ApplicationProperties[g.cfg.TrustProperty], "property "+g.cfg.TrustProperty
	}
	if v, ok := claim.(string); ok && v != "" && v != user {
		if len(g.cfg.TrustedGateways) > 0 && !slices.Contains(g.cfg.TrustedGateways, user) {
			g.refusedClaim.Add(1)
			return gateway.Device{}, &amqp.Error{Condition: amqp.ErrCondUnauthorizedAccess,
				Description: fmt.Sprintf("%q names device %q in %s, which only trusted field gateways may do: a device sends as itself, with its own user-id", user, v, where)}
		}
		name = v
	}
	if name == "" {
		g.refusedNoID.Add(1)
		return gateway.Device{}, rejectNoIdentity
	}
	dev, err := g.reg.LookupDevice(name)
	if err != nil {
		switch {
		case errors.Is(err, gateway.ErrUnknownDevice):
			g.refusedUnknown.Add(1)
		case errors.Is(err, gateway.ErrDeviceDisabled):
			g.refusedOff.Add(1)
		default: // not the device's fault, but nothing else can be done with it
			g.refusedUnknown.Add(1)
		}
		return gateway.Device{}, &amqp.Error{Condition: amqp.ErrCondUnauthorizedAccess, Description: fmt.Sprintf("device %q: %v", name, err)}
	}
	return dev, nil
}

// messageBody returns the message's data sections, concatenated, or its
// string (or binary) value.
func messageBody(msg *amqp.Message) ([]byte, bool) {
	switch {
	case len(msg.Data) == 1:
		return msg.Data[0], true
	case len(msg.Data) > 1:
		return bytes.Join(msg.Data, nil), true
	}
	switch v := msg.Value.(type) {
	case string:
		return []byte(v), true
	case []byte:
		return v, true
	}
	return nil, false
}

// messageID returns the message-id as a string ("" when absent).
func messageID(msg *amqp.Message) string {
	if msg.Properties == nil {
		return ""
	}
	return idString(msg.Properties.MessageID)
}

func idString(id any) string {
	switch v := id.(type) {
	case nil:
		return ""
	case string:
		return v
	case uint64:
		return strconv.FormatUint(v, 10)
	case amqp.UUID:
		return v.String()
	case []byte:
		if utf8.Valid(v) {
			return string(v)
		}
		return hex.EncodeToString(v)
	}
	return fmt.Sprint(id)
}

// receiveFeedback hands command acknowledgements to the AckHandler and
// settles each feedback message: rejected when malformed, released (the
// broker delivers it again) when the handler could not record an
// acknowledgement for now, accepted otherwise. The acknowledgements of a
// released message that the handler did record are not handed to it
// again when the message comes back (see Gateway.recorded).
func (l *link) receiveFeedback(ctx context.Context) error {
	g := l.g
	for {
		msg, err := l.feedback.Receive(ctx, nil)
		if err != nil {
			return fmt.Errorf("receive %s: %w", g.cfg.Feedback, err)
		}
		var outcomeErr *amqp.Error
		var acks []gateway.Ack
		var bad string
		if g.cfg.FeedbackFormat == FeedbackIoTHub {
			acks, bad = g.iotHubFeedback(msg)
		} else if dev, rej := g.identify(msg); rej != nil {
			outcomeErr = rej
		} else {
			var a gateway.Ack
			if a, bad = parseAck(msg, dev, g.cfg.MaxBody); bad == "" {
				acks = []gateway.Ack{a}
			}
		}
		if bad != "" {
			g.badAcks.Add(1)
			outcomeErr = &amqp.Error{Condition: amqp.ErrCondInvalidField, Description: bad}
		}
		again := false // an acknowledgement to be delivered again
		var applied []string
		for _, a := range acks {
			key := a.Device.Name + "\x00" + a.CommandID
			if _, ok := g.recorded[key]; ok {
				// Recorded when this message came before.
				delete(g.recorded, key)
				continue
			}
			g.ackCount.Add(1)
			// Not the link's context: an acknowledgement received is
			// recorded even when the link is going down meanwhile.
			hctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
			err := g.acks.HandleAck(hctx, a)
			cancel()
			if err != nil {
				g.badAcks.Add(1)
				g.log.Warn("command acknowledgement not applied", "device", a.Device.Name, "command", a.CommandID, "err", err)
				again = again || errors.Is(err, gateway.ErrAckNotRecorded)
				continue
			}
			applied = append(applied, key)
		}
		if again {
			if len(g.recorded)+len(applied) > maxRecorded {
				clear(g.recorded) // messages released and never delivered again
			}
			for _, key := range applied {
				g.recorded[key] = struct{}{}
			}
			// Released, the broker delivers it again at once: a pause
			// keeps a failing store from being asked in a tight loop.
			select {
			case <-time.After(feedbackRetryPause):
			case <-ctx.Done():
			}
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		switch {
		case outcomeErr != nil:
			err = l.feedback.RejectMessage(sctx, msg, outcomeErr)
		case again:
			err = l.feedback.ReleaseMessage(sctx, msg)
		default:
			err = l.feedback.AcceptMessage(sctx, msg)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("settle acknowledgement: %w", err)
		}
	}
}

// feedbackRetryPause is how long the feedback receiver waits before giving
// back an acknowledgement the handler could not record for now.
var feedbackRetryPause = time.Second

// maxRecorded bounds Gateway.recorded.
const maxRecorded = 10_000

// iotHubFeedback reads a feedback message of Azure IoT Hub (FeedbackIoTHub):
// the acknowledgements it holds, or what is wrong with it. Records of
// commands that expired or were purged in the hub are left to vigil's own
// expiry; records that name no command or device, and records of devices
// vigil does not know, are skipped and counted (Stats.BadAcks), so the
// other records of the message still move their commands.
func (g *Gateway) iotHubFeedback(msg *amqp.Message) (acks []gateway.Ack, bad string) {
	body, ok := messageBody(msg)
	if !ok {
		return nil, "feedback body must be a JSON array of records"
	}
	if len(body) > g.cfg.MaxBody {
		return nil, fmt.Sprintf("feedback body of %d bytes is over the %d-byte limit", len(body), g.cfg.MaxBody)
	}
	var records []struct {
		Command     string `json:"originalMessageId"`
		Device      string `json:"deviceId"`
		Status      string `json:"statusCode"`
		Description string `json:"description"`
		Enqueued    string `json:"enqueuedTimeUtc"` // when the device settled it
	}
	if err := json.Unmarshal(body, &records); err != nil {
		return nil, "feedback body is not a JSON array of records: " + err.Error()
	}
	now := time.Now().UTC()
	for i, r := range records {
		if r.Command == "" || r.Device == "" {
			g.badAcks.Add(1)
			g.log.Warn("feedback record names no originalMessageId or deviceId; skipped", "record", i, "device", r.Device, "command", r.Command)
			continue
		}
		var st gateway.AckStatus
		switch r.Status {
		case "Success":
			st = gateway.AckCompleted
		case "Rejected":
			st = gateway.AckRejected
		default: // Expired, DeliveryCountExceeded, Purged
			g.log.Debug("command not delivered by the hub; it expires in vigil", "device", r.Device, "command", r.Command, "status", r.Status)
			continue
		}
		dev, err := g.reg.LookupDevice(r.Device)
		if err != nil {
			g.badAcks.Add(1)
			g.log.Warn("feedback for a device vigil does not take", "device", r.Device, "command", r.Command, "err", err)
			continue
		}
		at := now
		if t, err := time.Parse(time.RFC3339Nano, r.Enqueued); err == nil {
			at = t.UTC()
		}
		acks = append(acks, gateway.Ack{Device: dev, CommandID: r.Command, Status: st, Detail: r.Description, Received: at})
	}
	return acks, ""
}

// parseAck reads an acknowledgement, whose body may hold up to maxBody
// bytes; bad says what is wrong with it.
func parseAck(msg *amqp.Message, dev gateway.Device, maxBody int) (a gateway.Ack, bad string) {
	a = gateway.Ack{Device: dev, Received: time.Now().UTC()}
	if msg.Properties != nil {
		a.CommandID = idString(msg.Properties.CorrelationID)
	}
	if a.CommandID == "" {
		return a, "acknowledgement without correlation-id: set it to the command's id"
	}
	status, _ := msg.ApplicationProperties["ack"].(string)
	a.Status = gateway.AckStatus(status)
	if a.Status != gateway.AckCompleted && a.Status != gateway.AckRejected {
		return a, fmt.Sprintf("application property ack is %q: want %q or %q", status, gateway.AckCompleted, gateway.AckRejected)
	}
	if body, ok := messageBody(msg); ok && len(bytes.TrimSpace(body)) > 0 {
		if len(body) > maxBody {
			return a, fmt.Sprintf("body of %d bytes is over the %d-byte limit: keep the detail short", len(body), maxBody)
		}
		var doc struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal(body, &doc) == nil {
			a.Detail = doc.Detail
		}
	}
	return a, ""
}

// Send sends a command to the device's command address and returns once
// the broker has accepted it (persistent, expiring at c.Expires). It
// returns an error wrapping gateway.ErrDeviceOffline while the gateway is
// not connected to the broker. The broker accepts a command even when no
// queue is bound to the device's address (the device never provisioned
// one): the command then expires unacknowledged.
func (g *Gateway) Send(ctx context.Context, c gateway.Command) error {
	if g.cfg.CommandAddress == "" {
		return fmt.Errorf("amqp command %s to %s: broker %s is set up for telemetry only (no command address): %w", c.ID, c.Device, g.addr(roleTelemetry), gateway.ErrDeviceOffline)
	}
	l := g.current(g.commandRole())
	if l == nil {
		return fmt.Errorf("amqp command %s to %s: broker %s not connected: %w", c.ID, c.Device, g.addr(g.commandRole()), gateway.ErrDeviceOffline)
	}
	addr, subject := commandTarget(g.cfg.CommandAddress, c.Device)
	msg := &amqp.Message{
		Header:                &amqp.MessageHeader{Durable: true},
		Properties:            &amqp.MessageProperties{MessageID: c.ID, CorrelationID: c.ID, ContentType: ptr("application/json")},
		ApplicationProperties: map[string]any{"name": c.Name},
		Data:                  [][]byte{c.Body()},
	}
	if subject != "" {
		msg.Properties.Subject = &subject
	}
	if g.cfg.CommandTo != "" {
		msg.Properties.To = ptr(commandTo(g.cfg.CommandTo, c.Device))
	}
	for k, v := range g.cfg.CommandProperties {
		msg.ApplicationProperties[k] = v
	}
	if !c.Expires.IsZero() {
		ttl := time.Until(c.Expires)
		if ttl < time.Millisecond {
			return fmt.Errorf("amqp command %s to %s: expired at %s", c.ID, c.Device, c.Expires.Format(time.RFC3339))
		}
		msg.Header.TTL = ttl
		exp := c.Expires.UTC()
		msg.Properties.AbsoluteExpiryTime = &exp
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SendTimeout)
	defer cancel()
	snd, release, err := l.sender(ctx, addr)
	if err != nil {
		return fmt.Errorf("amqp command %s to %s: %w", c.ID, c.Device, err)
	}
	defer release()
	if err := snd.Send(ctx, msg, nil); err != nil {
		l.dropSender(addr, snd, err)
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("the broker did not take it within %s (is it blocking publishers, a memory or disk alarm?): %w", g.cfg.SendTimeout, err)
		}
		return fmt.Errorf("amqp command %s to %s: %w", c.ID, c.Device, err)
	}
	g.commands.Add(1)
	return nil
}

// dropSender forgets the sender to addr when err says its link, or the
// session it is on, has ended (RabbitMQ ends the session when a publish
// fails, say to an exchange deleted since), so that the next command
// attaches afresh instead of failing on it until the connection drops.
func (l *link) dropSender(addr string, snd *amqp.Sender, err error) {
	var linkErr *amqp.LinkError
	var sessErr *amqp.SessionError
	l.smu.Lock()
	defer l.smu.Unlock()
	if c, ok := l.senders[addr]; !ok || c.s != snd {
		return // already replaced
	}
	switch {
	case errors.As(err, &sessErr):
		// Every sender of the session went with it.
		clear(l.senders)
		l.csess = nil
	case errors.As(err, &linkErr):
		delete(l.senders, addr)
	}
}

func ptr[T any](v T) *T { return &v }

// commandRole is the role of the connection commands go out on.
func (g *Gateway) commandRole() role {
	if g.cfg.CommandURL != "" {
		return roleCommands
	}
	return roleTelemetry
}

// sender returns the link's sender to addr, attaching it on first use.
func (l *link) sender(ctx context.Context, addr string) (*amqp.Sender, func(), error) {
	l.smu.Lock()
	defer l.smu.Unlock()
	c, ok := l.senders[addr]
	if !ok {
		if len(l.senders) >= maxCommandLinks && l.sendersIdle() {
			l.recycleCommandSession()
		}
		if l.csess == nil {
			sess, err := l.conn.NewSession(ctx, nil)
			if err != nil {
				return nil, nil, fmt.Errorf("begin a command session: %w", err)
			}
			l.csess = sess
		}
		s, err := l.csess.NewSender(ctx, addr, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("attach %s: %w", addr, err)
		}
		c = &commandLink{s: s}
		l.senders[addr] = c
	}
	c.busy++
	return c.s, func() {
		l.smu.Lock()
		c.busy--
		l.smu.Unlock()
	}, nil
}

// maxCommandLinks is how many command senders a connection keeps attached.
// A per-device address (a queue per device) needs a link per device; once
// this many are attached, the session that holds them is ended (the queues
// stay) and a new one takes the next commands, so a large fleet does not
// hold a link, and its goroutines, per device forever. Ending the session,
// not the links one by one: RabbitMQ 3.10 never completes a link's detach,
// so a closed link would keep its goroutines all the same.
var maxCommandLinks = 256

// commandLink is an attached command sender.
type commandLink struct {
	s    *amqp.Sender
	busy int // sends in progress
}

// sendersIdle reports whether no send is in progress. l.smu must be held.
func (l *link) sendersIdle() bool {
	for _, c := range l.senders {
		if c.busy > 0 {
			return false
		}
	}
	return true
}

// recycleCommandSession ends the command session and forgets its senders.
// l.smu must be held, and no send in progress.
func (l *link) recycleCommandSession() {
	old := l.csess
	l.csess, l.senders = nil, map[string]*commandLink{}
	l.g.commandResets.Add(1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		if err := old.Close(ctx); err != nil {
			l.g.log.Debug("ending a command session", "err", err)
			return
		}
		l.g.commandResetsDone.Add(1)
	}()
}
