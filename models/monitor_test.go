package models

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// machine returns n readings of a healthy motor's temperature sampled at
// 2 Hz: 70 °C, a daily cycle of ±3 °C compressed into period readings, and
// Gaussian noise of 0.3 °C; from rampAt on (if >= 0) it overheats by 0.75 °C
// per reading until coolAt, after which it is back to normal.
func machine(n, period, rampAt, coolAt int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 7))
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = 70 + 3*math.Sin(2*math.Pi*float64(i)/float64(period)) + 0.3*rng.NormFloat64()
		if rampAt >= 0 && i >= rampAt && i < coolAt {
			xs[i] += 0.75 * float64(i-rampAt)
		}
	}
	return xs
}

func TestMonitorEpisodes(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	const n, period = 6000, 1200 // ten-minute "days" at 2 Hz
	tests := []struct {
		name           string
		rampAt, coolAt int
		seeds          int
	}{
		{"healthy", -1, -1, 20},
		{"overheating then cooled", 3000, 3020, 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(0); seed < uint64(tc.seeds); seed++ {
				m, err := NewMonitor(DefaultMonitorConfig())
				if err != nil {
					t.Fatal(err)
				}
				key := SeriesKey{Device: 1, Metric: 2}
				var began, ended []int
				for i, x := range machine(n, period, tc.rampAt, tc.coolAt, seed) {
					_, tr := m.Observe(key, t0.Add(time.Duration(i)*500*time.Millisecond), x)
					switch tr {
					case Began:
						began = append(began, i)
					case Ended:
						ended = append(ended, i)
					}
				}
				if tc.rampAt < 0 {
					if len(began) != 0 {
						t.Fatalf("seed %d: healthy series opened episodes at %v", seed, began)
					}
					continue
				}
				// The ramp must be caught within 15 readings (7.5 s), once, and
				// the episode must close within 20 readings of the cooling.
				if len(began) != 1 || began[0] < tc.rampAt || began[0] > tc.rampAt+15 {
					t.Fatalf("seed %d: episodes began at %v, want once in [%d, %d]", seed, began, tc.rampAt, tc.rampAt+15)
				}
				if len(ended) != 1 || ended[0] < tc.coolAt || ended[0] > tc.coolAt+20 {
					t.Fatalf("seed %d: episodes ended at %v, want once in [%d, %d]", seed, ended, tc.coolAt, tc.coolAt+20)
				}
				if m.Anomalous(key) {
					t.Fatalf("seed %d: still anomalous at the end", seed)
				}
			}
		})
	}
}

func TestEWMAZRelearnsAPermanentShift(t *testing.T) {
	cfg := DefaultEWMAZConfig()
	cfg.Relearn = 50
	d, err := NewEWMAZ(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	t0 := time.Unix(0, 0)
	var last Score
	for i := 0; i < 1000; i++ {
		x := 10 + 0.1*rng.NormFloat64()
		if i >= 500 {
			x += 5 // a new set point
		}
		last = d.Update(t0, x)
		if i == 520 && last.Value < 0.5 {
			t.Fatalf("the shift is not anomalous at first (score %v)", last.Value)
		}
	}
	if last.Value >= 0.5 || math.Abs(last.Expected-15) > 0.1 {
		t.Fatalf("after relearning: score %v, baseline %v; want normal around 15", last.Value, last.Expected)
	}
}

func TestMonitorConfigValidate(t *testing.T) {
	bad := []MonitorConfig{
		{Model: Spec{Kind: KindEWMAZ}, Threshold: 0, Clear: 0, ClearCount: 1},
		{Model: Spec{Kind: KindEWMAZ}, Threshold: 0.5, Clear: 0.6, ClearCount: 1},
		{Model: Spec{Kind: KindEWMAZ}, Threshold: 0.5, Clear: 0.2, ClearCount: 0},
		{Model: Spec{Kind: "no-such-model"}, Threshold: 0.5, Clear: 0.2, ClearCount: 1},
	}
	for i, c := range bad {
		if c.Validate() == nil {
			t.Errorf("config %d accepted: %+v", i, c)
		}
	}
	if err := DefaultMonitorConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}
