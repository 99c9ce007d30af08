package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
)

// MinCredit is the smallest link credit Validate allows: RabbitMQ 3.10
// stalls delivery for good with credit between 10 and 1000, and delivered
// every message in every run with 2000.
const MinCredit = 2000

// MaxCredit is the largest link credit Validate allows: ten times the
// default, and each source sets aside room for twice its credit in
// settlements.
const MaxCredit = 100_000

// MinStallAfter is the shortest Config.StallAfter Validate allows.
const MinStallAfter = time.Millisecond

// Config sets up the broker link. The zero value is not usable; start from
// DefaultConfig.
type Config struct {
	// URL is the broker, amqp://user:password@host:port or amqps://...
	// The credentials are vigil's own (the URL's user wins over any other
	// SASL setting in go-amqp). Never logged with its password.
	URL string
	// VHost is the RabbitMQ virtual host; empty for the broker's default.
	// Not for a command connection signed in with SAS (IoT Hub).
	VHost string
	// TLS configures amqps:// connections; nil uses Go's defaults. Not
	// for a command connection signed in with SAS: IoT Hub's certificate
	// is checked against the system's roots, and no client certificate is
	// presented to it.
	TLS *tls.Config
	// Sources are the addresses telemetry is received from, a receiver
	// each, all on the one connection: usually one queue, or the queues of
	// the shard of the fleet this vigil serves when a broker spreads
	// devices over several (a consistent-hash exchange, a partitioned
	// hub). /amq/queue/NAME and /queue/NAME queues are declared (durable)
	// when missing.
	Sources []string
	// CommandAddress is where a command to a device is sent; "{id}" is
	// replaced by the device id. /exchange/X/KEY is sent as one link to
	// /exchange/X with the routing key KEY in the subject. Empty for a
	// broker with no way to devices (Event Hubs): Send then says the
	// device cannot be reached through it.
	CommandAddress string
	// Feedback is the address devices' command acknowledgements are
	// received from; declared like Sources. Empty for none.
	Feedback string
	// FeedbackFormat is how acknowledgements read: FeedbackVigil (the
	// default, "") or FeedbackIoTHub.
	FeedbackFormat string
	// CommandURL, when not empty, is a connection of its own for commands
	// and their feedback, apart from the telemetry's URL: Azure IoT Hub
	// hands out telemetry on its built-in (Event Hub-compatible) endpoint
	// and takes commands on its own host. Its credentials come from SAS
	// when that is set. Empty: commands and feedback share the telemetry's
	// connection.
	CommandURL string
	// SAS, when set, signs the command connection in with a fresh shared
	// access signature each time it connects (IoT Hub).
	SAS *SAS
	// CommandTo, when not empty, is the to property of a command, "{id}"
	// replaced by the device id, URL-encoded as Azure's SDKs encode it
	// (IoT Hub allows % # ? : + @ $ and more in ids): IoT Hub takes every
	// command on one address, /messages/devicebound, and routes it by its
	// to, /devices/{id}/messages/devicebound.
	CommandTo string
	// CommandProperties are application properties set on every command
	// (IoT Hub: iothub-ack=full asks for feedback on each).
	CommandProperties map[string]string
	// Credit is the link credit of every receiver: how many messages may be
	// delivered on it and not yet settled. It bounds the telemetry in flight
	// between the broker and a commit, per source. At least MinCredit. The
	// default, 10,000, is well above it: with 2,000, a consumer that settles
	// in batches (vigil settles a whole commit at once) was seen to stall
	// for good on RabbitMQ 3.10 — a bare go-amqp consumer too — and larger
	// credit keeps more messages in flight while a batch commits. No credit
	// rules the stall out (see watchStall for its cause): with small
	// messages vigil holds most of its credit unsettled, and about half of
	// the drains of 20,000 ten-reading messages stalled; StallAfter
	// reconnects such a link.
	Credit int
	// TrustProperty, when not empty, names an application property that
	// carries the device id, for a trusted field gateway that forwards for
	// many devices. Messages without the property fall back to the user-id.
	TrustProperty string
	// DeviceAnnotation, when not empty, names a message annotation that
	// carries the device id, for a hub that stamps each message with the
	// device that sent it — Azure IoT Hub's built-in (Event Hub-compatible)
	// endpoint puts it in iothub-connection-device-id — so devices cannot
	// forge it there. Messages without it fall back to the user-id. Where
	// senders may set annotations themselves (RabbitMQ) it is a claim like
	// TrustProperty: set TrustedGateways. Not together with TrustProperty.
	DeviceAnnotation string
	// TrustedGateways, when not empty, are the user-ids (checked by the
	// broker, as RabbitMQ does) whose messages may name a device in
	// TrustProperty or DeviceAnnotation; a message from anyone else that
	// names a device other than its own user-id is rejected and counted
	// (Stats.RefusedClaim), so devices and field gateways can share a
	// source. When empty, anyone who may send to a source can claim any
	// device through either: leave it empty only where the broker lets
	// nothing but trusted field gateways write there, or does not check
	// user-ids (Service Bus, Event Hubs).
	TrustedGateways []string
	// Workers is how many goroutines hand messages to the sink (which
	// decodes them on the calling goroutine).
	Workers int
	// MaxBody bounds a telemetry message's body, in bytes, as MQTT's
	// packet size and HTTP's body limit bound theirs: a larger one is
	// rejected (and counted) without being decoded or stored.
	MaxBody int
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
	// SendTimeout bounds one command send, attaching its link included,
	// whatever the caller's context: a broker that blocks publishers (a
	// memory or disk alarm) must not hold the caller, which is the
	// scoring pipeline, for good.
	SendTimeout time.Duration
	// MaxBackoff caps the wait between two connection attempts.
	MaxBackoff time.Duration
	// StallAfter is how long a telemetry source that has delivered at
	// least its credit on its connection, and holds nothing unsettled, may
	// deliver nothing before vigil reconnects in case the broker stopped
	// honouring its credit (see watchStall). At least MinStallAfter.
	StallAfter time.Duration

	// commandVHost is the virtual host of a command connection signed in
	// with SAS, which VHost does not apply to: only tests set it, for
	// RabbitMQ standing in for IoT Hub.
	commandVHost string
}

// Feedback formats.
const (
	// FeedbackVigil is an acknowledgement per message: correlation-id =
	// the command id, application property ack = completed|rejected, an
	// optional JSON body {"detail": "..."}; the device is the sender.
	FeedbackVigil = ""
	// FeedbackIoTHub is Azure IoT Hub's feedback: a JSON array of records,
	// each naming the command (originalMessageId), the device (deviceId,
	// which the hub vouches for) and what became of it (statusCode:
	// Success when the device completed it, Rejected; Expired,
	// DeliveryCountExceeded and Purged are left to vigil's own expiry).
	FeedbackIoTHub = "iothub"
)

// UseIoTHub sends commands through Azure IoT Hub's service endpoint, which
// sas signs in to: one link to /messages/devicebound, the device in each
// command's to property, feedback requested on every command
// (iothub-ack=full) and read from /messages/servicebound/feedback.
// Telemetry still comes from URL and Sources, the hub's built-in
// endpoint.
func (c *Config) UseIoTHub(sas SAS) {
	c.CommandURL = "amqps://" + sas.Resource + ":5671"
	c.SAS = &sas
	c.CommandAddress, c.CommandTo = "/messages/devicebound", "/devices/{id}/messages/devicebound"
	c.CommandProperties = map[string]string{"iothub-ack": "full"}
	c.Feedback, c.FeedbackFormat = "/messages/servicebound/feedback", FeedbackIoTHub
}

// Default addresses.
const (
	DefaultSource         = "/amq/queue/vigil.telemetry"
	DefaultCommandAddress = "/exchange/amq.topic/devices.{id}.messages.devicebound"
	DefaultFeedback       = "/amq/queue/vigil.feedback"
)

// DefaultConfig returns the link settings vigil runs with by default, for a
// broker on localhost.
func DefaultConfig() Config {
	return Config{
		URL: "amqp://127.0.0.1:5672", Sources: []string{DefaultSource}, CommandAddress: DefaultCommandAddress,
		Feedback: DefaultFeedback, Credit: 10000, Workers: 2, MaxBody: 1 << 20, DialTimeout: 10 * time.Second, SendTimeout: 10 * time.Second,
		MaxBackoff: 5 * time.Second, StallAfter: 30 * time.Second,
	}
}

// Validate checks the configuration without connecting to anything.
func (c Config) Validate() error {
	if err := checkURL("broker url", c.URL); err != nil {
		return err
	}
	if c.CommandURL != "" {
		if err := checkURL("command url", c.CommandURL); err != nil {
			return err
		}
	}
	if c.SAS != nil {
		if c.CommandURL == "" {
			return errors.New("amqp: a shared access signature without a command url: it signs the command connection in")
		}
		if _, _, err := c.SAS.credentials(time.Now()); err != nil {
			return fmt.Errorf("amqp: %w", err)
		}
		if c.SAS.TTL <= 0 {
			return errors.New("amqp: the shared access signature's lifetime must be positive")
		}
	}
	if c.FeedbackFormat != FeedbackVigil && c.FeedbackFormat != FeedbackIoTHub {
		return fmt.Errorf("amqp: feedback format %q: want %q or none", c.FeedbackFormat, FeedbackIoTHub)
	}
	if len(c.Sources) == 0 {
		return errors.New("amqp: no telemetry source: name at least one address, such as " + DefaultSource)
	}
	// Not only /...: Service Bus and Event Hubs name entities by their
	// path (QUEUE, HUB/ConsumerGroups/$Default/Partitions/0).
	checkAddr := func(name, addr string) error {
		if addr == "" || strings.ContainsFunc(addr, unicode.IsSpace) {
			return fmt.Errorf("amqp: %s %q: want an address such as /amq/queue/NAME (RabbitMQ) or an entity path (Service Bus, Event Hubs)", name, addr)
		}
		return nil
	}
	optional := func(name, addr string) error {
		if addr == "" {
			return nil
		}
		return checkAddr(name, addr)
	}
	if err := errors.Join(optional("feedback", c.Feedback), optional("command address", c.CommandAddress)); err != nil {
		return err
	}
	for i, s := range c.Sources {
		if err := checkAddr("source", s); err != nil {
			return err
		}
		if s == c.Feedback {
			return fmt.Errorf("amqp: source and feedback are both %q: telemetry and acknowledgements need their own queues", s)
		}
		if slices.Contains(c.Sources[:i], s) {
			return fmt.Errorf("amqp: source %q is named twice: give each telemetry address once", s)
		}
	}
	if c.CommandAddress != "" && !strings.Contains(c.CommandAddress, "{id}") && !strings.Contains(c.CommandTo, "{id}") {
		return fmt.Errorf("amqp: command address %q has no {id}: every device needs its own address (or its own to property)", c.CommandAddress)
	}
	if c.Credit < MinCredit {
		return fmt.Errorf("amqp: credit %d: must be at least %d (RabbitMQ 3.10 can stall with less)", c.Credit, MinCredit)
	}
	if c.Credit > MaxCredit {
		return fmt.Errorf("amqp: credit %d: must be at most %d (each source keeps room to settle twice its credit; the messages in flight take about credit × message size)", c.Credit, MaxCredit)
	}
	if c.TrustProperty != "" && c.DeviceAnnotation != "" {
		return fmt.Errorf("amqp: both a trust property (%q) and a device annotation (%q): the device id comes from one of them", c.TrustProperty, c.DeviceAnnotation)
	}
	if len(c.TrustedGateways) > 0 && c.TrustProperty == "" && c.DeviceAnnotation == "" {
		return fmt.Errorf("amqp: trusted gateways %q without a trust property or device annotation: name where they put the device id", c.TrustedGateways)
	}
	if c.Workers < 1 {
		return fmt.Errorf("amqp: workers %d: must be at least 1", c.Workers)
	}
	if c.MaxBody < 1 {
		return fmt.Errorf("amqp: max body %d: must be at least 1 byte", c.MaxBody)
	}
	if c.DialTimeout <= 0 || c.SendTimeout <= 0 || c.MaxBackoff <= 0 || c.StallAfter <= 0 {
		return fmt.Errorf("amqp: dial timeout (%s), send timeout (%s), max backoff (%s) and stall time (%s) must be positive", c.DialTimeout, c.SendTimeout, c.MaxBackoff, c.StallAfter)
	}
	if c.StallAfter < MinStallAfter {
		return fmt.Errorf("amqp: stall time %s: must be at least %s (a source is looked at four times per stall time; the default is %s)", c.StallAfter, MinStallAfter, DefaultConfig().StallAfter)
	}
	return nil
}

// checkURL checks a broker URL.
func checkURL(what, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("amqp: %s: %w", what, errors.Unwrap(err))
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return fmt.Errorf("amqp: %s %s: scheme must be amqp or amqps", what, u.Redacted())
	}
	if u.Host == "" {
		return fmt.Errorf("amqp: %s %s: no host", what, u.Redacted())
	}
	return nil
}

// queueToDeclare returns the /queue/NAME address that declares the queue
// behind addr, or "" when addr names no queue (an exchange, a topic).
func queueToDeclare(addr string) string {
	for _, p := range []string{"/amq/queue/", "/queue/"} {
		if name, ok := strings.CutPrefix(addr, p); ok && name != "" && !strings.Contains(name, "/") {
			return "/queue/" + name
		}
	}
	return ""
}

// transientSource reports whether receiving from addr makes RabbitMQ 3.x
// create a queue for the link alone (auto-deleted with it): an exchange or
// topic address rather than a queue.
func transientSource(addr string) bool {
	return strings.HasPrefix(addr, "/exchange/") || strings.HasPrefix(addr, "/topic/")
}

// commandTarget returns the link address and the subject (routing key, ""
// for none) of a command to device. /exchange/X/KEY becomes /exchange/X
// with KEY as subject, so that one link serves every device.
func commandTarget(template, device string) (addr, subject string) {
	if rest, ok := strings.CutPrefix(template, "/exchange/"); ok {
		if x, key, ok := strings.Cut(rest, "/"); ok && x != "" && strings.Contains(key, "{id}") {
			return "/exchange/" + x, strings.ReplaceAll(key, "{id}", device)
		}
	}
	return strings.ReplaceAll(template, "{id}", device), ""
}

// commandTo returns the to property of a command to device: template with
// "{id}" replaced by the device id, escaped as JavaScript's
// encodeURIComponent escapes it (what Azure's IoT Hub service SDK does):
// every byte but letters, digits and - _ . ! ~ * ' ( ) as %XX.
func commandTo(template, device string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := range len(device) {
		c := device[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return strings.ReplaceAll(template, "{id}", b.String())
}
