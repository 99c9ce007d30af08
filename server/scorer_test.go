package server

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
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

// TestNewModelSeesEachReadingOnce: a batch is committed before it is
// scored, so a model applied in between warms on stored history that
// already holds the batch; scoring the batch afterwards must not feed it
// to the detector again, whether the model is the series' own or a new
// default. Of 6 stored readings, 3 have been scored and 3 wait to be: an
// ewma_z with warm_up 8, warmed on the 6, learns the next 2 readings and
// scores the 9th first; fed the 3 twice, it scored the 6th (its repeat).
func TestNewModelSeesEachReadingOnce(t *testing.T) {
	for _, name := range []string{"once-1/temperature", store.DefaultModel} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			cfg := testConfig(t)
			cfg.ModelPoll = time.Hour // the test hands the shard its jobs itself
			cfg.Scorers = 1
			// Any score above 0 opens an episode, which never closes: the
			// one anomaly is the first reading the detector scores.
			cfg.Monitor.Threshold, cfg.Monitor.Clear = 1e-9, 0
			srv := startServer(t, cfg)
			dev, err := srv.Store().AddDevice(ctx, "once-1", "once-key-01")
			if err != nil {
				t.Fatal(err)
			}
			temp, err := srv.Store().MetricID(ctx, "temperature")
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
			at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
			// readings returns readings from, ..., to-1 of the series,
			// alternating between 70 and 71.
			readings := func(from, to int) arrow.RecordBatch {
				var c store.TelemetryColumns
				for i := from; i < to; i++ {
					c.TS, c.DeviceID = append(c.TS, at(i).UnixMicro()), append(c.DeviceID, dev.ID)
					c.MetricID, c.Value = append(c.MetricID, temp), append(c.Value, 70+float64(i%2))
				}
				return c.Record()
			}
			stored := readings(1, 7)
			defer stored.Release()
			if err := srv.Store().Commit(ctx, store.Batch{Readings: stored}); err != nil {
				t.Fatal(err)
			}
			v, err := srv.resolve(ctx, store.Model{Name: name, Version: 1, Spec: json.RawMessage(`{"kind":"ewma_z","params":{"warm_up":8}}`)})
			if err != nil {
				t.Fatal(err)
			}
			sh := srv.shards[0]
			done := make(chan struct{}, 1)
			sh.in <- shardJob{rec: readings(1, 4)} // scored by the default the server started with
			sh.in <- shardJob{models: []modelVersion{v}, since: srv.warmSince(ctx), applied: done}
			<-done
			sh.in <- shardJob{rec: readings(4, 7)}  // committed before the model was applied
			sh.in <- shardJob{rec: readings(7, 12)} // committed after
			sh.in <- shardJob{applied: done}        // the shard has scored both
			<-done
			var first time.Time
			var n int
			var model string
			if err := srv.Store().DB().QueryRow(`SELECT min(ts), count(*), any_value(model) FROM anomalies`).Scan(&first, &n, &model); err != nil || n != 1 || model != v.label {
				t.Fatalf("%d anomalies by %q (%v), want 1 by %q", n, model, err, v.label)
			}
			if !first.Equal(at(9)) {
				t.Fatalf("the new detector scored reading %d first (at %s); want reading 9, after 6 warmed on and 2 learned live", int(first.Sub(t0)/time.Second), first)
			}
		})
	}
}

// TestRestartStartsWarm: a restarted server warms the default detector of
// every stored series on the series' history, on every shard, before it
// scores a reading: a spike right after the restart is flagged, which a
// detector started cold (the live default needs 20 readings) could not.
func TestRestartStartsWarm(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.Scorers = 2
	names := []string{"restart-a", "restart-b"}
	// The history of an earlier run: 200 calm readings of each device.
	st, err := store.Open(ctx, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	temp, err := st.MetricID(ctx, "temperature")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	shards := map[int32]bool{}
	for _, name := range names {
		d, err := st.AddDevice(ctx, name, "restart-key-"+name)
		if err != nil {
			t.Fatal(err)
		}
		shards[d.ID%2] = true
		if _, err := st.DB().Exec(`INSERT INTO telemetry SELECT ? + to_seconds(k), ?, ?, 70 + 0.1 * (k % 5) FROM range(200) r(k)`, t0, d.ID, temp); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if len(shards) != 2 {
		t.Fatalf("both devices fall on one shard")
	}
	srv := startServer(t, cfg)
	for _, name := range names {
		c, err := sim.Connect(ctx, srv.MQTTAddr(), name, "restart-key-"+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
		if _, err := c.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic(name), Payload: []byte(`{"temperature": 200}`)}); err != nil {
			t.Fatal(err)
		}
	}
	scored := func() (n int64) {
		for _, sh := range srv.shards {
			n += sh.scored.Load()
		}
		return n
	}
	waitFor(t, "both spikes to be scored", 10*time.Second, func() any { return srv.Status() }, func() bool { return scored() == int64(len(names)) })
	rows, err := srv.Store().DB().Query(`SELECT d.name, a.score, a.model FROM anomalies a JOIN devices d ON d.id = a.device_id ORDER BY d.name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	flagged := map[string]bool{}
	for rows.Next() {
		var name, model string
		var score float64
		if err := rows.Scan(&name, &score, &model); err != nil {
			t.Fatal(err)
		}
		if score < 0.5 || model != cfg.Monitor.Model.Kind {
			t.Errorf("%s: spike scored %.3f by %q, want at least 0.5 by the default", name, score, model)
		}
		flagged[name] = true
	}
	for _, name := range names {
		if !flagged[name] {
			t.Errorf("%s: the spike after the restart was not flagged: its default detector started cold", name)
		}
	}
}
