package models

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-iot/vigil/models/nab"
)

// nabDir returns the NAB dataset folder, from VIGIL_NAB_DIR or the shared
// folder next to the repository, and skips the test when it is absent.
func nabDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("VIGIL_NAB_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "datasets", "nab")
	}
	if _, err := os.Stat(filepath.Join(dir, "labels", "combined_windows.json")); err != nil {
		t.Skipf("NAB dataset not found at %s; set VIGIL_NAB_DIR", dir)
	}
	return dir
}

// nabFloor is the standard-profile score the default model must keep on
// the 44-file development set: a regression guard set just under what it
// scores now (74.45). Issue 4 asks for at least 72 (Numenta HTM scores 71.4
// on these files, ARTime 75.4); see DefaultSpec.
const nabFloor = 74

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
			t.Errorf("standard profile scores %.2f, below the floor %d", r.Normalized, nabFloor)
		}
	}
}
