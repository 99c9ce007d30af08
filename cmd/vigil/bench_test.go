package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/store"
)

// BenchmarkTrainHistories fetches the training data of 1,000 series (100
// devices × 10 metrics × 1,000 readings, 1M readings) through a running
// server's API, the way `vigil train` reads them — one query streamed as
// Arrow for all series — against one query per series, as it read them
// before.
func BenchmarkTrainHistories(b *testing.B) {
	ctx := context.Background()
	srv := startServer(b)
	st := srv.Store()
	const devices, metrics, readings = 100, 10, 1000
	var cols store.TelemetryColumns
	t0 := time.Now().Add(-readings * time.Minute).Truncate(time.Minute)
	for dv := range devices {
		d, err := st.AddDevice(ctx, fmt.Sprintf("press-%03d", dv), "press-key-bench")
		if err != nil {
			b.Fatal(err)
		}
		for m := range metrics {
			id, err := st.MetricID(ctx, fmt.Sprintf("m%02d", m))
			if err != nil {
				b.Fatal(err)
			}
			for i := range readings {
				addReading(&cols, t0.Add(time.Duration(i)*time.Minute), d.ID, id, float64(i%17))
			}
		}
	}
	commitColumns(b, st, cols)
	c := &api.Client{BaseURL: "http://" + srv.HTTPAddr()}
	where, _, err := historyWindow("", "", "")
	if err != nil {
		b.Fatal(err)
	}
	cond := where[0]
	check := func(b *testing.B, series, n int) {
		if series != devices*metrics || n != devices*metrics*readings {
			b.Fatalf("%d series, %d readings; want %d and %d", series, n, devices*metrics, devices*metrics*readings)
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
	}
	b.Run("one_query", func(b *testing.B) {
		var series, n int
		for b.Loop() {
			series, n = 0, 0
			err := histories(ctx, c, cond, func(_ seriesRef, ts []time.Time, _ []float64) error {
				series++
				n += len(ts)
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		check(b, series, n)
	})
	b.Run("query_per_series", func(b *testing.B) {
		var series, n int
		for b.Loop() {
			series, n = 0, 0
			rows, err := distinct(ctx, c, "device, metric", cond, "")
			if err != nil {
				b.Fatal(err)
			}
			for _, row := range rows {
				ts, _, err := history(ctx, c, seriesRef{fmt.Sprint(row[0]), fmt.Sprint(row[1])}, cond)
				if err != nil {
					b.Fatal(err)
				}
				series++
				n += len(ts)
			}
		}
		check(b, series, n)
	})
}

// history fetches one series with a query of its own: how `vigil train`
// read its data before it read every series in one pass.
func history(ctx context.Context, c *api.Client, ref seriesRef, cond string) ([]time.Time, []float64, error) {
	var ts []time.Time
	var xs []float64
	err := histories(ctx, c, cond+" AND device = "+sqlString(ref.device)+" AND metric = "+sqlString(ref.metric), func(_ seriesRef, t []time.Time, x []float64) error {
		ts, xs = t, x
		return nil
	})
	return ts, xs, err
}
