package nab

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vigil-iot/vigil/internal/nabtest"
)

// datasetDir locates the NAB dataset (see nabtest.Dir).
func datasetDir(t *testing.T) string { return nabtest.Dir(t) }

// refDetector is the name of the test detector in testdata.
const refDetector = "zscore100"

// zscore100 is a deliberately simple causal detector for the cross-check:
// the |z| of each value against the mean and sample standard deviation of
// the (up to) 100 values before it, mapped to [0, 1) by |z|/(|z|+3) and
// rounded to 3 decimals, so that many rows share a score and the sweep's
// tie handling is exercised. A value that differs from a constant history
// scores 1; the first two rows score 0. Products are wrapped in float64()
// so that no platform fuses them into FMA instructions, which would change
// the rounding and make the scores platform-dependent.
func zscore100(values []float64) []float64 {
	const window = 100
	out := make([]float64, len(values))
	for i, x := range values {
		hist := values[max(0, i-window):i]
		if len(hist) < 2 {
			continue
		}
		sum := 0.0
		for _, v := range hist {
			sum += v
		}
		mean := sum / float64(len(hist))
		sq := 0.0
		for _, v := range hist {
			d := v - mean
			sq += float64(d * d)
		}
		sd := math.Sqrt(sq / float64(len(hist)-1))
		var s float64
		switch {
		case sd > 0:
			z := math.Abs(x-mean) / sd
			s = z / (z + 3)
		case x != mean:
			s = 1
		}
		out[i] = math.Round(float64(s*1000)) / 1000
	}
	return out
}

// reference is testdata/reference_<detector>.json: what the Python
// reference scorer reported for the detector (see testdata/README.md).
type reference struct {
	Detector string `json:"detector"`
	Profiles map[string]struct {
		Threshold  float64 `json:"threshold"`
		Normalised float64 `json:"normalised"`
	} `json:"profiles"`
	StandardPerFileRaw map[string]float64 `json:"standard_per_file_raw"`
}

// TestReferenceAgreement runs zscore100 over the whole dataset and checks
// the scores against the reference scorer's. With VIGIL_NAB_WRITE_RESULTS
// set to a folder it also writes the detector's results there, in the
// layout the reference scorer reads.
func TestReferenceAgreement(t *testing.T) {
	dir := datasetDir(t)
	corpus, err := LoadCorpus(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	windows, err := LoadWindows(filepath.Join(dir, "labels", "combined_windows.json"))
	if err != nil {
		t.Fatal(err)
	}
	profiles, err := LoadProfiles(filepath.Join(dir, "profiles.json"))
	if err != nil {
		t.Fatal(err)
	}

	names := make([]string, 0, len(corpus))
	files := make([]Scored, len(corpus))
	all := make([][]float64, len(corpus))
	for i, s := range corpus {
		names = append(names, s.Name)
		all[i] = zscore100(s.Values)
		files[i] = Scored{Name: s.Name, Timestamps: s.Timestamps, Scores: all[i]}
	}
	var labelled []string
	for k := range windows {
		labelled = append(labelled, k)
	}
	slices.Sort(labelled)
	if !slices.Equal(names, labelled) {
		t.Fatalf("data files %v differ from labelled files %v", names, labelled)
	}
	if out := os.Getenv("VIGIL_NAB_WRITE_RESULTS"); out != "" {
		if err := WriteResults(out, refDetector, corpus, all); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s results under %s", refDetector, out)
	}

	b, err := os.ReadFile(filepath.Join("testdata", "reference_"+refDetector+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}

	results, err := Evaluate(files, windows, profiles)
	if err != nil {
		t.Fatal(err)
	}
	const eps = 1e-6
	for _, r := range results {
		t.Run(r.Profile, func(t *testing.T) {
			want, ok := ref.Profiles[r.Profile]
			if !ok {
				t.Fatalf("no reference for profile %s", r.Profile)
			}
			t.Logf("normalised %.12f (reference %.12f, difference %.1e), threshold %v (reference %v)",
				r.Normalized, want.Normalised, r.Normalized-want.Normalised, r.Threshold, want.Threshold)
			if r.Threshold != want.Threshold {
				t.Errorf("threshold = %v, reference %v", r.Threshold, want.Threshold)
			}
			if math.Abs(r.Normalized-want.Normalised) > eps {
				t.Errorf("normalised = %.12f, reference %.12f", r.Normalized, want.Normalised)
			}
			if r.Profile != ProfileStandard {
				return
			}
			if len(r.Files) != len(ref.StandardPerFileRaw) {
				t.Errorf("%d files scored, reference has %d", len(r.Files), len(ref.StandardPerFileRaw))
			}
			worst := 0.0
			for _, f := range r.Files {
				w, ok := ref.StandardPerFileRaw[f.Name]
				if !ok {
					t.Errorf("%s: no reference raw score", f.Name)
					continue
				}
				worst = max(worst, math.Abs(f.Raw-w))
				if math.Abs(f.Raw-w) > eps {
					t.Errorf("%s: raw = %.12f, reference %.12f", f.Name, f.Raw, w)
				}
			}
			t.Logf("largest per-file raw difference %.1e", worst)
		})
	}
}
