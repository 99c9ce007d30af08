package server

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/gateway/amqp"
	"github.com/vigil-iot/vigil/internal/proxytest"
	"github.com/vigil-iot/vigil/internal/rabbittest"
	"github.com/vigil-iot/vigil/sim"
)

// childDirEnv makes the test binary act as a vigil server on that data
// directory (see TestMain), so a test can kill a real server process;
// childAMQPEnv and childVHostEnv, when set, link it to that broker and
// virtual host.
const (
	childDirEnv   = "VIGIL_TEST_CHILD_SERVER_DIR"
	childAMQPEnv  = "VIGIL_TEST_CHILD_AMQP_URL"
	childVHostEnv = "VIGIL_TEST_CHILD_AMQP_VHOST"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		runChildServer(dir)
		return
	}
	os.Exit(m.Run())
}

// runChildServer serves until killed and publishes its addresses in
// dir/addr once it listens.
func runChildServer(dir string) {
	cfg := DefaultConfig(dir)
	cfg.MQTT.Addr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	if u := os.Getenv(childAMQPEnv); u != "" {
		ac := amqp.DefaultConfig()
		ac.URL, ac.VHost = u, os.Getenv(childVHostEnv)
		cfg.AMQP = &ac
		// Broker messages are committed every 3 s, so that a kill finds
		// messages received and not yet committed.
		cfg.Ingest.PatientDelay, cfg.Ingest.PatientIdle = 3*time.Second, 3*time.Second
	}
	srv, err := Start(context.Background(), cfg, quietLog())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmp := filepath.Join(dir, "addr.tmp")
	os.WriteFile(tmp, []byte(srv.MQTTAddr()+" "+srv.HTTPAddr()), 0o600)
	os.Rename(tmp, filepath.Join(dir, "addr"))
	select {}
}

type child struct {
	cmd        *exec.Cmd
	mqtt, http string
}

// startChild starts a vigil server process on dir, with env added to its
// environment, and waits until it listens.
func startChild(t *testing.T, dir string, env ...string) *child {
	t.Helper()
	os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childDirEnv+"="+dir), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var addr []byte
	waitFor(t, "the server process to listen", 30*time.Second, func() any { return dir }, func() bool {
		var err error
		addr, err = os.ReadFile(filepath.Join(dir, "addr"))
		return err == nil
	})
	mq, ht, _ := strings.Cut(string(addr), " ")
	return &child{cmd: cmd, mqtt: mq, http: "http://" + ht}
}

// TestCrashLosesNothingAcknowledged kills a serving vigil process with
// SIGKILL while devices stream telemetry, restarts it on the same data and
// checks that every reading a device saw acknowledged survived.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	c := startChild(t, dir)
	client := &api.Client{BaseURL: c.http}
	fc := sim.DefaultFleetConfig()
	fc.Addr, fc.N, fc.Faulty, fc.Interval = c.mqtt, 5, 0, 20*time.Millisecond
	fleet, err := sim.NewFleet(fc, func(name string) string {
		d, err := client.AddDevice(ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		return d.Key
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx) }()
	waitFor(t, "readings to flow", 30*time.Second, func() any { return fleet.Totals() }, func() bool { return fleet.Totals().Readings > 500 })
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
	if err := <-done; err == nil {
		t.Fatal("devices did not notice the server died")
	}

	c = startChild(t, dir)
	client = &api.Client{BaseURL: c.http}
	for _, d := range fleet.Devices {
		res, err := client.Query(ctx, fmt.Sprintf("SELECT count(*) FROM readings WHERE device = '%s'", d.Name()), 1)
		if err != nil {
			t.Fatal(err)
		}
		var stored int64
		fmt.Sscan(fmt.Sprint(res.Rows[0][0]), &stored)
		acked := d.Stats().Readings
		// A message committed just before the kill may have lost its PUBACK:
		// stored can exceed acknowledged by the one message in flight (2
		// readings), never fall short.
		if stored < acked || stored > acked+2 {
			t.Errorf("%s: %d readings acknowledged, %d stored after the crash", d.Name(), acked, stored)
		}
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
}

// TestCrashThroughBrokerStoresEachReadingOnce kills a vigil process that
// consumes telemetry from RabbitMQ with SIGKILL while devices stream, lets
// the devices go on sending to the broker while it is down, and restarts
// it on the same data: every reading whose message the broker accepted
// from a device is then stored exactly once. "received, not committed":
// killed with messages received and not yet committed, which must come
// back from the broker (accepting a message before its commit loses
// them). "committed, not accepted": vigil's link goes through a proxy
// that stops passing what vigil sends, so the batches vigil commits after
// that are never accepted; the broker delivers them again after the
// restart and vigil must recognise them by message id.
func TestCrashThroughBrokerStoresEachReadingOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes")
	}
	b := rabbittest.Need(t)
	t.Run("received, not committed", func(t *testing.T) { crashThroughBroker(t, b, false) })
	t.Run("committed, not accepted", func(t *testing.T) { crashThroughBroker(t, b, true) })
}

func crashThroughBroker(t *testing.T, b *rabbittest.Broker, holdAccepts bool) {
	ctx := context.Background()
	names := []string{"crash-001", "crash-002", "crash-003"}
	vhost, keys := b.Provision(t, names...)
	env := []string{childAMQPEnv + "=" + b.URL, childVHostEnv + "=" + vhost}
	firstEnv := env
	var proxy *proxytest.Proxy
	if holdAccepts {
		u, err := url.Parse(b.URL)
		if err != nil {
			t.Fatal(err)
		}
		proxy = proxytest.Start(t, proxytest.Listen(t), u.Host)
		u.Host = proxy.Addr
		firstEnv = []string{childAMQPEnv + "=" + u.String(), childVHostEnv + "=" + vhost}
	}
	dir := t.TempDir()
	c := startChild(t, dir, firstEnv...)
	client := &api.Client{BaseURL: c.http}
	for _, n := range names {
		if _, err := client.AddDevice(ctx, n, keys[n]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the broker link", 30*time.Second, func() any { return dir }, func() bool { return brokerLinked(ctx, client) })

	fc := sim.DefaultFleetConfig()
	fc.N, fc.Faulty, fc.Prefix, fc.Interval = len(names), 0, "crash-", 5*time.Millisecond
	link := sim.DefaultAMQPLink()
	link.URL, link.VHost, link.Batch = b.DeviceURL(), vhost, 5
	fleet, err := sim.NewAMQPFleet(fc, link, func(name string) string { return keys[name] })
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- fleet.Run(runCtx) }()
	status := func() any { st, _ := client.Status(ctx); return st }
	// Messages committed and accepted, and others received but not yet
	// committed.
	waitFor(t, "messages stored and others in flight", 30*time.Second, status, func() bool {
		stored, received := linkCounts(ctx, client)
		return stored >= 20 && received-stored >= 20
	})
	var unaccepted int64
	if holdAccepts {
		proxy.Hold()
		before, _ := linkCounts(ctx, client)
		waitFor(t, "batches committed whose accepts the broker never gets", 30*time.Second, status, func() bool {
			stored, _ := linkCounts(ctx, client)
			unaccepted = stored - before
			return unaccepted >= 20
		})
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
	sentBefore := fleet.Totals().Messages
	waitFor(t, "the devices to go on sending to the broker", 30*time.Second, func() any { return fleet.Totals() }, func() bool {
		return fleet.Totals().Messages >= sentBefore+30
	})

	c = startChild(t, dir, env...)
	client = &api.Client{BaseURL: c.http}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("fleet: %v", err)
	}
	var stored map[string]int64
	accepted := func() any {
		out := map[string]int64{}
		for _, d := range fleet.Devices {
			out[d.Name()] = d.Stats().Readings
		}
		return fmt.Sprintf("stored %v, accepted by the broker %v", stored, out)
	}
	waitFor(t, "every accepted reading to be stored", 60*time.Second, accepted, func() bool {
		stored = storedPerDevice(ctx, t, client)
		for _, d := range fleet.Devices {
			if stored[d.Name()] < d.Stats().Readings {
				return false
			}
		}
		return b.QueueDepth(t, vhost, "vigil.telemetry") == 0
	})
	// The queue is empty and nothing is in flight: the counts are final.
	stored = storedPerDevice(ctx, t, client)
	for _, d := range fleet.Devices {
		if got, want := stored[d.Name()], d.Stats().Readings; got != want {
			t.Errorf("%s: %d readings stored, the broker accepted %d", d.Name(), got, want)
		}
	}
	if holdAccepts {
		st, err := client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var dups int64
		fmt.Sscan(fmt.Sprint(st["duplicates"]), &dups)
		if dups < unaccepted {
			t.Errorf("%d messages recognised as stored after the restart, want at least the %d committed but never accepted", dups, unaccepted)
		}
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
}

// brokerLinked reports whether the server's status shows its AMQP link
// connected.
func brokerLinked(ctx context.Context, client *api.Client) bool {
	st, err := client.Status(ctx)
	if err != nil {
		return false
	}
	link, _ := st["amqp"].(map[string]any)
	return link["connected"] == true
}

// linkCounts returns, from the server's status, the messages it has stored
// and those its AMQP link has handed to ingest.
func linkCounts(ctx context.Context, client *api.Client) (stored, received int64) {
	st, err := client.Status(ctx)
	if err != nil {
		return 0, 0
	}
	link, _ := st["amqp"].(map[string]any)
	fmt.Sscan(fmt.Sprint(st["messages"]), &stored)
	fmt.Sscan(fmt.Sprint(link["Telemetry"]), &received)
	return stored, received
}

// storedPerDevice counts the stored readings of each device through the
// API.
func storedPerDevice(ctx context.Context, t *testing.T, client *api.Client) map[string]int64 {
	t.Helper()
	res, err := client.Query(ctx, "SELECT device, count(*) FROM readings GROUP BY device", 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, row := range res.Rows {
		var n int64
		fmt.Sscan(fmt.Sprint(row[1]), &n)
		out[fmt.Sprint(row[0])] = n
	}
	return out
}
