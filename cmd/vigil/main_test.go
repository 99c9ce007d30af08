package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/server"
	"github.com/vigil-iot/vigil/store"
)

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestDemoJSON runs `vigil demo --json` in-process and checks the contract
// of its last line.
func TestDemoJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs for 20 s")
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"demo", "--devices", "5", "--duration", "20s", "--interval", "200ms", "--fault-after", "5s", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	var sum map[string]int64
	if err := json.Unmarshal([]byte(lastLine(out.String())), &sum); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out.String())
	}
	for _, k := range []string{"devices", "readings_stored", "anomalies", "commands_sent", "commands_acked", "devices_recovered", "dead_letters"} {
		if _, ok := sum[k]; !ok {
			t.Errorf("summary lacks %q: %v", k, sum)
		}
	}
	// 5 devices at 5 messages/s of 2 readings for ~20 s; one of them faulty.
	if sum["devices"] != 5 || sum["readings_stored"] < 500 || sum["dead_letters"] != 0 {
		t.Errorf("summary %v", sum)
	}
	if sum["anomalies"] < 1 || sum["commands_sent"] != sum["commands_acked"] || sum["commands_acked"] < 1 || sum["devices_recovered"] != 1 {
		t.Errorf("the faulty device was not commanded, acknowledged and recovered: %v", sum)
	}
	if n := strings.Count(errOut.String(), "readings/s"); n < 15 {
		t.Errorf("%d status lines in 20 s, want about one a second", n)
	}
}

// TestDemoInterrupted: cancelling the demo (what SIGINT does through
// signal.NotifyContext) ends it cleanly with its summary and exit code 0.
func TestDemoInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"demo", "--devices", "3", "--duration", "0", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	var sum map[string]int64
	if err := json.Unmarshal([]byte(lastLine(out.String())), &sum); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out.String())
	}
	if sum["devices"] != 3 || sum["readings_stored"] == 0 {
		t.Errorf("summary %v", sum)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"demo", "--no-such-flag"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if errOut.Len() == 0 {
			t.Errorf("%v: nothing said on stderr", args)
		}
	}
}

func TestScoreIsReproducible(t *testing.T) {
	in := "../../testdata/nab/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv"
	var outs [2]string
	for i := range outs {
		path := t.TempDir() + "/out.csv"
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{"score", "--model", "ewma_z", "--in", in, "--out", path}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = string(b)
	}
	src, _ := os.ReadFile(in)
	if outs[0] != outs[1] {
		t.Fatal("two runs of score differ")
	}
	inLines, outLines := strings.Split(strings.TrimSpace(string(src)), "\n"), strings.Split(strings.TrimSpace(outs[0]), "\n")
	if len(inLines) != len(outLines) || outLines[0] != "timestamp,value,anomaly_score" {
		t.Fatalf("%d input lines, %d output lines, header %q", len(inLines), len(outLines), outLines[0])
	}
	for i := 1; i < len(inLines); i++ {
		if !strings.HasPrefix(outLines[i], strings.TrimSpace(inLines[i])+",") {
			t.Fatalf("line %d: %q does not continue input %q", i, outLines[i], inLines[i])
		}
	}
}

// TestScoreOutIsWholeOrNothing scores a file onto itself, and checks that a
// run that fails part-way leaves the earlier output as it was and no
// partial file behind.
func TestScoreOutIsWholeOrNothing(t *testing.T) {
	src, err := os.ReadFile("../../testdata/nab/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	same := filepath.Join(dir, "same.csv")
	if err := os.WriteFile(same, src, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"score", "--model", "ewma_z", "--in", same, "--out", same}, &stdout, &stderr); code != 0 {
		t.Fatalf("scoring a file onto itself: exit %d: %s", code, stderr.String())
	}
	got, _ := os.ReadFile(same)
	inLines, outLines := strings.Split(strings.TrimSpace(string(src)), "\n"), strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(outLines) != len(inLines) || !strings.HasPrefix(outLines[len(outLines)-1], inLines[len(inLines)-1]+",") {
		t.Fatalf("scored onto itself: %d lines for %d, last %q", len(outLines), len(inLines), outLines[len(outLines)-1])
	}
	ref, err := os.Create(filepath.Join(dir, "ref"))
	if err != nil {
		t.Fatal(err)
	}
	ref.Close()
	refInfo, _ := os.Stat(ref.Name())
	if info, _ := os.Stat(same); info.Mode() != refInfo.Mode() {
		t.Errorf("output file mode %v, want %v as os.Create gives", info.Mode(), refInfo.Mode())
	}
	os.Remove(ref.Name())

	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, append(append([]byte{}, src...), "not a time,1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.csv")
	if err := os.WriteFile(out, []byte("earlier\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"score", "--model", "ewma_z", "--in", bad, "--out", out}, &stdout, &stderr); code == 0 {
		t.Fatal("a CSV with a bad timestamp on its last line scored without an error")
	}
	if !strings.Contains(stderr.String(), "line") {
		t.Errorf("the error does not say which line: %s", stderr.String())
	}
	if b, _ := os.ReadFile(out); string(b) != "earlier\n" {
		t.Errorf("a failed run changed the earlier output: %.60q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("files left: %v, want same.csv, bad.csv and out.csv", names)
	}
}

func TestEvalNAB(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"eval", "nab", "--data", "../../testdata/nab/data", "--labels", "../../testdata/nab/labels/combined_windows.json", "--model", "ewma_z", "--json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var res []struct {
		Profile    string
		Normalized float64
		Files      []json.RawMessage
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].Profile != "standard" || len(res[0].Files) != 44 || res[0].Normalized > 100 {
		t.Fatalf("results %+v", res)
	}
}

// startServer starts a server on free local ports, closed when the test
// ends.
func startServer(t testing.TB) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig(t.TempDir())
	cfg.MQTT.Addr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	srv, err := server.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv
}

// addReading appends one reading to batch columns.
func addReading(c *store.TelemetryColumns, ts time.Time, device int32, metric int16, x float64) {
	c.TS, c.DeviceID = append(c.TS, ts.UnixMicro()), append(c.DeviceID, device)
	c.MetricID, c.Value = append(c.MetricID, metric), append(c.Value, x)
}

// commitColumns stores the readings of c in st as one batch.
func commitColumns(tb testing.TB, st *store.Store, c store.TelemetryColumns) {
	tb.Helper()
	rec := c.Record()
	defer rec.Release()
	if err := st.Commit(context.Background(), store.Batch{Readings: rec}); err != nil {
		tb.Fatal(err)
	}
}

// TestTrainRegistersPerSeriesModels trains against a running server through
// its API and finds one version per stored series in the registry.
func TestTrainRegistersPerSeriesModels(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	st := srv.Store()
	d, _ := st.AddDevice(ctx, "lathe-2", "lathe-key-2")
	temp, _ := st.MetricID(ctx, "temperature")
	rpm, _ := st.MetricID(ctx, "rpm")
	b := array.NewRecordBuilder(memory.DefaultAllocator, store.TelemetrySchema)
	t0 := time.Now().Add(-time.Hour)
	for i := 0; i < 200; i++ {
		for _, m := range []int16{temp, rpm} {
			b.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(t0.Add(time.Duration(i) * time.Second).UnixMicro()))
			b.Field(1).(*array.Int32Builder).Append(d.ID)
			b.Field(2).(*array.Int16Builder).Append(m)
			b.Field(3).(*array.Float64Builder).Append(float64(70 + i%5))
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := st.Commit(ctx, store.Batch{Readings: rec}); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"train", "--server", "http://" + srv.HTTPAddr(), "--model", "ewma_z", "--device", "lathe-2"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	ms, err := st.Models(ctx, false)
	if err != nil || len(ms) != 2 || ms[0].Name != "lathe-2/rpm" || ms[1].Name != "lathe-2/temperature" {
		t.Fatalf("registry %+v %v\n%s", ms, err, stdout.String())
	}
	var fm struct {
		Readings int `json:"readings"`
	}
	json.Unmarshal(ms[1].Metrics, &fm)
	if fm.Readings != 200 || !strings.Contains(stdout.String(), "lathe-2/temperature version 1: 200 readings") {
		t.Fatalf("metrics %s, output %s", ms[1].Metrics, stdout.String())
	}
}

// TestTrainMultivariate trains device-level models against a running
// server, from a CSV and from stored history through the API, and finds
// them in the registry and in `vigil models list`.
func TestTrainMultivariate(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	url := "http://" + srv.HTTPAddr()
	st := srv.Store()
	rng := rand.New(rand.NewPCG(8, 8))
	pair := func() (float64, float64) {
		a, b := rng.NormFloat64(), rng.NormFloat64()
		return 1000 + 100*a, 70 + 5*(0.8*a+0.6*b)
	}

	// From a CSV: 300 rows, 12 of them lacking temperature, and a column
	// that --metrics leaves out.
	var csv strings.Builder
	csv.WriteString("timestamp,rpm,humidity,temperature\n")
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := range 300 {
		rpm, temp := pair()
		cell := fmt.Sprintf("%.3f", temp)
		if i%25 == 0 {
			cell = ""
		}
		fmt.Fprintf(&csv, "%s,%.3f,%d,%s\n", t0.Add(time.Duration(i)*time.Minute).Format(time.DateTime), rpm, 40+i%3, cell)
	}
	path := t.TempDir() + "/press.csv"
	if err := os.WriteFile(path, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"train", "--server", url, "--multivariate", "--csv", path}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "needs --device") {
		t.Fatalf("without --device: exit %d, %s", code, stderr.String())
	}
	stderr.Reset()
	code := run(ctx, []string{"train", "--server", url, "--multivariate", "--device", "press-3", "--metrics", "temperature,rpm", "--csv", path}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "press-3/* version 1: 288 vectors of temperature,rpm (12 skipped as incomplete)") {
		t.Fatalf("output %s", stdout.String())
	}

	// From stored history: 200 timestamps of two metrics, 10 of them
	// without temperature.
	d, _ := st.AddDevice(ctx, "lathe-2", "lathe-key-2")
	temp, _ := st.MetricID(ctx, "temperature")
	rpm, _ := st.MetricID(ctx, "rpm")
	b := array.NewRecordBuilder(memory.DefaultAllocator, store.TelemetrySchema)
	t1 := time.Now().Add(-time.Hour)
	for i := range 200 {
		r, tp := pair()
		for _, m := range []int16{rpm, temp} {
			if m == temp && i%20 == 3 {
				continue
			}
			b.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(t1.Add(time.Duration(i) * time.Second).UnixMicro()))
			b.Field(1).(*array.Int32Builder).Append(d.ID)
			b.Field(2).(*array.Int16Builder).Append(m)
			b.Field(3).(*array.Float64Builder).Append(map[int16]float64{rpm: r, temp: tp}[m])
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if err := st.Commit(ctx, store.Batch{Readings: rec}); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := run(ctx, []string{"train", "--server", url, "--multivariate", "--device", "lathe-2"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "lathe-2/* version 1: 190 vectors of rpm,temperature (10 skipped as incomplete)") {
		t.Fatalf("output %s", stdout.String())
	}

	ms, err := st.Models(ctx, false)
	if err != nil || len(ms) != 2 || ms[0].Name != "lathe-2/*" || ms[1].Name != "press-3/*" {
		t.Fatalf("registry %+v %v", ms, err)
	}
	var spec models.Spec
	var p models.MahalanobisParams
	if err := errors.Join(json.Unmarshal(ms[1].Spec, &spec), json.Unmarshal(spec.Params, &p)); err != nil {
		t.Fatal(err)
	}
	if spec.Kind != models.KindMahalanobis || !slices.Equal(p.Metrics, []string{"temperature", "rpm"}) || p.Count != 288 ||
		math.Abs(p.Mean[0]-70) > 1.5 || math.Abs(p.Mean[1]-1000) > 30 || p.Cov[0][1] < 200 || !ms[1].From.Equal(t0) {
		t.Fatalf("press-3/* spec %s, from %s", ms[1].Spec, ms[1].From)
	}
	var fm models.VectorFitMetrics
	if err := json.Unmarshal(ms[0].Metrics, &fm); err != nil || fm.Vectors != 190 || fm.Skipped != 10 {
		t.Fatalf("lathe-2/* metrics %s", ms[0].Metrics)
	}
	stdout.Reset()
	if code := run(ctx, []string{"models", "--server", url, "list"}, &stdout, &stderr); code != 0 {
		t.Fatalf("models list: exit %d: %s", code, stderr.String())
	}
	if out := stdout.String(); !strings.Contains(out, "lathe-2/*") || !strings.Contains(out, "press-3/*") || !strings.Contains(out, `"kind":"mahalanobis"`) {
		t.Fatalf("models list:\n%s", out)
	}
}

// TestTrainReadsEveryReading: a series longer than the query API's JSON
// row limit is trained on every one of its readings (they come as an
// Arrow stream, in one pass for all series), and the series beside it on
// its own.
func TestTrainReadsEveryReading(t *testing.T) {
	if testing.Short() {
		t.Skip("stores a million readings")
	}
	ctx := context.Background()
	srv := startServer(t)
	st := srv.Store()
	d, _ := st.AddDevice(ctx, "mill-1", "mill-key-1")
	temp, _ := st.MetricID(ctx, "temperature")
	rpm, _ := st.MetricID(ctx, "rpm")
	long := api.MaxRowLimit + 50
	var cols store.TelemetryColumns
	t0 := time.Now().Add(-time.Duration(long) * time.Second).Truncate(time.Second)
	add := func(m int16, n int) {
		for i := range n {
			addReading(&cols, t0.Add(time.Duration(i)*time.Second), d.ID, m, float64(70+i%7))
		}
	}
	add(temp, long)
	add(rpm, 300)
	commitColumns(t, st, cols)
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"train", "--server", "http://" + srv.HTTPAddr(), "--model", "ewma_z", "--device", "mill-1"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	ms, err := st.Models(ctx, false)
	if err != nil || len(ms) != 2 {
		t.Fatalf("registry %+v %v", ms, err)
	}
	want := map[string]int{"mill-1/temperature": long, "mill-1/rpm": 300}
	for _, m := range ms {
		var fm struct {
			Readings int `json:"readings"`
		}
		json.Unmarshal(m.Metrics, &fm)
		if fm.Readings != want[m.Name] {
			t.Errorf("%s trained on %d readings, want %d", m.Name, fm.Readings, want[m.Name])
		}
	}
}

// TestTrainMultivariateFleet trains device-level models for a whole fleet
// from one pass over stored history: a model per device with two metrics
// or more, a device with one metric skipped and said so, and, when
// --metrics names a metric a device lacks, an error that names both.
func TestTrainMultivariateFleet(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	url := "http://" + srv.HTTPAddr()
	st := srv.Store()
	temp, _ := st.MetricID(ctx, "temperature")
	rpm, _ := st.MetricID(ctx, "rpm")
	vib, _ := st.MetricID(ctx, "vibration")
	rng := rand.New(rand.NewPCG(3, 9))
	var cols store.TelemetryColumns
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	fleet := map[string][]int16{"drill-1": {temp, rpm}, "drill-2": {temp, rpm, vib}, "drill-3": {temp}}
	for _, name := range []string{"drill-1", "drill-2", "drill-3"} {
		d, _ := st.AddDevice(ctx, name, name+"-key")
		for i := range 120 {
			for _, m := range fleet[name] {
				addReading(&cols, t0.Add(time.Duration(i)*time.Second), d.ID, m, 50+rng.NormFloat64())
			}
		}
	}
	commitColumns(t, st, cols)
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"train", "--server", url, "--multivariate"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"drill-1/* version 1: 120 vectors of rpm,temperature", "drill-2/* version 1: 120 vectors of rpm,temperature,vibration"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "drill-3: skipped, it has only 1 metric") {
		t.Errorf("stderr lacks the skipped device:\n%s", stderr.String())
	}
	if ms, err := st.Models(ctx, false); err != nil || len(ms) != 2 {
		t.Fatalf("registry %+v %v", ms, err)
	}
	stderr.Reset()
	code := run(ctx, []string{"train", "--server", url, "--multivariate", "--metrics", "temperature,vibration"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `drill-1 has no stored readings of "vibration"`) {
		t.Fatalf("--metrics with a metric drill-1 lacks: exit %d: %s", code, stderr.String())
	}
}

// TestQueryExport: `vigil query` writes every row of a result as CSV or as
// an Arrow IPC file, past the JSON row limit; a query that fails leaves
// no file behind; and the flags that do not fit are refused with what to
// do instead.
func TestQueryExport(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	url := "http://" + srv.HTTPAddr()
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	const n = 12_000 // past the default JSON limit of 10,000
	sql := fmt.Sprintf("SELECT range AS i, range / 4 AS quarter FROM range(%d)", n)
	if code := run(ctx, []string{"query", "--server", url, "--format", "csv", sql}, &stdout, &stderr); code != 0 {
		t.Fatalf("csv: exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != n+1 || lines[0] != "i,quarter" || lines[3] != "2,0.5" || lines[n] != fmt.Sprintf("%d,%v", n-1, float64(n-1)/4) {
		t.Fatalf("csv: %d lines, header %q, row 3 %q, last %q", len(lines), lines[0], lines[3], lines[len(lines)-1])
	}

	path := filepath.Join(dir, "q.arrow")
	if code := run(ctx, []string{"query", "--server", url, "--format", "arrow", "--out", path, sql}, &stdout, &stderr); code != 0 {
		t.Fatalf("arrow: exit %d: %s", code, stderr.String())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fr, err := ipc.NewFileReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	rows, sum := 0, 0.0
	for k := range fr.NumRecords() {
		rec, err := fr.RecordBatch(k)
		if err != nil {
			t.Fatal(err)
		}
		q := rec.Column(1).(*array.Float64)
		for r := range q.Len() {
			sum += q.Value(r)
		}
		rows += int(rec.NumRows())
	}
	if want := float64(n) * float64(n-1) / 8; rows != n || sum != want {
		t.Fatalf("arrow file: %d rows summing to %v, want %d summing to %v", rows, sum, n, want)
	}

	failed := filepath.Join(dir, "failed.arrow")
	bad := fmt.Sprintf("SELECT CASE WHEN range < 10 THEN range ELSE error('no such sensor') END FROM range(%d)", n)
	if code := run(ctx, []string{"query", "--server", url, "--format", "arrow", "--out", failed, bad}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "no such sensor") {
		t.Fatalf("a failing query: exit %d: %s", code, stderr.String())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("a failing query left files: %v", entries)
	}
	for _, args := range [][]string{
		{"--format", "csv", "--limit", "5"},
		{"--format", "arrow"},
		{"--format", "xml"},
	} {
		stderr.Reset()
		if code := run(ctx, append(append([]string{"query", "--server", url}, args...), "SELECT 1"), &stdout, &stderr); code == 0 || stderr.Len() == 0 {
			t.Errorf("%v: exit %d, %q", args, code, stderr.String())
		}
	}
}

// TestLoopbackOnly tells the API addresses only this machine can reach
// (no warning without a token) from the ones others can.
func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "[::1]:8080": true, "localhost:8080": true, "127.0.0.2:80": true,
		"0.0.0.0:8080": false, "[::]:8080": false, ":8080": false, "192.168.1.5:8080": false, "vigil.example:8080": false, "garbage": false,
	} {
		if got := loopbackOnly(addr); got != want {
			t.Errorf("loopbackOnly(%q) = %v, want %v", addr, got, want)
		}
	}
}
