package features

import (
	"math"
	"slices"
	"time"
)

// Window holds the last n readings of one series and answers order and
// moment statistics over them: mean, standard deviation, minimum, maximum,
// quantiles, median and median absolute deviation.
//
// Readings are kept twice, in arrival order (a ring, to know which one leaves)
// and sorted (for order statistics), so Update costs O(n) moves of a
// contiguous slice and every order statistic is O(1), except MAD, which is
// O(n) without allocating. The mean and variance come from running sums of
// the readings shifted by a reference value, with compensated (Neumaier)
// summation; the sums are recomputed exactly from the ring every n updates,
// so rounding error cannot accumulate over a long-lived series.
//
// Readings must not be NaN (callers drop them first): NaN has no place in an
// order. The zero value is not usable: construct it with NewWindow.
type Window struct {
	ring   []float64
	sorted []float64
	head   int // index in ring of the oldest reading once full
	since  int // updates since the sums were last recomputed
	shift  float64
	s1, c1 float64 // sum of (x - shift) and its compensation
	s2, c2 float64 // sum of (x - shift)^2 and its compensation
}

// NewWindow returns an empty window of capacity n >= 1. It panics for n < 1,
// which is a programming error.
func NewWindow(n int) Window {
	if n < 1 {
		panic("features: window size must be at least 1")
	}
	return Window{ring: make([]float64, 0, n), sorted: make([]float64, 0, n)}
}

// Cap returns the number of readings the window holds when full.
func (w *Window) Cap() int { return cap(w.ring) }

// Len returns the number of readings in the window.
func (w *Window) Len() int { return len(w.ring) }

// Full reports whether the window holds Cap readings.
func (w *Window) Full() bool { return len(w.ring) == cap(w.ring) }

// Update adds x to the window, evicting the oldest reading when the window
// is full. The timestamp is not used; it makes Window a Stream.
func (w *Window) Update(_ time.Time, x float64) { w.Push(x) }

// Push adds x to the window, evicting the oldest reading when it is full.
func (w *Window) Push(x float64) {
	if len(w.ring) == 0 {
		w.shift = x
	}
	if len(w.ring) < cap(w.ring) {
		w.ring = append(w.ring, x)
		i, _ := slices.BinarySearch(w.sorted, x)
		w.sorted = slices.Insert(w.sorted, i, x)
		w.add(x, 1)
	} else {
		old := w.ring[w.head]
		w.ring[w.head] = x
		w.head++
		if w.head == len(w.ring) {
			w.head = 0
		}
		w.replaceSorted(old, x)
		w.add(old, -1)
		w.add(x, 1)
	}
	w.since++
	if w.since >= cap(w.ring) {
		w.resum()
	}
}

// replaceSorted removes old from the sorted slice and inserts x, moving only
// the elements between the two positions.
func (w *Window) replaceSorted(old, x float64) {
	s := w.sorted
	i, _ := slices.BinarySearch(s, old)
	switch {
	case x > old:
		// Shift left the elements in (i, j) where j is x's insertion point.
		j := i
		for j+1 < len(s) && s[j+1] < x {
			s[j] = s[j+1]
			j++
		}
		s[j] = x
	case x < old:
		j := i
		for j > 0 && s[j-1] > x {
			s[j] = s[j-1]
			j--
		}
		s[j] = x
	default:
		// Same value: nothing moves.
	}
}

// add folds sign*(x-shift) and its square into the compensated sums
// (Neumaier, "Rundungsfehleranalyse einiger Verfahren zur Summation
// endlicher Summen", ZAMM 54(1), 1974).
func (w *Window) add(x, sign float64) {
	d := x - w.shift
	w.s1, w.c1 = twoSum(w.s1, w.c1, sign*d)
	w.s2, w.c2 = twoSum(w.s2, w.c2, sign*d*d)
}

func twoSum(s, c, v float64) (float64, float64) {
	t := s + v
	if math.Abs(s) >= math.Abs(v) {
		c += (s - t) + v
	} else {
		c += (v - t) + s
	}
	return t, c
}

// resum recomputes the sums exactly from the ring around the current mean.
func (w *Window) resum() {
	w.since = 0
	if len(w.ring) == 0 {
		return
	}
	w.shift = w.Mean()
	w.s1, w.c1, w.s2, w.c2 = 0, 0, 0, 0
	for _, x := range w.ring {
		w.add(x, 1)
	}
}

// Mean returns the mean of the window, or 0 when it is empty.
func (w *Window) Mean() float64 {
	n := len(w.ring)
	if n == 0 {
		return 0
	}
	return w.shift + (w.s1+w.c1)/float64(n)
}

// Var returns the population variance of the window, or 0 with fewer than
// two readings.
func (w *Window) Var() float64 {
	n := float64(len(w.ring))
	if n < 2 {
		return 0
	}
	m := (w.s1 + w.c1) / n
	v := (w.s2+w.c2)/n - m*m
	return math.Max(v, 0)
}

// Std returns the square root of Var.
func (w *Window) Std() float64 { return math.Sqrt(w.Var()) }

// Min returns the smallest reading in the window, or 0 when it is empty.
func (w *Window) Min() float64 {
	if len(w.sorted) == 0 {
		return 0
	}
	return w.sorted[0]
}

// Max returns the largest reading in the window, or 0 when it is empty.
func (w *Window) Max() float64 {
	if len(w.sorted) == 0 {
		return 0
	}
	return w.sorted[len(w.sorted)-1]
}

// Quantile returns the q-quantile of the window, 0 <= q <= 1, interpolating
// linearly between order statistics (Hyndman and Fan, "Sample quantiles in
// statistical packages", The American Statistician 50(4), 1996, definition
// 7, the default of R and NumPy). It returns 0 when the window is empty.
func (w *Window) Quantile(q float64) float64 {
	return quantileSorted(w.sorted, q)
}

func quantileSorted(s []float64, q float64) float64 {
	n := len(s)
	if n == 0 {
		return 0
	}
	q = math.Max(0, math.Min(1, q))
	h := q * float64(n-1)
	lo := int(h)
	if lo >= n-1 {
		return s[n-1]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}

// Median returns the 0.5-quantile of the window.
func (w *Window) Median() float64 { return w.Quantile(0.5) }

// MAD returns the median absolute deviation from the median, unscaled (a
// Gaussian's standard deviation is about 1.4826 MAD). It walks outwards from
// the median over the sorted readings, merging the distances on both sides
// in increasing order, so it needs no scratch memory.
func (w *Window) MAD() float64 {
	return madSorted(w.sorted)
}

func madSorted(s []float64) float64 {
	n := len(s)
	if n == 0 {
		return 0
	}
	m := quantileSorted(s, 0.5)
	// Split point: s[:r] <= m < ... ; left walks down from r-1, right up from r.
	r, _ := slices.BinarySearch(s, m)
	for r < n && s[r] <= m {
		r++
	}
	l := r - 1
	// The k-th and (k+1)-th smallest distances (0-based), to average as the
	// median does for even n.
	k := (n - 1) / 2
	var prev, cur float64
	for i := 0; i <= n/2; i++ {
		var d float64
		switch {
		case l < 0:
			d = s[r] - m
			r++
		case r >= n:
			d = m - s[l]
			l--
		case m-s[l] <= s[r]-m:
			d = m - s[l]
			l--
		default:
			d = s[r] - m
			r++
		}
		prev, cur = cur, d
		if i == k && n%2 == 1 {
			return d
		}
	}
	return (prev + cur) / 2
}

// MeanAbsDev returns the mean absolute deviation of the window's readings
// from c, or 0 when it is empty. With c the median it is the fallback scale
// of robust z-scores when more than half the window is one value (MAD 0).
func (w *Window) MeanAbsDev(c float64) float64 {
	if len(w.ring) == 0 {
		return 0
	}
	var s float64
	for _, x := range w.ring {
		s += math.Abs(x - c)
	}
	return s / float64(len(w.ring))
}
