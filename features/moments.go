package features

import (
	"math"
	"time"
)

// Moments is a running mean and variance that weighs all readings equally
// until it has seen Horizon of them and then forgets exponentially with
// weight 1/Horizon for the newest, so its estimate is unbiased from the
// first readings on and still follows slow drift of a long-lived series.
// The weight of reading n is max(1/n, 1/Horizon), in the EWMA recursion of
// Finch (see EWMA); with weight 1/n that recursion is Welford's algorithm
// (Welford, "Note on a method for calculating corrected sums of squares and
// products", Technometrics 4(3), 1962).
//
// The zero value is not usable: construct it with NewMoments.
type Moments struct {
	horizon float64
	mean    float64
	vari    float64
	n       int
}

var _ Stream = (*Moments)(nil)

// NewMoments returns empty Moments with the given horizon >= 1 (in
// readings). It panics on a smaller horizon, which is a programming error.
func NewMoments(horizon float64) Moments {
	if !(horizon >= 1) {
		panic("features: Moments horizon must be at least 1")
	}
	return Moments{horizon: horizon}
}

// Update folds in the next reading; the timestamp is not used.
func (m *Moments) Update(_ time.Time, x float64) { m.Add(x) }

// Add folds x into the mean and variance.
func (m *Moments) Add(x float64) {
	m.n++
	w := math.Max(1/float64(m.n), 1/m.horizon)
	diff := x - m.mean
	incr := w * diff
	m.mean += incr
	m.vari = (1 - w) * (m.vari + diff*incr)
}

// Mean returns the current mean (0 before any reading).
func (m *Moments) Mean() float64 { return m.mean }

// Var returns the current (population) variance.
func (m *Moments) Var() float64 { return m.vari }

// Std returns the square root of Var.
func (m *Moments) Std() float64 { return math.Sqrt(m.vari) }

// N returns how many readings have been folded in.
func (m *Moments) N() int { return m.n }
