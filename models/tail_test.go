package models

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// fed is a Detector whose deviations are set from outside.
type fed struct{ dev float64 }

func (f *fed) Update(time.Time, float64) Score { return Score{Deviation: f.dev} }

// tailByDefinition is Tail as its doc comment defines it, written for
// clarity: log1p of every deviation, the Top largest kept sorted, the
// guard a FIFO. Its sum is updated the same way Tail's is, so that the
// two agree to the last bit.
type tailByDefinition struct {
	cfg   TailConfig
	top   []float64 // ascending
	guard []float64
	sum   float64
	n     int
}

func (r *tailByDefinition) update(dev float64) float64 {
	if !finite(dev) {
		return 0
	}
	v, score := math.Log1p(math.Abs(dev)), 0.0
	if r.n >= r.cfg.WarmUp {
		if u := r.top[0]; v > u {
			k := float64(len(r.top))
			beta := math.Max(r.sum/k-u, r.cfg.Floor)
			logp := math.Log(k/float64(r.n)) - (v-u)/beta
			score = math.Min(1, 0.5*logp/math.Log(r.cfg.Alarm))
		}
	}
	r.guard = append(r.guard, v)
	if len(r.guard) <= r.cfg.Guard {
		return score
	}
	v, r.guard = r.guard[0], r.guard[1:]
	r.n++
	switch {
	case len(r.top) < r.cfg.Top:
		r.top = append(r.top, v)
		r.sum += v
		slices.Sort(r.top)
	case v > r.top[0]:
		r.sum += v - r.top[0]
		r.top[0] = v
		slices.Sort(r.top)
	}
	return score
}

// TestTailMatchesItsDefinition: Tail, which takes log1p only for the
// deviations that may matter, scores every reading exactly as the
// definition does — also deviations within a few ulps of the bound it
// compares raw deviations against, zeros, and non-finite ones.
func TestTailMatchesItsDefinition(t *testing.T) {
	cfg := DefaultTailConfig()
	cfg.WarmUp = 40 // scoring starts soon, so more readings are scored
	d, err := NewTail(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fed{}
	d.inner = f
	ref := &tailByDefinition{cfg: cfg}
	rng := rand.New(rand.NewPCG(4, 2))
	ts := time.Unix(0, 0)
	var scored, nearBound int
	for i := range 200_000 {
		switch k := rng.IntN(8); {
		case k < 3 || len(ref.top) == 0:
			f.dev = rng.NormFloat64() * math.Exp(2*rng.NormFloat64()) // heavy-tailed
		case k < 6:
			// Within a few ulps of expm1 of the current smallest of the
			// largest, on either side.
			b := math.Expm1(ref.top[0])
			for range rng.IntN(7) {
				b = math.Nextafter(b, math.Inf(2*rng.IntN(2)-1))
			}
			f.dev = b
			nearBound++
		case k == 6:
			f.dev = 0
		default:
			f.dev = []float64{math.NaN(), math.Inf(1), -math.Inf(1), -1e-300}[rng.IntN(4)]
		}
		got, want := d.Update(ts, 1).Value, ref.update(f.dev)
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("reading %d, deviation %v: Tail scores %v, the definition %v", i, f.dev, got, want)
		}
		if want > 0 {
			scored++
		}
	}
	if scored < 1000 || nearBound < 1000 {
		t.Fatalf("only %d readings scored above 0 and %d fell near the bound: the test did not exercise the tail", scored, nearBound)
	}
}
