package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/internal/logtest"
	"github.com/vigil-iot/vigil/internal/proxytest"
	"github.com/vigil-iot/vigil/internal/rabbittest"
	"github.com/vigil-iot/vigil/internal/tlstest"
)

// serveInBackground runs `vigil serve` with args (and a data directory and
// local ports of its own) until the test ends, and returns its API client
// and its log.
func serveInBackground(t *testing.T, args ...string) (*api.Client, *logtest.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := &logtest.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--data", t.TempDir(), "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, args...), io.Discard, log)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited with %d:\n%s", code, log)
		}
	})
	apiAddr := regexp.MustCompile(`api=(http://127\.0\.0\.1:\d+)`)
	var m []string
	waitUntil(t, 30*time.Second, "serve to listen", func() bool {
		m = apiAddr.FindStringSubmatch(log.String())
		return m != nil
	}, log.String)
	return &api.Client{BaseURL: m[1]}, log
}

// waitUntil polls cond until it holds, failing the test with what and
// state() after limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s:\n%s", limit, what, state())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeLinksToBrokerOverTLS: `vigil serve --amqp amqps://...` reaches a
// broker behind TLS that signs with a private CA and requires a client
// certificate, given --amqp-ca and --amqp-cert/--amqp-key; without either
// it keeps retrying and says what is missing.
func TestServeLinksToBrokerOverTLS(t *testing.T) {
	b := rabbittest.Need(t)
	const device = "tls-sim-001"
	vhost, keys := b.Provision(t, device)
	brokerCert, clientCert := tlstest.SelfSigned(t, "broker"), tlstest.SelfSigned(t, "vigil")
	proxyCfg := brokerCert.ServerConfig(t)
	proxyCfg.ClientAuth, proxyCfg.ClientCAs = tls.RequireAndVerifyClientCert, clientCert.Pool
	u, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	brokerAddr := u.Host
	proxy := proxytest.Start(t, tls.NewListener(proxytest.Listen(t), proxyCfg), brokerAddr)
	u.Scheme, u.Host = "amqps", proxy.Addr
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": brokerCert.CertPEM, "vigil.pem": clientCert.CertPEM, "vigil.key": clientCert.KeyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := []string{"--amqp", u.String(), "--amqp-vhost", vhost}
	ctx := context.Background()
	connected := func(c *api.Client) bool {
		st, err := c.Status(ctx)
		if err != nil {
			return false
		}
		a, _ := st["amqp"].(map[string]any)
		return a["connected"] == true
	}

	t.Run("untrusted broker", func(t *testing.T) {
		c, log := serveInBackground(t, append(link, "--amqp-cert", filepath.Join(dir, "vigil.pem"), "--amqp-key", filepath.Join(dir, "vigil.key"))...)
		waitUntil(t, 30*time.Second, "a log line saying why the broker is unreachable", func() bool {
			return strings.Contains(log.String(), "the broker's certificate is not trusted, retrying") && strings.Contains(log.String(), "--amqp-ca")
		}, log.String)
		if connected(c) {
			t.Fatal("linked to a broker whose certificate it does not trust")
		}
	})

	t.Run("private CA and client certificate", func(t *testing.T) {
		before := proxy.Handshakes.Load()
		c, log := serveInBackground(t, append(link, "--amqp-ca", filepath.Join(dir, "ca.pem"),
			"--amqp-cert", filepath.Join(dir, "vigil.pem"), "--amqp-key", filepath.Join(dir, "vigil.key"))...)
		waitUntil(t, 30*time.Second, "the broker link over TLS", func() bool { return connected(c) }, log.String)
		if proxy.Handshakes.Load() == before {
			t.Fatal("linked without a TLS handshake at the proxy")
		}

		// Simulated devices reach the same broker over TLS (devices need
		// no client certificate here) with the CA, and their readings are
		// stored.
		devProxy := proxytest.Start(t, tls.NewListener(proxytest.Listen(t), brokerCert.ServerConfig(t)), brokerAddr)
		du, err := url.Parse(b.DeviceURL())
		if err != nil {
			t.Fatal(err)
		}
		du.Scheme, du.Host = "amqps", devProxy.Addr
		var simErr bytes.Buffer
		code := run(ctx, []string{"sim", "--amqp", du.String(), "--amqp-vhost", vhost, "--amqp-ca", filepath.Join(dir, "ca.pem"),
			"--key", keys[device], "--prefix", "tls-sim-", "--devices", "1", "--faulty", "0", "--interval", "100ms", "--duration", "2s", "--server", c.BaseURL}, io.Discard, &simErr)
		if code != 0 {
			t.Fatalf("sim exited with %d: %s", code, simErr.String())
		}
		if devProxy.Handshakes.Load() == 0 {
			t.Fatal("the simulated device connected without TLS")
		}
		waitUntil(t, 30*time.Second, "the simulated device's readings to be stored", func() bool {
			res, err := c.Query(ctx, "SELECT count(*) FROM readings WHERE device = '"+device+"'", 1)
			return err == nil && len(res.Rows) == 1 && fmt.Sprint(res.Rows[0][0]) != "0"
		}, log.String)
	})

	t.Run("no client certificate", func(t *testing.T) {
		before := proxy.Handshakes.Load()
		_, log := serveInBackground(t, append(link, "--amqp-ca", filepath.Join(dir, "ca.pem"))...)
		waitUntil(t, 30*time.Second, "a log line saying the broker refused vigil's certificate", func() bool {
			return strings.Contains(log.String(), "the broker refused vigil's TLS client certificate, retrying") && strings.Contains(log.String(), "--amqp-cert")
		}, log.String)
		if proxy.Handshakes.Load() != before {
			t.Fatal("the proxy completed a handshake without a client certificate")
		}
	})
}

// TestServeRefusesBadBrokerFlags: broker settings that cannot work are
// refused at start, not ignored: TLS settings with a plain amqp:// URL (or
// none), a credit RabbitMQ can stall with, an IoT Hub for commands without
// the endpoint telemetry comes from, and a hub key that cannot be one.
func TestServeRefusesBadBrokerFlags(t *testing.T) {
	const plain = "amqp://vigil:secret@127.0.0.1:5672"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--amqp-ca", "ca.pem"}, "amqps://"},
		{[]string{"--amqp", plain, "--amqp-ca", "ca.pem"}, "amqps://"},
		{[]string{"--amqp", plain, "--amqp-cert", "c.pem", "--amqp-key", "c.key"}, "amqps://"},
		{[]string{"--amqp", plain, "--amqp-credit", "100"}, "at least 2000"},
		{[]string{"--amqp-iothub", "HostName=h.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0"}, "built-in endpoint"},
		{[]string{"--amqp", plain, "--amqp-iothub", "HostName=h.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=secret!"}, "not base64"},
	} {
		var stderr bytes.Buffer
		// Were the flag ignored, serve would run: stop it, and fail.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code := run(ctx, append([]string{"serve", "--data", t.TempDir(), "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"}, tc.args...), io.Discard, &stderr)
		cancel()
		if code == 0 || !strings.Contains(stderr.String(), tc.want) || strings.Contains(stderr.String(), "secret") {
			t.Errorf("serve %v: exit %d, %q; want a refusal mentioning %q (and no password)", tc.args, code, stderr.String(), tc.want)
		}
	}
}

// TestBrokerTLSFiles: what is wrong with the TLS files is said plainly.
func TestBrokerTLSFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.der")
	if err := os.WriteFile(notPEM, []byte{0x30, 0x82, 0x01}, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ ca, cert, key, want string }{
		{notPEM, "", "", "no PEM certificate"},
		{filepath.Join(dir, "missing.pem"), "", "", "missing.pem"},
		{"", "c.pem", "", "--amqp-key"},
		{"", "", "c.key", "--amqp-cert"},
	} {
		if _, err := brokerTLS("amqps://broker:5671", tc.ca, tc.cert, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("brokerTLS(%q, %q, %q) = %v, want an error mentioning %q", tc.ca, tc.cert, tc.key, err, tc.want)
		}
	}
	if cfg, err := brokerTLS("amqps://broker:5671", "", "", ""); cfg != nil || err != nil {
		t.Errorf("no files: %v, %v; want Go's defaults (nil)", cfg, err)
	}
}

// TestSimRefusesEmptyTelemetryAddress: an --amqp-telemetry list with no
// address is refused before any device is registered.
func TestSimRefusesEmptyTelemetryAddress(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"sim", "--amqp", "amqp://127.0.0.1:1", "--key", "k", "--server", "http://127.0.0.1:1", "--amqp-telemetry", " , "}, io.Discard, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "--amqp-telemetry is empty") {
		t.Fatalf("exit %d, %q; want the empty list refused", code, stderr.String())
	}
}
