package httpdev

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-iot/vigil/gateway"
)

// Config tunes the HTTP device gateway.
type Config struct {
	// MaxBody bounds a telemetry body, in bytes.
	MaxBody int64
	// PollWait is how long a command poll waits for a command when the
	// device does not say (?wait=SECONDS); MaxPollWait caps what it may ask.
	PollWait, MaxPollWait time.Duration
	// OnlineFor is how long after its last poll a device is offered
	// commands; after that Send reports it offline.
	OnlineFor time.Duration
	// LockFor is how long a command handed to a device waits for its answer
	// before it is handed out again.
	LockFor time.Duration
	// MaxPending bounds the commands waiting for one device.
	MaxPending int
	// Rate and Burst bound one device's requests: on average Rate a second,
	// Burst at once; beyond that it is answered 429 with Retry-After. A
	// device that misbehaves cannot crowd out the others.
	Rate  float64
	Burst int
}

// DefaultConfig returns the settings vigil runs with by default.
func DefaultConfig() Config {
	return Config{MaxBody: 1 << 20, PollWait: 20 * time.Second, MaxPollWait: time.Minute,
		OnlineFor: time.Minute, LockFor: 30 * time.Second, MaxPending: 50, Rate: 20, Burst: 40}
}

// Validate checks the settings.
func (c Config) Validate() error {
	if c.MaxBody < 1 || c.PollWait < 0 || c.MaxPollWait < c.PollWait || c.OnlineFor <= 0 || c.LockFor <= 0 || c.MaxPending < 1 || !(c.Rate > 0) || c.Burst < 1 {
		return fmt.Errorf("httpdev: max body, online-for, lock-for, max pending, rate and burst must be positive and max poll wait at least poll wait (got %+v)", c)
	}
	return nil
}

// Stats counts what the gateway did. All fields only grow.
type Stats struct {
	Telemetry  int64 `json:"telemetry"`        // messages stored
	Invalid    int64 `json:"invalid"`          // bodies kept as dead letters and answered 400
	Refused    int64 `json:"refused"`          // requests with unknown devices, wrong keys or disabled devices
	Limited    int64 `json:"rate_limited"`     // requests over a device's rate, answered 429
	Throttled  int64 `json:"throttled"`        // requests refused unchecked after too many wrong keys (gateway.Throttle), answered 429
	Polls      int64 `json:"polls"`            // command polls
	Delivered  int64 `json:"commands_handed"`  // commands handed to devices (again after LockFor)
	Answers    int64 `json:"commands_answers"` // completions and rejections passed on
	BadAnswers int64 `json:"bad_answers"`      // answers the controller refused
}

// Gateway serves devices over HTTP. Mount Handler on the HTTP server and
// add the Gateway to the command senders.
type Gateway struct {
	cfg  Config
	auth gateway.Authenticator
	sink gateway.Sink
	acks gateway.AckHandler
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	boxes   map[string]*mailbox // by device name
	buckets map[string]*bucket  // by device name

	// throttle holds back a device and host after wrong keys.
	throttle *gateway.Throttle

	telemetry, invalid, refused, limited, throttled, polls, delivered, answers, badAnswers atomic.Int64

	closing   chan struct{} // closed by Close: polls stop waiting
	closeOnce sync.Once
}

// mailbox holds the commands waiting for one device.
type mailbox struct {
	lastPoll time.Time
	pending  []*pending
	wake     chan struct{} // a command arrived; capacity 1
}

// pending is a command and, once handed out, until when it is locked.
type pending struct {
	cmd         gateway.Command
	lockedUntil time.Time
}

var _ gateway.Sender = (*Gateway)(nil)

// New returns a gateway that authenticates devices with auth, hands their
// telemetry to sink and their answers to acks.
func New(cfg Config, auth gateway.Authenticator, sink gateway.Sink, acks gateway.AckHandler, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Gateway{cfg: cfg, auth: auth, sink: sink, acks: acks, log: log.With("component", "http-devices"),
		now: time.Now, boxes: map[string]*mailbox{}, buckets: map[string]*bucket{}, closing: make(chan struct{}),
		throttle: gateway.NewThrottle()}, nil
}

// Close answers the devices waiting in a command poll, and every poll
// after, at once: a command if one is waiting, else 204 (no command), as
// when the wait runs out. A server shutting down calls it before it stops
// its HTTP server, which would otherwise wait for each poll's wait (up to
// MaxPollWait) and could close the store under it.
func (g *Gateway) Close() {
	g.closeOnce.Do(func() { close(g.closing) })
}

// Stats returns the counters.
func (g *Gateway) Stats() Stats {
	return Stats{Telemetry: g.telemetry.Load(), Invalid: g.invalid.Load(), Refused: g.refused.Load(), Limited: g.limited.Load(), Throttled: g.throttled.Load(), Polls: g.polls.Load(),
		Delivered: g.delivered.Load(), Answers: g.answers.Load(), BadAnswers: g.badAnswers.Load()}
}

// Handler serves the device routes (see the package documentation).
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /devices/{id}/messages/events", g.postTelemetry)
	mux.HandleFunc("GET /devices/{id}/messages/deviceBound", g.poll)
	mux.HandleFunc("DELETE /devices/{id}/messages/deviceBound/{cid}", g.answer)
	return mux
}

// Send queues a command for a device that has polled within OnlineFor.
func (g *Gateway) Send(_ context.Context, c gateway.Command) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	box := g.boxes[c.Device]
	if box == nil || g.now().Sub(box.lastPoll) > g.cfg.OnlineFor {
		return fmt.Errorf("command %s to %s: %w (it has not polled over HTTP within %s)", c.ID, c.Device, gateway.ErrDeviceOffline, g.cfg.OnlineFor)
	}
	g.dropExpired(box)
	if len(box.pending) >= g.cfg.MaxPending {
		return fmt.Errorf("command %s to %s: %d commands already wait for it over HTTP", c.ID, c.Device, len(box.pending))
	}
	box.pending = append(box.pending, &pending{cmd: c})
	select {
	case box.wake <- struct{}{}:
	default:
	}
	return nil
}

// dropExpired forgets the commands past their expiry. g.mu is held.
func (g *Gateway) dropExpired(box *mailbox) {
	now, kept := g.now(), box.pending[:0]
	for _, p := range box.pending {
		if p.cmd.Expires.IsZero() || now.Before(p.cmd.Expires) {
			kept = append(kept, p)
		}
	}
	clear(box.pending[len(kept):])
	box.pending = kept
}

// device authenticates a request as the device its path names, or answers
// it with the reason and returns false.
func (g *Gateway) device(w http.ResponseWriter, r *http.Request) (gateway.Device, bool) {
	id := r.PathValue("id")
	user, key, ok := r.BasicAuth()
	if ok && user != id {
		// HTTP Basic splits its credentials at the first colon, and a
		// device id may hold one (RFC 7617 lets a user-id hold none): the
		// path names the device, so the credentials are read as its id,
		// a colon, and the key.
		if rest, found := strings.CutPrefix(user+":"+key, id+":"); found {
			user, key = id, rest
		}
	}
	switch {
	case !ok:
		g.refused.Add(1)
		w.Header().Set("WWW-Authenticate", `Basic realm="vigil devices"`)
		writeError(w, http.StatusUnauthorized, "no credentials: authenticate with HTTP Basic, user = device id, password = device key")
		return gateway.Device{}, false
	case user != id:
		g.refused.Add(1)
		writeError(w, http.StatusForbidden, fmt.Sprintf("credentials of device %q cannot act for device %q", user, id))
		return gateway.Device{}, false
	}
	host := gateway.Host(r.RemoteAddr)
	if wait := g.throttle.Wait(user, host); wait > 0 {
		g.throttled.Add(1)
		secs := int(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many wrong keys for device %q from this host: try again in %d s", user, secs))
		return gateway.Device{}, false
	}
	dev, err := g.auth.AuthenticateDevice(user, key)
	switch {
	case errors.Is(err, gateway.ErrDeviceDisabled):
		g.refused.Add(1)
		writeError(w, http.StatusForbidden, err.Error())
		return gateway.Device{}, false
	case err != nil:
		g.refused.Add(1)
		g.throttle.Failed(user, host)
		writeError(w, http.StatusUnauthorized, err.Error())
		return gateway.Device{}, false
	}
	g.throttle.Succeeded(user, host)
	if wait := g.admit(dev.Name); wait > 0 {
		g.limited.Add(1)
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("device %q is over %g requests a second: send less often, or more readings per message", dev.Name, g.cfg.Rate))
		return gateway.Device{}, false
	}
	return dev, true
}

// bucket is a token bucket: tokens refill at Rate a second up to Burst.
type bucket struct {
	tokens float64
	at     time.Time
}

// admit takes a token from the device's bucket, or returns how long until
// one is there.
func (g *Gateway) admit(device string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	b := g.buckets[device]
	if b == nil {
		b = &bucket{tokens: float64(g.cfg.Burst), at: now}
		g.buckets[device] = b
	}
	b.tokens = math.Min(float64(g.cfg.Burst), b.tokens+now.Sub(b.at).Seconds()*g.cfg.Rate)
	b.at = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / g.cfg.Rate * float64(time.Second))
	}
	b.tokens--
	return 0
}

// postTelemetry stores a telemetry body and answers once it is committed.
func (g *Gateway) postTelemetry(w http.ResponseWriter, r *http.Request) {
	dev, ok := g.device(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes: split the readings over several messages", g.cfg.MaxBody))
			return
		}
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	id := r.Header.Get("Message-Id")
	if id == "" {
		id = r.Header.Get("iothub-messageid")
	}
	done := make(chan error, 1)
	m := gateway.Message{Device: dev, Source: r.URL.Path, ID: id, Body: body, Received: g.now().UTC(),
		Settle: func(err error) { done <- err }}
	if err = g.sink.Submit(r.Context(), m); err == nil {
		select {
		case err = <-done:
		case <-r.Context().Done():
			return // the client left; the message is stored all the same
		}
	}
	if reason, ok := gateway.Invalid(err); ok {
		g.invalid.Add(1)
		writeError(w, http.StatusBadRequest, reason+" (the body is kept as a dead letter; do not send it again)")
		return
	}
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "not stored: "+err.Error()+"; send it again")
		return
	}
	g.telemetry.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// poll hands the device its oldest unlocked command, waiting for one up to
// the poll wait.
func (g *Gateway) poll(w http.ResponseWriter, r *http.Request) {
	dev, ok := g.device(w, r)
	if !ok {
		return
	}
	g.polls.Add(1)
	wait := g.cfg.PollWait
	if s := r.URL.Query().Get("wait"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("wait=%q: want whole seconds, 0 or more", s))
			return
		}
		wait = min(time.Duration(n)*time.Second, g.cfg.MaxPollWait)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		c, wake, ok := g.take(dev.Name)
		if ok {
			g.delivered.Add(1)
			if err := g.acks.HandleAck(r.Context(), gateway.Ack{Device: dev, CommandID: c.ID, Status: gateway.AckDelivered, Received: g.now().UTC()}); err != nil {
				g.log.Warn("command delivery not recorded", "device", dev.Name, "command", c.ID, "err", err)
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("ETag", strconv.Quote(c.ID))
			w.Header().Set("iothub-messageid", c.ID)
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(c.Body())
			return
		}
		select {
		case <-wake:
		case <-timer.C:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-g.closing:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// take marks the device as polling and locks and returns its oldest
// command not handed out within LockFor; otherwise it returns the channel
// that signals a new command.
func (g *Gateway) take(device string) (gateway.Command, <-chan struct{}, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	box := g.boxes[device]
	if box == nil {
		box = &mailbox{wake: make(chan struct{}, 1)}
		g.boxes[device] = box
	}
	now := g.now()
	box.lastPoll = now
	g.dropExpired(box)
	for _, p := range box.pending {
		if now.After(p.lockedUntil) {
			p.lockedUntil = now.Add(g.cfg.LockFor)
			return p.cmd, nil, true
		}
	}
	return gateway.Command{}, box.wake, false
}

// answer passes on a device's completion (or, with ?reject, refusal) of a
// command and forgets the command.
func (g *Gateway) answer(w http.ResponseWriter, r *http.Request) {
	dev, ok := g.device(w, r)
	if !ok {
		return
	}
	cid := r.PathValue("cid")
	status := gateway.AckCompleted
	if r.URL.Query().Has("reject") {
		status = gateway.AckRejected
	}
	g.mu.Lock()
	if box := g.boxes[dev.Name]; box != nil {
		for i, p := range box.pending {
			if p.cmd.ID == cid {
				box.pending = append(box.pending[:i], box.pending[i+1:]...)
				break
			}
		}
	}
	g.mu.Unlock()
	a := gateway.Ack{Device: dev, CommandID: cid, Status: status, Detail: r.URL.Query().Get("detail"), Received: g.now().UTC()}
	if err := g.acks.HandleAck(r.Context(), a); err != nil {
		g.badAnswers.Add(1)
		if errors.Is(err, gateway.ErrAckNotRecorded) {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	g.answers.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// writeError answers with a JSON error document.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
