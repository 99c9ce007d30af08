package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/sim"
	"github.com/vigil-iot/vigil/store"
)

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig(t.TempDir())
	cfg.MQTT.Addr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Ingest.MaxDelay = 50 * time.Millisecond
	cfg.TickInterval = 100 * time.Millisecond
	cfg.Actions.TTL, cfg.Actions.RecoveryWindow = 20*time.Second, 30*time.Second
	return cfg
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitFor polls cond until it holds or the deadline passes. It is for
// conditions in other processes' worth of state (a simulated fleet reaching
// a point), where no single signal exists.
func waitFor(t *testing.T, what string, limit time.Duration, status func() any, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; status %+v", limit, what, status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func column(t *testing.T, st *store.Store, q string, args ...any) []string {
	t.Helper()
	rows, err := st.DB().Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// TestEndToEnd runs the whole loop over real sockets: simulated devices
// (healthy and faulty) → embedded MQTT gateway → Arrow → DuckDB → detector →
// command → device acknowledges and recovers; plus a device with a wrong
// key, an unregistered device and a malformed message.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run takes ~15 s")
	}
	ctx := context.Background()
	cfg := testConfig(t)
	srv, err := Start(ctx, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(ctx)
	st := srv.Store()

	fc := sim.DefaultFleetConfig()
	fc.Addr, fc.N, fc.Faulty = srv.MQTTAddr(), 6, 2
	fc.Interval, fc.FaultAfter, fc.RampPerSecond = 100*time.Millisecond, 4*time.Second, 3
	fleet, err := sim.NewFleet(fc, register(t, st))
	if err != nil {
		t.Fatal(err)
	}
	var faultyNames, healthyNames []string
	for _, d := range fleet.Devices {
		if d.Faulty() {
			faultyNames = append(faultyNames, d.Name())
		} else {
			healthyNames = append(healthyNames, d.Name())
		}
	}
	if len(faultyNames) != 2 || len(healthyNames) != 4 {
		t.Fatalf("fleet: faulty %v healthy %v", faultyNames, healthyNames)
	}

	// A registered device presenting the wrong key, and an unregistered one.
	if _, err := st.AddDevice(ctx, "victim", "the-real-key"); err != nil {
		t.Fatal(err)
	}
	for _, intruder := range [][2]string{{"victim", "a-guessed-key"}, {"stranger", "any-key-at-all"}} {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := sim.Connect(cctx, srv.MQTTAddr(), intruder[0], intruder[1], nil)
		cancel()
		if err == nil {
			c.Disconnect(&paho.Disconnect{})
			t.Fatalf("%s with key %q was let in", intruder[0], intruder[1])
		}
	}

	// A device that sends one malformed message between two good ones.
	if _, err := st.AddDevice(ctx, "sloppy", "sloppy-key-1"); err != nil {
		t.Fatal(err)
	}
	sloppy, err := sim.Connect(ctx, srv.MQTTAddr(), "sloppy", "sloppy-key-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var wgSloppy sync.WaitGroup
	sloppyErrs := make([]error, 3)
	sloppyAcks := make([]*paho.PublishResponse, 3)
	for i, body := range []string{`{"temperature": 70.5}`, `{"temperature": "warm", "vibration": 0.3}`, `{"temperature": 70.7, "vibration": 0.31}`} {
		wgSloppy.Add(1)
		go func() { // concurrently, so they share a batch
			defer wgSloppy.Done()
			sloppyAcks[i], sloppyErrs[i] = sloppy.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("sloppy"), Payload: []byte(body)})
		}()
	}
	wgSloppy.Wait()
	sloppy.Disconnect(&paho.Disconnect{})
	for i, err := range sloppyErrs {
		if i != 1 && err != nil {
			t.Fatalf("sloppy message %d was not acknowledged: %v", i, err)
		}
	}
	// The malformed one is acknowledged with MQTT 5's "payload format
	// invalid" and the reason, so its developer learns what is wrong and
	// that sending it again will not help.
	if pr := sloppyAcks[1]; sloppyErrs[1] == nil || pr == nil || pr.ReasonCode != 0x99 || pr.Properties == nil || !strings.Contains(pr.Properties.ReasonString, `metric "temperature" is a JSON string`) {
		t.Fatalf("the malformed message was acknowledged with %+v (%v), want reason code 0x99 and the reason", pr, sloppyErrs[1])
	}

	runCtx, stopFleet := context.WithCancel(ctx)
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(runCtx) }()
	started := time.Now()
	waitFor(t, "every faulty device to acknowledge a command and recover", 60*time.Second, func() any { return srv.Status() }, func() bool {
		s := srv.Status()
		return s.Acknowledged >= 2 && s.DevicesHealed >= 2
	})
	if rest := 10*time.Second - time.Since(started); rest > 0 {
		// Let healthy devices report for a while longer: they must stay quiet.
		time.Sleep(rest)
	}
	stopFleet()
	if err := <-fleetDone; err != nil {
		t.Fatalf("fleet: %v", err)
	}

	// Every reading whose publish was acknowledged is stored, exactly.
	for _, d := range fleet.Devices {
		var n int64
		if err := st.DB().QueryRow(`SELECT count(*) FROM readings WHERE device = ?`, d.Name()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		s := d.Stats()
		if s.Failed != 0 || n != s.Readings || n == 0 {
			t.Errorf("%s: %d readings stored, %d acknowledged, %d failed publishes", d.Name(), n, s.Readings, s.Failed)
		}
	}
	var total, fleetTotal int64
	st.DB().QueryRow(`SELECT count(*) FROM telemetry`).Scan(&total)
	fleetTotal = fleet.Totals().Readings
	if total != fleetTotal+3 { // sloppy: 1 + 2 readings from its good messages
		t.Errorf("telemetry holds %d readings, want %d (fleet) + 3 (sloppy)", total, fleetTotal)
	}

	// Nothing from the refused devices; both refusals counted.
	if got := column(t, st, `SELECT DISTINCT device FROM readings WHERE device IN ('victim', 'stranger')`); len(got) != 0 {
		t.Errorf("refused devices have readings: %v", got)
	}
	if _, ok := st.Device("stranger"); ok {
		t.Error("an unknown device was registered by connecting")
	}
	if r := srv.Status().RefusedDevices; r != 2 {
		t.Errorf("%d refused connections counted, want 2", r)
	}

	// The malformed message is a dead letter with its reason; its neighbours
	// are stored.
	var reason, body string
	if err := st.DB().QueryRow(`SELECT reason, decode(body) FROM dead_letters WHERE device = 'sloppy'`).Scan(&reason, &body); err != nil {
		t.Fatalf("dead letter: %v", err)
	}
	if !strings.Contains(reason, `metric "temperature" is a JSON string`) || !strings.Contains(body, `"warm"`) {
		t.Errorf("dead letter reason %q body %q", reason, body)
	}
	if got := column(t, st, `SELECT metric || '=' || value FROM readings WHERE device = 'sloppy'`); strings.Join(got, ",") != "temperature=70.5,temperature=70.7,vibration=0.31" {
		t.Errorf("sloppy's good readings: %v", got)
	}

	// Anomalies only on faulty devices, and on each of them.
	anomalous := column(t, st, `SELECT DISTINCT d.name FROM anomalies a JOIN devices d ON d.id = a.device_id`)
	if strings.Join(anomalous, ",") != strings.Join(faultyNames, ",") {
		t.Errorf("devices with anomalies %v, want exactly the faulty %v", anomalous, faultyNames)
	}
	var expl string
	st.DB().QueryRow(`SELECT explanation FROM anomalies LIMIT 1`).Scan(&expl)
	if !strings.Contains(expl, "temperature") || !strings.Contains(expl, "above its baseline") {
		t.Errorf("explanation %q", expl)
	}

	// Each faulty device got a command, acknowledged it and recovered; the
	// healthy ones got none.
	acked := column(t, st, `SELECT DISTINCT d.name FROM commands c JOIN devices d ON d.id = c.device_id WHERE c.state = 'acknowledged'`)
	commanded := column(t, st, `SELECT DISTINCT d.name FROM commands c JOIN devices d ON d.id = c.device_id`)
	recovered := column(t, st, `SELECT DISTINCT d.name FROM commands c JOIN devices d ON d.id = c.device_id WHERE c.verification = 'recovered'`)
	for name, list := range map[string][]string{"acknowledged": acked, "commanded": commanded, "recovered": recovered} {
		if strings.Join(list, ",") != strings.Join(faultyNames, ",") {
			t.Errorf("%s devices %v, want exactly the faulty %v", name, list, faultyNames)
		}
	}
	if bad := column(t, st, `SELECT id::VARCHAR FROM commands WHERE state = 'acknowledged' AND (delivered IS NULL OR NOT (sent <= delivered AND delivered <= acked))`); len(bad) != 0 {
		t.Errorf("acknowledged commands %v lack sent ≤ delivered ≤ acked", bad)
	}
	for _, d := range fleet.Devices {
		if s := d.Stats(); d.Faulty() != (s.Commands > 0) || s.Commands != s.Acknowledged {
			t.Errorf("%s (faulty %v) received %d commands and acknowledged %d", d.Name(), d.Faulty(), s.Commands, s.Acknowledged)
		}
	}

	// The detector's update code replayed offline over the stored history
	// opens its first episode on the same reading the live pipeline did.
	for _, name := range faultyNames {
		assertOfflineReplayMatches(t, st, cfg.Monitor, name)
	}

	// The HTTP query API answers read-only SQL and refuses writes.
	c := &api.Client{BaseURL: "http://" + srv.HTTPAddr()}
	res, err := c.Query(ctx, `SELECT count(*) AS n FROM readings`, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Rows[0][0]; got == nil || strings.TrimSpace(toString(got)) != toString(total) {
		t.Errorf("API count %v, want %d", got, total)
	}
	var se *api.StatusError
	if _, err := c.Query(ctx, `DELETE FROM telemetry`, 10); !errors.As(err, &se) || se.Code != 400 {
		t.Errorf("DELETE through the API: %v", err)
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	default:
		b, _ := jsonMarshal(x)
		return string(b)
	}
}

func assertOfflineReplayMatches(t *testing.T, st *store.Store, mc models.MonitorConfig, device string) {
	t.Helper()
	rows, err := st.DB().Query(`SELECT ts, value FROM readings WHERE device = ? AND metric = 'temperature' ORDER BY ts`, device)
	if err != nil {
		t.Fatal(err)
	}
	var ts []time.Time
	var xs []float64
	for rows.Next() {
		var tt time.Time
		var x float64
		rows.Scan(&tt, &x)
		ts, xs = append(ts, tt), append(xs, x)
	}
	rows.Close()
	det, err := models.New(mc.Model)
	if err != nil {
		t.Fatal(err)
	}
	scores := models.ScoreSeries(det, ts, xs)
	first := -1
	for i, s := range scores {
		if s.Value >= mc.Threshold {
			first = i
			break
		}
	}
	var live time.Time
	var liveScore float64
	if err := st.DB().QueryRow(`SELECT a.ts, a.score FROM anomalies a JOIN devices d ON d.id = a.device_id
		JOIN metrics m ON m.id = a.metric_id WHERE d.name = ? AND m.name = 'temperature' ORDER BY a.ts LIMIT 1`, device).Scan(&live, &liveScore); err != nil {
		t.Fatal(err)
	}
	if first < 0 || !ts[first].Equal(live) || scores[first].Value != liveScore {
		t.Errorf("%s: offline replay opens at %d (%v), live anomaly at %v score %v", device, first, ts[max(first, 0)], live, liveScore)
	}
}
