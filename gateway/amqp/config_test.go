package amqp

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/gateway"
)

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	// Service Bus and Event Hubs name entities by path, with no leading /.
	azure := DefaultConfig()
	azure.Sources, azure.Feedback = []string{"fleet/ConsumerGroups/$Default/Partitions/0", "fleet/ConsumerGroups/$Default/Partitions/1"}, "acks"
	if err := azure.Validate(); err != nil {
		t.Fatalf("entity paths: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"http url", func(c *Config) { c.URL = "http://broker:5672" }, "scheme"},
		{"no host", func(c *Config) { c.URL = "amqp://" }, "no host"},
		{"password not in error", func(c *Config) { c.URL = "mqtt://vigil:s3cret@broker" }, "vigil:xxxxx@broker"},
		{"empty source", func(c *Config) { c.Sources = []string{DefaultSource, ""} }, "source"},
		{"source with a space", func(c *Config) { c.Sources = []string{"/amq/queue/vigil telemetry"} }, "source"},
		{"no source", func(c *Config) { c.Sources = nil }, "no telemetry source"},
		{"same queue twice", func(c *Config) { c.Sources = []string{"/amq/queue/shard.0", c.Feedback} }, "own queues"},
		{"one source twice", func(c *Config) { c.Sources = []string{"/amq/queue/shard.0", "/amq/queue/shard.0"} }, "named twice"},
		{"command address without id", func(c *Config) { c.CommandAddress = "/exchange/amq.topic/commands" }, "{id}"},
		{"credit that stalls", func(c *Config) { c.Credit = 100 }, "at least 2000"},
		{"credit too large", func(c *Config) { c.Credit = 1 << 30 }, "at most 100000"},
		{"no send timeout", func(c *Config) { c.SendTimeout = 0 }, "send timeout"},
		{"no workers", func(c *Config) { c.Workers = 0 }, "workers"},
		{"no body", func(c *Config) { c.MaxBody = 0 }, "max body"},
		{"no backoff", func(c *Config) { c.MaxBackoff = 0 }, "backoff"},
		{"no stall time", func(c *Config) { c.StallAfter = 0 }, "stall time"},
		{"stall time too short to watch", func(c *Config) { c.StallAfter = 3 * time.Nanosecond }, "stall time 3ns: must be at least 1ms"},
		{"trusted gateways without a property", func(c *Config) { c.TrustedGateways = []string{"fgw"} }, "trust property"},
		{"a trust property and a device annotation", func(c *Config) { c.TrustProperty, c.DeviceAnnotation = "device", "iothub-connection-device-id" }, "one of them"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

func TestCommandTarget(t *testing.T) {
	tests := []struct{ template, addr, subject string }{
		{DefaultCommandAddress, "/exchange/amq.topic", "devices.d-1.messages.devicebound"},
		{"/exchange/cmds/{id}", "/exchange/cmds", "d-1"},
		{"/queue/commands.{id}", "/queue/commands.d-1", ""},
		{"/topic/devices.{id}", "/topic/devices.d-1", ""},
	}
	for _, tc := range tests {
		addr, subject := commandTarget(tc.template, "d-1")
		if addr != tc.addr || subject != tc.subject {
			t.Errorf("commandTarget(%q) = %q, %q; want %q, %q", tc.template, addr, subject, tc.addr, tc.subject)
		}
	}
}

// TestCommandToEscapesTheDeviceID: the device id in a command's to
// property is escaped as Azure's SDKs escape it (encodeURIComponent), so
// that an IoT Hub id holding URL delimiters routes to that device; the
// characters encodeURIComponent keeps stay as they are.
func TestCommandToEscapesTheDeviceID(t *testing.T) {
	const tmpl = "/devices/{id}/messages/devicebound"
	for id, want := range map[string]string{
		"press-7":         "/devices/press-7/messages/devicebound",
		"a%b#c?d:e+f@g$h": "/devices/a%25b%23c%3Fd%3Ae%2Bf%40g%24h/messages/devicebound",
		"line/4 ;=,&":     "/devices/line%2F4%20%3B%3D%2C%26/messages/devicebound",
		"Az09-_.!~*'()":   "/devices/Az09-_.!~*'()/messages/devicebound",
		"pumpe-müller":    "/devices/pumpe-m%C3%BCller/messages/devicebound",
		"{id}":            "/devices/%7Bid%7D/messages/devicebound",
	} {
		if got := commandTo(tmpl, id); got != want {
			t.Errorf("commandTo(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestQueueToDeclare(t *testing.T) {
	for addr, want := range map[string]string{
		"/amq/queue/vigil.telemetry": "/queue/vigil.telemetry",
		"/queue/q1":                  "/queue/q1",
		"/exchange/amq.topic/k":      "",
		"/topic/k":                   "",
		"/amq/queue/":                "",
	} {
		if got := queueToDeclare(addr); got != want {
			t.Errorf("queueToDeclare(%q) = %q, want %q", addr, got, want)
		}
	}
}

func TestMessageIDAndBody(t *testing.T) {
	uuid := amqp.UUID{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8}
	for _, tc := range []struct {
		id   any
		want string
	}{
		{nil, ""}, {"m-1", "m-1"}, {uint64(42), "42"}, {uuid, "12345678-9abc-def0-0102-030405060708"},
		{[]byte("abc"), "abc"}, {[]byte{0xff, 0x00}, "ff00"},
	} {
		if got := idString(tc.id); got != tc.want {
			t.Errorf("idString(%#v) = %q, want %q", tc.id, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		msg  *amqp.Message
		want string
		ok   bool
	}{
		{"one data section", &amqp.Message{Data: [][]byte{[]byte(`{"t":1}`)}}, `{"t":1}`, true},
		{"two data sections", &amqp.Message{Data: [][]byte{[]byte(`[{"t":1},`), []byte(`{"t":2}]`)}}, `[{"t":1},{"t":2}]`, true},
		{"string value", &amqp.Message{Value: `{"t":1}`}, `{"t":1}`, true},
		{"number value", &amqp.Message{Value: int64(1)}, "", false},
		{"no body", &amqp.Message{}, "", false},
	} {
		got, ok := messageBody(tc.msg)
		if string(got) != tc.want || ok != tc.ok {
			t.Errorf("%s: messageBody = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// TestParseAck reads a command acknowledgement's correlation id, status and
// detail, and says what is wrong with one that lacks them or whose body is
// over the limit.
func TestParseAck(t *testing.T) {
	dev := gateway.Device{ID: 7, Name: "press-7"}
	ack := func(cid any, status string, body string) *amqp.Message {
		m := amqp.NewMessage([]byte(body))
		m.Properties = &amqp.MessageProperties{CorrelationID: cid}
		m.ApplicationProperties = map[string]any{"ack": status}
		return m
	}
	a, bad := parseAck(ack("c-1", "completed", `{"detail": "load reduced"}`), dev, 100)
	if bad != "" || a.CommandID != "c-1" || a.Status != gateway.AckCompleted || a.Detail != "load reduced" || a.Device != dev {
		t.Fatalf("a good acknowledgement: %+v, %q", a, bad)
	}
	for _, tc := range []struct {
		name string
		msg  *amqp.Message
		want string
	}{
		{"no correlation id", ack(nil, "completed", ""), "correlation-id"},
		{"unknown status", ack("c-1", "done", ""), `"done"`},
		{"body over the limit", ack("c-1", "rejected", `{"detail": "`+strings.Repeat("x", 200)+`"}`), "over the 100-byte limit"},
	} {
		if _, bad := parseAck(tc.msg, dev, 100); !strings.Contains(bad, tc.want) {
			t.Errorf("%s: %q, want it to mention %s", tc.name, bad, tc.want)
		}
	}
}

// TestDiagnoseCertificates: the certificate problems a test broker does
// not produce are told apart too.
func TestDiagnoseCertificates(t *testing.T) {
	cert := &x509.Certificate{DNSNames: []string{"broker.internal"}}
	cfg := DefaultConfig()
	tests := []struct {
		err        error
		what, hint string
	}{
		{x509.HostnameError{Certificate: cert, Host: "10.0.0.7"}, "not for 10.0.0.7", "the certificate lists"},
		{x509.CertificateInvalidError{Cert: cert, Reason: x509.Expired}, "not valid", "clock"},
		{x509.UnknownAuthorityError{Cert: cert}, "not trusted", "--amqp-ca"},
		{errors.New("remote error: tls: bad certificate"), "client certificate", "--amqp-cert"},
		{errors.New("something else"), "could not link", "retried"},
	}
	for _, tc := range tests {
		what, hint := diagnose(&stageError{stage: "dial", err: fmt.Errorf("tls: %w", tc.err)}, cfg, roleTelemetry)
		if !strings.Contains(what, tc.what) || !strings.Contains(hint, tc.hint) {
			t.Errorf("%v: %q / %q; want %q / %q", tc.err, what, hint, tc.what, tc.hint)
		}
	}
	// A declare or attach that ran out of time is a slow broker, not a
	// refusal of the address.
	what, hint := diagnose(&stageError{stage: "attach", addr: "/amq/queue/x", err: fmt.Errorf("attach: %w", context.DeadlineExceeded)}, cfg, roleTelemetry)
	if !strings.Contains(what, "did not answer") || strings.Contains(what, "refused") || !strings.Contains(hint, "timeout") {
		t.Errorf("attach timed out: %q / %q; want the broker not answering in time, not a refusal", what, hint)
	}
}
