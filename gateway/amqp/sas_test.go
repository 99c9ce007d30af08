package amqp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/internal/logtest"
	"github.com/vigil-iot/vigil/internal/proxytest"
	"github.com/vigil-iot/vigil/internal/rabbittest"
	"github.com/vigil-iot/vigil/internal/tlstest"
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
	sas := standInHub(t, b, vhost)
	at := sas.clock()
	bu, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	v := startVigil(t, b, vhost, []string{dev}, func(c *Config) {
		c.UseIoTHub(sas)
		// RabbitMQ in the hub's place: plain AMQP, the test's virtual
		// host, and queues for the hub's /messages/devicebound and
		// /messages/servicebound/feedback.
		c.CommandURL, c.CommandAddress, c.Feedback = "amqp://"+bu.Host, "/queue/c2d", "/amq/queue/c2d.feedback"
		c.commandVHost = vhost
	})
	if s := v.gw.Stats(); s.Connects != 2 {
		t.Fatalf("%d connections, want 2: telemetry, and commands with their feedback", s.Connects)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	commands := []struct{ id, device, to string }{
		{"cmd-1", dev, "/devices/" + dev + "/messages/devicebound"},
		{"cmd-2", dev, "/devices/" + dev + "/messages/devicebound"},
		// IoT Hub allows URL delimiters in device ids: the to property
		// escapes them as Azure's SDKs do (encodeURIComponent).
		{"cmd-odd", "line/4#a?b:c+d@e$f%g", "/devices/line%2F4%23a%3Fb%3Ac%2Bd%40e%24f%25g/messages/devicebound"},
	}
	for _, c := range commands {
		if err := v.gw.Send(ctx, gateway.Command{ID: c.id, Device: c.device, Name: "reduce_load", Payload: json.RawMessage(`{"percent": 10}`), Expires: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	rcv, err := adminSession(ctx, t, b, vhost).NewReceiver(ctx, "/amq/queue/c2d", &amqp.ReceiverOptions{Credit: MinCredit})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		m, err := rcv.Receive(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var id any
		to := ""
		if m.Properties != nil && m.Properties.To != nil {
			id, to = m.Properties.MessageID, *m.Properties.To
		}
		if to != c.to || id != c.id {
			t.Fatalf("command %v to %q: want %s to %s", id, to, c.id, c.to)
		}
		if m.ApplicationProperties["iothub-ack"] != "full" {
			t.Fatalf("application properties %v: want iothub-ack full", m.ApplicationProperties)
		}
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

// TestIoTHubFeedbackRecordsOneByOne: each record of an IoT Hub feedback
// message stands on its own. A record that names no command, or a device
// vigil does not know, is skipped and counted, and the message's other
// records still move their commands; a record the handler could not
// record for now has the message delivered again, and then only the
// records not yet recorded are handed on, none twice. (One bad record had
// the whole message rejected, its good records with it; and a message
// delivered again had its recorded records applied twice, which the
// handler refuses, as actions.Controller refuses a second answer, each
// counted as a bad acknowledgement.)
func TestIoTHubFeedbackRecordsOneByOne(t *testing.T) {
	b := needBroker(t)
	const dev = "hub-fb-dev"
	vhost, keys := b.Provision(t, dev)
	defer func(p time.Duration) { feedbackRetryPause = p }(feedbackRetryPause)
	feedbackRetryPause = 50 * time.Millisecond
	var mu sync.Mutex
	var calls []string
	answered, failed := map[string]bool{}, false
	handler := gateway.AckHandlerFunc(func(_ context.Context, a gateway.Ack) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case answered[a.CommandID]:
			calls = append(calls, a.CommandID+" again")
			return fmt.Errorf("ack %s from %s: command is already answered", a.CommandID, a.Device.Name)
		case a.CommandID == "cmd-4" && !failed:
			failed = true
			calls = append(calls, a.CommandID+" not recorded")
			return errors.Join(gateway.ErrAckNotRecorded, errors.New("disk full"))
		}
		answered[a.CommandID] = true
		calls = append(calls, a.CommandID)
		return nil
	})
	handled := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(calls) }
	cfg := DefaultConfig()
	cfg.URL, cfg.VHost, cfg.FeedbackFormat = b.URL, vhost, FeedbackIoTHub
	g := New(cfg, fixedRegistry{dev: 1}, nil, handler, testLogger())
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitFor(t, 20*time.Second, "the gateway to connect", g.Connected)
	feedback := func(records string) {
		sendTo(t, b, vhost, dev, keys[dev], DefaultFeedback, amqp.NewMessage([]byte(records)))
	}

	feedback(`[
		{"originalMessageId": "cmd-1", "deviceId": "` + dev + `", "statusCode": "Success"},
		{"deviceId": "` + dev + `", "statusCode": "Success"},
		{"originalMessageId": "cmd-2", "deviceId": "` + dev + `", "statusCode": "Rejected"},
		{"originalMessageId": "cmd-9", "deviceId": "not-registered", "statusCode": "Success"}]`)
	waitFor(t, 10*time.Second, "the good records of a message with bad ones", func() bool { return len(handled()) == 2 })
	feedback(`[
		{"originalMessageId": "cmd-3", "deviceId": "` + dev + `", "statusCode": "Success"},
		{"originalMessageId": "cmd-4", "deviceId": "` + dev + `", "statusCode": "Success"}]`)
	waitFor(t, 10*time.Second, "the record not recorded, delivered again", func() bool { return len(handled()) >= 5 })
	// Accepted: the queue is empty once the broker has the dispositions,
	// and nothing comes again.
	waitFor(t, 10*time.Second, "the feedback queue to empty", func() bool {
		out := b.Run(t, "ctl", "list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name", "messages", "messages_unacknowledged")
		return strings.Contains(out, "vigil.feedback\t0\t0")
	})
	want := []string{"cmd-1", "cmd-2", "cmd-3", "cmd-4 not recorded", "cmd-4"}
	if got := handled(); !slices.Equal(got, want) {
		t.Fatalf("the handler was given %q, want %q", got, want)
	}
	// Bad: the record without a command, the unknown device, and cmd-4
	// the first time.
	if s := g.Stats(); s.Acks != 5 || s.BadAcks != 3 {
		t.Fatalf("%d acknowledgements handed on, %d bad; want 5 and 3", s.Acks, s.BadAcks)
	}
}

// standInHub returns the SAS of a RabbitMQ user named and keyed as IoT
// Hub expects, with every permission on vhost, for RabbitMQ to stand in
// for the hub; it signs its tokens at one instant (its clock).
func standInHub(t *testing.T, b *testBroker, vhost string) SAS {
	t.Helper()
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
	return sas
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

// TestHubConnectionIsNotTheBrokers: the telemetry broker's virtual host
// and TLS settings (--amqp-vhost, --amqp-ca, --amqp-cert) are not the
// hub's. The command connection of UseIoTHub opens without a virtual host
// (IoT Hub has none; RabbitMQ, in its place here, takes its default one)
// and checks the hub's certificate against the system's roots alone, so a
// hub whose certificate only the broker's CA signs is not trusted, and
// the log says so. (Both were the broker's: the hub was sent vhost:NAME,
// and with a private CA its public certificate was not trusted.)
func TestHubConnectionIsNotTheBrokers(t *testing.T) {
	b := needBroker(t)
	vhost, _ := b.Provision(t)
	bu, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	ca := tlstest.SelfSigned(t, "private-ca")
	start := func(t *testing.T, commandURL string, sas SAS) *logtest.Buffer {
		cfg := DefaultConfig()
		cfg.URL, cfg.VHost, cfg.TLS = b.URL, vhost, ca.ClientConfig()
		cfg.UseIoTHub(sas)
		cfg.CommandURL, cfg.CommandAddress, cfg.Feedback = commandURL, "/queue/c2d", "/amq/queue/c2d.feedback"
		log := &logtest.Buffer{}
		g := New(cfg, nil, nil, nil, slog.New(slog.NewTextHandler(log, nil)))
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		return log
	}
	t.Run("no virtual host", func(t *testing.T) {
		proxy := proxytest.Start(t, proxytest.Listen(t), bu.Host)
		start(t, "amqp://"+proxy.Addr, standInHub(t, b, vhost))
		// The open frame names the container and the host together.
		waitFor(t, 20*time.Second, "the command connection's open", func() bool { return bytes.Contains(proxy.ClientSent(), []byte("vigil-gateway")) })
		if bytes.Contains(proxy.ClientSent(), []byte("vhost:")) {
			t.Fatalf("the command connection asked the hub for a virtual host (vhost:%s, the telemetry broker's)", vhost)
		}
	})
	t.Run("no private CA", func(t *testing.T) {
		proxy := proxytest.Start(t, tls.NewListener(proxytest.Listen(t), ca.ServerConfig(t)), bu.Host)
		log := start(t, "amqps://"+proxy.Addr, SAS{Resource: "testhub.azure-devices.net", KeyName: "service", Key: base64.StdEncoding.EncodeToString([]byte("k")), TTL: time.Hour})
		waitFor(t, 20*time.Second, "the command connection to fail", func() bool { return strings.Contains(log.String(), "role=commands") })
		if s := log.String(); !strings.Contains(s, "the hub's certificate is not trusted, retrying") || !strings.Contains(s, "system's CA certificates") || proxy.Handshakes.Load() != 0 {
			t.Fatalf("%d TLS handshakes with a hub only the broker's CA vouches for; log:\n%s", proxy.Handshakes.Load(), s)
		}
	})
}
