package models

import (
	"testing"

	"github.com/vigil-iot/vigil/internal/nabtest"
	"github.com/vigil-iot/vigil/models/nab"
)

// nabDir returns the NAB dataset folder (see nabtest.Dir).
func nabDir(t testing.TB) string { return nabtest.Dir(t) }

// nabFloor is the standard-profile score the default model must keep on
// the 44-file development set: a regression guard set under what it scores
// now (74.06; 74.67 before the drift member joined). Issue 4 asks for at
// least 72 (Numenta HTM scores 71.4 on these files, ARTime 75.4); see
// DefaultSpec.
const nabFloor = 73.5

// TestNABDefault runs the default model over the NAB development set and
// checks its normalised standard-profile score, with thresholds optimised
// as NAB does.
func TestNABDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("NAB run skipped in -short mode")
	}
	c, err := LoadCorpus(nabDir(t))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Evaluate(DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		t.Logf("%-20s normalised %6.2f at threshold %.4f (TP rows %d, FP rows %d)", r.Profile, r.Normalized, r.Threshold, r.TP, r.FP)
		if r.Profile == nab.ProfileStandard && !(r.Normalized >= nabFloor) {
			t.Errorf("standard profile scores %.2f, below the floor %.1f", r.Normalized, nabFloor)
		}
	}
}
