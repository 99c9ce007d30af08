package features

import (
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// series is one stored series of the parity test.
type series struct {
	name string
	ts   []time.Time
	xs   []float64
}

func awsSeries(t *testing.T) []series {
	dir := nabDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "data", "realAWSCloudwatch", "*.csv"))
	if err != nil || len(files) == 0 {
		t.Skipf("no realAWSCloudwatch files under %s; set VIGIL_NAB_DIR", dir)
	}
	out := make([]series, 0, len(files))
	for _, f := range files {
		ts, xs := readNAB(t, f)
		out = append(out, series{name: filepath.Base(f), ts: ts, xs: xs})
	}
	return out
}

const parityWindow = 64

// newFeatureSet returns the Set the parity test checks, with the window the
// direct computation uses.
func newFeatureSet() *Set {
	c := DefaultSetConfig()
	c.Window = parityWindow
	s, err := NewSet(c)
	if err != nil {
		panic(err)
	}
	return s
}

// columns names the columns as the direct computation does, in SetColumns
// order.
var columns = []string{"mean", "std", "min", "max", "q10", "median", "q90", "mad", "ewma_mean", "ewma_std", "seasonal_residual", "rate", "gap"}

// offline evaluates every column over a stored series with Eval, one feature
// at a time.
func offline(s series) [][]float64 {
	col := func(f func(*Set) []float64) []float64 { return f(newFeatureSet()) }
	win := func(v func(*Window) float64) []float64 {
		return col(func(fs *Set) []float64 { return Eval(&fs.win, s.ts, s.xs, v) })
	}
	return [][]float64{
		win((*Window).Mean),
		win((*Window).Std),
		win((*Window).Min),
		win((*Window).Max),
		win(func(w *Window) float64 { return w.Quantile(0.1) }),
		win((*Window).Median),
		win(func(w *Window) float64 { return w.Quantile(0.9) }),
		win((*Window).MAD),
		col(func(fs *Set) []float64 {
			return Eval(&fs.ewma, s.ts, s.xs, func(e *TimedEWMA) float64 { return e.Mean() })
		}),
		col(func(fs *Set) []float64 {
			return Eval(&fs.ewma, s.ts, s.xs, func(e *TimedEWMA) float64 { return e.Std() })
		}),
		col(func(fs *Set) []float64 { return Eval(&fs.seas, s.ts, s.xs, (*Seasonal).Residual) }),
		col(func(fs *Set) []float64 { return Eval(&fs.rate, s.ts, s.xs, (*Rate).PerSecond) }),
		col(func(fs *Set) []float64 { return Eval(&fs.gap, s.ts, s.xs, (*Gap).Seconds) }),
	}
}

// online feeds all series interleaved, one reading at a time, as the live
// pipeline does, and records every column after each reading.
func online(all []series) [][][]float64 {
	sets := make([]*Set, len(all))
	out := make([][][]float64, len(all))
	longest := 0
	for i, s := range all {
		sets[i] = newFeatureSet()
		out[i] = make([][]float64, len(columns))
		longest = max(longest, len(s.xs))
	}
	for k := range longest {
		for i, s := range all {
			if k >= len(s.xs) {
				continue
			}
			sets[i].Update(s.ts[k], s.xs[k])
			for c, v := range sets[i].Values(nil) {
				out[i][c] = append(out[i][c], v)
			}
		}
	}
	return out
}

// direct computes the window columns from their definitions, recomputing
// everything from scratch for each reading: the reference the incremental
// code is checked against.
func direct(s series) map[string][]float64 {
	out := map[string][]float64{}
	ref, rate := 0, 0.0
	for i := range s.xs {
		w := slices.Clone(s.xs[max(0, i-parityWindow+1) : i+1])
		slices.Sort(w)
		n := float64(len(w))
		var sum float64
		for _, x := range w {
			sum += x
		}
		mean := sum / n
		var ss float64
		for _, x := range w {
			ss += (x - mean) * (x - mean)
		}
		std := 0.0
		if len(w) > 1 {
			std = math.Sqrt(ss / n)
		}
		q := func(p float64) float64 {
			h := p * (n - 1)
			lo := math.Floor(h)
			hi := math.Min(lo+1, n-1)
			return w[int(lo)] + (h-lo)*(w[int(hi)]-w[int(lo)])
		}
		med := q(0.5)
		dev := make([]float64, len(w))
		for j, x := range w {
			dev[j] = math.Abs(x - med)
		}
		slices.Sort(dev)
		m := len(dev)
		mad := dev[m/2]
		if m%2 == 0 {
			mad = (dev[m/2-1] + dev[m/2]) / 2
		}
		for name, v := range map[string]float64{
			"mean": mean, "std": std, "min": w[0], "max": w[len(w)-1],
			"q10": q(0.1), "median": med, "q90": q(0.9), "mad": mad,
		} {
			out[name] = append(out[name], v)
		}
		gap := 0.0
		if i > 0 {
			gap = s.ts[i].Sub(s.ts[i-1]).Seconds()
			// A reading at a repeated timestamp keeps the previous rate.
			if dt := s.ts[i].Sub(s.ts[ref]).Seconds(); dt > 0 {
				rate = (s.xs[i] - s.xs[ref]) / dt
				ref = i
			}
		}
		out["rate"] = append(out["rate"], rate)
		out["gap"] = append(out["gap"], gap)
	}
	return out
}

// TestParity checks, on real series, that the online values (readings of
// many series interleaved, one Update at a time) equal the offline ones (Eval
// over each stored series), and that both agree within 1e-9 (relative to the
// series' scale) with a from-scratch computation of each definition.
func TestParity(t *testing.T) {
	all := awsSeries(t)
	on := online(all)
	for i, s := range all {
		t.Run(s.name, func(t *testing.T) {
			off := offline(s)
			ref := direct(s)
			scale := 1.0
			for _, x := range s.xs {
				scale = max(scale, math.Abs(x))
			}
			for c, name := range columns {
				for k := range s.xs {
					if on[i][c][k] != off[c][k] {
						t.Fatalf("%s[%d]: online %v, offline %v", name, k, on[i][c][k], off[c][k])
					}
					want, ok := ref[name]
					if !ok {
						continue
					}
					if d := math.Abs(off[c][k] - want[k]); d > 1e-9*scale {
						t.Fatalf("%s[%d]: incremental %v, direct %v (|diff| %g, scale %g)", name, k, off[c][k], want[k], d, scale)
					}
				}
			}
		})
	}
}

// TestSetSkipsNonFinite: NaN and infinite readings, each between two real
// ones, change no feature, online (Set) or offline (Eval): after every
// reading the features equal those of the series without them, and the
// window, full long before the end, does not break on them.
func TestSetSkipsNonFinite(t *testing.T) {
	t0 := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	var clean, dirty series
	var last []int // last[k]: index in clean of the last real reading up to dirty[k]
	for i := range 5 * parityWindow {
		ts := t0.Add(time.Duration(i) * time.Minute)
		x := 20 + math.Sin(float64(i)/7) + float64(i%5)*0.1
		clean.ts, clean.xs = append(clean.ts, ts), append(clean.xs, x)
		dirty.ts, dirty.xs = append(dirty.ts, ts), append(dirty.xs, x)
		last = append(last, i)
		if bad := []float64{math.NaN(), math.Inf(1), math.Inf(-1)}; i%10 == 3 {
			dirty.ts, dirty.xs = append(dirty.ts, ts.Add(20*time.Second)), append(dirty.xs, bad[i%3])
			last = append(last, i)
		}
	}
	want := online([]series{clean})[0]
	on, off := online([]series{dirty})[0], offline(dirty)
	for c, name := range columns {
		for k := range dirty.xs {
			if on[c][k] != want[c][last[k]] || off[c][k] != want[c][last[k]] {
				t.Fatalf("%s after reading %d (%v): online %v, offline %v; without the NaN and infinite readings %v",
					name, k, dirty.xs[k], on[c][k], off[c][k], want[c][last[k]])
			}
		}
	}
}

// TestSeasonBucket checks the arithmetic bucket against the calendar.
func TestSeasonBucket(t *testing.T) {
	t0 := time.Date(1969, 12, 25, 0, 30, 0, 0, time.UTC)
	for i := range 24 * 30 {
		ts := t0.Add(time.Duration(i)*time.Hour + time.Duration(i%7)*time.Minute)
		if got, want := HourOfDay.Bucket(ts), ts.Hour(); got != want {
			t.Fatalf("%v: hour bucket %d, want %d", ts, got, want)
		}
		if got, want := HourOfWeek.Bucket(ts), int(ts.Weekday())*24+ts.Hour(); got != want {
			t.Fatalf("%v: week bucket %d, want %d", ts, got, want)
		}
		if got, want := DayOfWeek.Bucket(ts), int(ts.Weekday()); got != want {
			t.Fatalf("%v: weekday bucket %d, want %d", ts, got, want)
		}
	}
	zoned := time.Date(2026, 3, 1, 23, 30, 0, 0, time.FixedZone("X", -5*3600))
	if got, want := HourOfWeek.Bucket(zoned), int(zoned.UTC().Weekday())*24+zoned.UTC().Hour(); got != want {
		t.Fatalf("zoned time: bucket %d, want %d", got, want)
	}
}

// TestSetColumns: a Set gives one value per name in SetColumns, and the
// parity test checks every one of them.
func TestSetColumns(t *testing.T) {
	if n := len(newFeatureSet().Values(nil)); n != len(SetColumns) || n != len(columns) {
		t.Fatalf("a Set gives %d values for %d names; the parity test checks %d", n, len(SetColumns), len(columns))
	}
	if _, err := NewSet(SetConfig{Window: 0, Alpha: 0.1, Season: HourOfDay, SeasonAlpha: 0.1}); err == nil {
		t.Error("a Set with an empty window was built")
	}
	// A window of 2^40 readings would take 16 TiB: refused, not allocated.
	if _, err := NewSet(SetConfig{Window: 1 << 40, Alpha: 0.1, Season: HourOfDay, SeasonAlpha: 0.1}); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("a Set with a window of 2^40 readings: error %v, want one saying how large it may be", err)
	}
}

// TestSeasonalDayOfWeek: a series that runs high every Sunday leaves a
// small residual against a day-of-week baseline once it has seen a few
// weeks, and a large one against an hour-of-day baseline, which mixes
// Sundays with weekdays.
func TestSeasonalDayOfWeek(t *testing.T) {
	t0 := time.Date(2026, 1, 4, 0, 0, 0, 0, time.UTC) // a Sunday
	sundays := func(season Season) float64 {
		s := NewSeasonal(season, 0.1)
		var sum float64
		var n int
		for h := range 24 * 7 * 12 {
			ts := t0.Add(time.Duration(h) * time.Hour)
			x := 10 + float64(h%5)*0.1
			if ts.Weekday() == time.Sunday {
				x += 40
			}
			s.Update(ts, x)
			if h >= 24*7*8 && ts.Weekday() == time.Sunday {
				sum += math.Abs(s.Residual())
				n++
			}
		}
		return sum / float64(n)
	}
	byDay, byHour := sundays(DayOfWeek), sundays(HourOfDay)
	if byDay > 1 || byHour < 20 {
		t.Fatalf("mean |residual| on Sundays in weeks 9-12: %.2f against a day-of-week baseline (want ≤ 1), %.2f against an hour-of-day one (want ≥ 20)", byDay, byHour)
	}
}
