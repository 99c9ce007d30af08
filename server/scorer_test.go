package server

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/sim"
	"github.com/vigil-iot/vigil/store"
)

// TestShardsScoreEveryDevice: with three scoring shards, a new default
// model reaches the series of every shard (each warmed on its history), a
// per-series model reaches only its own series, and every device's
// readings are scored, whichever shard owns it.
func TestShardsScoreEveryDevice(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.ModelPoll = 50 * time.Millisecond
	cfg.Scorers = 3
	srv := startServer(t, cfg)
	if len(srv.shards) != 3 {
		t.Fatalf("%d shards, want 3", len(srv.shards))
	}
	const devices = 6 // two per shard
	clients := make([]*paho.Client, devices)
	ids := make([]int32, devices)
	for i := range clients {
		name, key := fmt.Sprintf("shard-%d", i), fmt.Sprintf("shard-key-%02d", i)
		d, err := srv.Store().AddDevice(ctx, name, key)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = d.ID
		if clients[i], err = sim.Connect(ctx, srv.MQTTAddr(), name, key, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { clients[i].Disconnect(&paho.Disconnect{}) })
	}
	owners := map[int]bool{}
	for _, id := range ids {
		for k, sh := range srv.shards {
			if sh.owns(id) {
				owners[k] = true
			}
		}
	}
	if len(owners) != 3 {
		t.Fatalf("devices %v fall on shards %v; the test needs all three", ids, owners)
	}
	seq := 0
	send := func(n int) {
		for range n {
			seq++
			for i, c := range clients {
				body := fmt.Sprintf(`{"temperature": %.2f, "rpm": %d}`, 70+0.1*float64((seq+i)%7), 1200+seq%5)
				if _, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic(fmt.Sprintf("shard-%d", i)), Payload: []byte(body)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	send(40)
	if n := srv.Status().Anomalies; n != 0 {
		t.Fatalf("%d anomalies on steady series under the default model", n)
	}
	// A hair-trigger default flags every wiggle of every series; a calm
	// model of its own keeps shard-0's rpm quiet.
	for _, m := range []store.Model{
		{Name: store.DefaultModel, Spec: json.RawMessage(`{"kind":"ewma_z","params":{"z":0.01,"warm_up":2}}`)},
		{Name: "shard-0/rpm", Spec: json.RawMessage(`{"kind":"ewma_z","params":{"z":1000}}`)},
	} {
		if err := srv.Store().PutModel(ctx, &m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both versions to be applied", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().ModelsApplied == 2 })
	send(20)
	type series struct{ device, metric string }
	flagged := func() map[series]string {
		rows, err := srv.Store().DB().Query(`SELECT d.name, m.name, any_value(a.model) FROM anomalies a
			JOIN devices d ON d.id = a.device_id JOIN metrics m ON m.id = a.metric_id GROUP BY ALL`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[series]string{}
		for rows.Next() {
			var s series
			var model string
			if err := rows.Scan(&s.device, &s.metric, &model); err != nil {
				t.Fatal(err)
			}
			out[s] = model
		}
		return out
	}
	waitFor(t, "every series but shard-0/rpm to be flagged", 20*time.Second, func() any { return flagged() }, func() bool { return len(flagged()) == 2*devices-1 })
	for s, model := range flagged() {
		if s == (series{"shard-0", "rpm"}) {
			t.Errorf("shard-0/rpm was flagged by %s despite its own calm model", model)
		}
		if model != "default@1(ewma_z)" {
			t.Errorf("%s/%s flagged by %q, want the new default", s.device, s.metric, model)
		}
	}
}

// TestNewDefaultStartsWarm: a new default model replaces the detector of
// every series on every shard with one that has replayed the series'
// stored history: an ewma_z that needs 50 readings before it scores flags
// the very next spike, which it could not if it had started cold.
func TestNewDefaultStartsWarm(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.ModelPoll = 50 * time.Millisecond
	cfg.Scorers = 2
	srv := startServer(t, cfg)
	names := []string{"warm-a", "warm-b"}
	clients := make([]*paho.Client, len(names))
	shards := map[int]bool{}
	for i, name := range names {
		d, err := srv.Store().AddDevice(ctx, name, "warm-key-"+name)
		if err != nil {
			t.Fatal(err)
		}
		shards[int(d.ID)%2] = true
		if clients[i], err = sim.Connect(ctx, srv.MQTTAddr(), name, "warm-key-"+name, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { clients[i].Disconnect(&paho.Disconnect{}) })
	}
	if len(shards) != 2 {
		t.Fatalf("both devices fall on one shard")
	}
	publish := func(i int, v float64) {
		if _, err := clients[i].Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic(names[i]), Payload: fmt.Appendf(nil, `{"temperature": %.2f}`, v)}); err != nil {
			t.Fatal(err)
		}
	}
	for k := range 60 {
		for i := range names {
			publish(i, 70+0.1*float64(k%5))
		}
	}
	m := store.Model{Name: store.DefaultModel, Spec: json.RawMessage(`{"kind":"ewma_z","params":{"warm_up":50}}`)}
	if err := srv.Store().PutModel(ctx, &m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new default to be applied", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().ModelsApplied == 1 })
	for i := range names {
		publish(i, 200)
	}
	waitFor(t, "both spikes to be flagged by the new default", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().Anomalies == 2 })
	var n int
	if err := srv.Store().DB().QueryRow(`SELECT count(DISTINCT device_id) FROM anomalies WHERE model = 'default@1(ewma_z)'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d devices flagged by the new default (%v), want 2", n, err)
	}
}

// TestWarmWindow: a new detector warms on the history within WarmWindow of
// the newest stored reading; with no readings, or no window, on all of it.
func TestWarmWindow(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.WarmWindow = 48 * time.Hour
	srv := startServer(t, cfg)
	if since := srv.warmSince(ctx); !since.IsZero() {
		t.Fatalf("empty store: warm since %v, want no bound", since)
	}
	newest := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for _, ts := range []time.Time{newest.Add(-90 * 24 * time.Hour), newest, newest.Add(-time.Hour)} {
		if _, err := srv.Store().DB().Exec(`INSERT INTO telemetry VALUES (?, 1, 0, 1.5)`, ts); err != nil {
			t.Fatal(err)
		}
	}
	if since, want := srv.warmSince(ctx), newest.Add(-48*time.Hour); !since.Equal(want) {
		t.Fatalf("warm since %v, want %v (the newest reading less the window)", since, want)
	}
	srv.cfg.WarmWindow = 0
	if since := srv.warmSince(ctx); !since.IsZero() {
		t.Fatalf("no window: warm since %v, want no bound", since)
	}
}

// TestPerSeriesModelsStartWarm: per-series models registered together are
// each warmed on their own series' stored history, read for several series
// per scan (three scans here, the chunk made small): an ewma_z that needs
// 50 readings before it scores flags each device's next spike, which it
// could not if it had started cold or on another series' readings.
func TestPerSeriesModelsStartWarm(t *testing.T) {
	defer func(n int) { warmChunk = n }(warmChunk)
	warmChunk = 2
	ctx := context.Background()
	cfg := testConfig(t)
	const devices = 5
	// Devices, history and models are in the store before the server
	// starts, so that its first round applies all the models together.
	st, err := store.Open(ctx, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	temp, err := st.MetricID(ctx, "temperature")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range devices {
		name := fmt.Sprintf("own-%d", i)
		d, err := st.AddDevice(ctx, name, "own-key-"+name)
		if err != nil {
			t.Fatal(err)
		}
		// 60 calm readings, each device around its own level.
		if _, err := st.DB().Exec(`INSERT INTO telemetry SELECT ? + to_seconds(k), ?, ?, ? + 0.1 * (k % 5) FROM range(60) r(k)`, t0, d.ID, temp, 50+10*i); err != nil {
			t.Fatal(err)
		}
		m := store.Model{Name: name + "/temperature", Spec: json.RawMessage(`{"kind":"ewma_z","params":{"warm_up":50}}`)}
		if err := st.PutModel(ctx, &m); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, cfg)
	waitFor(t, "the models to be applied", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().ModelsApplied == devices })
	for i := range devices {
		name := fmt.Sprintf("own-%d", i)
		c, err := sim.Connect(ctx, srv.MQTTAddr(), name, "own-key-"+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
		// A spike for this device's level, not for the others'.
		if _, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic(name), Payload: fmt.Appendf(nil, `{"temperature": %d}`, 50+10*i+20)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every device's spike to be flagged by its own model", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().Anomalies == devices })
	var n int
	if err := srv.Store().DB().QueryRow(`SELECT count(DISTINCT device_id) FROM anomalies WHERE model LIKE 'own-%/temperature@1(ewma_z)'`).Scan(&n); err != nil || n != devices {
		t.Fatalf("%d devices flagged by their own models (%v), want %d", n, err, devices)
	}
}
