package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// DeviceConfig describes one simulated device.
type DeviceConfig struct {
	Name string
	Key  string
	// Addr is the gateway's MQTT address, host:port.
	Addr string
	// Interval is the time between two telemetry messages.
	Interval time.Duration
	// DayLength is the period of the temperature's daily cycle; shorten it
	// to see a day pass in a demo.
	DayLength time.Duration
	// Faulty devices start overheating FaultAfter after Run starts,
	// RampPerSecond degrees a second, until they receive a command.
	Faulty        bool
	FaultAfter    time.Duration
	RampPerSecond float64
	// Seed makes the noise reproducible.
	Seed uint64
}

// State is what a simulated device is doing.
type State int32

// Device states.
const (
	Healthy State = iota
	Overheating
	Recovering
)

// String names the state.
func (s State) String() string {
	return [...]string{"healthy", "overheating", "recovering"}[s]
}

// Stats counts what a device did. Readings counts only readings whose
// publish the gateway acknowledged.
type Stats struct {
	Messages      int64 // telemetry messages acknowledged by the gateway
	Readings      int64 // readings in those messages
	Failed        int64 // publishes the gateway did not acknowledge
	Commands      int64 // commands received
	Acknowledged  int64 // command acknowledgements sent
	FirstFaultAt  time.Time
	LastCommandAt time.Time
}

// core is what every simulated device has, whatever its protocol: its
// configuration, what it is doing and its counters.
type core struct {
	cfg   DeviceConfig
	state atomic.Int32

	mu    sync.Mutex
	stats Stats
}

// Name returns the device id.
func (d *core) Name() string { return d.cfg.Name }

// Faulty reports whether the device was configured to overheat.
func (d *core) Faulty() bool { return d.cfg.Faulty }

// State returns what the device is doing now.
func (d *core) State() State { return State(d.state.Load()) }

// Stats returns the counters so far.
func (d *core) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Device is one simulated MQTT device.
type Device struct {
	core
}

// NewDevice returns a device; it connects when Run is called.
func NewDevice(cfg DeviceConfig) *Device { return &Device{core: core{cfg: cfg}} }

// machine is the equipment behind a simulated device: a motor whose
// temperature follows a daily cycle with noise, overheats on a ramp when the
// device is faulty, and cools back exponentially once told to shed load.
type machine struct {
	rng                    *rand.Rand
	start, faultAt, coolAt time.Time
	heat                   float64 // degrees above normal at coolAt
}

func (d *core) newMachine(start time.Time) *machine {
	return &machine{rng: rand.New(rand.NewPCG(d.cfg.Seed, 0x5eed)), start: start}
}

// messageID returns the id of the device's seq-th message: the run (its
// start) and seq, so that a device started again sends new ids, which
// vigil does not take for ones it has stored.
func (m *machine) messageID(seq int) string {
	return strconv.FormatInt(m.start.UnixNano(), 36) + "-" + strconv.Itoa(seq)
}

// sample moves the device through its states and returns its reading at
// now as a telemetry object.
func (d *core) sample(m *machine, now time.Time) string {
	if d.cfg.Faulty && d.State() == Healthy && m.faultAt.IsZero() && now.Sub(m.start) >= d.cfg.FaultAfter {
		m.faultAt = now
		d.state.Store(int32(Overheating))
		d.mu.Lock()
		d.stats.FirstFaultAt = now
		d.mu.Unlock()
	}
	var extra float64
	switch d.State() {
	case Overheating:
		extra = d.cfg.RampPerSecond * now.Sub(m.faultAt).Seconds()
	case Recovering:
		extra = m.heat * math.Exp(-now.Sub(m.coolAt).Seconds()/1.5)
		if extra < 0.01 {
			d.state.Store(int32(Healthy))
		}
	}
	phase := 2 * math.Pi * float64(now.Sub(m.start)) / float64(d.cfg.DayLength)
	temp := 70 + 3*math.Sin(phase) + m.rng.NormFloat64()*0.3 + extra
	vib := 0.3 + m.rng.NormFloat64()*0.02 + extra*0.01
	return fmt.Sprintf(`{"ts":%q,"temperature":%.3f,"vibration":%.4f}`, now.UTC().Format(time.RFC3339Nano), temp, vib)
}

// command counts a received command and carries it out: reduce_load makes
// an overheating machine cool down; anything else is rejected. It returns
// the acknowledgement's status and detail.
func (d *core) command(m *machine, c command, now time.Time) (status, detail string) {
	d.mu.Lock()
	d.stats.Commands++
	d.stats.LastCommandAt = now
	d.mu.Unlock()
	if c.Name != "reduce_load" {
		return "rejected", "unknown command"
	}
	if d.State() == Overheating {
		m.heat = d.cfg.RampPerSecond * now.Sub(m.faultAt).Seconds()
		m.coolAt = now
		d.state.Store(int32(Recovering))
	}
	return "completed", "load reduced"
}

// command is the document a device receives on its devicebound topic.
type command struct {
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Payload json.RawMessage `json:"payload"`
}

// Connect opens an MQTT 5 session for a device the way an IoT Hub device
// does: client id = device id, IoT Hub style user name, key as password.
// onPublish, if not nil, receives every message the gateway sends it.
func Connect(ctx context.Context, addr, name, key string, onPublish func(*paho.Publish)) (*paho.Client, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sim %s: dial %s: %w", name, addr, err)
	}
	return ConnectConn(ctx, conn, name, key, onPublish)
}

// ConnectConn is Connect over a connection the caller opened, a TLS one
// for instance. It closes conn if the MQTT connection is refused.
func ConnectConn(ctx context.Context, conn net.Conn, name, key string, onPublish func(*paho.Publish)) (*paho.Client, error) {
	cfg := paho.ClientConfig{Conn: &packetConn{Conn: conn}, ClientID: name}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onPublish(pr.Packet); return true, nil },
		}
	}
	c := paho.NewClient(cfg)
	ca, err := c.Connect(ctx, &paho.Connect{
		ClientID:     name,
		Username:     "vigil/" + name + "/?api-version=2021-04-12",
		UsernameFlag: true,
		Password:     []byte(key),
		PasswordFlag: true,
		KeepAlive:    60,
		CleanStart:   true,
	})
	if err != nil {
		conn.Close()
		if ca != nil {
			return nil, fmt.Errorf("sim %s: connect refused: reason %d %s", name, ca.ReasonCode, ca.Properties.ReasonString)
		}
		return nil, fmt.Errorf("sim %s: connect: %w", name, err)
	}
	return c, nil
}

// packetConn keeps each MQTT packet paho writes whole on the wire. paho
// writes a packet as several buffers, which only a plain TCP connection
// gathers into one write, and it writes from more than one goroutine (the
// keep-alive pinger, acknowledgements, concurrent publishes); over TLS a
// PINGREQ could land inside a PUBLISH. paho holds the lock of a
// connection that is a sync.Locker for the whole of each packet.
type packetConn struct {
	net.Conn
	sync.Mutex
}

// EventsTopic returns the topic a device publishes telemetry to.
func EventsTopic(name string) string { return "devices/" + name + "/messages/events/" }

// TelemetryTopic returns the events topic with a message id in its property
// bag, as IoT Hub devices send it; vigil drops a message that arrives twice
// with the same id.
func TelemetryTopic(name, msgID string) string {
	bag := url.Values{}
	bag.Set("$.mid", msgID)
	return EventsTopic(name) + bag.Encode()
}

// AckTopic returns the topic on which a device acknowledges a command.
func AckTopic(name, commandID, status string) string {
	bag := url.Values{}
	bag.Set("$.cid", commandID)
	bag.Set("ack", status)
	return EventsTopic(name) + bag.Encode()
}

// publishTimeout bounds one publish. A publish is not tied to Run's context,
// so that stopping a device never abandons a message the gateway may already
// have stored: Run stops between publishes, never inside one.
const publishTimeout = 10 * time.Second

func publish(c *paho.Client, p *paho.Publish) (*paho.PublishResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	go func() { // a lost connection ends the wait for the PUBACK at once
		select {
		case <-c.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return c.Publish(ctx, p)
}

// Run connects, subscribes to commands and publishes telemetry every
// Interval until ctx ends, then disconnects. It returns an error only when
// the device cannot connect or subscribe.
func (d *Device) Run(ctx context.Context) error {
	cmds := make(chan command, 16)
	topicPrefix := "devices/" + d.cfg.Name + "/messages/devicebound/"
	client, err := Connect(ctx, d.cfg.Addr, d.cfg.Name, d.cfg.Key, func(p *paho.Publish) {
		if !strings.HasPrefix(p.Topic, topicPrefix) {
			return
		}
		var c command
		if json.Unmarshal(p.Payload, &c) != nil || c.ID == "" {
			return
		}
		select {
		case cmds <- c:
		default: // a device that cannot keep up drops commands; vigil expires them
		}
	})
	if err != nil {
		return err
	}
	defer client.Disconnect(&paho.Disconnect{ReasonCode: 0})
	if _, err := client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topicPrefix + "#", QoS: 1}}}); err != nil {
		return fmt.Errorf("sim %s: subscribe: %w", d.cfg.Name, err)
	}

	m := d.newMachine(time.Now())
	seq := 0
	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-cmds:
			status, detail := d.command(m, c, time.Now())
			body, _ := json.Marshal(map[string]string{"detail": detail})
			if _, err := publish(client, &paho.Publish{QoS: 1, Topic: AckTopic(d.cfg.Name, c.ID, status), Payload: body}); err == nil {
				d.mu.Lock()
				d.stats.Acknowledged++
				d.mu.Unlock()
			}
		case now := <-tick.C:
			body := d.sample(m, now)
			seq++
			_, err := publish(client, &paho.Publish{QoS: 1, Topic: TelemetryTopic(d.cfg.Name, m.messageID(seq)), Payload: []byte(body)})
			d.mu.Lock()
			if err == nil {
				d.stats.Messages++
				d.stats.Readings += 2
			} else {
				d.stats.Failed++
			}
			d.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				select {
				case <-client.Done():
					return fmt.Errorf("sim %s: connection lost", d.cfg.Name)
				default:
				}
			}
		}
	}
}
