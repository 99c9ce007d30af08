package nab

import (
	"math"
	"strings"
	"testing"
	"time"
)

// The hand-computed expectations below use σ(x) = 2/(1+e^(5x)) - 1, which
// equals -tanh(5x/2), so σ(-1) = tanh(2.5) = 0.98661429815143. A window of
// rows a..b has width w = b-a+1; a detection at row i inside it is worth
// tp·σ(-(b-i+1)/w)/σ(-1), a false positive at row i after it is worth
// fp·σ((i-b)/(w-1)).

const tol = 1e-12

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// rowTime is the timestamp of row i in the synthetic files: one a minute.
func rowTime(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }

func stamps(n int) []time.Time {
	ts := make([]time.Time, n)
	for i := range ts {
		ts[i] = rowTime(i)
	}
	return ts
}

// rows returns a window spanning rows a..b.
func rows(a, b int) Window { return Window{Start: rowTime(a), End: rowTime(b)} }

// scores returns n scores equal to base except at the given rows.
func scores(n int, base float64, at map[int]float64) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = base
	}
	for i, v := range at {
		s[i] = v
	}
	return s
}

func profile(t *testing.T, name string) Profile {
	t.Helper()
	for _, p := range DefaultProfiles() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no profile %s", name)
	return Profile{}
}

func near(a, b float64) bool { return math.Abs(a-b) <= tol }

func TestScaledSigmoid(t *testing.T) {
	tests := []struct {
		x, want float64
	}{
		{-1, math.Tanh(2.5)},
		{-0.5, math.Tanh(1.25)},
		{0, 0},
		{0.5, -math.Tanh(1.25)},
		{3, -math.Tanh(7.5)}, // still on the curve: -0.99999939
		{3.0001, -1},         // clamped beyond 3
		{math.Inf(1), -1},
	}
	for _, tc := range tests {
		if got := ScaledSigmoid(tc.x); !near(got, tc.want) {
			t.Errorf("ScaledSigmoid(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
}

func TestProbationLength(t *testing.T) {
	tests := []struct {
		rows     int
		fraction float64
		want     int
	}{
		{0, 0.15, 0},
		{10, 0.15, 1},      // floor(1.5)
		{20, 0.15, 3},      // floor(3.0)
		{50, 0.15, 7},      // floor(7.5)
		{4032, 0.15, 604},  // floor(604.8), a typical NAB file
		{5000, 0.15, 750},  // floor(750) = cap
		{15902, 0.15, 750}, // capped at 0.15·5000
		{100, 0, 0},
		{1000, 0.1, 100},
		{10000, 0.1, 500}, // cap 0.1·5000
	}
	for _, tc := range tests {
		if got := ProbationLength(tc.rows, tc.fraction); got != tc.want {
			t.Errorf("ProbationLength(%d, %v) = %d, want %d", tc.rows, tc.fraction, got, tc.want)
		}
	}
}

// TestFileRaw checks the raw score of one file at a fixed threshold of 0.5
// (detections are the rows listed in hits).
func TestFileRaw(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		windows   []Window
		hits      []int
		profile   string
		probation float64
		want      float64
		// row counts and scorable windows, checked when wantCounts is set
		wantCounts      bool
		tp, tn, fp, fn  int
		scorableWindows int
		labelledWindows int
	}{
		{
			// Row 5 is the window's first row: p = -(9-5+1)/5 = -1, worth
			// σ(-1)/σ(-1) = 1.
			name: "detection at window start", n: 20, windows: []Window{rows(5, 9)},
			hits: []int{5}, profile: ProfileStandard, want: 1,
			wantCounts: true, tp: 1, tn: 15, fp: 0, fn: 4, scorableWindows: 1, labelledWindows: 1,
		},
		{
			// Earliest detection row 6: p = -(9-6+1)/5 = -0.8,
			// tanh(2)/tanh(2.5) = 0.96402758/0.98661430 = 0.97710684.
			// Row 8 is a later detection in the same window: ignored.
			name: "early detection", n: 20, windows: []Window{rows(5, 9)},
			hits: []int{6, 8}, profile: ProfileStandard, want: 0.9771068409226047,
			wantCounts: true, tp: 2, tn: 15, fp: 0, fn: 3, scorableWindows: 1, labelledWindows: 1,
		},
		{
			// Row 9 is the window's last row: p = -1/5 = -0.2,
			// tanh(0.5)/tanh(2.5) = 0.46211716/0.98661430 = 0.46838684.
			name: "late detection", n: 20, windows: []Window{rows(5, 9)},
			hits: []int{9}, profile: ProfileStandard, want: 0.4683868439022782,
		},
		{
			// No detection in the window: -fnWeight = -1.
			name: "missed window", n: 20, windows: []Window{rows(5, 9)},
			profile: ProfileStandard, want: -1,
			wantCounts: true, tp: 0, tn: 15, fp: 0, fn: 5, scorableWindows: 1, labelledWindows: 1,
		},
		{
			// reward_low_FN_rate: -fnWeight = -2.
			name: "missed window low FN profile", n: 20, windows: []Window{rows(5, 9)},
			profile: ProfileLowFN, want: -2,
		},
		{
			// Row 2 precedes every window: full cost -0.11; row 5 is worth
			// 1. Total 1 - 0.11 = 0.89.
			name: "fp with no preceding window", n: 20, windows: []Window{rows(5, 9)},
			hits: []int{2, 5}, profile: ProfileStandard, want: 0.89,
			wantCounts: true, tp: 1, tn: 14, fp: 1, fn: 4, scorableWindows: 1, labelledWindows: 1,
		},
		{
			// As above with fpWeight 0.22: 1 - 0.22 = 0.78.
			name: "fp with no preceding window low FP profile", n: 20, windows: []Window{rows(5, 9)},
			hits: []int{2, 5}, profile: ProfileLowFP, want: 0.78,
		},
		{
			// No windows at all: the false positive costs -0.11.
			name: "fp in file without windows", n: 10,
			hits: []int{3}, profile: ProfileStandard, want: -0.11,
		},
		{
			// Row 11 is 2 rows after the window's right edge 9:
			// q = 2/(5-1) = 0.5, σ(0.5) = -tanh(1.25) = -0.84828364;
			// 1 + 0.11·(-0.84828364) = 0.90668880.
			name: "fp shortly after window", n: 20, windows: []Window{rows(5, 9)},
			hits: []int{5, 11}, profile: ProfileStandard, want: 0.9066887996046735,
		},
		{
			// Row 25: q = (25-9)/4 = 4 > 3, so σ = -1: 1 - 0.11 = 0.89.
			name: "fp long after window", n: 30, windows: []Window{rows(5, 9)},
			hits: []int{5, 25}, profile: ProfileStandard, want: 0.89,
		},
		{
			// Row 24 is measured from the closest preceding window 20..22
			// (width 3): q = (24-22)/(3-1) = 1, σ(1) = -tanh(2.5);
			// 1 + 1 - 0.11·0.98661430 = 1.89147243.
			name: "fp measured from closest preceding window", n: 40,
			windows: []Window{rows(5, 9), rows(20, 22)},
			hits:    []int{5, 20, 24}, profile: ProfileStandard, want: 1.8914724272033427,
		},
		{
			// Both windows missed (-2); row 12 between them: q = (12-9)/4 =
			// 0.75, σ = -tanh(1.875) = -0.95390: -2 - 0.11·0.95390 = -2.10494.
			name: "fp between windows", n: 40,
			windows: []Window{rows(5, 9), rows(20, 22)},
			hits:    []int{12}, profile: ProfileStandard, want: -2.1049449786197942,
		},
		{
			// 50 rows: probation floor(7.5) = 7 rows (0..6). The window 1..4
			// lies inside it and is not scored (no fn cost); the detection at
			// row 3 is ignored. Row 7 is a false positive after that window:
			// q = (7-4)/(4-1) = 1, -0.11·tanh(2.5) = -0.10852757.
			name: "probation ignores detections and windows", n: 50,
			windows: []Window{rows(1, 4)}, hits: []int{3, 7}, probation: DefaultProbation,
			profile: ProfileStandard, want: -0.10852757279665734,
			wantCounts: true, tp: 0, tn: 42, fp: 1, fn: 0, scorableWindows: 0, labelledWindows: 1,
		},
		{
			// Window 5..10 (width 6) straddles the 7-row probation: the hit
			// at row 5 is ignored, row 8 counts with the full width:
			// p = -(10-8+1)/6 = -0.5, tanh(1.25)/tanh(2.5) = 0.85979257.
			name: "window straddling probation", n: 50,
			windows: []Window{rows(5, 10)}, hits: []int{5, 8}, probation: DefaultProbation,
			profile: ProfileStandard, want: 0.8597925669097837,
			wantCounts: true, tp: 1, tn: 39, fp: 0, fn: 3, scorableWindows: 1, labelledWindows: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at := make(map[int]float64)
			for _, i := range tc.hits {
				at[i] = 1
			}
			f := Scored{Name: "cat/f.csv", Timestamps: stamps(tc.n), Scores: scores(tc.n, 0, at)}
			p := profile(t, tc.profile)
			res, err := EvaluateOptions([]Scored{f}, Windows{f.Name: tc.windows}, []Profile{p},
				Options{Probation: tc.probation, Thresholds: map[string]float64{p.Name: 0.5}})
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if !near(r.Raw, tc.want) {
				t.Errorf("raw = %.15g, want %.15g", r.Raw, tc.want)
			}
			if len(r.Files) != 1 || !near(r.Files[0].Raw, tc.want) {
				t.Errorf("file results = %+v, want one with raw %.15g", r.Files, tc.want)
			}
			if r.Threshold != 0.5 {
				t.Errorf("threshold = %v, want the fixed 0.5", r.Threshold)
			}
			if tc.wantCounts {
				fr := r.Files[0]
				if fr.TP != tc.tp || fr.TN != tc.tn || fr.FP != tc.fp || fr.FN != tc.fn {
					t.Errorf("TP/TN/FP/FN = %d/%d/%d/%d, want %d/%d/%d/%d", fr.TP, fr.TN, fr.FP, fr.FN, tc.tp, tc.tn, tc.fp, tc.fn)
				}
				if fr.ScorableWindows != tc.scorableWindows || fr.Windows != tc.labelledWindows {
					t.Errorf("windows scorable/labelled = %d/%d, want %d/%d", fr.ScorableWindows, fr.Windows, tc.scorableWindows, tc.labelledWindows)
				}
				if r.TP != fr.TP || r.FN != fr.FN || r.Windows != fr.Windows || r.ScorableWindows != fr.ScorableWindows {
					t.Errorf("totals %+v disagree with the only file %+v", r, fr)
				}
			}
		})
	}
}

// TestOptimise checks the threshold search on one 40-row file with a
// window at rows 20..25 (width 6), no probation, and scores
//
//	row 23: 0.8  in the window, p = -(25-23+1)/6 = -0.5, worth
//	             tanh(1.25)/tanh(2.5) = 0.85979257
//	row  5: 0.6  a false positive with no window before it: -fpWeight
//	row 20: 0.3  the window's first row, worth 1
//	others: 0    (mostly false positives)
//
// Raw score per threshold, standard (fp 0.11) / low FP (fp 0.22) / low FN (fn 2):
//
//	nothing  -1          / -1          / -2
//	0.8       0.85979257 /  0.85979257 /  0.85979257
//	0.6       0.74979257 /  0.63979257 /  0.74979257
//	0.3       0.89       /  0.78       /  0.89
//	0         far lower: 19 more false positives before the window alone
//	          cost 19·0.11 = 2.09
//
// so standard and low FN pick 0.3 and low FP picks 0.8. The null detector
// detects every row at 0.5; that scores 1 - 20·fp - (fp·tanh(k/2) summed
// over the 14 rows after the window) < -fn in every profile, so null = -fn.
// Normalised: standard 100·(0.89+1)/(1+1) = 94.5; low FP
// 100·(0.85979257+1)/2 = 92.98962835; low FN 100·(0.89+2)/(1+2) = 96.33333.
func TestOptimise(t *testing.T) {
	const n = 40
	f := Scored{Name: "cat/f.csv", Timestamps: stamps(n),
		Scores: scores(n, 0, map[int]float64{23: 0.8, 5: 0.6, 20: 0.3})}
	ws := Windows{f.Name: {rows(20, 25)}}
	res, err := EvaluateOptions([]Scored{f}, ws, DefaultProfiles(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		profile                   string
		threshold, raw, null, nrm float64
	}{
		{ProfileStandard, 0.3, 0.89, -1, 94.5},
		{ProfileLowFP, 0.8, 0.8597925669097837, -1, 92.98962834548918},
		{ProfileLowFN, 0.3, 0.89, -2, 96.33333333333333},
	}
	for i, tc := range tests {
		t.Run(tc.profile, func(t *testing.T) {
			r := res[i]
			if r.Profile != tc.profile {
				t.Fatalf("result %d is for %s, want %s", i, r.Profile, tc.profile)
			}
			if r.Threshold != tc.threshold {
				t.Errorf("threshold = %v, want %v", r.Threshold, tc.threshold)
			}
			if !near(r.Raw, tc.raw) || !near(r.Null, tc.null) || r.Perfect != 1 {
				t.Errorf("raw/null/perfect = %.15g/%v/%v, want %.15g/%v/1", r.Raw, r.Null, r.Perfect, tc.raw, tc.null)
			}
			if !near(r.Normalized, tc.nrm) {
				t.Errorf("normalised = %.15g, want %.15g", r.Normalized, tc.nrm)
			}
			if !near(r.Files[0].Raw, r.Raw) {
				t.Errorf("per-file raw %v differs from total %v", r.Files[0].Raw, r.Raw)
			}
		})
	}
}

// TestOptimiseTies checks that the first maximum of the sweep wins.
func TestOptimiseTies(t *testing.T) {
	const n = 40
	tests := []struct {
		name      string
		scores    []float64
		windows   []Window
		threshold float64
		raw       float64
		normNaN   bool
	}{
		{
			// Row 20 (window start, worth 1) at 0.7, row 22 (a later row
			// of the same window, adds nothing) at 0.4: both levels score
			// exactly 1; the higher threshold, reached first, is kept.
			name:    "equal levels keep the higher threshold",
			scores:  scores(n, 0, map[int]float64{20: 0.7, 22: 0.4}),
			windows: []Window{rows(20, 25)}, threshold: 0.7, raw: 1,
		},
		{
			// Without windows every detection costs: detecting nothing
			// (raw 0) wins, reported as NoDetectionThreshold. Perfect and
			// null are both 0, so the normalised score is undefined.
			name:   "no windows detects nothing",
			scores: scores(n, 0.2, map[int]float64{7: 0.9}), threshold: NoDetectionThreshold, raw: 0,
			normNaN: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := Scored{Name: "cat/f.csv", Timestamps: stamps(n), Scores: tc.scores}
			res, err := EvaluateOptions([]Scored{f}, Windows{f.Name: tc.windows}, DefaultProfiles()[:1], Options{})
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.Threshold != tc.threshold || !near(r.Raw, tc.raw) {
				t.Errorf("threshold/raw = %v/%v, want %v/%v", r.Threshold, r.Raw, tc.threshold, tc.raw)
			}
			if math.IsNaN(r.Normalized) != tc.normNaN {
				t.Errorf("normalised = %v, NaN wanted: %v", r.Normalized, tc.normNaN)
			}
			if tc.threshold == NoDetectionThreshold && (r.TP != 0 || r.FP != 0 || r.Files[0].FP != 0) {
				t.Errorf("detections at the no-detection threshold: %+v", r)
			}
		})
	}
}

// TestNormalisation scores three 40-row files (default probation: 6 rows)
// with windows A: 10..14 and 25..29, B: 20..25, C: none. The perfect
// detector (1 at each window's first row, 0 elsewhere) detects each window
// at p = -1 for tpWeight each and no false positive: raw 3 = perfect, so
// 100. A constant detector (the null detector's 0.5, or 0) scores exactly
// what the null detector scores: 0.
func TestNormalisation(t *testing.T) {
	const n = 40
	ws := Windows{
		"a/a.csv": {rows(10, 14), rows(25, 29)},
		"b/b.csv": {rows(20, 25)},
		"c/c.csv": {},
	}
	perfect := map[string][]float64{
		"a/a.csv": scores(n, 0, map[int]float64{10: 1, 25: 1}),
		"b/b.csv": scores(n, 0, map[int]float64{20: 1}),
		"c/c.csv": scores(n, 0, nil),
	}
	constant := func(v float64) map[string][]float64 {
		return map[string][]float64{"a/a.csv": scores(n, v, nil), "b/b.csv": scores(n, v, nil), "c/c.csv": scores(n, v, nil)}
	}
	tests := []struct {
		name   string
		scores map[string][]float64
		want   float64
	}{
		{"perfect detector", perfect, 100},
		{"null detector", constant(NullScore), 0},
		{"constant zero", constant(0), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var files []Scored
			for _, name := range []string{"c/c.csv", "a/a.csv", "b/b.csv"} { // unsorted on purpose
				files = append(files, Scored{Name: name, Timestamps: stamps(n), Scores: tc.scores[name]})
			}
			res, err := Evaluate(files, ws, DefaultProfiles())
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Normalized != tc.want {
					t.Errorf("%s: normalised = %.17g, want exactly %v", r.Profile, r.Normalized, tc.want)
				}
				fn := profile(t, r.Profile).FNWeight
				if r.Null != -3*fn || r.Perfect != 3 || r.Windows != 3 || r.ScorableWindows != 3 {
					t.Errorf("%s: null/perfect/windows = %v/%v/%d/%d, want %v/3/3/3", r.Profile, r.Null, r.Perfect, r.Windows, r.ScorableWindows, -3*fn)
				}
				if got := []string{r.Files[0].Name, r.Files[1].Name, r.Files[2].Name}; strings.Join(got, " ") != "a/a.csv b/b.csv c/c.csv" {
					t.Errorf("%s: files in order %v, want sorted", r.Profile, got)
				}
			}
		})
	}
}

func TestEvaluateErrors(t *testing.T) {
	good := func() Scored { return Scored{Name: "cat/f.csv", Timestamps: stamps(10), Scores: scores(10, 0, nil)} }
	ws := Windows{"cat/f.csv": {rows(2, 4)}}
	tests := []struct {
		name    string
		files   func() []Scored
		windows Windows
		opts    Options
		want    string
	}{
		{"no files", func() []Scored { return nil }, ws, Options{}, "no files"},
		{"missing windows entry", func() []Scored { return []Scored{good()} }, Windows{}, Options{}, "no entry"},
		{"window end not a row", func() []Scored { return []Scored{good()} },
			Windows{"cat/f.csv": {{Start: rowTime(2), End: rowTime(2).Add(time.Second)}}}, Options{}, "not a row"},
		{"length mismatch", func() []Scored { f := good(); f.Scores = f.Scores[:9]; return []Scored{f} }, ws, Options{}, "9 scores"},
		{"NaN score", func() []Scored { f := good(); f.Scores[3] = math.NaN(); return []Scored{f} }, ws, Options{}, "not in [0, 1]"},
		{"score above 1", func() []Scored { f := good(); f.Scores[3] = 1.5; return []Scored{f} }, ws, Options{}, "not in [0, 1]"},
		{"repeated file", func() []Scored { return []Scored{good(), good()} }, ws, Options{}, "repeated"},
		{"bad probation", func() []Scored { return []Scored{good()} }, ws, Options{Probation: 1.5}, "probation"},
		{"missing fixed threshold", func() []Scored { return []Scored{good()} }, ws,
			Options{Thresholds: map[string]float64{ProfileStandard: 0.5}}, "no fixed threshold"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := EvaluateOptions(tc.files(), tc.windows, DefaultProfiles(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
