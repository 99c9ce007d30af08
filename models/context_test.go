package models

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// levels returns n readings, 5 minutes apart, of the value level(i).
func levels(n int, level func(i int) float64) ([]time.Time, []float64) {
	t0 := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)
	ts := make([]time.Time, n)
	xs := make([]float64, n)
	for i := range n {
		ts[i] = t0.Add(time.Duration(i) * 5 * time.Minute)
		xs[i] = level(i)
	}
	return ts, xs
}

// cycle repeats the values of p.
func cycle(p ...float64) func(int) float64 {
	return func(i int) float64 { return p[i%len(p)] }
}

func TestContext(t *testing.T) {
	const onset = 2000
	tests := []struct {
		name   string
		level  func(i int) float64
		within int // the anomaly scores >= 0.5 within this many readings
		want1  bool
	}{
		{
			// A value far above anything seen: spatial novelty.
			name: "above_range",
			level: func(i int) float64 {
				if i == onset {
					return 30
				}
				return cycle(0, 5, 10, 5)(i)
			},
			within: 1, want1: true,
		},
		{
			// A value inside the range, in a bin never visited.
			name: "gap_inside_range",
			level: func(i int) float64 {
				if i == onset {
					return 7.5
				}
				return cycle(0, 0, 10, 10)(i)
			},
			within: 1, want1: true,
		},
		{
			// Known values in a new order: contextual novelty only.
			name: "new_sequence",
			level: func(i int) float64 {
				if i >= onset {
					return cycle(0, 10, 5, 0, 10, 5, 5, 0)(i)
				}
				return cycle(0, 5, 10, 5)(i)
			},
			within: 10,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts, xs := levels(onset+200, tc.level)
			scores := ScoreSeries(mustNew(t, Spec{Kind: KindContext}), ts, xs)
			for i, s := range scores[:onset] {
				if s.Value >= 0.5 {
					t.Fatalf("normal reading %d (%v) scored %.3f", i, xs[i], s.Value)
				}
			}
			for i := onset; i < onset+tc.within; i++ {
				s := scores[i]
				if s.Value < 0.5 {
					continue
				}
				if tc.want1 && s.Value != 1 {
					t.Fatalf("spatial novelty at %d scored %.3f, want 1", i, s.Value)
				}
				if s.Feature != KindContext {
					t.Fatalf("feature %q", s.Feature)
				}
				return
			}
			t.Fatalf("no score >= 0.5 within %d readings of the anomaly", tc.within)
		})
	}
}

// TestContextLearningPeriod checks that nothing is scored until both the
// readings and the time of the learning period have passed.
func TestContextLearningPeriod(t *testing.T) {
	tests := []struct {
		name      string
		params    string
		step      time.Duration
		firstFrom int // the first reading that may be scored
	}{
		{"readings_bound", `{"warm_up":100,"warm_up_seconds":0}`, time.Minute, 100},
		{"time_bound", `{"warm_up":100,"warm_up_seconds":36000}`, time.Minute, 601},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := mustNew(t, Spec{Kind: KindContext, Params: json.RawMessage(tc.params)})
			t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
			for i := range 1000 {
				// A wild swing while learning, then a record high.
				x := float64(i % 7)
				switch i {
				case tc.firstFrom / 2:
					x = -1e6
				case tc.firstFrom:
					x = 1e9
				}
				s := d.Update(t0.Add(time.Duration(i)*tc.step), x)
				if i < tc.firstFrom && s.Value != 0 {
					t.Fatalf("reading %d scored %.3f during the learning period", i, s.Value)
				}
				if i == tc.firstFrom && s.Value != 1 {
					t.Fatalf("reading %d, the first after learning, scored %.3f, want 1", i, s.Value)
				}
			}
		})
	}
}

// TestContextFlat checks that a flat series learns a usable grid, stays
// calm and flags the first change.
func TestContextFlat(t *testing.T) {
	ts, xs := levels(1000, func(i int) float64 {
		if i >= 800 {
			return 42.001
		}
		return 42
	})
	scores := ScoreSeries(mustNew(t, Spec{Kind: KindContext}), ts, xs)
	for i, s := range scores {
		if i < 800 && s.Value >= 0.5 {
			t.Fatalf("flat reading %d scored %v", i, s.Value)
		}
		if math.IsNaN(s.Value) {
			t.Fatalf("reading %d scored NaN", i)
		}
	}
	if scores[800].Value != 1 {
		t.Fatalf("first change scored %v, want 1", scores[800].Value)
	}
}

// TestContextFingerprintsSpread: 100,000 distinct contexts of 1 to 7 bins,
// hashed as Context hashes them, have about as many fingerprint collisions
// in the context set as random 32-bit values would (1.2 expected; the high
// half of the hash alone gave 207).
func TestContextFingerprintsSpread(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[uint64]bool{}
	byFingerprint := map[uint32]uint64{}
	collisions := 0
	for len(seen) < 100_000 {
		h := contextSeed
		for range 1 + rng.IntN(7) {
			h = extendContext(h, int64(rng.IntN(18)-1))
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		f := fingerprint(h)
		if _, ok := byFingerprint[f]; ok {
			collisions++
		}
		byFingerprint[f] = h
	}
	if collisions > 10 {
		t.Fatalf("%d fingerprint collisions among %d contexts; random 32-bit fingerprints would have about 1", collisions, len(seen))
	}
}

// TestContextLearningMemoryIsBounded: a fast series keeps at most
// learnReplay readings of its learning period, however many it takes, and
// its range still comes from all of them: a first reading long gone from
// the buffer still sets the low end of the grid.
func TestContextLearningMemoryIsBounded(t *testing.T) {
	cfg := DefaultContextConfig() // a day and 600 readings
	d, err := NewContext(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	d.Update(t0, 0)
	const n = 100 * 86400 / 10 // a tenth of a day at 100 Hz
	for i := 1; i <= n; i++ {
		d.Update(t0.Add(time.Duration(i)*10*time.Millisecond), 10+float64(i%11))
	}
	if !d.learning || len(d.buf) > learnReplay || cap(d.buf) > 2*learnReplay {
		t.Fatalf("learning %v with %d readings kept (capacity %d), want at most %d", d.learning, len(d.buf), cap(d.buf), learnReplay)
	}
	d.Update(t0.Add(25*time.Hour), 15) // the day is over
	if d.learning {
		t.Fatal("still learning after a day and 600 readings")
	}
	// Range [0, 20] widened by 10% on each side, cut into 16 bins.
	if wantLo, wantW := -2.0, 24.0/16; math.Abs(d.lo-wantLo) > 1e-12 || math.Abs(d.w-wantW) > 1e-12 {
		t.Fatalf("grid from %g in bins of %g, want from %g in bins of %g", d.lo, d.w, wantLo, wantW)
	}
}
