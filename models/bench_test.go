package models

import (
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkScore measures the default model, the live default and the
// lightest detector (with the features they are built on) over many (device, metric) series, as the Monitor drives it: readings
// arrive round-robin across series, so each Update touches cold state.
// It reports readings per second on one core and the bytes of state per
// series.
//
// Every series is first warmed with VIGIL_BENCH_WARM readings (default
// 200), VIGIL_BENCH_STEP seconds apart (default 1). With the defaults Tail
// is past its warm-up but Handover has not handed over and Context is still
// in its learning period (600 readings and a day), where it only appends to
// a buffer; VIGIL_BENCH_WARM=1000 VIGIL_BENCH_STEP=300 (the 5-minute
// cadence of most NAB series) measures every member in its steady state,
// where Context's memory of contexts dominates both time and bytes. Series
// are independent, so they are warmed one after the other, which gives the
// same state as warming them round-robin in a fraction of the time; the
// timed loop then goes round-robin. VIGIL_BENCH_SERIES sets the number of
// series (default 100,000). VIGIL_BENCH_BURST=N makes each series take N
// readings in a row before the next (default 1): ingest's batches hold a
// device's messages whole, so a device that sends 50 samples of two
// metrics in a message has its two series scored 50 times each, in turns,
// while their state is hot.
//
// With VIGIL_BENCH_MEMBERS=1 it also measures each member of the default
// ensemble on its own.
func BenchmarkScore(b *testing.B) {
	type run struct {
		name string
		spec Spec
	}
	runs := []run{{"default", DefaultSpec()}, {"live", LiveSpec()}, {"ewma_z", Spec{Kind: KindEWMAZ}}}
	if os.Getenv("VIGIL_BENCH_MEMBERS") == "1" {
		for i, m := range defaultEnsembleConfig().Members {
			runs = append(runs, run{"member_" + strconv.Itoa(i) + "_" + m.Kind, m})
		}
	}
	for _, c := range runs {
		b.Run(c.name, func(b *testing.B) { benchScore(b, c.spec) })
	}
}

func benchScore(b *testing.B, spec Spec) {
	nSeries := benchEnv("VIGIL_BENCH_SERIES", 100_000)
	warm := benchEnv("VIGIL_BENCH_WARM", 200)
	burst := benchEnv("VIGIL_BENCH_BURST", 1)
	step := time.Duration(benchEnv("VIGIL_BENCH_STEP", 1)) * time.Second
	const period = 1024
	rng := rand.New(rand.NewPCG(1, 2))
	xs := make([]float64, period)
	for i := range xs {
		xs[i] = 50 + 10*math.Sin(2*math.Pi*float64(i)/period) + rng.NormFloat64()
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	dets := make([]Detector, nSeries)
	for i := range dets {
		dets[i] = mustNewB(b, spec)
	}
	// Warm every series past its warm-up so the timed loop measures scoring.
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, d := range dets {
		for k := range warm {
			d.Update(t0.Add(time.Duration(k)*step), xs[(i+k)%period])
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSeries := float64(after.HeapAlloc-before.HeapAlloc) / float64(nSeries)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for n := 0; b.Loop(); n++ {
		round, within := n/(burst*nSeries), n%(burst*nSeries)
		i := within / burst
		k := warm + round*burst + within%burst
		dets[i].Update(t0.Add(time.Duration(k)*step), xs[(i+k)%period])
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "readings/s")
	b.ReportMetric(perSeries, "B/series")
}

func mustNewB(b *testing.B, spec Spec) Detector {
	b.Helper()
	d, err := New(spec)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// benchEnv returns the positive integer in the environment variable name,
// or def.
func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
