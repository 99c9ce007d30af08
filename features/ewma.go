package features

import "math"

// EWMA is an exponentially weighted moving mean and variance of one series.
//
// The recursion is the one given by Finch, "Incremental calculation of
// weighted mean and variance" (University of Cambridge, 2009), section 9:
//
//	diff  = x - mean
//	incr  = alpha * diff
//	mean += incr
//	var   = (1 - alpha) * (var + diff*incr)
//
// The zero value is not usable: construct it with NewEWMA.
type EWMA struct {
	alpha float64
	warm  bool
	mean  float64
	vari  float64
	n     int
}

// NewEWMA returns an EWMA whose weight for the newest observation is alpha,
// 0 < alpha <= 1. It panics on any other alpha, which is a programming error.
func NewEWMA(alpha float64) EWMA {
	if !(alpha > 0 && alpha <= 1) {
		panic("features: EWMA alpha must be in (0, 1]")
	}
	return EWMA{alpha: alpha}
}

// NewWarmEWMA is NewEWMA with a warm start: the n-th observation is weighted
// max(alpha, 1/n), so until about 1/alpha observations the mean and
// variance are the plain (population) mean and variance of everything seen,
// instead of being biased towards the first observation and towards zero
// variance. Detectors that score soon after they start need this.
func NewWarmEWMA(alpha float64) EWMA {
	e := NewEWMA(alpha)
	e.warm = true
	return e
}

// Update folds x into the mean and variance. The first observation sets the
// mean and leaves the variance at zero.
func (e *EWMA) Update(x float64) {
	e.n++
	if e.n == 1 {
		e.mean = x
		return
	}
	a := e.alpha
	if e.warm {
		a = max(a, 1/float64(e.n))
	}
	e.mean, e.vari = ewmaStep(e.mean, e.vari, a, x)
}

// ewmaStep is one step of Finch's recursion with weight a: it returns the
// mean and variance after x. EWMA and the buckets of Seasonal share it, so
// they cannot drift apart.
func ewmaStep(mean, vari, a, x float64) (float64, float64) {
	diff := x - mean
	incr := a * diff
	return mean + incr, (1 - a) * (vari + diff*incr)
}

// Mean returns the current weighted mean.
func (e *EWMA) Mean() float64 { return e.mean }

// Var returns the current weighted variance.
func (e *EWMA) Var() float64 { return e.vari }

// Std returns the square root of Var.
func (e *EWMA) Std() float64 { return math.Sqrt(e.vari) }

// N returns how many observations have been folded in.
func (e *EWMA) N() int { return e.n }

// Alpha returns the weight of the newest observation.
func (e *EWMA) Alpha() float64 { return e.alpha }
