package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigil-iot/vigil/gateway"
)

// rawClient speaks MQTT packet by packet, for what a library client does
// not let a test do: choose packet ids, withhold PUBACKs, set a will.
type rawClient struct {
	t       *testing.T
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

// dialRaw connects to g and sends connect; it returns the client and the
// gateway's CONNACK.
func dialRaw(t *testing.T, g *Gateway, version byte, connect packets.ConnectParams) (*rawClient, packets.Packet) {
	t.Helper()
	return dialRawFrom(t, g, "", version, connect)
}

// dialRawFrom is dialRaw from the local IP address local (any when "").
func dialRawFrom(t *testing.T, g *Gateway, local string, version byte, connect packets.ConnectParams) (*rawClient, packets.Packet) {
	t.Helper()
	var d net.Dialer
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", g.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: version}
	connect.ProtocolName = []byte("MQTT")
	connect.Keepalive = 60
	connect.UsernameFlag, connect.PasswordFlag = true, true
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: connect})
	return c, c.next()
}

// send writes pk.
func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	default:
		c.t.Fatalf("rawClient cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatal(err)
	}
}

// next reads the next packet, or returns the zero packet when none comes
// within two seconds or the connection ends.
func (c *rawClient) next() packets.Packet {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := c.r.ReadByte()
	if err != nil {
		return packets.Packet{}
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		c.t.Fatal(err)
	}
	if fh.Remaining, _, err = packets.DecodeLength(c.r); err != nil {
		c.t.Fatal(err)
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatal(err)
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: c.version}
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return pk
}

// subscribe subscribes to filter at QoS 1 and checks the SUBACK.
func (c *rawClient) subscribe(filter string) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 999,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}})
	if sa := c.next(); sa.FixedHeader.Type != packets.Suback || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] >= 0x80 {
		c.t.Fatalf("subscribe %s: %+v", filter, sa)
	}
}

// login returns the CONNECT fields of device name with key.
func login(name, key string, clean bool) packets.ConnectParams {
	return packets.ConnectParams{ClientIdentifier: name, Username: []byte(name), Password: []byte(key), Clean: clean}
}

// TestWillOnlyAsOwnTelemetry: a device may leave a will only as telemetry
// on its own events topic, which vigil stores when the device drops. mochi
// publishes a will to subscribers past the topic checks, so a will naming
// another device's devicebound topic would reach that device as a command
// from vigil: such a connection is refused.
func TestWillOnlyAsOwnTelemetry(t *testing.T) {
	g, sink, _ := start(t)
	victim, ca := dialRaw(t, g, 4, login("dev-2", "key-two-2", true))
	if ca.ReasonCode != 0 {
		t.Fatalf("dev-2 refused: %+v", ca)
	}
	victim.subscribe("devices/dev-2/messages/devicebound/#")

	forged := "devices/dev-2/messages/devicebound/%24.mid=666&name=shutdown"
	for _, tc := range []struct {
		name    string
		version byte
		topic   string
		code    byte
	}{
		{"another device's commands, 3.1.1", 4, forged, 5}, // return code 5: not authorized
		{"another device's commands, 5", 5, forged, packets.ErrNotAuthorized.Code},
	} {
		denied := g.Stats().Denied
		cp := login("dev-1", "key-one-1", true)
		cp.WillFlag, cp.WillTopic, cp.WillPayload, cp.WillQos = true, tc.topic, []byte(`{"id":"666","name":"shutdown"}`), 1
		c, ca := dialRaw(t, g, tc.version, cp)
		if ca.FixedHeader.Type != packets.Connack || ca.ReasonCode != tc.code {
			t.Fatalf("%s: CONNACK %+v, want reason %#x", tc.name, ca, tc.code)
		}
		if tc.version == 5 && !bytes.Contains([]byte(ca.Properties.ReasonString), []byte("devices/dev-1/messages/events/")) {
			t.Errorf("%s: the refusal does not say which topic a will may use: %q", tc.name, ca.Properties.ReasonString)
		}
		if g.Stats().Denied != denied+1 {
			t.Errorf("%s: denied %d, want %d", tc.name, g.Stats().Denied, denied+1)
		}
		c.conn.Close()
	}
	if pk := victim.next(); pk.FixedHeader.Type == packets.Publish {
		t.Fatalf("dev-2 received a will of dev-1 as a command: %s %s", pk.TopicName, pk.Payload)
	}

	// A will on its own events topic is stored as telemetry when the device
	// drops without a DISCONNECT.
	cp := login("dev-1", "key-one-1", true)
	cp.WillFlag, cp.WillTopic, cp.WillPayload, cp.WillQos = true, "devices/dev-1/messages/events/%24.mid=last-words", []byte(`{"battery": 0.01}`), 1
	c, ca := dialRaw(t, g, 4, cp)
	if ca.ReasonCode != 0 {
		t.Fatalf("a will on the device's own events topic refused: %+v", ca)
	}
	c.conn.Close()
	select {
	case m := <-sink:
		if m.Device.Name != "dev-1" || m.ID != "last-words" || string(m.Body) != `{"battery": 0.01}` {
			t.Fatalf("the will reached ingest as %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the will of a dropped device did not reach ingest")
	}
}

// TestAckPublishLeavesCommandsAlone: a device's acknowledgement or
// telemetry, published at QoS 1 under the same packet id as a command vigil
// is still waiting to hear a PUBACK for, neither reports that command
// delivered nor drops it from the device's session. (Packet ids of the two
// directions are independent in MQTT; mochi keeps both in one table.)
func TestAckPublishLeavesCommandsAlone(t *testing.T) {
	g, sink, acks := start(t)
	persistent := login("dev-2", "key-two-2", false)
	dev, ca := dialRaw(t, g, 4, persistent)
	if ca.ReasonCode != 0 {
		t.Fatalf("refused: %+v", ca)
	}
	dev.subscribe("devices/dev-2/messages/devicebound/#")
	for _, id := range []string{"A", "B"} {
		if err := g.Send(t.Context(), gateway.Command{ID: id, Device: "dev-2", Name: "cool"}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := dev.next(), dev.next()
	if a.FixedHeader.Type != packets.Publish || b.FixedHeader.Type != packets.Publish || a.PacketID == b.PacketID {
		t.Fatalf("commands arrived as %+v and %+v", a, b)
	}
	// The device PUBACKs neither; it answers A under B's packet id.
	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: b.PacketID,
		TopicName: "devices/dev-2/messages/events/%24.cid=A&ack=completed"})
	if pa := dev.next(); pa.FixedHeader.Type != packets.Puback || pa.PacketID != b.PacketID {
		t.Fatalf("the acknowledgement's PUBACK: %+v", pa)
	}
	// And it sends telemetry under A's packet id.
	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: a.PacketID,
		TopicName: "devices/dev-2/messages/events/", Payload: []byte(`{"temperature": 70}`)})
	(<-sink).Settle(nil)
	if pa := dev.next(); pa.FixedHeader.Type != packets.Puback || pa.PacketID != a.PacketID {
		t.Fatalf("the telemetry's PUBACK: %+v", pa)
	}
	// The connection drops; B, never acknowledged, comes again in the
	// resumed session.
	dev.conn.Close()
	dev, ca = dialRaw(t, g, 4, persistent)
	if ca.ReasonCode != 0 || !ca.SessionPresent {
		t.Fatalf("reconnection: %+v", ca)
	}
	var resent []string
	for pk := dev.next(); pk.FixedHeader.Type == packets.Publish; pk = dev.next() {
		resent = append(resent, pk.TopicName)
	}
	if len(resent) != 2 {
		t.Errorf("commands sent again in the resumed session: %q, want A and B", resent)
	}
	if got := <-acks; got.CommandID != "A" || got.Status != gateway.AckCompleted {
		t.Fatalf("first acknowledgement reported: %+v", got)
	}
	select {
	case got := <-acks:
		t.Fatalf("reported %s %s, which the device never acknowledged", got.CommandID, got.Status)
	default:
	}
}

// TestCommandsResentInOrder: commands a device has not acknowledged when
// its connection drops come again, in the order vigil sent them, in the
// resumed session, even when they were all sent within one second.
func TestCommandsResentInOrder(t *testing.T) {
	g, _, _ := start(t)
	persistent := login("dev-2", "key-two-2", false)
	dev, _ := dialRaw(t, g, 4, persistent)
	dev.subscribe("devices/dev-2/messages/devicebound/#")
	const n = 8
	for i := range n {
		if err := g.Send(t.Context(), gateway.Command{ID: strconv.Itoa(i), Device: "dev-2", Name: "step"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if pk := dev.next(); pk.FixedHeader.Type != packets.Publish || !strings.Contains(pk.TopicName, "mid="+strconv.Itoa(i)+"&") {
			t.Fatalf("command %d arrived as %q", i, pk.TopicName)
		}
	}
	dev.conn.Close() // none acknowledged
	dev, ca := dialRaw(t, g, 4, persistent)
	if !ca.SessionPresent {
		t.Fatalf("session not resumed: %+v", ca)
	}
	for i := range n {
		if pk := dev.next(); pk.FixedHeader.Type != packets.Publish || !pk.FixedHeader.Dup || !strings.Contains(pk.TopicName, "mid="+strconv.Itoa(i)+"&") {
			t.Fatalf("resent command %d of %d arrived as %q (dup %v)", i, n, pk.TopicName, pk.FixedHeader.Dup)
		}
	}
}

// TestWrongKeysAreThrottled: after five wrong keys in a row from one host, a
// device must wait before its next attempt from there: the attempt is
// refused unchecked, even with the right key, with "connection rate
// exceeded" and the wait on MQTT 5 ("server unavailable" on 3.1.1). From
// another host the device still connects.
func TestWrongKeysAreThrottled(t *testing.T) {
	g, _, _ := start(t)
	g.throttle.Base = time.Minute // the wait outlasts the test on a slow machine
	for i := range 5 {
		c, ca := dialRawFrom(t, g, "127.0.0.1", 5, login("dev-1", "wrong-key-"+strconv.Itoa(i), true))
		if ca.ReasonCode != packets.ErrBadUsernameOrPassword.Code {
			t.Fatalf("wrong key %d: CONNACK reason %#x, want bad user name or password", i+1, ca.ReasonCode)
		}
		c.conn.Close()
	}
	c, ca := dialRawFrom(t, g, "127.0.0.1", 5, login("dev-1", "key-one-1", true))
	if ca.ReasonCode != packets.ErrConnectionRateExceeded.Code || !strings.Contains(ca.Properties.ReasonString, "try again in") {
		t.Fatalf("after five wrong keys: CONNACK reason %#x %q, want connection rate exceeded with the wait", ca.ReasonCode, ca.Properties.ReasonString)
	}
	c.conn.Close()
	c, ca = dialRawFrom(t, g, "127.0.0.1", 4, login("dev-1", "key-one-1", true))
	if ca.ReasonCode != packets.Err3ServerUnavailable.Code {
		t.Fatalf("after five wrong keys, MQTT 3.1.1: CONNACK return code %#x, want server unavailable", ca.ReasonCode)
	}
	c.conn.Close()
	if st := g.Stats(); st.Throttled != 2 || st.RefusedKey != 5 {
		t.Fatalf("stats %+v, want 2 throttled and 5 wrong keys", st)
	}
	if _, ca := dialRawFrom(t, g, "127.0.0.2", 5, login("dev-1", "key-one-1", true)); ca.ReasonCode != 0 {
		t.Fatalf("from another host: CONNACK reason %#x", ca.ReasonCode)
	}
}
