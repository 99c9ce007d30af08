package nab

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// DefaultProbation is the fraction of each file's rows (capped at
// DefaultProbation·5000 rows) that NAB leaves unscored while a detector
// learns.
const DefaultProbation = 0.15

// NoDetectionThreshold is the threshold reported when detecting nothing
// scores best. It is above every valid anomaly score, so applying it
// detects nothing.
const NoDetectionThreshold = 1.1

// NullScore is the constant anomaly score of NAB's null detector, whose
// optimised raw score is the zero of the normalised scale.
const NullScore = 0.5

// Scored holds a detector's output for one data file.
type Scored struct {
	// Name is the file's key in Windows, "<category>/<file>.csv".
	Name string
	// Timestamps holds the data file's timestamps, one per row.
	Timestamps []time.Time
	// Scores holds the anomaly scores, one per row, each in [0, 1].
	Scores []float64
}

// Options adjusts EvaluateOptions. The zero value means no probationary
// period and optimised thresholds; DefaultOptions gives NAB's settings.
type Options struct {
	// Probation is the probationary fraction of each file, in [0, 1]; see
	// ProbationLength.
	Probation float64
	// Thresholds, when not nil, fixes the threshold of every profile (by
	// name) instead of optimising it; it must then name every profile.
	Thresholds map[string]float64
}

// DefaultOptions returns NAB's settings: a DefaultProbation probationary
// period and thresholds optimised per profile.
func DefaultOptions() Options {
	return Options{Probation: DefaultProbation}
}

// FileResult is one file's share of a Result, at the Result's threshold.
type FileResult struct {
	// Name is the file's key.
	Name string
	// Raw is the file's raw score: its window terms plus its false-positive
	// terms.
	Raw float64
	// TP, TN, FP and FN count scored (post-probation) rows: detected rows
	// inside and outside windows (TP, FP) and undetected rows outside and
	// inside windows (TN, FN).
	TP, TN, FP, FN int
	// Windows counts the file's labelled windows and ScorableWindows those
	// with at least one row after the probationary period.
	Windows, ScorableWindows int
}

// Result is the score of a set of files under one profile.
type Result struct {
	// Profile is the profile's name.
	Profile string
	// Threshold is the optimised (or fixed) detection threshold;
	// NoDetectionThreshold when detecting nothing scores best.
	Threshold float64
	// Normalized is 100·(Raw-Null)/(Perfect-Null): 0 for the null detector,
	// 100 for a perfect one. It is NaN when Perfect equals Null (no windows).
	Normalized float64
	// Raw is the summed raw score of all files at Threshold.
	Raw float64
	// Null is the optimised raw score of the null detector on the same files.
	Null float64
	// Perfect is TPWeight times the number of labelled windows.
	Perfect float64
	// TP, TN, FP and FN sum the per-file row counts.
	TP, TN, FP, FN int
	// Windows and ScorableWindows sum the per-file window counts.
	Windows, ScorableWindows int
	// Files holds the per-file results, sorted by name.
	Files []FileResult
}

// ScaledSigmoid returns 2/(1+e^(5x)) - 1, NAB's weighting of a detection at
// relative position x, and -1 for x > 3. It falls from about +1 at x = -1
// (the left edge of a window) through 0 at x = 0 towards -1 for x > 0.
func ScaledSigmoid(x float64) float64 {
	if x > 3 {
		return -1
	}
	return 2/(1+math.Exp(5*x)) - 1
}

// ProbationLength returns how many leading rows of a file with the given
// number of rows are unscored: min(floor(fraction·rows), fraction·5000),
// rounded up to a whole row.
func ProbationLength(rows int, fraction float64) int {
	return int(math.Ceil(math.Min(math.Floor(fraction*float64(rows)), fraction*5000)))
}

// Evaluate scores the files under each profile with NAB's settings (see
// DefaultOptions). Every file must have an entry in windows, whose window
// ends must be timestamps of the file.
func Evaluate(files []Scored, windows Windows, profiles []Profile) ([]Result, error) {
	return EvaluateOptions(files, windows, profiles, DefaultOptions())
}

// EvaluateOptions scores the files under each profile, returning one Result
// per profile in the order given.
func EvaluateOptions(files []Scored, windows Windows, profiles []Profile, opts Options) ([]Result, error) {
	if err := checkInputs(files, profiles, opts); err != nil {
		return nil, err
	}
	ordered := slices.Clone(files)
	slices.SortFunc(ordered, func(a, b Scored) int { return strings.Compare(a.Name, b.Name) })
	var c corpus
	for _, f := range ordered {
		ws, ok := windows[f.Name]
		if !ok {
			return nil, fmt.Errorf("nab: %s has no entry in the windows", f.Name)
		}
		if err := c.add(f, ws, opts.Probation); err != nil {
			return nil, err
		}
	}
	c.finish()

	// Rows by descending anomaly score; ties keep row order.
	order := make([]int, len(c.score))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(c.score[b], c.score[a]) })
	identity := make([]int, len(c.score))
	nullScores := make([]float64, len(c.score))
	for i := range identity {
		identity[i] = i
		nullScores[i] = NullScore
	}

	out := make([]Result, 0, len(profiles))
	for _, p := range profiles {
		vals := c.weigh(p)
		var best tally
		if opts.Thresholds != nil {
			best = c.scoreAt(0, len(c.score), c.score, vals, p.FNWeight, opts.Thresholds[p.Name])
		} else {
			best = c.optimise(order, c.score, vals, p.FNWeight)
		}
		null := c.optimise(identity, nullScores, vals, p.FNWeight).raw
		r := Result{
			Profile:   p.Name,
			Threshold: best.threshold,
			Raw:       best.raw,
			Null:      null,
			Perfect:   float64(c.windows) * p.TPWeight,
			TP:        best.tp, TN: best.tn, FP: best.fp, FN: best.fn,
			Windows:         c.windows,
			ScorableWindows: c.scorable,
			Normalized:      math.NaN(),
		}
		if r.Perfect != r.Null {
			r.Normalized = 100 * (r.Raw - r.Null) / (r.Perfect - r.Null)
		}
		r.Files = make([]FileResult, len(c.files))
		for i, f := range c.files {
			t := c.scoreAt(f.lo, f.hi, c.score, vals, p.FNWeight, best.threshold)
			r.Files[i] = FileResult{
				Name: f.name, Raw: t.raw,
				TP: t.tp, TN: t.tn, FP: t.fp, FN: t.fn,
				Windows: f.windows, ScorableWindows: f.scorable,
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func checkInputs(files []Scored, profiles []Profile, opts Options) error {
	if len(files) == 0 {
		return errors.New("nab: no files to score")
	}
	if len(profiles) == 0 {
		return errors.New("nab: no profiles")
	}
	if !(opts.Probation >= 0 && opts.Probation <= 1) {
		return fmt.Errorf("nab: probation %v is not in [0, 1]", opts.Probation)
	}
	seen := make(map[string]bool, len(profiles))
	for _, p := range profiles {
		if p.Name == "" || seen[p.Name] {
			return fmt.Errorf("nab: profile name %q is empty or repeated", p.Name)
		}
		seen[p.Name] = true
		for _, w := range []float64{p.TPWeight, p.FNWeight, p.FPWeight} {
			if math.IsNaN(w) || math.IsInf(w, 0) {
				return fmt.Errorf("nab: profile %s has a non-finite weight", p.Name)
			}
		}
		if opts.Thresholds != nil {
			t, ok := opts.Thresholds[p.Name]
			if !ok || math.IsNaN(t) {
				return fmt.Errorf("nab: no fixed threshold for profile %s", p.Name)
			}
		}
	}
	names := make(map[string]bool, len(files))
	for _, f := range files {
		if f.Name == "" || names[f.Name] {
			return fmt.Errorf("nab: file name %q is empty or repeated", f.Name)
		}
		names[f.Name] = true
		if len(f.Timestamps) != len(f.Scores) {
			return fmt.Errorf("nab: %s: %d timestamps but %d scores", f.Name, len(f.Timestamps), len(f.Scores))
		}
		for i, s := range f.Scores {
			if !(s >= 0 && s <= 1) {
				return fmt.Errorf("nab: %s: row %d: anomaly score %v is not in [0, 1]", f.Name, i, s)
			}
		}
	}
	return nil
}

// corpus holds the scored (post-probation) rows of all files, in file
// order, with the geometry that does not depend on the profile.
type corpus struct {
	score []float64 // anomaly score
	win   []int     // window id, or -1 outside every window
	u     []float64 // unweighted scaled sigmoid of the row's position

	files    []fileSpan
	nIDs     int    // window ids handed out
	present  []bool // by window id: the window has a scored row
	nPresent int
	windows  int // labelled windows
	scorable int // windows with a scored row
}

// fileSpan is one file's rows, c.score[lo:hi], and its window counts.
type fileSpan struct {
	name              string
	lo, hi            int
	windows, scorable int
}

// timeKey identifies an instant independently of its time.Location.
type timeKey struct {
	sec  int64
	nsec int
}

func keyOf(t time.Time) timeKey { return timeKey{t.Unix(), t.Nanosecond()} }

// add appends the scored rows of one file. It walks the rows once, opening
// a window at the row that matches the next window's start and closing it at
// the row that matches its end; a row outside every window is placed
// relative to the last window closed before it.
func (c *corpus) add(f Scored, ws []Window, probation float64) error {
	n := len(f.Timestamps)
	first := make(map[timeKey]int, n)
	for i, t := range f.Timestamps {
		if _, ok := first[keyOf(t)]; !ok {
			first[keyOf(t)] = i
		}
	}
	limits := slices.Clone(ws)
	slices.SortFunc(limits, func(a, b Window) int {
		if d := a.Start.Compare(b.Start); d != 0 {
			return d
		}
		return a.End.Compare(b.End)
	})
	// Windows that share a start share an id (and so a single best
	// detection), as in NAB, where a window is named by its start.
	ids := make(map[timeKey]int, len(limits))
	for _, w := range limits {
		for _, t := range []time.Time{w.Start, w.End} {
			if _, ok := first[keyOf(t)]; !ok {
				return fmt.Errorf("nab: %s: window timestamp %s is not a row of the file", f.Name, t.Format(TimeLayout))
			}
		}
		if _, ok := ids[keyOf(w.Start)]; !ok {
			ids[keyOf(w.Start)] = c.nIDs
			c.nIDs++
		}
	}

	probLen := ProbationLength(n, probation)
	span := fileSpan{name: f.Name, lo: len(c.score), windows: len(ws)}
	seen := make(map[int]bool)
	next := 0 // index in limits of the next window to open
	var (
		inWin           bool
		curID, curRight int
		curWidth        float64
		curEnd          time.Time
		havePrev        bool
		prevRight       int
		prevWidth       float64
	)
	for i, t := range f.Timestamps {
		if next < len(limits) && t.Equal(limits[next].Start) {
			w := limits[next]
			next++
			inWin = true
			curID = ids[keyOf(w.Start)]
			curRight = first[keyOf(w.End)]
			curWidth = float64(curRight - first[keyOf(w.Start)] + 1)
			curEnd = w.End
		}
		id, u := -1, -1.0
		switch {
		case inWin:
			id = curID
			u = ScaledSigmoid(-float64(curRight-i+1) / curWidth)
		case havePrev:
			// A one-row window has width-1 = 0: the division gives +Inf
			// and so the full false-positive cost.
			u = ScaledSigmoid(math.Abs(float64(prevRight-i)) / (prevWidth - 1))
		}
		if i >= probLen {
			c.score = append(c.score, f.Scores[i])
			c.win = append(c.win, id)
			c.u = append(c.u, u)
			if id >= 0 {
				seen[id] = true
			}
		}
		if inWin && t.Equal(curEnd) {
			inWin = false
			havePrev, prevRight, prevWidth = true, i, curWidth
		}
	}
	span.hi = len(c.score)
	span.scorable = len(seen)
	c.files = append(c.files, span)
	c.windows += span.windows
	c.scorable += span.scorable
	return nil
}

// finish records which window ids have scored rows.
func (c *corpus) finish() {
	c.present = make([]bool, c.nIDs)
	for _, id := range c.win {
		if id >= 0 && !c.present[id] {
			c.present[id] = true
			c.nPresent++
		}
	}
}

// weigh returns each row's contribution under profile p if it is the
// counted detection: tpWeight·σ/σ(-1) inside a window, fpWeight·σ outside.
func (c *corpus) weigh(p Profile) []float64 {
	maxTP := ScaledSigmoid(-1)
	vals := make([]float64, len(c.u))
	for i, u := range c.u {
		if c.win[i] < 0 {
			vals[i] = u * p.FPWeight
		} else {
			vals[i] = u * p.TPWeight / maxTP
		}
	}
	return vals
}

// tally is a raw score and its row counts at one threshold.
type tally struct {
	threshold      float64
	raw            float64
	tp, tn, fp, fn int
}

// optimise lowers the threshold through every distinct score, rows taken
// in the given order (descending score), and returns the first best tally,
// starting from "detect nothing". The running sums are updated in the same
// order as NAB's reference scorer so that equal raw scores compare equal.
func (c *corpus) optimise(order []int, score, vals []float64, fnWeight float64) tally {
	best := make([]float64, c.nIDs)
	for i := range best {
		best[i] = -fnWeight
	}
	winTotal := -fnWeight * float64(c.nPresent)
	fpTotal := 0.0
	cur := tally{threshold: NoDetectionThreshold}
	for _, id := range c.win {
		if id >= 0 {
			cur.fn++
		} else {
			cur.tn++
		}
	}
	cur.raw = fpTotal + winTotal
	top := cur
	for k := 0; k < len(order); {
		level := score[order[k]]
		for ; k < len(order) && score[order[k]] == level; k++ {
			r := order[k]
			v, id := vals[r], c.win[r]
			if id < 0 {
				cur.fp++
				cur.tn--
				fpTotal += v
				continue
			}
			cur.tp++
			cur.fn--
			if v > best[id] {
				winTotal += v - best[id]
				best[id] = v
			}
		}
		cur.threshold = level
		cur.raw = fpTotal + winTotal
		if cur.raw > top.raw {
			top = cur
		}
	}
	return top
}

// scoreAt scores rows lo..hi-1 with detections at score >= threshold.
func (c *corpus) scoreAt(lo, hi int, score, vals []float64, fnWeight, threshold float64) tally {
	t := tally{threshold: threshold}
	best := make(map[int]float64)
	var ids []int // window ids in order of first appearance
	fpTotal := 0.0
	for r := lo; r < hi; r++ {
		hit := score[r] >= threshold
		id := c.win[r]
		if id < 0 {
			if hit {
				t.fp++
				fpTotal += vals[r]
			} else {
				t.tn++
			}
			continue
		}
		if _, ok := best[id]; !ok {
			best[id] = -fnWeight
			ids = append(ids, id)
		}
		if hit {
			t.tp++
			if vals[r] > best[id] {
				best[id] = vals[r]
			}
		} else {
			t.fn++
		}
	}
	winTotal := 0.0
	for _, id := range ids {
		winTotal += best[id]
	}
	t.raw = fpTotal + winTotal
	return t
}
