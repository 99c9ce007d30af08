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

func TestDemoDefault(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		d, err := New(DefaultSpec())
		if err != nil {
			t.Fatal(err)
		}
		ts, xs := demoSeries(5000, seed)
		worst := 0.0
		for i := range 3000 {
			worst = math.Max(worst, d.Update(ts[i], xs[i]).Value)
		}
		first := -1
		for i := 3000; i < 3010; i++ {
			x := xs[i] + 0.5*float64(i-3000+1)
			if s := d.Update(ts[i], x); s.Value >= 0.5 && first < 0 {
				first = i - 3000
			}
		}
		d2, _ := New(DefaultSpec())
		at := 0
		for i := range 5000 {
			if v := d2.Update(ts[i], xs[i]).Value; v > worst {
				worst, at = v, i
			}
		}
		t.Logf("at %d", at)
		t.Logf("seed %d: worst healthy %.3f, ramp detected after %d readings", seed, worst, first+1)
	}
}
