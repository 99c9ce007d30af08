package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/internal/logtest"
	"github.com/vigil-iot/vigil/internal/tlstest"
	"github.com/vigil-iot/vigil/sim"
)

// TestTLS: with TLS configured, devices connect over MQTTS and the API
// answers over HTTPS, both presenting the configured certificate; plain
// MQTT and plain HTTP get nowhere.
func TestTLS(t *testing.T) {
	ctx := context.Background()
	cert := tlstest.SelfSigned(t, "vigil-test")
	cfg := testConfig(t)
	cfg.MQTT.TLS, cfg.HTTPTLS = cert.ServerConfig(t), cert.ServerConfig(t)
	var logs logtest.Buffer
	srv := startServerLog(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	dev := tlsDevice(t, srv, cert, "tls-1", "tls-key-0001")
	for _, body := range []string{`{"temperature": 70.1}`, `{"temperature": 70.2}`, `{"temperature": 70.3}`} {
		if _, err := dev.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("tls-1"), Payload: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := srv.Store().DB().QueryRow(`SELECT count(*) FROM readings WHERE device = 'tls-1'`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d readings stored after 3 acknowledged publishes over TLS (%v)", n, err)
	}

	// A device speaking plain MQTT to the TLS port is not served.
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c, err := sim.Connect(pctx, srv.MQTTAddr(), "tls-1", "tls-key-0001", nil); err == nil {
		c.Disconnect(&paho.Disconnect{})
		t.Fatal("a plain MQTT connection was accepted on the TLS port")
	}

	// Clients with a timeout: a request left unanswered fails the test
	// rather than hanging it.
	c := &api.Client{BaseURL: "https://" + srv.HTTPAddr(), HTTP: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: cert.ClientConfig()}}}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status over HTTPS: %v", err)
	}
	if fmt.Sprint(st["readings_stored"]) != "3" {
		t.Fatalf("status over HTTPS: %v readings, want 3", st["readings_stored"])
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + srv.HTTPAddr() + "/api/v1/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the API answered plain HTTP on its TLS port")
		}
	}
	// Both refusals are in vigil's log, where an operator looks for why a
	// client cannot connect: the plain HTTP request (from net/http) and
	// the plain MQTT connection (from mochi, which gives it no message of
	// its own). Each is logged after the client has its answer, so the test
	// waits for the lines.
	want := []string{
		`client sent an HTTP request to an HTTPS server" component=http`,
		`msg="mqtt connection failed or ended with an error" component=mqtt listener=devices error="read connection: tls:`,
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, w := range want {
		for !strings.Contains(logs.String(), w) {
			if time.Now().After(deadline) {
				t.Fatalf("the log lacks %q:\n%s", w, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if strings.Contains(logs.String(), `msg=""`) {
		t.Fatalf("a log line without a message:\n%s", logs.String())
	}
}

// TestTLSConcurrentPublishes: a simulated device publishing from several
// goroutines over TLS has every message stored, none garbled. paho writes a
// packet in several writes, which a TLS connection sends as separate
// records; without a lock around each packet, a PINGREQ or another
// goroutine's publish lands in the middle of one (seen as a dead letter
// whose body began with PINGREQ's two bytes, or a malformed packet that
// ended the connection).
func TestTLSConcurrentPublishes(t *testing.T) {
	ctx := context.Background()
	cert := tlstest.SelfSigned(t, "vigil-test")
	cfg := testConfig(t)
	cfg.MQTT.TLS = cert.ServerConfig(t)
	srv := startServer(t, cfg)
	dev := tlsDevice(t, srv, cert, "tls-many", "tls-key-0002")
	const writers, each = 8, 50
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range each {
				body := fmt.Sprintf(`{"temperature": %d.5}`, w*each+i)
				if _, err := dev.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("tls-many"), Payload: []byte(body)}); err != nil {
					errs <- fmt.Errorf("writer %d, publish %d: %w", w, i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var n, dead int
	if err := srv.Store().DB().QueryRow(`SELECT count(DISTINCT value) FROM readings WHERE device = 'tls-many'`).Scan(&n); err != nil || n != writers*each {
		t.Fatalf("%d distinct readings stored after %d acknowledged publishes (%v)", n, writers*each, err)
	}
	if err := srv.Store().DB().QueryRow(`SELECT count(*) FROM dead_letters`).Scan(&dead); err != nil || dead != 0 {
		t.Fatalf("%d dead letters (%v)", dead, err)
	}
}

// tlsDevice registers device name with key on srv and connects it as a
// simulated device over TLS, trusting cert; it disconnects when the test
// ends.
func tlsDevice(t *testing.T, srv *Server, cert tlstest.Cert, name, key string) *paho.Client {
	t.Helper()
	ctx := context.Background()
	if _, err := srv.Store().AddDevice(ctx, name, key); err != nil {
		t.Fatal(err)
	}
	dialer := &tls.Dialer{Config: cert.ClientConfig()}
	conn, err := dialer.DialContext(ctx, "tcp", srv.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	dev, err := sim.ConnectConn(ctx, conn, name, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Disconnect(&paho.Disconnect{}) })
	return dev
}
