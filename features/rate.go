package features

import "time"

// Rate is the rate of change of a series per second between consecutive
// readings, (x[i] - x[i-1]) / (t[i] - t[i-1]).
//
// A reading with the same or an earlier timestamp than its predecessor
// (a duplicate or out-of-order delivery) leaves the rate unchanged and does
// not become the new reference. The zero value is ready to use.
type Rate struct {
	prevT time.Time
	prevX float64
	rate  float64
	delta float64
	n     int
}

var _ Stream = (*Rate)(nil)

// Update folds in the next reading.
func (r *Rate) Update(ts time.Time, x float64) {
	r.n++
	if r.n == 1 {
		r.prevT, r.prevX = ts, x
		return
	}
	dt := ts.Sub(r.prevT).Seconds()
	if dt <= 0 {
		return
	}
	r.delta = x - r.prevX
	r.rate = r.delta / dt
	r.prevT, r.prevX = ts, x
}

// PerSecond returns the latest rate of change per second (0 until two
// readings with increasing timestamps have been seen).
func (r *Rate) PerSecond() float64 { return r.rate }

// Delta returns the latest difference between consecutive readings.
func (r *Rate) Delta() float64 { return r.delta }

// Gap is the time since the previous reading of a series, the feature that
// tells a silent device from a quiet one. The zero value is ready to use.
type Gap struct {
	prev time.Time
	gap  float64
	n    int
}

var _ Stream = (*Gap)(nil)

// Update folds in the next reading; x is not used.
func (g *Gap) Update(ts time.Time, _ float64) {
	g.n++
	if g.n > 1 {
		g.gap = ts.Sub(g.prev).Seconds()
	}
	g.prev = ts
}

// Seconds returns the time between the last two readings in seconds (0
// after the first reading; negative if the last one arrived out of order).
func (g *Gap) Seconds() float64 { return g.gap }

// Since returns the time from the last reading to now, for a series that has
// gone silent; it returns 0 before any reading.
func (g *Gap) Since(now time.Time) time.Duration {
	if g.n == 0 {
		return 0
	}
	return now.Sub(g.prev)
}
