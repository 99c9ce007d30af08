package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// KindTail is the Spec.Kind of the Tail post-processor.
const KindTail = "tail"

// TailConfig sets the parameters of a Tail post-processor.
type TailConfig struct {
	// Model is the detector whose deviations are judged; its
	// Score.Deviation is what the tail is fitted to.
	Model Spec `json:"model"`
	// Top is how many of the largest past deviations the tail is fitted to.
	Top int `json:"top"`
	// WarmUp is how many deviations are learned before any is scored
	// (at least Top).
	WarmUp int `json:"warm_up"`
	// Guard is how many readings a deviation waits before it is learned, so
	// the first readings of a fault are judged against the tail as it was
	// before the fault.
	Guard int `json:"guard"`
	// Floor is the smallest tail scale, in units of log(1+|deviation|); it
	// keeps a very regular series from calling a small wobble impossible.
	Floor float64 `json:"floor"`
	// Alarm is the tail probability that scores 0.5. The score is
	// 0.5·log(p)/log(Alarm), capped at 1 (reached at p = Alarm²).
	Alarm float64 `json:"alarm"`
}

// DefaultTailConfig returns the parameters used when none are given. The
// wrapped model defaults to seasonal.
func DefaultTailConfig() TailConfig {
	return TailConfig{Model: Spec{Kind: KindSeasonal}, Top: 32, WarmUp: 150, Guard: 10, Floor: 0.05, Alarm: 1e-5}
}

// Validate reports the first parameter that is out of range. It does not
// build the wrapped model; NewTail does.
func (c TailConfig) Validate() error {
	switch {
	case c.Model.Kind == KindTail:
		return errors.New("tail: model must not itself be a tail")
	case c.Top < 2:
		return errors.New("tail: top must be at least 2")
	case c.WarmUp < c.Top:
		return errors.New("tail: warm_up must be at least top")
	case c.Guard < 0:
		return errors.New("tail: guard must not be negative")
	case c.Top > 1<<20 || c.Guard > 1<<20 || c.WarmUp > 1<<30:
		return errors.New("tail: top and guard must be at most 2^20, warm_up at most 2^30")
	case !(c.Floor > 0):
		return errors.New("tail: floor must be positive")
	case !(c.Alarm > 0 && c.Alarm < 1):
		return errors.New("tail: alarm must be in (0, 1)")
	}
	if _, ok := factories[c.Model.Kind]; !ok {
		return fmt.Errorf("tail: unknown model kind %q", c.Model.Kind)
	}
	return nil
}

// Tail turns the deviations of another detector into a per-series
// calibrated score: the probability, under the tail of this series' own
// past deviations, of a deviation at least as large as the current one.
// It is the peaks-over-threshold method of SPOT (Siffer, Fouque, Termier and
// Largouët, "Anomaly detection in streams with extreme value theory", KDD
// 2017: the POT approach and its streaming form) with the exponential member of the generalised
// Pareto family (shape 0, by the Pickands-Balkema-de Haan theorem the tail
// of most light- and heavy-tailed laws once taken on a log scale): with v =
// log(1+|deviation|), u the smallest of the Top largest past v and β their
// mean excess over u,
//
//	P(V > v) ≈ (Top/n) · exp(-(v-u)/β)   for v > u.
//
// A raw z-score means different things on different series (6σ is routine
// on a bursty request count and unheard of on a thermostat); this score
// means the same on all of them, so one threshold fits a fleet. A deviation
// is learned Guard readings late, like the guard cells of a CFAR radar
// detector (Finn and Johnson, "Adaptive detection mode with threshold
// control as a function of spatially sampled clutter-level estimates", RCA
// Review 29, 1968), so a growing fault does not raise the tail it is judged
// against while it grows.
//
// Update allocates nothing; the state is the Top largest deviations and
// the Guard latest ones. With the default sizes both live in the Tail
// itself, and a wrapped seasonal or ewma_z detector is allocated with it,
// so a reading touches one allocation rather than four. Most readings
// deviate less than the smallest of the Top largest; those are told apart
// on the raw |deviation| against a bound kept beside the heap, without a
// logarithm (log1p took an eighth of the default ensemble's time).
//
// Every Update reads the fields before topBuf, so they are kept to two
// cache lines: of the configuration only the numbers Update uses are kept,
// as narrow as they can be.
type Tail struct {
	inner Detector
	top   minHeap   // log(1+|deviation|) of the Top largest deviations learned
	guard []float64 // |deviation| of the Guard latest, not learned yet
	sum   float64
	n     int
	// below is an |deviation| at or under which log(1+|deviation|) is
	// surely no more than top[0]: expm1(top[0]) less a margin far wider
	// than the rounding of log1p and expm1. It holds once top is full.
	below    float64
	logAlarm float64 // math.Log(cfg.Alarm)
	floor    float64 // cfg.Floor
	warmUp   int32   // cfg.WarmUp
	topN     int32   // cfg.Top
	guardN   int32   // cfg.Guard
	ghead    int32
	topBuf   [32]float64
	guardBuf [16]float64
}

var _ Detector = (*Tail)(nil)

// minHeap holds the largest deviations seen, smallest at index 0. It is a
// plain binary heap on a float64 slice, without container/heap's interface
// calls, because Tail updates it on the hot path.
type minHeap []float64

// init orders h as a heap.
func (h minHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// down restores the heap order below i after h[i] grew.
func (h minHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r] < h[l] {
			m = r
		}
		if h[i] <= h[m] {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// NewTail returns a Tail post-processor around the model its configuration
// names.
func NewTail(cfg TailConfig) (*Tail, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inner, err := New(cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	var d *Tail
	switch m := inner.(type) {
	case *Seasonal:
		b := &withModel[Tail, Seasonal]{model: *m}
		d, b.outer.inner = &b.outer, &b.model
	case *EWMAZ:
		b := &withModel[Tail, EWMAZ]{model: *m}
		b.model.noValue = true // Update replaces the value with its own
		d, b.outer.inner = &b.outer, &b.model
	default:
		d = &Tail{inner: inner}
	}
	d.logAlarm, d.floor = math.Log(cfg.Alarm), cfg.Floor
	d.warmUp, d.topN, d.guardN = int32(cfg.WarmUp), int32(cfg.Top), int32(cfg.Guard)
	if cfg.Top <= len(d.topBuf) {
		d.top = d.topBuf[:0:cfg.Top]
	} else {
		d.top = make(minHeap, 0, cfg.Top)
	}
	if cfg.Guard <= len(d.guardBuf) {
		d.guard = d.guardBuf[:0:cfg.Guard]
	} else {
		d.guard = make([]float64, 0, cfg.Guard)
	}
	return d, nil
}

// Update scores x with the wrapped detector and returns the tail score of
// its deviation, with the wrapped detector's explanation.
func (d *Tail) Update(ts time.Time, x float64) Score {
	s := d.inner.Update(ts, x)
	s.Value = 0
	if !finite(x) || !finite(s.Deviation) {
		return s
	}
	a := math.Abs(s.Deviation)
	v := -1.0 // log1p(a) once taken
	// Past the warm-up top is full, so below holds.
	if d.n >= int(d.warmUp) && a > d.below {
		v = math.Log1p(a)
		if u := d.top[0]; v > u {
			k := float64(len(d.top))
			beta := math.Max(d.sum/k-u, d.floor)
			logp := math.Log(k/float64(d.n)) - (v-u)/beta
			s.Value = math.Min(1, 0.5*logp/d.logAlarm)
		}
	}
	if d.guardN > 0 {
		if len(d.guard) < int(d.guardN) {
			d.guard = append(d.guard, a)
			return s
		}
		a, d.guard[d.ghead] = d.guard[d.ghead], a
		v = -1
		d.ghead++
		if int(d.ghead) == len(d.guard) {
			d.ghead = 0
		}
	}
	d.learn(a, v)
	return s
}

// learn folds a past deviation a, whose log1p is v if v is not negative,
// into the top-Top set.
func (d *Tail) learn(a, v float64) {
	d.n++
	full := len(d.top) == int(d.topN)
	if full && a <= d.below {
		return
	}
	if v < 0 {
		v = math.Log1p(a)
	}
	switch {
	case !full:
		d.top = append(d.top, v)
		d.sum += v
		if len(d.top) == int(d.topN) {
			d.top.init()
			d.setBelow()
		} else {
			// Keep the minimum at index 0 until the heap is built.
			if v < d.top[0] {
				last := len(d.top) - 1
				d.top[0], d.top[last] = d.top[last], d.top[0]
			}
		}
	case v > d.top[0]:
		d.sum += v - d.top[0]
		d.top[0] = v
		d.top.down(0)
		d.setBelow()
	}
}

// setBelow sets below from the smallest of the largest deviations. The
// margin, a billionth, is some ten million times the error of log1p and
// expm1, so a deviation at or under below is under top[0] whatever their
// rounding; one between below and expm1(top[0]) is judged on its log1p.
func (d *Tail) setBelow() {
	d.below = math.Expm1(d.top[0]) * (1 - 1e-9)
}

// tailFactory builds a Tail from JSON params.
func tailFactory(p json.RawMessage) (Detector, error) {
	cfg := DefaultTailConfig()
	if err := decodeParams(KindTail, p, &cfg); err != nil {
		return nil, err
	}
	return NewTail(cfg)
}
