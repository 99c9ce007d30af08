package ingest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/store"
)

// discardStore is a real store whose Commit only counts the readings: it
// leaves DuckDB's share out of BenchmarkBatcher.
type discardStore struct {
	*store.Store
	readings atomic.Int64
}

func (d *discardStore) Commit(_ context.Context, b store.Batch) error {
	d.readings.Add(b.Readings.NumRows())
	return nil
}

// telemetryBody is a message of 50 samples of two metrics (100 readings),
// as a device that buffers its readings sends it.
func telemetryBody() []byte {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range 50 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"ts":"2026-11-29T00:00:%02dZ","temperature":%.3f,"vibration":%.4f}`, i, 70+float64(i%7)*0.1, 0.3+float64(i%5)*0.01)
	}
	sb.WriteByte(']')
	return []byte(sb.String())
}

// BenchmarkBatcher measures what ingest itself costs per message (wall
// time and CPU time) on the way to a commit: decoding, deduplication by message id, and building the
// batch's columns, with the commit left out. Messages are patient, as a
// broker's are, so batches fill to store.RowGroupRows.
func BenchmarkBatcher(b *testing.B) {
	ctx := context.Background()
	s, err := store.Open(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	dev, err := s.AddDevice(ctx, "bench-dev", "device-key-bench")
	if err != nil {
		b.Fatal(err)
	}
	d := &discardStore{Store: s}
	cfg := DefaultConfig()
	bt, err := NewBatcher(cfg, d, nil, quiet)
	if err != nil {
		b.Fatal(err)
	}
	body := telemetryBody()
	gd := gateway.Device{ID: dev.ID, Name: dev.Name}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for i := range b.N {
		m := gateway.Message{Device: gd, Source: "bench", ID: "m-" + strconv.Itoa(i), Body: body, Received: now, Patient: true}
		if err := bt.Submit(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	if err := bt.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	if got, want := d.readings.Load(), int64(100*b.N); got != want {
		b.Fatalf("committed %d readings, want %d", got, want)
	}
	b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "readings/s")
	b.ReportMetric(float64(cpu)/float64(b.N)/1e3, "cpu_µs/msg")
}

// cpuTime returns the CPU time this process has used, user and system, in
// nanoseconds: on two cores the decoding and batching goroutines overlap,
// so wall time per message understates what they cost together.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
