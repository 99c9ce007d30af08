package models

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// KindTail is the Spec.Kind of the Tail post-processor.
const KindTail = "tail"

// TailConfig sets the parameters of a Tail post-processor.
type TailConfig struct {
	// Model is the detector whose deviations are judged.
	Model Spec `json:"model"`
	// Top is how many of the largest past deviations the tail is fitted to.
	Top int `json:"top"`
	// WarmUp is how many readings are seen before any is scored.
	WarmUp int `json:"warm_up"`
	// Floor is the smallest tail scale, in units of log(1+|deviation|).
	Floor float64 `json:"floor"`
	// Decay is how fast, in tail scales per reading, the memory of a recent
	// peak fades; 0 disables suppression.
	Decay float64 `json:"decay"`
	// Short averages the deviation over this many recent readings before
	// judging it (1 judges each reading alone).
	Short int `json:"short"`
	// Alarm is the tail probability that scores 0.5; the score is
	// 0.5·log(p)/log(Alarm), capped at 1 (reached at p = Alarm²).
	Alarm float64 `json:"alarm"`
	Learn string `json:"learn"`
}

// DefaultTailConfig returns the parameters used when none are given.
func DefaultTailConfig() TailConfig {
	return TailConfig{Model: Spec{Kind: KindRobustZ}, Top: 32, WarmUp: 150, Floor: 0.05, Short: 1, Alarm: 1e-5}
}

// Validate reports the first parameter that is out of range.
func (c TailConfig) Validate() error {
	switch {
	case c.Model.Kind == KindTail:
		return errors.New("tail: model must not itself be a tail")
	case c.Top < 2:
		return errors.New("tail: top must be at least 2")
	case c.WarmUp < c.Top:
		return errors.New("tail: warm_up must be at least top")
	case !(c.Floor > 0):
		return errors.New("tail: floor must be positive")
	}
	return nil
}

// minHeap holds the largest deviations seen, smallest on top.
type minHeap []float64

func (h minHeap) Len() int           { return len(h) }
func (h minHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h minHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)        { *h = append(*h, x.(float64)) }
func (h *minHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Tail judges how extreme a deviation is for this series.
type Tail struct {
	cfg   TailConfig
	inner Detector
	top   minHeap
	sum   float64
	n     int
	peak  float64
	ring  []float64
	head  int
	rsum  float64
}

var _ Detector = (*Tail)(nil)

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
	return &Tail{cfg: cfg, inner: inner, top: make(minHeap, 0, cfg.Top)}, nil
}

// Update scores x with the wrapped detector and returns the tail score of
// its deviation.
func (d *Tail) Update(ts time.Time, x float64) Score {
	s := d.inner.Update(ts, x)
	if !finite(x) || !finite(s.Deviation) {
		s.Value = 0
		return s
	}
	v := math.Log1p(math.Abs(s.Deviation))
	if d.cfg.Short > 1 {
		if len(d.ring) < d.cfg.Short {
			d.ring = append(d.ring, v)
			d.rsum += v
		} else {
			d.rsum += v - d.ring[d.head]
			d.ring[d.head] = v
			d.head = (d.head + 1) % len(d.ring)
		}
		v = d.rsum / float64(len(d.ring))
	}
	s.Value = 0
	if d.n >= d.cfg.WarmUp {
		u := d.top[0]
		beta := math.Max(d.sum/float64(len(d.top))-u, d.cfg.Floor)
		// log P(V > v) = log(k/n) - (v-u)/beta for v > u.
		if v > u && (d.cfg.Decay == 0 || v > d.peak) {
			logp := math.Log(float64(len(d.top))/float64(d.n)) - (v-u)/beta
			s.Value = math.Min(1, 0.5*logp/math.Log(d.cfg.Alarm))
		}
		d.peak = math.Max(v, d.peak-d.cfg.Decay*beta)
	}
	d.n++
	if s.Value > 0.5 && d.cfg.Learn == "clip" {
		// Learn an alarm only as far as the alarm level, so that a
		// fault cannot raise the tail it is judged against.
		u := d.top[0]
		beta := math.Max(d.sum/float64(len(d.top))-u, d.cfg.Floor)
		v = u + beta*(math.Log(float64(len(d.top))/float64(d.n-1))-math.Log(d.cfg.Alarm))
	}
	if len(d.top) < d.cfg.Top {
		heap.Push(&d.top, v)
		d.sum += v
	} else if v > d.top[0] {
		d.sum += v - d.top[0]
		d.top[0] = v
		heap.Fix(&d.top, 0)
	}
	return s
}

var _ = sort.Float64s
