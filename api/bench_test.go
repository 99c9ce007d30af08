package api

import (
	"context"
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

// BenchmarkQueryAnswer reads 1M stored readings (the readings view:
// timestamp, device and metric names, value) through the HTTP API as an
// Arrow stream against the same rows as a JSON answer, the way the CLI,
// the Grafana plugin and notebooks read them.
func BenchmarkQueryAnswer(b *testing.B) {
	c, st := serve(b, "")
	ctx := context.Background()
	const devices, metrics, seconds = 100, 10, 1000 // 1M readings
	for d := range devices {
		if _, err := st.AddDevice(ctx, fmt.Sprintf("press-%03d", d), "press-key-bench"); err != nil {
			b.Fatal(err)
		}
	}
	for m := range metrics {
		if _, err := st.MetricID(ctx, fmt.Sprintf("m%02d", m)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := st.DB().Exec(`INSERT INTO telemetry
		SELECT TIMESTAMP '2026-11-29' + to_seconds(i), d::INTEGER, m::SMALLINT, i * 0.5
		FROM range(?) t3(i), range(1, ? + 1) t1(d), range(?) t2(m)`, seconds, devices, metrics); err != nil {
		b.Fatal(err)
	}
	const sql, rows = "SELECT * FROM readings", devices * metrics * seconds
	b.Run("arrow", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := c.QueryArrow(ctx, sql, func(rec arrow.RecordBatch) error { n += int(rec.NumRows()); return nil }); err != nil || n != rows {
				b.Fatalf("%d rows, %v", n, err)
			}
		}
		b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			res, err := c.Query(ctx, sql, MaxRowLimit)
			if err != nil || len(res.Rows) != rows {
				b.Fatalf("%v rows, %v", res != nil, err)
			}
		}
		b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}
