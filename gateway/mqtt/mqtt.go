package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigil-iot/vigil/gateway"
)

// Config sets up the embedded broker.
type Config struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:1883".
	Addr string
	// SessionExpiry bounds how long a disconnected device's persistent
	// session (and its queued commands) is kept. mochi keeps them forever
	// by default, which leaks memory for devices that never return.
	SessionExpiry time.Duration
	// MaxPacketSize is the largest MQTT packet accepted, in bytes.
	MaxPacketSize uint32
	// WritesPending is the per-connection outgoing queue length. mochi's
	// default (8192) allocates ~64 KB per connection; 128 halves the memory
	// of an idle device.
	WritesPending int32
	// TLS, when set, makes devices connect over TLS (MQTTS, usually port
	// 8883); the key they present as password then travels encrypted.
	TLS *tls.Config
}

// DefaultConfig returns the gateway settings vigil runs with by default.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:1883", SessionExpiry: time.Hour, MaxPacketSize: 1 << 20, WritesPending: 128}
}

// Stats counts what the gateway refused and accepted. All fields only grow.
type Stats struct {
	Connected      int64 // successful connections
	RefusedUnknown int64 // connections from unregistered device ids
	RefusedKey     int64 // connections with a wrong key or mismatched user name
	RefusedOff     int64 // connections from disabled devices
	Throttled      int64 // connections refused unchecked after too many wrong keys (gateway.Throttle)
	Denied         int64 // publishes, subscriptions and wills outside the device's own topics
	Telemetry      int64 // telemetry messages handed to the sink
	Acks           int64 // command acknowledgements received
	BadAcks        int64 // acknowledgements that could not be applied
}

// Gateway is the embedded MQTT gateway. Create it with New, then Start.
type Gateway struct {
	cfg    Config
	auth   gateway.Authenticator
	sink   gateway.Sink
	acks   gateway.AckHandler
	log    *slog.Logger
	server *mochi.Server
	ln     net.Listener
	// commands is the in-process client vigil publishes commands as. It
	// speaks MQTT 5, so that mochi honours each command's expiry: a
	// command that waits for an offline device's session past its expiry
	// is dropped, never delivered late.
	commands *mochi.Client
	// identities maps a connected client id to the device it authenticated
	// as, so publishes carry the store's integer key.
	identities sync.Map
	// inflight maps a command publish waiting for its device's PUBACK
	// (inflightKey) to the command id.
	inflight sync.Map
	// shadowed keeps, for the moment between OnPacketRead and OnPublish, a
	// command publish that a device's publish with the same packet id
	// would drop from the session (inflightKey → packets.Packet).
	shadowed sync.Map
	// sentAt is, per device, the creation time given to the last command
	// publish (see keepOrder); an expired session's entry is dropped.
	orderMu sync.Mutex
	sentAt  map[string]int64

	// throttle holds back a device and host after wrong keys.
	throttle *gateway.Throttle

	connected, refusedUnknown, refusedKey, refusedOff, throttled, denied, telemetry, ackCount, badAcks atomic.Int64
}

var _ gateway.Sender = (*Gateway)(nil)

// New builds a gateway; nothing listens until Start.
func New(cfg Config, auth gateway.Authenticator, sink gateway.Sink, acks gateway.AckHandler, log *slog.Logger) *Gateway {
	return &Gateway{cfg: cfg, auth: auth, sink: sink, acks: acks, log: log, sentAt: map[string]int64{}, throttle: gateway.NewThrottle()}
}

// Start listens on cfg.Addr and serves devices until Close.
func (g *Gateway) Start() error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return fmt.Errorf("mqtt gateway: listen %s: %w", g.cfg.Addr, err)
	}
	if g.cfg.TLS != nil {
		ln = tls.NewListener(ln, g.cfg.TLS)
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = uint32(g.cfg.SessionExpiry / time.Second)
	caps.MaximumPacketSize = g.cfg.MaxPacketSize
	caps.MaximumClientWritesPending = g.cfg.WritesPending
	caps.MaximumQos = 1
	caps.RetainAvailable = 0
	caps.WildcardSubAvailable = 1
	quiet := slog.New(minLevel{g.log.Handler(), slog.LevelWarn}).With("component", "mqtt")
	g.server = mochi.New(&mochi.Options{Capabilities: caps, InlineClient: true, Logger: quiet})
	if err := g.server.AddHook(&hook{g: g}, nil); err != nil {
		ln.Close()
		return fmt.Errorf("mqtt gateway: %w", err)
	}
	if err := g.server.AddListener(listeners.NewNet("devices", ln)); err != nil {
		ln.Close()
		return fmt.Errorf("mqtt gateway: %w", err)
	}
	g.commands = g.server.NewClient(nil, mochi.LocalListener, "vigil-commands", true)
	g.commands.Properties.ProtocolVersion = 5
	g.ln = ln
	if err := g.server.Serve(); err != nil {
		return fmt.Errorf("mqtt gateway: %w", err)
	}
	return nil
}

// Addr returns the address the gateway listens on (useful with port 0).
func (g *Gateway) Addr() string {
	if g.ln == nil {
		return g.cfg.Addr
	}
	return g.ln.Addr().String()
}

// Close disconnects every device and stops listening.
func (g *Gateway) Close() error {
	if g.server == nil {
		return nil
	}
	return g.server.Close()
}

// Stats returns the counters so far.
func (g *Gateway) Stats() Stats {
	return Stats{
		Connected: g.connected.Load(), RefusedUnknown: g.refusedUnknown.Load(), RefusedKey: g.refusedKey.Load(),
		RefusedOff: g.refusedOff.Load(), Throttled: g.throttled.Load(), Denied: g.denied.Load(), Telemetry: g.telemetry.Load(),
		Acks: g.ackCount.Load(), BadAcks: g.badAcks.Load(),
	}
}

// ConnectedDevices returns how many devices are connected now.
func (g *Gateway) ConnectedDevices() int {
	if g.server == nil {
		return 0
	}
	n := 0
	for _, cl := range g.server.Clients.GetAll() {
		if !cl.Net.Inline && !cl.Closed() {
			n++
		}
	}
	return n
}

// CommandTopic returns the topic a command to device is published on: IoT
// Hub's devicebound topic followed by a property bag carrying the message id
// ($.mid), the destination ($.to) and the command name.
func CommandTopic(c gateway.Command) string {
	bag := url.Values{}
	bag.Set("$.mid", c.ID)
	bag.Set("$.to", "/devices/"+c.Device+"/messages/devicebound")
	bag.Set("name", c.Name)
	return "devices/" + c.Device + "/messages/devicebound/" + bag.Encode()
}

// Send publishes a command at QoS 1 to the device's devicebound topic. It
// returns gateway.ErrDeviceOffline when no session of the device subscribes
// to commands.
func (g *Gateway) Send(_ context.Context, c gateway.Command) error {
	if g.server == nil {
		return errors.New("mqtt gateway: not started")
	}
	topic := CommandTopic(c)
	if len(g.server.Topics.Subscribers(topic).Subscriptions) == 0 {
		return fmt.Errorf("command %s to %s: %w (no session subscribed to devices/%s/messages/devicebound/#)", c.ID, c.Device, gateway.ErrDeviceOffline, c.Device)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     c.Body(),
		PacketID:    1, // vigil's own publish is not acknowledged; mochi wants an id all the same
	}
	if !c.Expires.IsZero() {
		left := time.Until(c.Expires)
		if left <= 0 {
			return fmt.Errorf("command %s to %s: expired at %s before it was sent", c.ID, c.Device, c.Expires.Format(time.RFC3339))
		}
		// MQTT 5 message expiry, in whole seconds, rounded up: devices
		// are told how long the command stays valid, and the broker drops
		// it from a waiting session once it has expired.
		pk.Properties.MessageExpiryInterval = uint32((left + time.Second - 1) / time.Second)
	}
	if err := g.server.InjectPacket(g.commands, pk); err != nil {
		return fmt.Errorf("command %s to %s: %w", c.ID, c.Device, err)
	}
	return nil
}

// hook plugs the gateway into mochi's connect, ACL and publish paths.
type hook struct {
	mochi.HookBase
	g *Gateway
}

// ID names the hook in mochi's logs.
func (h *hook) ID() string { return "vigil-gateway" }

// Provides tells mochi which events the hook handles.
func (h *hook) Provides(b byte) bool {
	return b == mochi.OnConnect || b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck || b == mochi.OnPublish ||
		b == mochi.OnQosPublish || b == mochi.OnQosComplete || b == mochi.OnQosDropped || b == mochi.OnClientExpired ||
		b == mochi.OnWillSent || b == mochi.OnPacketRead
}

// OnPacketRead puts aside a command publish still waiting for its PUBACK
// under the packet id of the device's publish just read. Packet ids of
// the two directions are independent in MQTT, but mochi keeps both in one
// inflight table and, taking a device's publish for a resend of its own,
// deletes the entry under that id before OnPublish runs: the command
// would not be sent again if the connection dropped before the device's
// PUBACK. OnPublish puts it back.
func (h *hook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	key := inflightKey{cl.ID, pk.PacketID}
	h.g.shadowed.Delete(key)
	if out, ok := cl.State.Inflight.Get(pk.PacketID); ok && out.FixedHeader.Type == packets.Publish {
		h.g.shadowed.Store(key, out)
	}
	return pk, nil
}

// restoreShadowed puts back the command publish OnPacketRead put aside
// for the device's publish pk, unless the id has been taken again since.
func (h *hook) restoreShadowed(cl *mochi.Client, pk packets.Packet) {
	v, ok := h.g.shadowed.LoadAndDelete(inflightKey{cl.ID, pk.PacketID})
	if !ok {
		return
	}
	if _, taken := cl.State.Inflight.Get(pk.PacketID); !taken && cl.State.Inflight.Set(v.(packets.Packet)) {
		atomic.AddInt64(&h.g.server.Info.Inflight, 1)
	}
}

// OnConnect refuses a will that is not telemetry of the device itself:
// mochi publishes a will straight to subscribers, past OnACLCheck and
// OnPublish, so a will naming another device's devicebound topic would
// reach that device as a command from vigil. As IoT Hub does, a will is
// taken only on the device's own events topic and becomes telemetry
// (OnWillSent). (mochi itself refuses a retained will: the gateway keeps no
// retained messages.)
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	if wait := h.g.throttle.Wait(cl.ID, gateway.Host(cl.Net.Remote)); wait > 0 {
		return h.throttled(cl, wait)
	}
	c := pk.Connect
	if !c.WillFlag || ownEvents(cl.ID, c.WillTopic) {
		return nil
	}
	h.g.denied.Add(1)
	h.g.log.Warn("connection refused: a will outside the device's own events topic", "client_id", cl.ID, "will_topic", c.WillTopic)
	// 3.1.1's return code 5, not authorized.
	return h.refuse(cl, packets.Err3NotAuthorized, packets.ErrNotAuthorized.Code,
		"a will must be telemetry on the device's own topic "+eventsPrefix(cl.ID)+"/")
}

// throttled refuses a connection, its key unchecked, from a device and host
// that must wait after wrong keys (gateway.Throttle): CONNACK "connection
// rate exceeded" on MQTT 5 with the wait, "server unavailable" on 3.1.1.
func (h *hook) throttled(cl *mochi.Client, wait time.Duration) error {
	h.g.throttled.Add(1)
	secs := int(math.Ceil(wait.Seconds()))
	h.g.log.Warn("connection refused: too many wrong keys from this host", "client_id", cl.ID, "remote", cl.Net.Remote, "retry_after_s", secs)
	return h.refuse(cl, packets.Err3ServerUnavailable, packets.ErrConnectionRateExceeded.Code,
		fmt.Sprintf("too many wrong keys for %s from this host: try again in %d s", cl.ID, secs))
}

// refuse answers a CONNECT from OnConnect, where mochi sends no CONNACK of
// its own: v3 on MQTT 3.1.1, code with reason on MQTT 5. It returns the
// code sent, for mochi to end the connection with.
func (h *hook) refuse(cl *mochi.Client, v3 packets.Code, code byte, reason string) error {
	sent := v3
	if cl.Properties.ProtocolVersion == 5 {
		sent = packets.Code{Code: code, Reason: reason}
	}
	if err := h.g.server.SendConnack(cl, sent, false, nil); err != nil {
		return err
	}
	return sent
}

// OnWillSent hands the will of a device that went away without saying
// goodbye to ingest as telemetry from that device (OnConnect allowed it
// only on the device's own events topic). Nobody waits for its
// settlement.
func (h *hook) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	v, ok := h.g.identities.Load(cl.ID)
	if !ok || !ownEvents(cl.ID, pk.TopicName) {
		return
	}
	m := gateway.Message{
		Device:   v.(gateway.Device),
		Source:   pk.TopicName,
		ID:       propertyBag(pk.TopicName, cl.ID).Get("$.mid"),
		Body:     bytes.Clone(pk.Payload),
		Received: time.Now().UTC(),
	}
	if err := h.g.sink.Submit(context.Background(), m); err != nil {
		h.g.log.Warn("will not accepted as telemetry", "device", cl.ID, "err", err)
		return
	}
	h.g.telemetry.Add(1)
}

// OnQosDropped forgets a command publish mochi gave up on (its inflight
// expired): no PUBACK will come for it.
func (h *hook) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	h.g.inflight.Delete(inflightKey{cl.ID, pk.PacketID})
}

// OnClientExpired forgets the command publishes of a session that expired
// without its device coming back (and any put aside by OnPacketRead for a
// publish mochi then refused before OnPublish).
func (h *hook) OnClientExpired(cl *mochi.Client) {
	h.g.orderMu.Lock()
	delete(h.g.sentAt, cl.ID)
	h.g.orderMu.Unlock()
	for _, m := range []*sync.Map{&h.g.inflight, &h.g.shadowed} {
		m.Range(func(k, _ any) bool {
			if k.(inflightKey).client == cl.ID {
				m.Delete(k)
			}
			return true
		})
	}
}

// inflightKey identifies a QoS 1 publish to a client until its PUBACK.
type inflightKey struct {
	client string
	packet uint16
}

// OnQosPublish notes which command a QoS 1 publish to a device carries, so
// that its PUBACK can report the command delivered. mochi calls it again
// with the same packet id when it resends on reconnection.
func (h *hook) OnQosPublish(cl *mochi.Client, pk packets.Packet, _ int64, _ int) {
	rest, ok := strings.CutPrefix(pk.TopicName, deviceboundPrefix(cl.ID))
	if !ok {
		return
	}
	if bag, err := url.ParseQuery(rest); err == nil && bag.Get("$.mid") != "" {
		h.g.inflight.Store(inflightKey{cl.ID, pk.PacketID}, bag.Get("$.mid"))
	}
}

// keepOrder dates vigil's command publish pk after the command before it
// to the same device. mochi sends a resumed session's unacknowledged
// publishes again sorted by creation time, which it keeps in whole seconds
// (and sorts unstably), so commands sent within one second came back in
// any order after a reconnection. A command may so be dated a few seconds
// ahead, which only delays mochi's cap on how long a message may wait (a
// day); its expiry is already fixed. (The sort compares the times' low 16
// bits, so commands still waiting across the second at which those wrap,
// every 18 hours, can still be resent out of order.)
func (h *hook) keepOrder(pk packets.Packet) packets.Packet {
	rest, ok := strings.CutPrefix(pk.TopicName, "devices/")
	if !ok {
		return pk
	}
	device, _, _ := strings.Cut(rest, "/")
	g := h.g
	g.orderMu.Lock()
	defer g.orderMu.Unlock()
	pk.Created = max(pk.Created, g.sentAt[device]+1)
	g.sentAt[device] = pk.Created
	return pk
}

// OnQosComplete reports a command delivered when its device's PUBACK
// arrives.
func (h *hook) OnQosComplete(cl *mochi.Client, pk packets.Packet) {
	if pk.FixedHeader.Type != packets.Puback {
		return
	}
	id, ok := h.g.inflight.LoadAndDelete(inflightKey{cl.ID, pk.PacketID})
	if !ok {
		return
	}
	v, ok := h.g.identities.Load(cl.ID)
	if !ok {
		return
	}
	a := gateway.Ack{Device: v.(gateway.Device), CommandID: id.(string), Status: gateway.AckDelivered, Received: time.Now().UTC()}
	if err := h.g.acks.HandleAck(context.Background(), a); err != nil {
		h.g.log.Warn("command delivery not recorded", "device", cl.ID, "command", a.CommandID, "err", err)
	}
}

// OnConnectAuthenticate admits a device whose client id is registered,
// enabled and whose password is its key.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	g := h.g
	name := cl.ID
	if user := string(pk.Connect.Username); user != "" {
		// IoT Hub style: {host}/{deviceId}/?api-version=...
		if parts := strings.Split(user, "/"); len(parts) >= 2 && parts[1] != "" && parts[1] != name {
			g.refusedKey.Add(1)
			g.log.Warn("connection refused: user name names another device", "client_id", name, "user", user)
			return false
		}
	}
	host := gateway.Host(cl.Net.Remote)
	dev, err := g.auth.AuthenticateDevice(name, string(pk.Connect.Password))
	if err != nil {
		if !errors.Is(err, gateway.ErrDeviceDisabled) {
			g.throttle.Failed(name, host) // a wrong key, or a guessed name
		}
		switch {
		case errors.Is(err, gateway.ErrUnknownDevice):
			g.refusedUnknown.Add(1)
		case errors.Is(err, gateway.ErrDeviceDisabled):
			g.refusedOff.Add(1)
		default:
			g.refusedKey.Add(1)
		}
		g.log.Warn("connection refused", "client_id", name, "remote", cl.Net.Remote, "reason", err)
		return false
	}
	g.throttle.Succeeded(name, host)
	g.connected.Add(1)
	g.identities.Store(name, dev)
	return true
}

func eventsPrefix(id string) string      { return "devices/" + id + "/messages/events" }
func deviceboundPrefix(id string) string { return "devices/" + id + "/messages/devicebound/" }

// ownEvents reports whether topic is device id's events topic, with or
// without a property bag.
func ownEvents(id, topic string) bool {
	p := eventsPrefix(id)
	return topic == p || strings.HasPrefix(topic, p+"/")
}

// OnACLCheck lets a device publish only to its own events topic and
// subscribe only to its own devicebound topics.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	ok := false
	if write {
		ok = ownEvents(cl.ID, topic)
	} else {
		ok = strings.HasPrefix(topic, deviceboundPrefix(cl.ID))
	}
	if !ok {
		h.g.denied.Add(1)
		h.g.log.Warn("topic denied", "device", cl.ID, "topic", topic, "publish", write)
	}
	return ok
}

// OnPublish hands telemetry to the sink and withholds the PUBACK until the
// sink settles the message; command acknowledgements go to the ack handler.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	g := h.g
	if cl.Net.Inline {
		return h.keepOrder(pk), nil // vigil's own command publishes
	}
	h.restoreShadowed(cl, pk)
	v, ok := g.identities.Load(cl.ID)
	if !ok { // cannot happen: every client passed OnConnectAuthenticate
		return pk, packets.ErrRejectPacket
	}
	device := v.(gateway.Device)
	bag := propertyBag(pk.TopicName, cl.ID)
	if ack := bag.Get("ack"); ack != "" {
		err := h.handleAck(cl, device, bag, pk.Payload)
		if pk.FixedHeader.Qos == 0 {
			return pk, packets.ErrRejectPacket
		}
		if errors.Is(err, gateway.ErrAckNotRecorded) {
			// Not recorded for now: no PUBACK, so the device sends it
			// again (an error PUBACK on MQTT 5; 3.1.1 has none, and a
			// disconnect has the session resend what was not acknowledged).
			if cl.Properties.ProtocolVersion == 5 {
				return pk, packets.ErrServerUnavailable
			}
			_ = g.server.DisconnectClient(cl, packets.ErrServerUnavailable)
			return pk, packets.ErrRejectPacket
		}
		// The gateway writes the PUBACK itself, as for telemetry. Left to
		// mochi, the PUBACK of a device's publish is filed in the same
		// inflight table as the commands sent to the device, under the
		// device's packet id, and reported through OnQosComplete: a
		// command waiting under that id would be overwritten (lost from
		// the session) and reported delivered.
		code := packets.CodeSuccess
		if err != nil {
			// MQTT 5 devices learn why; 3.1.1 has no codes in a PUBACK.
			code = packets.Code{Code: packets.ErrImplementationSpecificError.Code,
				Reason: err.Error() + " (not applied; sending it again will not change that)"}
		}
		h.puback(cl, pk.PacketID, code)
		return pk, packets.ErrRejectPacket
	}
	msgID := bag.Get("$.mid")
	if pk.Properties.CorrelationData != nil && msgID == "" {
		msgID = string(pk.Properties.CorrelationData)
	}
	m := gateway.Message{
		Device:   device,
		Source:   pk.TopicName,
		ID:       msgID,
		Body:     bytes.Clone(pk.Payload),
		Received: time.Now().UTC(),
		Settle:   h.settler(cl, pk),
	}
	if err := g.sink.Submit(context.Background(), m); err != nil {
		g.log.Warn("telemetry not accepted", "device", cl.ID, "err", err)
		if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
			return pk, packets.ErrServerUnavailable
		}
		_ = g.server.DisconnectClient(cl, packets.ErrServerUnavailable)
		return pk, packets.ErrRejectPacket
	}
	g.telemetry.Add(1)
	return pk, packets.ErrRejectPacket // PUBACK is written by the settler
}

// settler returns the Settle function of a publish: a PUBACK on success; on
// failure an error PUBACK (MQTT 5) or a disconnect (3.1.1, which has no
// error PUBACK), so the device sends the message again. A body kept as a
// dead letter (not telemetry) gets a "payload format invalid" PUBACK with
// the reason on MQTT 5, and a plain PUBACK on 3.1.1: it is stored, and
// sending it again would not help.
func (h *hook) settler(cl *mochi.Client, pk packets.Packet) func(error) {
	if pk.FixedHeader.Qos == 0 {
		return func(error) {}
	}
	id := pk.PacketID
	return func(err error) {
		code := packets.CodeSuccess
		if reason, invalid := gateway.Invalid(err); invalid {
			code = packets.Code{Code: packets.ErrPayloadFormatInvalid.Code, Reason: reason + " (kept as a dead letter; do not send it again)"}
		} else if err != nil {
			if cl.Properties.ProtocolVersion != 5 {
				_ = h.g.server.DisconnectClient(cl, packets.ErrUnspecifiedError)
				return
			}
			code = packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "vigil could not store the message; send it again"}
		}
		h.puback(cl, id, code)
	}
}

// puback acknowledges the device's QoS 1 publish id with code; an MQTT 5
// device also gets the code's reason, a 3.1.1 device a plain PUBACK.
func (h *hook) puback(cl *mochi.Client, id uint16, code packets.Code) {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id, ReasonCode: packets.CodeSuccess.Code}
	if cl.Properties.ProtocolVersion == 5 && code.Code != packets.CodeSuccess.Code {
		ack.ReasonCode, ack.Properties.ReasonString = code.Code, code.Reason
	}
	if err := cl.WritePacket(ack); err != nil && !errors.Is(err, mochi.ErrConnectionClosed) {
		h.g.log.Warn("puback not sent", "device", cl.ID, "err", err)
	}
}

// handleAck hands a device's acknowledgement to the ack handler and
// returns what it said.
func (h *hook) handleAck(cl *mochi.Client, dev gateway.Device, bag url.Values, body []byte) error {
	g := h.g
	a := gateway.Ack{Device: dev, CommandID: bag.Get("$.cid"), Status: gateway.AckStatus(bag.Get("ack")), Received: time.Now().UTC()}
	var doc struct {
		Detail string `json:"detail"`
	}
	if len(bytes.TrimSpace(body)) > 0 && json.Unmarshal(body, &doc) == nil {
		a.Detail = doc.Detail
	}
	g.ackCount.Add(1)
	err := g.acks.HandleAck(context.Background(), a)
	if err != nil {
		g.badAcks.Add(1)
		g.log.Warn("command acknowledgement not applied", "device", cl.ID, "command", a.CommandID, "err", err)
	}
	return err
}

// propertyBag parses the URL-encoded property bag IoT Hub devices append to
// the events topic ("devices/{id}/messages/events/%24.mid=1&k=v").
func propertyBag(topic, id string) url.Values {
	rest := strings.TrimPrefix(topic, eventsPrefix(id))
	rest = strings.TrimPrefix(rest, "/")
	v, err := url.ParseQuery(rest)
	if err != nil {
		return url.Values{}
	}
	return v
}
