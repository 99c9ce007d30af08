package actions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/store"
)

// Rule maps an anomaly on Metric to a command. Metric "*" matches any
// metric that has no rule of its own.
type Rule struct {
	Metric  string          `json:"metric"`
	Command string          `json:"command"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Config sets the rules and limits of a Controller.
type Config struct {
	Rules []Rule
	// Cooldown is the least time between two commands to one device.
	Cooldown time.Duration
	// TTL is how long a sent command waits for its acknowledgement before
	// it expires.
	TTL time.Duration
	// RecoveryWindow is how long after sending a command the device has to
	// return to normal to count as recovered.
	RecoveryWindow time.Duration
	// MaxPendingPerDevice caps unacknowledged commands per device.
	MaxPendingPerDevice int
	// MaxPerMinute caps commands sent across the fleet per minute.
	MaxPerMinute int
}

// DefaultConfig returns vigil's default rules: overheating and excess
// vibration both ask the device to shed 30% of its load.
func DefaultConfig() Config {
	return Config{
		Rules: []Rule{
			{Metric: "temperature", Command: "reduce_load", Payload: json.RawMessage(`{"percent":30}`)},
			{Metric: "vibration", Command: "reduce_load", Payload: json.RawMessage(`{"percent":30}`)},
		},
		Cooldown:            30 * time.Second,
		TTL:                 30 * time.Second,
		RecoveryWindow:      60 * time.Second,
		MaxPendingPerDevice: 50,
		MaxPerMinute:        600,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	for i, r := range c.Rules {
		if r.Metric == "" || r.Command == "" {
			return fmt.Errorf("actions: rule %d needs a metric and a command", i)
		}
		if len(r.Payload) > 0 && !json.Valid(r.Payload) {
			return fmt.Errorf("actions: rule %d (%s): payload is not valid JSON", i, r.Metric)
		}
	}
	if c.Cooldown < 0 || c.TTL <= 0 || c.RecoveryWindow <= 0 || c.MaxPendingPerDevice < 1 || c.MaxPerMinute < 1 {
		return errors.New("actions: ttl, recovery window, max pending and max per minute must be positive; cooldown not negative")
	}
	return nil
}

// Store persists commands; *store.Store implements it.
type Store interface {
	AddCommand(ctx context.Context, c *store.Command) error
	UpdateCommand(ctx context.Context, c store.Command) error
	UnfinishedCommands(ctx context.Context) ([]store.Command, error)
}

// Stats counts commands by what happened to them. All fields only grow.
type Stats struct {
	Sent          int64 `json:"commands_sent"`
	Delivered     int64 `json:"commands_delivered"`
	Acknowledged  int64 `json:"commands_acked"`
	Rejected      int64 `json:"commands_rejected"`
	Expired       int64 `json:"commands_expired"`
	Failed        int64 `json:"commands_failed"`
	Suppressed    int64 `json:"commands_suppressed"`
	Recovered     int64 `json:"commands_recovered"`
	NotRecovered  int64 `json:"commands_not_recovered"`
	DevicesHealed int64 `json:"devices_recovered"`
}

// Controller applies the rules and tracks commands. It is safe for
// concurrent use.
type Controller struct {
	cfg   Config
	store Store
	send  gateway.Sender
	log   *slog.Logger
	now   func() time.Time

	mu       sync.Mutex
	open     map[int64]*store.Command // lifecycle or verification not final
	last     map[int32]time.Time      // last command per device (cooldown)
	window   time.Time                // start of the current rate-limit minute
	inWindow int
	healed   map[int32]bool
	stats    Stats
}

var _ gateway.AckHandler = (*Controller)(nil)

// New returns a Controller and resumes tracking the commands a previous run
// left unfinished.
func New(ctx context.Context, cfg Config, st Store, send gateway.Sender, log *slog.Logger) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Controller{
		cfg: cfg, store: st, send: send, log: log, now: time.Now,
		open: map[int64]*store.Command{}, last: map[int32]time.Time{}, healed: map[int32]bool{},
	}
	cmds, err := st.UnfinishedCommands(ctx)
	if err != nil {
		return nil, fmt.Errorf("actions: resume: %w", err)
	}
	for i := range cmds {
		cmd := cmds[i]
		if cmd.State == store.CommandQueued {
			// Stored but never recorded as sent: the previous run stopped
			// between storing the command and recording its send (or
			// could not record it). Whether the device got it is not
			// known; it is closed as failed rather than sent late, and
			// kept out of the commands tracked (nothing would move it).
			cmd.State, cmd.Detail = store.CommandFailed, "not known to be sent: vigil stopped before it recorded sending this command"
			cmd.Verification, cmd.Verified = store.VerifyNotRecovered, c.now().UTC()
			if err := st.UpdateCommand(ctx, cmd); err != nil {
				return nil, fmt.Errorf("actions: resume: command %d: %w", cmd.ID, err)
			}
			continue
		}
		c.open[cmd.ID] = &cmd
		if cmd.Created.After(c.last[cmd.DeviceID]) {
			c.last[cmd.DeviceID] = cmd.Created
		}
	}
	return c, nil
}

func (c *Controller) rule(metric string) (Rule, bool) {
	var wild *Rule
	for i, r := range c.cfg.Rules {
		if r.Metric == metric {
			return r, true
		}
		if r.Metric == "*" {
			wild = &c.cfg.Rules[i]
		}
	}
	if wild != nil {
		return *wild, true
	}
	return Rule{}, false
}

// OnAnomaly decides whether an anomaly warrants a command and, if so,
// persists and sends it. It returns a snapshot of the command, or nil when
// none was sent (no rule, cooldown, limits). device is the device's name.
func (c *Controller) OnAnomaly(ctx context.Context, a store.Anomaly, device, metric string) (*store.Command, error) {
	r, ok := c.rule(metric)
	if !ok {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now().UTC()
	if t, ok := c.last[a.DeviceID]; ok && now.Sub(t) < c.cfg.Cooldown {
		c.stats.Suppressed++
		return nil, nil
	}
	if c.pending(a.DeviceID) >= c.cfg.MaxPendingPerDevice {
		c.stats.Suppressed++
		return nil, nil
	}
	if now.Sub(c.window) >= time.Minute {
		c.window, c.inWindow = now, 0
	}
	if c.inWindow >= c.cfg.MaxPerMinute {
		c.stats.Suppressed++
		return nil, nil
	}
	payload := r.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	cmd := &store.Command{
		DeviceID: a.DeviceID, MetricID: a.MetricID, AnomalyID: a.ID, Name: r.Command, Payload: payload,
		State: store.CommandQueued, Created: now, Expires: now.Add(c.cfg.TTL), Verification: store.VerifyPending,
	}
	if err := c.store.AddCommand(ctx, cmd); err != nil {
		return nil, err
	}
	c.last[a.DeviceID] = now
	c.inWindow++
	// Sent is when the command was handed to the gateway: its delivery
	// report can come back before Send returns.
	sentAt := c.now().UTC()
	err := c.send.Send(ctx, gateway.Command{
		ID: strconv.FormatInt(cmd.ID, 10), Device: device, Name: cmd.Name, Payload: cmd.Payload, Expires: cmd.Expires,
	})
	if err != nil {
		cmd.State, cmd.Detail, cmd.Verification = store.CommandFailed, err.Error(), store.VerifyNotRecovered
		cmd.Verified = now
		c.stats.Failed++
		c.log.Warn("command not sent", "device", device, "command", cmd.Name, "err", err)
	} else {
		cmd.State, cmd.Sent = store.CommandSent, sentAt
		c.stats.Sent++
		c.open[cmd.ID] = cmd
	}
	// The controller goes on changing its own copy under its lock (an
	// acknowledgement may arrive at once); the caller gets a snapshot.
	snapshot := *cmd
	return &snapshot, c.store.UpdateCommand(ctx, *cmd)
}

func (c *Controller) pending(device int32) int {
	n := 0
	for _, cmd := range c.open {
		if cmd.DeviceID == device && !cmd.State.Final() {
			n++
		}
	}
	return n
}

// ErrUnknownCommand is returned by HandleAck for a command id that is not
// open, or that belongs to another device.
var ErrUnknownCommand = errors.New("no open command with that id for this device")

// HandleAck applies a device's acknowledgement to its command.
func (c *Controller) HandleAck(ctx context.Context, a gateway.Ack) error {
	// The device's words, kept as text: DuckDB refuses stray bytes, and
	// the acknowledgement would be refused as not recorded every time.
	a.Detail = strings.ToValidUTF8(a.Detail, "\uFFFD")
	id, err := strconv.ParseInt(a.CommandID, 10, 64)
	if err != nil {
		return fmt.Errorf("ack %q from %s: command ids are integers: %w", a.CommandID, a.Device.Name, ErrUnknownCommand)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd, ok := c.open[id]
	if !ok && a.Status == gateway.AckDelivered {
		return nil // the device answered, and the command was closed, before its PUBACK came in
	}
	if !ok || cmd.DeviceID != a.Device.ID {
		return fmt.Errorf("ack %d from %s: %w", id, a.Device.Name, ErrUnknownCommand)
	}
	next := *cmd
	if a.Status == gateway.AckDelivered {
		if cmd.State != store.CommandSent {
			return nil // a late or repeated delivery report changes nothing
		}
		next.State, next.Delivered = store.CommandDelivered, a.Received
		if err := c.apply(ctx, cmd, next); err != nil {
			return fmt.Errorf("%w: %w", gateway.ErrAckNotRecorded, err)
		}
		c.stats.Delivered++
		return nil
	}
	if cmd.State != store.CommandSent && cmd.State != store.CommandDelivered {
		return fmt.Errorf("ack %d from %s: command is already %s", id, a.Device.Name, cmd.State)
	}
	count := &c.stats.Acknowledged
	switch a.Status {
	case gateway.AckCompleted:
		next.State = store.CommandAcknowledged
	case gateway.AckRejected:
		next.State, count = store.CommandRejected, &c.stats.Rejected
	default:
		return fmt.Errorf("ack %d from %s: status %q is not %q or %q", id, a.Device.Name, a.Status, gateway.AckCompleted, gateway.AckRejected)
	}
	next.Acked, next.Detail = a.Received, a.Detail
	if next.Delivered.IsZero() { // an answer proves delivery
		next.Delivered = a.Received
	}
	if err := c.apply(ctx, cmd, next); err != nil {
		return fmt.Errorf("%w: %w", gateway.ErrAckNotRecorded, err)
	}
	*count++
	return nil
}

// apply makes next the state of the open command cmd: in the store first,
// then, once the store has it, in memory, retiring the command when it is
// over. When the store fails, memory keeps what the store has, so that the
// change can be made again (an acknowledgement sent again — HandleAck says
// so with gateway.ErrAckNotRecorded —, the next Tick).
func (c *Controller) apply(ctx context.Context, cmd *store.Command, next store.Command) error {
	if err := c.store.UpdateCommand(ctx, next); err != nil {
		return fmt.Errorf("command %d: %w", cmd.ID, err)
	}
	*cmd = next
	c.retire(cmd)
	return nil
}

// OnRecovered records that a device's anomaly episode on a metric ended at
// ts: every command sent for it within the recovery window is verified as
// recovered.
func (c *Controller) OnRecovered(ctx context.Context, device int32, metric int16, ts time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, cmd := range c.open {
		if cmd.DeviceID != device || cmd.MetricID != metric || cmd.Verification != store.VerifyPending || cmd.Sent.IsZero() {
			continue
		}
		if ts.Sub(cmd.Sent) > c.cfg.RecoveryWindow {
			continue // Tick records it as not recovered
		}
		next := *cmd
		next.Verification, next.Verified = store.VerifyRecovered, ts.UTC()
		if err := c.apply(ctx, cmd, next); err != nil {
			errs = append(errs, err)
			continue
		}
		c.stats.Recovered++
		if !c.healed[device] {
			c.healed[device] = true
			c.stats.DevicesHealed++
		}
	}
	return errors.Join(errs...)
}

// Tick expires commands whose acknowledgement is overdue and closes
// verifications whose window has passed. Call it periodically.
func (c *Controller) Tick(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now().UTC()
	var errs []error
	for _, cmd := range c.open {
		next := *cmd
		expired := !cmd.State.Final() && now.After(cmd.Expires)
		if expired {
			next.State, next.Detail = store.CommandExpired, "no acknowledgement before "+cmd.Expires.Format(time.RFC3339)
		}
		unrecovered := cmd.Verification == store.VerifyPending && !cmd.Sent.IsZero() && now.Sub(cmd.Sent) > c.cfg.RecoveryWindow
		if unrecovered {
			next.Verification, next.Verified = store.VerifyNotRecovered, now
		}
		if !expired && !unrecovered {
			continue
		}
		if err := c.apply(ctx, cmd, next); err != nil {
			errs = append(errs, err) // tried again at the next Tick
			continue
		}
		if expired {
			c.stats.Expired++
		}
		if unrecovered {
			c.stats.NotRecovered++
		}
	}
	return errors.Join(errs...)
}

// retire forgets a command whose lifecycle and verification are both final.
func (c *Controller) retire(cmd *store.Command) {
	if cmd.State.Final() && cmd.Verification != store.VerifyPending {
		delete(c.open, cmd.ID)
	}
}

// Stats returns the counters so far.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}
