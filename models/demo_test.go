package models

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// demoSeries is a healthy sensor as the demo simulates it: 2 readings/s, a
// slow daily cycle and Gaussian noise.
func demoSeries(n int, seed uint64) ([]time.Time, []float64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	t0 := time.Date(2026, 3, 1, 6, 0, 0, 0, time.UTC)
	ts := make([]time.Time, n)
	xs := make([]float64, n)
	for i := range n {
		ts[i] = t0.Add(time.Duration(i) * 500 * time.Millisecond)
		sec := float64(i) / 2
		xs[i] = 60 + 8*math.Sin(2*math.Pi*sec/86400) + 0.5*rng.NormFloat64()
	}
	return ts, xs
}

// TestDefaultSpecDemo holds the default detector to what the live demo
// needs: a healthy noisy sensor with a slow daily cycle never reaches the
// Monitor's threshold of 0.5 in 5,000 readings, and an overheating ramp of
// +0.5 per reading (one noise sigma) from reading 3,000 reaches it within
// 10 readings.
func TestDefaultSpecDemo(t *testing.T) {
	const threshold = 0.5
	for seed := uint64(1); seed <= 8; seed++ {
		ts, xs := demoSeries(5000, seed)
		t.Run("healthy", func(t *testing.T) {
			d := mustNew(t, DefaultSpec())
			for i := range xs {
				if s := d.Update(ts[i], xs[i]); s.Value >= threshold {
					t.Fatalf("seed %d: healthy reading %d scored %.3f (%s)", seed, i, s.Value, s.Feature)
				}
			}
		})
		t.Run("ramp", func(t *testing.T) {
			d := mustNew(t, DefaultSpec())
			for i := range 3000 {
				d.Update(ts[i], xs[i])
			}
			for k := range 10 {
				i := 3000 + k
				if s := d.Update(ts[i], xs[i]+0.5*float64(k+1)); s.Value >= threshold {
					t.Logf("seed %d: ramp detected at reading %d of the ramp (%s)", seed, k+1, s.Explain("temperature"))
					return
				}
			}
			t.Fatalf("seed %d: ramp not detected within 10 readings", seed)
		})
	}
}
