package amqp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/internal/logtest"
	"github.com/vigil-iot/vigil/internal/rabbittest"
)

// TestSASToken signs a token as Azure's scheme says; the signature was
// computed apart from vigil, with openssl:
//
//	printf 'testhub.azure-devices.net\n1798675200' | openssl dgst -sha256 -mac HMAC -macopt hexkey:$(printf 'vigil-test-key-0123456789abcdef' | xxd -p -c 256) -binary | base64
func TestSASToken(t *testing.T) {
	s := SAS{Resource: "testhub.azure-devices.net", KeyName: "service", Key: base64.StdEncoding.EncodeToString([]byte("vigil-test-key-0123456789abcdef")), TTL: time.Hour}
	user, token, err := s.credentials(time.Unix(1798675200, 0).Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if user != "service@sas.root.testhub" {
		t.Fatalf("user %q, want service@sas.root.testhub", user)
	}
	const want = "SharedAccessSignature sr=testhub.azure-devices.net&sig=2rPRzp%2BsjjOJjUl04qXdkIZpJ4IeHVDWRe%2FNeq2%2FC8k%3D&se=1798675200&skn=service"
	if token != want {
		t.Fatalf("token\n%s\nwant\n%s", token, want)
	}
}

// TestParseIoTHubConnectionString reads the hub's connection string and
// says what is missing, without echoing the key.
func TestParseIoTHubConnectionString(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	s, err := ParseIoTHubConnectionString("HostName=fleet.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=" + key)
	if err != nil || s.Resource != "fleet.azure-devices.net" || s.KeyName != "service" || s.Key != key || s.TTL <= 0 {
		t.Fatalf("parsed %+v, %v", s, err)
	}
	for _, bad := range []string{
		"HostName=fleet.azure-devices.net;SharedAccessKeyName=service",
		"HostName=fleet.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=not*base64",
		"fleet.azure-devices.net",
	} {
		_, err := ParseIoTHubConnectionString(bad)
		if err == nil {
			t.Errorf("%q: parsed", bad)
			continue
		}
		if strings.Contains(err.Error(), "not*base64") {
			t.Errorf("%q: the error shows the key: %v", bad, err)
		}
	}
}

// TestCommandsOnTheirOwnConnection sends commands as to Azure IoT Hub, with
// RabbitMQ standing in for the hub's service endpoint: a second
// connection, signed in with a shared access signature (a RabbitMQ user
// named and keyed as IoT Hub expects), one address for every command and
// the device in its to property, feedback asked for on each; the hub's
// feedback records move the commands' lifecycle. Telemetry keeps its own
// connection.
func TestCommandsOnTheirOwnConnection(t *testing.T) {
	b := needBroker(t)
	const dev = "hub-cmd-dev"
	vhost, keys := b.Provision(t, dev)
	at := time.Now()
	sas := SAS{Resource: "testhub.azure-devices.net", KeyName: "svc" + rabbittest.RandomHex(4),
		Key: base64.StdEncoding.EncodeToString([]byte(rabbittest.RandomHex(16))), TTL: time.Hour, now: func() time.Time { return at }}
	user, token, err := sas.credentials(at)
	if err != nil {
		t.Fatal(err)
	}
	b.Run(t, "ctl", "add_user", user, token)
	t.Cleanup(func() { b.Run(t, "ctl", "delete_user", user) })
	b.Run(t, "ctl", "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	bu, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	v := startVigil(t, b, vhost, []string{dev}, func(c *Config) {
		c.UseIoTHub(sas)
		// RabbitMQ in the hub's place: plain AMQP, and queues for the
		// hub's /messages/devicebound and /messages/servicebound/feedback.
		c.CommandURL, c.CommandAddress, c.Feedback = "amqp://"+bu.Host, "/queue/c2d", "/amq/queue/c2d.feedback"
	})
	if s := v.gw.Stats(); s.Connects != 2 {
		t.Fatalf("%d connections, want 2: telemetry, and commands with their feedback", s.Connects)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"cmd-1", "cmd-2"} {
		if err := v.gw.Send(ctx, gateway.Command{ID: id, Device: dev, Name: "reduce_load", Payload: json.RawMessage(`{"percent": 10}`), Expires: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	rcv, err := adminSession(ctx, t, b, vhost).NewReceiver(ctx, "/amq/queue/c2d", &amqp.ReceiverOptions{Credit: MinCredit})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Properties == nil || m.Properties.To == nil || *m.Properties.To != "/devices/"+dev+"/messages/devicebound" || m.Properties.MessageID != "cmd-1" {
		t.Fatalf("command properties %+v: want to /devices/%s/messages/devicebound and message-id cmd-1", m.Properties, dev)
	}
	if m.ApplicationProperties["iothub-ack"] != "full" {
		t.Fatalf("application properties %v: want iothub-ack full", m.ApplicationProperties)
	}

	// The hub's feedback: completed, rejected, expired (left to vigil's
	// own expiry), and a device vigil does not know.
	feedback := amqp.NewMessage([]byte(`[
		{"originalMessageId": "cmd-1", "deviceId": "` + dev + `", "statusCode": "Success", "description": "Success", "enqueuedTimeUtc": "2026-11-29T10:00:00Z"},
		{"originalMessageId": "cmd-2", "deviceId": "` + dev + `", "statusCode": "Rejected", "description": "Message rejected"},
		{"originalMessageId": "cmd-3", "deviceId": "` + dev + `", "statusCode": "Expired", "description": "Message expired"},
		{"originalMessageId": "cmd-4", "deviceId": "not-registered", "statusCode": "Success"}]`))
	sendTo(t, b, vhost, dev, keys[dev], "/amq/queue/c2d.feedback", feedback)
	// When the device settled it, if the hub says; else on receipt.
	settled := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for _, want := range []gateway.Ack{
		{CommandID: "cmd-1", Status: gateway.AckCompleted, Detail: "Success", Received: settled},
		{CommandID: "cmd-2", Status: gateway.AckRejected, Detail: "Message rejected", Received: at},
	} {
		select {
		case a := <-v.acks:
			if a.CommandID != want.CommandID || a.Status != want.Status || a.Detail != want.Detail || a.Device.Name != dev || a.Received.Before(want.Received) || (want.Received == settled && !a.Received.Equal(settled)) {
				t.Fatalf("ack %+v, want %s %s from %s at %s", a, want.CommandID, want.Status, dev, want.Received)
			}
		case <-ctx.Done():
			t.Fatalf("no acknowledgement of %s", want.CommandID)
		}
	}
	sendTo(t, b, vhost, dev, keys[dev], "/amq/queue/c2d.feedback", amqp.NewMessage([]byte(`{"not": "records"}`)))
	waitFor(t, 10*time.Second, "the malformed feedback and the unknown device counted", func() bool { return v.gw.Stats().BadAcks == 2 })
	if s := v.gw.Stats(); s.Acks != 2 {
		t.Fatalf("%d acknowledgements handed on, want 2", s.Acks)
	}
	select {
	case a := <-v.acks:
		t.Fatalf("unexpected acknowledgement %+v", a)
	default:
	}

	// Telemetry still comes in on its own connection.
	sendAs(t, b, vhost, dev, keys[dev], &amqp.Message{Properties: &amqp.MessageProperties{UserID: []byte(dev)}, Data: [][]byte{[]byte(`{"temperature": 71}`)}})
	waitFor(t, 10*time.Second, "the telemetry", func() bool { return v.storedReadings(t)[dev] == 1 })
}

// TestEachConnectionReceivesItsOwn: without a command URL one connection
// receives the sources and the feedback; with one the command connection
// receives the feedback (IoT Hub's is on the hub's host) and the
// telemetry connection only the sources (its host has no feedback).
func TestEachConnectionReceivesItsOwn(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sources = []string{"/amq/queue/a", "/amq/queue/b"}
	one := New(cfg, nil, nil, nil, testLogger())
	if got := one.addresses(roleTelemetry); strings.Join(got, " ") != "/amq/queue/a /amq/queue/b "+DefaultFeedback {
		t.Fatalf("one connection receives %v", got)
	}
	cfg.UseIoTHub(SAS{Resource: "h.azure-devices.net", KeyName: "service", Key: "a2V5", TTL: time.Hour})
	two := New(cfg, nil, nil, nil, testLogger())
	if got := two.addresses(roleTelemetry); strings.Join(got, " ") != "/amq/queue/a /amq/queue/b" {
		t.Fatalf("the telemetry connection receives %v", got)
	}
	if got := two.addresses(roleCommands); strings.Join(got, " ") != "/messages/servicebound/feedback" {
		t.Fatalf("the command connection receives %v", got)
	}
}

// TestRefusedSignatureSaysWhatToDo: a hub that refuses the signature is
// told apart from a broker refusing a password, with the flag to check;
// the telemetry connection is not blamed, and the token is never logged.
func TestRefusedSignatureSaysWhatToDo(t *testing.T) {
	b := needBroker(t)
	vhost, _ := b.Provision(t)
	bu, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.URL, cfg.VHost = b.URL, vhost
	cfg.UseIoTHub(SAS{Resource: "testhub.azure-devices.net", KeyName: "no-such-policy", Key: base64.StdEncoding.EncodeToString([]byte("k")), TTL: time.Hour})
	cfg.CommandURL, cfg.CommandAddress, cfg.Feedback = "amqp://"+bu.Host, "/queue/c2d", "/amq/queue/c2d.feedback"
	log := &logtest.Buffer{}
	g := New(cfg, nil, nil, nil, slog.New(slog.NewTextHandler(log, nil)))
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitFor(t, 20*time.Second, "a warning about the signature", func() bool {
		s := log.String()
		return strings.Contains(s, "the hub refused vigil's shared access signature, retrying") && strings.Contains(s, "--amqp-iothub") && strings.Contains(s, "role=commands")
	})
	if s := log.String(); strings.Contains(s, "sig=") || strings.Contains(s, "refused vigil's credentials") {
		t.Fatalf("the log shows the token, or blames the telemetry login:\n%s", s)
	}
	if g.Connected() {
		t.Fatal("connected without the command connection")
	}
}
