package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/api"
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
	srv := startServer(t, cfg)
	if _, err := srv.Store().AddDevice(ctx, "tls-1", "tls-key-0001"); err != nil {
		t.Fatal(err)
	}

	dialer := &tls.Dialer{Config: cert.ClientConfig()}
	conn, err := dialer.DialContext(ctx, "tcp", srv.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	dev, err := sim.ConnectConn(ctx, conn, "tls-1", "tls-key-0001", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Disconnect(&paho.Disconnect{})
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

	c := &api.Client{BaseURL: "https://" + srv.HTTPAddr(), HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: cert.ClientConfig()}}}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status over HTTPS: %v", err)
	}
	if fmt.Sprint(st["readings_stored"]) != "3" {
		t.Fatalf("status over HTTPS: %v readings, want 3", st["readings_stored"])
	}
	resp, err := http.Get("http://" + srv.HTTPAddr() + "/api/v1/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the API answered plain HTTP on its TLS port")
		}
	}
}
