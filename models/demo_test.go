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

// TestDefaultCatchesDrift: after 3,000 healthy readings, a sensor drifting
// by 0.1 or 0.3 noise sigmas per reading is flagged by the live default
// within 60 readings of the drift's start, and nothing is flagged before
// it. Without the CUSUM member the 0.1-sigma drift went unflagged on two of
// the four seeds (and at 0.07 sigmas per reading a ramp to +100 sigma over
// 1,500 readings was never flagged): the z-scores' spread estimates learn a
// ramp as noise. Slower still, 0.04 sigmas per reading is flagged within 60
// readings on three of these four seeds and not within 300 on the fourth.
func TestDefaultCatchesDrift(t *testing.T) {
	for _, perReading := range []float64{0.05, 0.15} { // noise sigma 0.5
		for seed := uint64(1); seed <= 4; seed++ {
			ts, xs := demoSeries(3060, seed)
			d := mustNew(t, LiveSpec())
			first := -1
			for i := range xs {
				x := xs[i]
				if i >= 3000 {
					x += perReading * float64(i-2999)
				}
				if s := d.Update(ts[i], x); s.Value >= 0.5 && first < 0 {
					first = i
				}
			}
			if first < 3000 {
				t.Errorf("drift %.2f/reading, seed %d: first alarm at reading %d (want after 3000, within 60 of it)", perReading, seed, first)
			}
		}
	}
}
