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

// correlated is a connected device whose temperature follows its load
// (correlation 0.95), publishing both in one message dated t0 + i seconds.
type correlated struct {
	t    *testing.T
	srv  *Server
	dev  *paho.Client
	name string
	rng  *rand.Rand
	t0   time.Time
}

func newCorrelated(t *testing.T, name string) *correlated {
	srv, dev := startWithDevice(t, name, name+"-key-0001")
	return &correlated{t: t, srv: srv, dev: dev, name: name, rng: rand.New(rand.NewPCG(21, 4)),
		t0: time.Now().Add(-time.Hour).UTC().Truncate(time.Second)}
}

func (d *correlated) draw() (load, temp float64) {
	a, b := d.rng.NormFloat64(), d.rng.NormFloat64()
	return 50 + 10*a, 30 + 5*(0.95*a+math.Sqrt(1-0.95*0.95)*b)
}

func (d *correlated) at(i int) time.Time { return d.t0.Add(time.Duration(i) * time.Second) }

func (d *correlated) send(i int, load, temp float64) {
	body := fmt.Sprintf(`{"ts": %q, "load": %.3f, "temperature": %.3f}`, d.at(i).Format(time.RFC3339Nano), load, temp)
	if _, err := d.dev.Publish(context.Background(), &paho.Publish{QoS: 1, Topic: sim.EventsTopic(d.name), Payload: []byte(body)}); err != nil {
		d.t.Fatal(err)
	}
}

// sendNormal sends the vectors from, ..., to-1 from the device's normal
// distribution.
func (d *correlated) sendNormal(from, to int) {
	for i := from; i < to; i++ {
		l, tp := d.draw()
		d.send(i, l, tp)
	}
}

// sendBroken sends, as vector i, load 0.5σ above its mean and temperature
// 1.8σ below its own: each unremarkable, together far off the line
// temperature follows.
func (d *correlated) sendBroken(i int) { d.send(i, 55, 21) }

func (d *correlated) register(spec models.Spec) {
	d.t.Helper()
	specJSON, _ := json.Marshal(spec)
	c := &api.Client{BaseURL: "http://" + d.srv.HTTPAddr()}
	if _, err := c.PutModel(context.Background(), store.Model{Name: store.DeviceModel(d.name), Spec: specJSON}); err != nil {
		d.t.Fatal(err)
	}
	waitFor(d.t, "the device-level model to be applied", 10*time.Second, func() any { return d.srv.Status() }, func() bool { return d.srv.Status().ModelsApplied == 1 })
}

// anomaly waits for the first anomaly labelled label and returns how many
// there are, its time, metric and explanation.
func (d *correlated) anomaly(label string) (n int, ts time.Time, metric, why string) {
	d.t.Helper()
	db := d.srv.Store().DB()
	waitFor(d.t, "an anomaly of "+label, 10*time.Second, func() any { return d.srv.Status() }, func() bool {
		db.QueryRow(`SELECT count(*) FROM anomalies WHERE model = ?`, label).Scan(&n)
		return n > 0
	})
	err := db.QueryRow(`SELECT count(*) OVER (), a.ts, m.name, a.explanation FROM anomalies a JOIN metrics m ON m.id = a.metric_id
		WHERE a.model = ? ORDER BY a.ts LIMIT 1`, label).Scan(&n, &ts, &metric, &why)
	if err != nil {
		d.t.Fatal(err)
	}
	return n, ts, metric, why
}

var loadAndTemperature = models.Spec{Kind: models.KindMahalanobis, Params: json.RawMessage(`{"metrics": ["load", "temperature"]}`)}

// TestMultivariateModel registers a trained device-level model while the
// server runs, then sends readings whose metrics are each normal but whose
// correlation breaks once, and expects exactly that vector to be stored as
// an anomaly of the multivariate model, on the metric that drove it, with
// a command for the device.
func TestMultivariateModel(t *testing.T) {
	d := newCorrelated(t, "mv-1")
	hist, rows := make([]time.Time, 2000), make([][]float64, 2000)
	for i := range rows {
		l, tp := d.draw()
		hist[i], rows[i] = d.at(i-2000), []float64{l, tp}
	}
	trained, _, err := models.TrainVector(loadAndTemperature, hist, rows, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	d.register(trained)
	d.sendNormal(0, 40)
	d.sendBroken(40)
	d.sendNormal(41, 48)

	n, ts, metric, why := d.anomaly("mv-1/*@1(mahalanobis)")
	if n != 1 || !ts.Equal(d.at(40)) || metric != "temperature" || !strings.Contains(why, "mahalanobis over load,temperature") {
		t.Fatalf("%d anomalies; first at %s (broken vector at %s) on %q: %s", n, ts, d.at(40), metric, why)
	}
	// The anomaly went through the actions controller: temperature has a
	// rule, so the device is commanded.
	waitFor(t, "a command for the device", 10*time.Second, func() any { return d.srv.Status() }, func() bool {
		var n int
		d.srv.Store().DB().QueryRow(`SELECT count(*) FROM commands c JOIN devices v ON v.id = c.device_id WHERE v.name = 'mv-1'`).Scan(&n)
		return n > 0
	})
}

// TestMultivariateModelWarmsOnHistory registers an untrained model after
// the device has sent 60 vectors: only if it learned them from the stored
// history can it score (warm_up is 50) the broken vector that follows.
func TestMultivariateModelWarmsOnHistory(t *testing.T) {
	d := newCorrelated(t, "mv-2")
	d.sendNormal(0, 60)
	waitFor(t, "60 vectors to be stored", 10*time.Second, func() any { return d.srv.Status() }, func() bool { return d.srv.Status().Readings >= 120 })
	d.register(loadAndTemperature)
	d.sendBroken(60)

	n, ts, _, _ := d.anomaly("mv-2/*@1(mahalanobis)")
	if n != 1 || !ts.Equal(d.at(60)) {
		t.Fatalf("%d anomalies; first at %s, broken vector at %s", n, ts, d.at(60))
	}
}
