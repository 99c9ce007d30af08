package server

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/sim"
	"github.com/vigil-iot/vigil/store"
)

// TestMultivariateModel registers a trained device-level model while the
// server runs, then sends readings whose metrics are each normal but whose
// correlation breaks once, and expects exactly that vector to be stored as
// an anomaly of the multivariate model, on the metric that drove it, with
// a command for the device.
func TestMultivariateModel(t *testing.T) {
	ctx := context.Background()
	srv, dev := startWithDevice(t, "mv-1", "mv-key-0001")

	// Temperature follows load: correlation 0.95.
	rng := rand.New(rand.NewPCG(21, 4))
	draw := func() (load, temp float64) {
		a, b := rng.NormFloat64(), rng.NormFloat64()
		return 50 + 10*a, 30 + 5*(0.95*a+math.Sqrt(1-0.95*0.95)*b)
	}
	t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	hist, rows := make([]time.Time, 2000), make([][]float64, 2000)
	for i := range rows {
		l, tp := draw()
		hist[i], rows[i] = t0.Add(-time.Duration(2000-i)*time.Second), []float64{l, tp}
	}
	spec := models.Spec{Kind: models.KindMahalanobis, Params: json.RawMessage(`{"metrics": ["load", "temperature"]}`)}
	trained, _, err := models.TrainVector(spec, hist, rows, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	specJSON, _ := json.Marshal(trained)
	c := &api.Client{BaseURL: "http://" + srv.HTTPAddr()}
	if _, err := c.PutModel(ctx, store.Model{Name: store.DeviceModel("mv-1"), Spec: specJSON}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the device-level model to be applied", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().ModelsApplied == 1 })

	send := func(i int, load, temp float64) {
		body := fmt.Sprintf(`{"ts": %q, "load": %.3f, "temperature": %.3f}`, t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano), load, temp)
		if _, err := dev.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("mv-1"), Payload: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 40 {
		l, tp := draw()
		send(i, l, tp)
	}
	// Load 0.5σ above its mean, temperature 1.8σ below its own: each
	// unremarkable, together far off the line temperature follows.
	broken := t0.Add(40 * time.Second)
	send(40, 55, 21)
	for i := 41; i < 48; i++ {
		l, tp := draw()
		send(i, l, tp)
	}

	label := "mv-1/*@1(mahalanobis)"
	count := func(q string, args ...any) int {
		var n int
		if err := srv.Store().DB().QueryRow(q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, "an anomaly of the multivariate model", 10*time.Second, func() any { return srv.Status() }, func() bool {
		return count(`SELECT count(*) FROM anomalies WHERE model = ?`, label) > 0
	})
	var ts time.Time
	var metric, why string
	var n int
	err = srv.Store().DB().QueryRow(`SELECT count(*) OVER (), a.ts, m.name, a.explanation FROM anomalies a JOIN metrics m ON m.id = a.metric_id
		WHERE a.model = ? ORDER BY a.ts LIMIT 1`, label).Scan(&n, &ts, &metric, &why)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || !ts.Equal(broken) || metric != "temperature" || !strings.Contains(why, "mahalanobis over load,temperature") {
		t.Fatalf("%d anomalies of %s; first at %s (broken vector at %s) on %q: %s", n, label, ts, broken, metric, why)
	}
	// The anomaly went through the actions controller: temperature has a
	// rule, so the device is commanded.
	waitFor(t, "a command for the device", 10*time.Second, func() any { return srv.Status() }, func() bool {
		return count(`SELECT count(*) FROM commands c JOIN devices d ON d.id = c.device_id WHERE d.name = 'mv-1'`) > 0
	})
}
