package models

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sampleCSV renders a synthetic series as ScoreCSV input, with a spike.
func sampleCSV(layout string) string {
	s := noisy(1200, 1000, 21, daily, spikeAt(1000, 15))
	var b strings.Builder
	b.WriteString("timestamp,value\n")
	for i := range s.xs {
		fmt.Fprintf(&b, "%s,%.4f\n", s.ts[i].Format(layout), s.xs[i])
	}
	return b.String()
}

func TestScoreCSV(t *testing.T) {
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05Z07:00"} {
		t.Run(layout, func(t *testing.T) {
			in := sampleCSV(layout)
			var out1, out2 bytes.Buffer
			if err := ScoreCSV(DefaultSpec(), strings.NewReader(in), &out1); err != nil {
				t.Fatal(err)
			}
			if err := ScoreCSV(DefaultSpec(), strings.NewReader(in), &out2); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out1.Bytes(), out2.Bytes()) {
				t.Fatal("two runs over the same input differ")
			}
			inRows := strings.Split(strings.TrimSuffix(in, "\n"), "\n")
			outRows := strings.Split(strings.TrimSuffix(out1.String(), "\n"), "\n")
			if len(outRows) != len(inRows) || outRows[0] != "timestamp,value,anomaly_score" {
				t.Fatalf("%d output rows (header %q) for %d input rows", len(outRows), outRows[0], len(inRows))
			}
			for i := 1; i < len(inRows); i++ {
				if !strings.HasPrefix(outRows[i], inRows[i]+",") {
					t.Fatalf("row %d: %q does not start with the input row %q", i, outRows[i], inRows[i])
				}
			}
			// The spike is data row 1000, output line 1001.
			f := strings.Split(outRows[1001], ",")
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err != nil || v < 0.5 {
				t.Fatalf("spike row %q: score %v (%v), want >= 0.5", outRows[1001], v, err)
			}
		})
	}
}

// TestScoreCSVGolden compares ScoreCSV's output on a fixed input with
// testdata/score_default.golden.csv; run with VIGIL_UPDATE_GOLDEN=1 to
// rewrite it after an intended change of the default model.
func TestScoreCSVGolden(t *testing.T) {
	var out bytes.Buffer
	if err := ScoreCSV(DefaultSpec(), strings.NewReader(sampleCSV("2006-01-02 15:04:05")), &out); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "score_default.golden.csv")
	if os.Getenv("VIGIL_UPDATE_GOLDEN") != "" {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with VIGIL_UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("output differs from %s; if the default model changed on purpose, rerun with VIGIL_UPDATE_GOLDEN=1", golden)
	}
}

func TestScoreCSVErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
		contains string
	}{
		{"empty", "", ErrCSVHeader, ""},
		{"bad timestamp", "timestamp,value\n2024-01-01 00:00:00,1\nyesterday,2\n", nil, "line 3"},
		{"short row", "timestamp,value\n2024-01-01 00:00:00\n", nil, "line 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ScoreCSV(DefaultSpec(), strings.NewReader(tc.in), &bytes.Buffer{})
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("error %v does not mention %q", err, tc.contains)
			}
		})
	}
	var out bytes.Buffer
	in := "value,timestamp,extra\n1.5,2024-01-01 00:00:00,x\nNaN,2024-01-01 00:00:01,y\n,2024-01-01 00:00:02,z\n"
	if err := ScoreCSV(Spec{Kind: KindRobustZ}, strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	want := "timestamp,value,anomaly_score\n2024-01-01 00:00:00,1.5,0\n2024-01-01 00:00:01,NaN,0\n2024-01-01 00:00:02,,0\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestReadSeriesCSV(t *testing.T) {
	ts, xs, err := ReadSeriesCSV(strings.NewReader("value,timestamp\n1.5,2026-11-29 00:00:00\n\"2\",2026-11-29T00:00:01Z\n"))
	if err != nil || len(xs) != 2 || xs[0] != 1.5 || xs[1] != 2 || !ts[1].Equal(time.Date(2026, 11, 29, 0, 0, 1, 0, time.UTC)) {
		t.Fatalf("%v %v %v", ts, xs, err)
	}
	if _, _, err := ReadSeriesCSV(strings.NewReader("timestamp,value\n2026-11-29 00:00:00,hot\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("non-numeric value: %v", err)
	}
}

func TestReadVectorCSV(t *testing.T) {
	in := "load,timestamp,temperature\n" +
		"50,2025-01-01 00:00:00,30.5\n" +
		",2025-01-01 00:00:01,31\n" +
		"52.5,2025-01-01T00:00:02Z,\n"
	metrics, ts, rows, err := ReadVectorCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(metrics, []string{"load", "temperature"}) || len(ts) != 3 || !ts[2].Equal(time.Date(2025, 1, 1, 0, 0, 2, 0, time.UTC)) {
		t.Fatalf("metrics %v, ts %v", metrics, ts)
	}
	if rows[0][0] != 50 || rows[0][1] != 30.5 || !math.IsNaN(rows[1][0]) || rows[1][1] != 31 || rows[2][0] != 52.5 || !math.IsNaN(rows[2][1]) {
		t.Fatalf("rows %v", rows)
	}
	for _, bad := range []struct{ in, says string }{
		{"timestamp\n2025-01-01 00:00:00\n", "a column per metric"},
		{"timestamp,a\n2025-01-01 00:00:00,x\n", `line 2: a "x" is not a number`},
		{"timestamp,a\nnoon,1\n", "line 2: bad timestamp"},
		{"timestamp,a\n2025-01-01 00:00:00\n", "line 2: 1 fields"},
	} {
		if _, _, _, err := ReadVectorCSV(strings.NewReader(bad.in)); err == nil || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("%q: %v, want %q", bad.in, err, bad.says)
		}
	}
}
