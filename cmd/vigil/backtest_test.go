package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/models/nab"
	"github.com/vigil-iot/vigil/store"
)

// evalResults is what `eval --json` prints, less the per-file detail.
type evalResults []struct {
	Profile    string
	Normalized float64
	Threshold  float64
	TP, FP, FN int
	Files      []struct{ Name string }
}

func runEvalJSON(t *testing.T, args ...string) evalResults {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append([]string{"eval"}, args...), &stdout, &stderr); code != 0 {
		t.Fatalf("eval %v: exit %d: %s", args, code, stderr.String())
	}
	var res evalResults
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("eval %v: %v\n%s", args, err, stdout.String())
	}
	return res
}

// TestEvalHistoryMatchesNAB stores three NAB files as the history of three
// devices and backtests a detector on it: the scores must be those `eval
// nab` gives on the same files, with the windows given at the readings'
// times, and again with their ends between readings.
func TestEvalHistoryMatchesNAB(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	st := srv.Store()
	metric, err := st.MetricID(ctx, "value")
	if err != nil {
		t.Fatal(err)
	}
	all, err := nab.LoadWindows("../../testdata/nab/labels/combined_windows.json")
	if err != nil {
		t.Fatal(err)
	}
	// In name order either way: f0 < f1 < f2 as the files' keys are.
	files := []string{
		"artificialNoAnomaly/art_daily_no_noise.csv",
		"realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
		"realAdExchange/exchange-3_cpc_results.csv",
	}
	dir := t.TempDir()
	nabLabels := map[string][][2]string{}
	exact, widened := map[string][][2]string{}, map[string][][2]string{}
	var cols store.TelemetryColumns
	for i, f := range files {
		s, err := nab.LoadSeries("../../testdata/nab/data/"+f, f)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile("../../testdata/nab/data/" + f)
		os.MkdirAll(filepath.Join(dir, "data", filepath.Dir(f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, "data", f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		dev := "f" + string(rune('0'+i))
		d, err := st.AddDevice(ctx, dev, "key-"+dev+"-0001")
		if err != nil {
			t.Fatal(err)
		}
		for k, x := range s.Values {
			addReading(&cols, s.Timestamps[k], d.ID, metric, x)
		}
		key := dev + "/value"
		nabLabels[f], exact[key], widened[key] = [][2]string{}, [][2]string{}, [][2]string{}
		for _, w := range all[f] {
			nabLabels[f] = append(nabLabels[f], [2]string{w.Start.Format(nab.TimeLayout), w.End.Format(nab.TimeLayout)})
			exact[key] = append(exact[key], [2]string{w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339)})
			widened[key] = append(widened[key], [2]string{w.Start.Add(-30 * time.Second).Format(time.RFC3339), w.End.Add(30 * time.Second).Format(time.RFC3339)})
		}
	}
	if len(nabLabels[files[1]])+len(nabLabels[files[2]]) == 0 {
		t.Fatal("the chosen files have no labelled windows")
	}
	commitColumns(t, st, cols)
	writeJSON := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	server := "http://" + srv.HTTPAddr()

	// Windows whose ends fall between readings are narrowed to the
	// readings inside them: here, back to the labelled ones.
	wide := nab.Windows{}
	for key, ws := range widened {
		wide[key] = []nab.Window{}
		for _, w := range ws {
			a, _ := nab.ParseTime(w[0])
			b, _ := nab.ParseTime(w[1])
			wide[key] = append(wide[key], nab.Window{Start: a, End: b})
		}
	}
	_, narrowed, err := historyCorpus(ctx, &api.Client{BaseURL: server}, wide, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		key := "f" + string(rune('0'+i)) + "/value"
		if !reflect.DeepEqual(narrowed[key], all[f]) {
			t.Errorf("%s: windows narrowed to %v, want %v", key, narrowed[key], all[f])
		}
	}
	for _, model := range []string{"ewma_z", "robust_z"} {
		want := runEvalJSON(t, "nab", "--data", filepath.Join(dir, "data"), "--labels", writeJSON("nab.json", nabLabels), "--model", model, "--json")
		for name, labels := range map[string]map[string][][2]string{"exact": exact, "widened": widened} {
			got := runEvalJSON(t, "history", "--server", server, "--labels", writeJSON(name+".json", labels), "--model", model, "--json")
			if len(got) != 3 || len(got[0].Files) != 3 || got[0].Files[0].Name != "f0/value" {
				t.Fatalf("%s, %s labels: %+v", model, name, got)
			}
			for k := range got {
				got[k].Files, want[k].Files = nil, nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s, %s labels: history %+v, NAB on the same files %+v", model, name, got, want)
			}
		}
	}

	// --from and --to bound the readings backtested.
	f1, _ := nab.LoadSeries("../../testdata/nab/data/"+files[1], files[1])
	lo, hi := f1.Timestamps[100], f1.Timestamps[len(f1.Timestamps)-100]
	where, _, err := historyWindow(lo.Format(time.RFC3339), hi.Format(time.RFC3339), "")
	if err != nil {
		t.Fatal(err)
	}
	bounded, _, err := historyCorpus(ctx, &api.Client{BaseURL: server}, nab.Windows{"f1/value": {}}, where)
	if err != nil {
		t.Fatal(err)
	}
	if len(bounded) != 1 {
		t.Fatalf("bounded to [%s, %s): %d series, want 1", lo, hi, len(bounded))
	}
	if got := bounded[0]; len(got.Values) != len(f1.Values)-200 || !got.Timestamps[0].Equal(lo) {
		t.Errorf("bounded to [%s, %s): %d readings from %s, want the %d from the 101st", lo, hi, len(got.Values), got.Timestamps[0], len(f1.Values)-200)
	}

	// What cannot be backtested is refused, naming the fault.
	for _, c := range []struct {
		labels map[string][][2]string
		want   string
	}{
		{map[string][][2]string{"f1": {}}, "name each as DEVICE/METRIC"},
		{map[string][][2]string{"f1/value": {}, "f9/value": {}, "f1/rpm": {}}, "no stored readings for f1/rpm, f9/value"},
		{map[string][][2]string{"f1/value": {{"2001-01-01T00:00:00Z", "2001-01-02T00:00:00Z"}}}, "no reading falls in the window"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(ctx, []string{"eval", "history", "--server", server, "--labels", writeJSON("bad.json", c.labels), "--model", "ewma_z"}, &stdout, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("labels %v: exit %d, %q; want an error saying %q", c.labels, code, stderr.String(), c.want)
		}
	}
}
