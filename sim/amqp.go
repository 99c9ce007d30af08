package sim

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// AMQPLink is where AMQP devices find the broker and vigil's addresses.
type AMQPLink struct {
	// URL is the broker, amqp://host:port; credentials in it are ignored,
	// each device logs in as itself (user = device id, password = key).
	URL   string
	VHost string
	// Telemetry is the address telemetry is sent to; vigil's gateway
	// declares it.
	Telemetry string
	// SpreadTelemetry, when not empty, spreads a fleet's devices over these
	// addresses instead of Telemetry, the i-th device sending to the
	// (i mod n)-th, as a broker that shards a fleet by device routes it.
	// Only NewAMQPFleet reads it.
	SpreadTelemetry []string
	// Commands is the address a device receives its commands from; "{id}"
	// is replaced by the device id. The default, a receiver on amq.topic
	// with the device's routing key, needs no provisioning; RabbitMQ 3.10
	// creates a queue for it per connection (and leaves it behind), so
	// commands sent while the device is away are lost. A durable queue per
	// device keeps them: /amq/queue/commands.{id} when vigil sends to
	// /queue/commands.{id}.
	Commands string
	// Feedback is the address command acknowledgements are sent to.
	Feedback string
	// Batch is how many samples (of two readings each) go in one message.
	Batch int
	// TLS configures amqps:// connections (say, RootCAs for a broker with a
	// private CA); nil uses Go's defaults.
	TLS *tls.Config
}

// DefaultAMQPLink returns vigil's default addresses on a local broker.
func DefaultAMQPLink() AMQPLink {
	return AMQPLink{
		URL: "amqp://127.0.0.1:5672", Telemetry: "/amq/queue/vigil.telemetry",
		Commands: "/exchange/amq.topic/devices.{id}.messages.devicebound", Feedback: "/amq/queue/vigil.feedback", Batch: 10,
	}
}

// Validate checks the link settings.
func (l AMQPLink) Validate() error {
	u, err := url.Parse(l.URL)
	switch {
	case err != nil:
		return fmt.Errorf("sim: amqp url: %w", err)
	case u.Scheme != "amqp" && u.Scheme != "amqps":
		return fmt.Errorf("sim: amqp url %s: scheme must be amqp or amqps", u.Redacted())
	case l.Telemetry == "" || l.Feedback == "" || !strings.Contains(l.Commands, "{id}") || slices.Contains(l.SpreadTelemetry, ""):
		return errors.New("sim: amqp telemetry and feedback addresses must be set and the commands address must contain {id}")
	case l.Batch < 1:
		return errors.New("sim: amqp batch must be at least 1")
	}
	return nil
}

// AMQPDevice is a simulated device that sends telemetry to, and receives
// commands from, an AMQP 1.0 broker (RabbitMQ) with its own credentials.
// It behaves like Device: the same temperature model, the same commands,
// the same Stats (readings count only once the broker accepted them).
type AMQPDevice struct {
	core
	link       AMQPLink
	reconnects atomic.Int64
	lastErr    error // guarded by core.mu
}

// NewAMQPDevice returns a device; it connects when Run is called. cfg.Addr
// is not used; cfg.Key is the device's broker password.
func NewAMQPDevice(cfg DeviceConfig, link AMQPLink) *AMQPDevice {
	return &AMQPDevice{core: core{cfg: cfg}, link: link}
}

// Reconnects returns how many times the device connected again after
// losing its connection.
func (d *AMQPDevice) Reconnects() int64 { return d.reconnects.Load() }

// LastError returns why the device last lost its connection, or nil.
func (d *AMQPDevice) LastError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastErr
}

// DialAMQP connects to the broker of link as the device name with its key.
func DialAMQP(ctx context.Context, link AMQPLink, name, key string) (*amqp.Conn, error) {
	u, err := url.Parse(link.URL)
	if err != nil {
		return nil, fmt.Errorf("sim %s: amqp url: %w", name, err)
	}
	u.User = url.UserPassword(name, key)
	opts := &amqp.ConnOptions{ContainerID: name}
	if link.VHost != "" {
		opts.HostName = "vhost:" + link.VHost
	}
	if u.Scheme == "amqps" {
		// go-amqp would verify the broker's certificate against the open
		// frame's host name, which names the vhost.
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if link.TLS != nil {
			opts.TLSConfig = link.TLS.Clone()
		}
		if opts.TLSConfig.ServerName == "" {
			opts.TLSConfig.ServerName = u.Hostname()
		}
	}
	c, err := amqp.Dial(ctx, u.String(), opts)
	if err != nil {
		return nil, fmt.Errorf("sim %s: amqp connect: %w", name, err)
	}
	return c, nil
}

// outgoing is a telemetry message waiting for the broker to accept it. It
// keeps its message id when sent again, so vigil stores it once.
type outgoing struct {
	id       string
	body     []byte
	readings int
}

// maxOutbox bounds the messages a disconnected device keeps to send later.
const maxOutbox = 1000

// amqpRun is the state of one Run that survives reconnections.
type amqpRun struct {
	*machine
	runID   string
	seq     int
	samples []string
	outbox  []outgoing
}

// Run connects, receives commands and sends telemetry every Interval
// (Batch samples per message) until ctx ends. When the connection is lost
// it reconnects with backoff (up to 5 s) and sends again, with the same
// message ids, what the broker had not accepted. It returns an error only
// when the first connection fails.
func (d *AMQPDevice) Run(ctx context.Context) error {
	if err := d.link.Validate(); err != nil {
		return err
	}
	conn, err := DialAMQP(ctx, d.link, d.cfg.Name, d.cfg.Key)
	if err != nil {
		return err
	}
	start := time.Now()
	r := &amqpRun{machine: d.newMachine(start), runID: strconv.FormatInt(start.UnixNano(), 36)}
	backoff := 100 * time.Millisecond
	for {
		if err := d.serve(ctx, conn, r); err != nil {
			d.mu.Lock()
			d.lastErr = err
			d.mu.Unlock()
		}
		conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			if conn, err = DialAMQP(ctx, d.link, d.cfg.Name, d.cfg.Key); err == nil {
				d.reconnects.Add(1)
				backoff = 100 * time.Millisecond
				break
			}
		}
	}
}

// serve runs one connection until it fails or ctx ends.
func (d *AMQPDevice) serve(ctx context.Context, conn *amqp.Conn, r *amqpRun) error {
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		return fmt.Errorf("sim %s: session: %w", d.cfg.Name, err)
	}
	tel, err := sess.NewSender(ctx, d.link.Telemetry, nil)
	if err != nil {
		return fmt.Errorf("sim %s: attach %s: %w", d.cfg.Name, d.link.Telemetry, err)
	}
	fb, err := sess.NewSender(ctx, d.link.Feedback, nil)
	if err != nil {
		return fmt.Errorf("sim %s: attach %s: %w", d.cfg.Name, d.link.Feedback, err)
	}
	cmdAddr := strings.ReplaceAll(d.link.Commands, "{id}", d.cfg.Name)
	// Credit of at least 2000: RabbitMQ 3.10 can stall smaller credit.
	rcv, err := sess.NewReceiver(ctx, cmdAddr, &amqp.ReceiverOptions{Credit: 2000})
	if err != nil {
		return fmt.Errorf("sim %s: attach %s: %w", d.cfg.Name, cmdAddr, err)
	}
	cmds := make(chan command, 16)
	lost := make(chan error, 1)
	go func() {
		for {
			m, err := rcv.Receive(ctx, nil)
			if err != nil {
				lost <- err
				return
			}
			_ = rcv.AcceptMessage(ctx, m) // a device takes a command once
			var c command
			if json.Unmarshal(m.GetData(), &c) != nil || c.ID == "" {
				continue
			}
			select {
			case cmds <- c:
			default: // a device that cannot keep up drops commands; vigil expires them
			}
		}
	}()
	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	for {
		// Send what is waiting before taking the next sample.
		for len(r.outbox) > 0 && ctx.Err() == nil {
			if err := d.sendTelemetry(tel, r.outbox[0]); err != nil {
				return err
			}
			r.outbox = r.outbox[1:]
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			return fmt.Errorf("sim %s: commands: %w", d.cfg.Name, err)
		case <-conn.Done():
			return fmt.Errorf("sim %s: connection lost: %w", d.cfg.Name, conn.Err())
		case c := <-cmds:
			if err := d.handleCommand(fb, r, c); err != nil {
				return err
			}
		case now := <-tick.C:
			d.takeSample(r, now)
		}
	}
}

// takeSample takes one sample and queues a message when the batch is full.
func (d *AMQPDevice) takeSample(r *amqpRun, now time.Time) {
	r.samples = append(r.samples, d.sample(r.machine, now))
	if len(r.samples) < d.link.Batch {
		return
	}
	r.seq++
	out := outgoing{id: r.runID + "-" + strconv.Itoa(r.seq), body: []byte("[" + strings.Join(r.samples, ",") + "]"), readings: 2 * len(r.samples)}
	r.samples = r.samples[:0]
	if len(r.outbox) >= maxOutbox {
		r.outbox = r.outbox[1:]
		d.mu.Lock()
		d.stats.Failed++
		d.mu.Unlock()
	}
	r.outbox = append(r.outbox, out)
}

// sendTelemetry sends one message unsettled and waits for the broker's
// outcome. It returns an error when the message should be sent again on a
// new connection; a message the broker refuses is dropped and counted.
func (d *AMQPDevice) sendTelemetry(s *amqp.Sender, out outgoing) error {
	msg := &amqp.Message{
		Header:     &amqp.MessageHeader{Durable: true},
		Properties: &amqp.MessageProperties{MessageID: out.id, UserID: []byte(d.cfg.Name), ContentType: ptr("application/json")},
		Data:       [][]byte{out.body},
	}
	accepted, err := sendUnsettled(s, msg)
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case accepted:
		d.stats.Messages++
		d.stats.Readings += int64(out.readings)
	case err != nil:
		d.stats.Failed++
		return fmt.Errorf("sim %s: send telemetry: %w", d.cfg.Name, err)
	default:
		d.stats.Failed++
	}
	return nil
}

// sendUnsettled sends msg and reports whether the broker accepted it; err
// is set when the outcome is unknown (the link or connection failed).
func sendUnsettled(s *amqp.Sender, msg *amqp.Message) (accepted bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	receipt, err := s.SendWithReceipt(ctx, msg, nil)
	if err != nil {
		return false, err
	}
	state, err := receipt.Wait(ctx)
	if err != nil {
		return false, err
	}
	switch state.(type) {
	case *amqp.StateAccepted:
		return true, nil
	case *amqp.StateReleased:
		return false, errors.New("released by the broker")
	}
	return false, nil // rejected: sending it again would not help
}

func (d *AMQPDevice) handleCommand(fb *amqp.Sender, r *amqpRun, c command) error {
	status, detail := d.command(r.machine, c, time.Now())
	body, _ := json.Marshal(map[string]string{"detail": detail})
	msg := &amqp.Message{
		Header:                &amqp.MessageHeader{Durable: true},
		Properties:            &amqp.MessageProperties{MessageID: "ack-" + c.ID, CorrelationID: c.ID, UserID: []byte(d.cfg.Name), ContentType: ptr("application/json")},
		ApplicationProperties: map[string]any{"ack": status},
		Data:                  [][]byte{body},
	}
	accepted, err := sendUnsettled(fb, msg)
	if accepted {
		d.mu.Lock()
		d.stats.Acknowledged++
		d.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("sim %s: acknowledge %s: %w", d.cfg.Name, c.ID, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// AMQPFleet is a set of simulated AMQP devices.
type AMQPFleet struct {
	Devices []*AMQPDevice
}

// NewAMQPFleet builds the devices of cfg (cfg.Addr is not used) on link.
// key returns each device's broker password; the devices must exist as
// broker users and be registered with vigil before Run.
func NewAMQPFleet(cfg FleetConfig, link AMQPLink, key func(name string) string) (*AMQPFleet, error) {
	if err := link.Validate(); err != nil {
		return nil, err
	}
	f, err := NewFleet(cfg, key)
	if err != nil {
		return nil, err
	}
	out := &AMQPFleet{}
	for i, d := range f.Devices {
		dl := link
		if n := len(link.SpreadTelemetry); n > 0 {
			dl.Telemetry = link.SpreadTelemetry[i%n]
		}
		out.Devices = append(out.Devices, NewAMQPDevice(d.cfg, dl))
	}
	return out, nil
}

// Run runs every device until ctx ends and returns the errors of devices
// that could not connect.
func (f *AMQPFleet) Run(ctx context.Context) error {
	return runStaggered(ctx, len(f.Devices), func(i int) (time.Duration, func(context.Context) error) {
		return f.Devices[i].cfg.Interval, f.Devices[i].Run
	})
}

// Totals sums the stats of all devices.
func (f *AMQPFleet) Totals() Stats {
	return sumStats(len(f.Devices), func(i int) Stats { return f.Devices[i].Stats() })
}
