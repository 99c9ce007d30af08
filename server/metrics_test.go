package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vigil-iot/vigil/sim"
)

// scrape fetches /metrics with token the way Prometheus does and parses
// it with Prometheus' own parser.
func scrape(t *testing.T, srv *Server, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.HTTPAddr()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the exposition does not parse: %v", err)
	}
	return fams
}

// sample returns the value of the sample of family name whose labels are
// labels (name=value pairs), failing the test when there is none.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels)/2 {
			continue
		}
		for i, l := range m.Label {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
		t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

// TestMetrics: /metrics, behind the API token, counts what the store holds
// — readings, dead letters — and what the gateway refused, in a form
// Prometheus parses, with the Go runtime's and the process's metrics
// beside vigil's.
func TestMetrics(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.APIToken = "scrape-token"
	srv := startServer(t, cfg)
	if _, err := srv.Store().AddDevice(ctx, "m1", "key-of-m1"); err != nil {
		t.Fatal(err)
	}
	dev, err := sim.Connect(ctx, srv.MQTTAddr(), "m1", "key-of-m1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Disconnect(&paho.Disconnect{})
	// QoS 1: the gateway acknowledges each publish only once its batch is
	// committed, so when Publish returns the counters include it.
	for _, body := range []string{`{"temperature": 70.5, "load": 0.4}`, `[{"temperature": 70.6}, {"temperature": 70.7, "load": 0.5}]`} {
		if _, err := dev.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("m1"), Payload: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	// A dead letter is acknowledged with the reason it was not stored.
	if _, err := dev.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("m1"), Payload: []byte(`not telemetry`)}); err == nil {
		t.Fatal("a body that is not telemetry was acknowledged as stored")
	}
	if _, err := sim.Connect(ctx, srv.MQTTAddr(), "ghost", "any-key-at-all", nil); err == nil {
		t.Fatal("an unregistered device connected")
	}

	resp, err := http.Get("http://" + srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without the token: %s, want 401", resp.Status)
	}

	fams := scrape(t, srv, cfg.APIToken)
	var readings, dead int
	db := srv.Store().DB()
	if err := db.QueryRow(`SELECT (SELECT count(*) FROM telemetry), (SELECT count(*) FROM dead_letters)`).Scan(&readings, &dead); err != nil {
		t.Fatal(err)
	}
	if readings != 5 || dead != 1 {
		t.Fatalf("the store holds %d readings and %d dead letters; want 5 and 1", readings, dead)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"vigil_ingest_readings_total", nil, float64(readings)},
		{"vigil_ingest_dead_letters_total", nil, float64(dead)},
		{"vigil_ingest_messages_total", nil, 3},
		{"vigil_mqtt_telemetry_messages_total", nil, 3},
		{"vigil_mqtt_connections_refused_total", []string{"reason", "unknown_device"}, 1},
		{"vigil_mqtt_connections_refused_total", []string{"reason", "wrong_key"}, 0},
		{"vigil_mqtt_sessions", nil, 1},
		{"vigil_devices_registered", nil, 1},
		{"vigil_ingest_commits_total", []string{"result", "error"}, 0},
	} {
		if got := sample(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	// Scoring follows the commits; every stored reading is scored, and
	// then no batch waits.
	waitFor(t, "every stored reading to be scored", 10*time.Second, func() any { return srv.Status() }, func() bool {
		fams = scrape(t, srv, cfg.APIToken)
		return sample(t, fams, "vigil_readings_scored_total") >= float64(readings)
	})
	if got := sample(t, fams, "vigil_readings_scored_total"); got != float64(readings) {
		t.Errorf("vigil_readings_scored_total = %g, want the %d readings stored", got, readings)
	}
	if got := sample(t, fams, "vigil_scoring_queue_batches"); got != 0 {
		t.Errorf("vigil_scoring_queue_batches = %g with every reading scored", got)
	}
	commits := sample(t, fams, "vigil_ingest_commits_total", "result", "ok")
	if commits < 1 {
		t.Errorf("%g commits counted", commits)
	}
	h := fams["vigil_ingest_commit_duration_seconds"]
	if h == nil || h.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("vigil_ingest_commit_duration_seconds is not a histogram: %v", h)
	}
	hist := h.Metric[0].Histogram
	if float64(hist.GetSampleCount()) != commits || !(hist.GetSampleSum() > 0) {
		t.Errorf("commit histogram: %d commits in %g s; want the %g commits counted, taking some time", hist.GetSampleCount(), hist.GetSampleSum(), commits)
	}
	if b := hist.Bucket; len(b) == 0 || b[len(b)-1].GetCumulativeCount() > hist.GetSampleCount() {
		t.Errorf("commit histogram buckets %v exceed its count %d", b, hist.GetSampleCount())
	}
	for _, name := range []string{"go_goroutines", "go_build_info", "process_start_time_seconds"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s: the runtime's and process's metrics are missing", name)
		}
	}
	for name := range fams {
		if strings.HasPrefix(name, "vigil_amqp_") {
			t.Errorf("%s is exposed without a broker link", name)
		}
	}
}
