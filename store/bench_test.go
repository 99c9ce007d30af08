package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	duckdb "github.com/duckdb/duckdb-go/v2"
)

// benchBatch builds one batch of n readings in arrival order: 200 devices ×
// 5 metrics per second, like a fleet reporting once a second.
func benchBatch(n int, start time.Time) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, TelemetrySchema)
	defer b.Release()
	ts, dev := b.Field(0).(*array.TimestampBuilder), b.Field(1).(*array.Int32Builder)
	met, val := b.Field(2).(*array.Int16Builder), b.Field(3).(*array.Float64Builder)
	for i := 0; i < n; i++ {
		ts.Append(arrow.Timestamp(start.Add(time.Duration(i/1000) * time.Second).UnixMicro()))
		dev.Append(int32(i/5%200 + 1))
		met.Append(int16(i % 5))
		val.Append(70 + float64(i%97)/10)
	}
	return b.NewRecordBatch()
}

// benchAppend opens a fresh store and calls insert b.N times, reporting
// readings/s for batches of rows readings and the CPU time of the whole
// process (every DuckDB thread included) per reading, which is what counts
// on a machine whose cores are busy with other work too.
func benchAppend(b *testing.B, rows int, insert func(s *Store, conn *sql.Conn) error) {
	s, err := Open(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	conn, err := s.db.Conn(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for i := 0; i < b.N; i++ {
		if err := insert(s, conn); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(rows*b.N), "cpu_ns/reading")
}

// BenchmarkAppend compares vigil's Commit (one transaction per batch, Arrow
// scan, the path every reading takes) with DuckDB's own bulk paths for the
// same records: a bare RegisterView + INSERT ... SELECT, and the Appender.
// Each reports readings/s; compare them side by side in one run. The last
// size is one DuckDB row group, the smallest batch written straight to the
// table instead of through the write-ahead log.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	for _, rows := range []int{10_000, 100_000, RowGroupRows} {
		rec := benchBatch(rows, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
		b.Run("vigil_commit/rows="+itoa(rows), func(b *testing.B) {
			benchAppend(b, rows, func(s *Store, _ *sql.Conn) error { return s.Commit(ctx, Batch{Readings: rec}) })
		})
		b.Run("duckdb_arrow_insert/rows="+itoa(rows), func(b *testing.B) {
			benchAppend(b, rows, func(_ *Store, conn *sql.Conn) error {
				return conn.Raw(func(dc any) error {
					ar, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
					if err != nil {
						return err
					}
					rdr, _ := array.NewRecordReader(TelemetrySchema, []arrow.RecordBatch{rec})
					defer rdr.Release()
					release, err := ar.RegisterView(rdr, "bench")
					if err != nil {
						return err
					}
					defer release()
					_, err = dc.(driver.ExecerContext).ExecContext(ctx, "INSERT INTO telemetry SELECT * FROM bench", nil)
					return err
				})
			})
		})
		b.Run("duckdb_appender/rows="+itoa(rows), func(b *testing.B) {
			ts := rec.Column(0).(*array.Timestamp)
			dev, met, val := rec.Column(1).(*array.Int32), rec.Column(2).(*array.Int16), rec.Column(3).(*array.Float64)
			benchAppend(b, rows, func(_ *Store, conn *sql.Conn) error {
				return conn.Raw(func(dc any) error {
					a, err := duckdb.NewAppenderFromConn(dc.(driver.Conn), "", "telemetry")
					if err != nil {
						return err
					}
					for r := 0; r < rows; r++ {
						if err := a.AppendRow(ts.Value(r).ToTime(arrow.Microsecond), dev.Value(r), met.Value(r), val.Value(r)); err != nil {
							return err
						}
					}
					return a.Close()
				})
			})
		})
		rec.Release()
	}
}

func itoa(n int) string {
	if n%1000 != 0 {
		return strconv.Itoa(n)
	}
	return strconv.Itoa(n/1000) + "k"
}

// cpuTime returns the CPU time this process has used, user and system, in
// nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
