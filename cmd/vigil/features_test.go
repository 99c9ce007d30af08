package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/features"
	"github.com/vigil-iot/vigil/models/nab"
	"github.com/vigil-iot/vigil/store"
)

// TestFeaturesTable writes the feature table of a NAB series from its CSV
// and from its stored history: both hold, row for row, the values a
// features.Set gives for the same readings, and the stored table names
// each row's series.
func TestFeaturesTable(t *testing.T) {
	ctx := context.Background()
	const file = "../../testdata/nab/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv"
	s, err := nab.LoadSeries(file, "x")
	if err != nil {
		t.Fatal(err)
	}
	set, err := features.NewSet(features.DefaultSetConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]float64, len(s.Values))
	for i, x := range s.Values {
		set.Update(s.Timestamps[i], x)
		want[i] = append([]float64{x}, set.Values(nil)...)
	}
	table := func(args ...string) [][]string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(ctx, append([]string{"features"}, args...), &stdout, &stderr); code != 0 {
			t.Fatalf("features %v: exit %d: %s", args, code, stderr.String())
		}
		rows, err := csv.NewReader(&stdout).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	check := func(how string, rows [][]string, skip int) {
		t.Helper()
		if len(rows) != len(want)+1 || strings.Join(rows[0][skip:], ",") != "timestamp,value,"+strings.Join(features.SetColumns, ",") {
			t.Fatalf("%s: %d rows for %d readings, header %v", how, len(rows), len(want), rows[0])
		}
		for i, row := range rows[1:] {
			ts, err := time.Parse(time.RFC3339Nano, row[skip])
			if err != nil || !ts.Equal(s.Timestamps[i]) {
				t.Fatalf("%s: row %d at %q, want %s", how, i, row[skip], s.Timestamps[i])
			}
			for c, text := range row[skip+1:] {
				if v, err := strconv.ParseFloat(text, 64); err != nil || v != want[i][c] {
					t.Fatalf("%s: row %d, %s = %q, want %v", how, i, rows[0][skip+1+c], text, want[i][c])
				}
			}
		}
	}
	check("CSV", table("--in", file), 0)

	srv := startServer(t)
	st := srv.Store()
	d, _ := st.AddDevice(ctx, "feat-1", "feat-key-1")
	value, _ := st.MetricID(ctx, "value")
	other, _ := st.MetricID(ctx, "other")
	var cols store.TelemetryColumns
	for i, x := range s.Values {
		addReading(&cols, s.Timestamps[i], d.ID, value, x)
	}
	for i := range 5 {
		addReading(&cols, s.Timestamps[i], d.ID, other, 1)
	}
	commitColumns(t, st, cols)
	server := "http://" + srv.HTTPAddr()
	rows := table("--server", server, "--device", "feat-1", "--metric", "value")
	check("stored", rows, 2)
	for _, row := range rows[1:] {
		if row[0] != "feat-1" || row[1] != "value" {
			t.Fatalf("stored row names %s/%s, want feat-1/value", row[0], row[1])
		}
	}
	if all := table("--server", server, "--device", "feat-1"); len(all) != len(want)+5+1 {
		t.Errorf("the device's table has %d rows, want %d of value and 5 of other", len(all)-1, len(want))
	}

	for _, args := range [][]string{{}, {"--in", file, "--device", "feat-1"}, {"--server", server, "--device", "nobody"}, {"--in", file, "--season", "month"}, {"--in", file, "--metric", "value"}} {
		var stdout, stderr bytes.Buffer
		if code := run(ctx, append([]string{"features"}, args...), &stdout, &stderr); code == 0 || stderr.Len() == 0 {
			t.Errorf("features %v: exit %d, %q; want a refusal that says why", args, code, stderr.String())
		}
	}
}
