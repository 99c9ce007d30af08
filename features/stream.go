package features

import (
	"math"
	"time"
)

// Stream is a feature's incremental form: Update takes the next reading of
// one series in time order. Every feature in this package is a Stream, and
// the live pipeline and Eval drive it through this one method.
type Stream interface {
	Update(ts time.Time, x float64)
}

// Eval is the offline form of a feature: it replays a stored series (one
// timestamp per value, in time order) through f and returns value(f) after
// each reading. Because it calls the same Update the live pipeline does, an
// offline column equals the online values bit for bit. A NaN or infinite
// reading is skipped, as Set.Update skips it: it is not passed to f, and
// its value is value(f) after the reading before.
//
// value is usually a method expression, for example
//
//	w := features.NewWindow(64)
//	medians := features.Eval(&w, ts, xs, (*features.Window).Median)
func Eval[F Stream](f F, ts []time.Time, xs []float64, value func(F) float64) []float64 {
	if len(ts) != len(xs) {
		panic("features: Eval needs one timestamp per value")
	}
	out := make([]float64, len(xs))
	for i, x := range xs {
		if finite(x) {
			f.Update(ts[i], x)
		}
		out[i] = value(f)
	}
	return out
}

// TimedEWMA is an EWMA that takes timestamped readings, so that it is a
// Stream; the timestamp is ignored (the weights are per reading).
type TimedEWMA struct {
	EWMA
}

var _ Stream = (*TimedEWMA)(nil)

// Update folds x into the mean and variance.
func (e *TimedEWMA) Update(_ time.Time, x float64) { e.EWMA.Update(x) }

// finite reports whether x is a measurement: neither NaN nor infinite.
func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
