package features

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// nabDir returns the NAB dataset folder, from VIGIL_NAB_DIR or the shared
// folder next to the repository, and skips the test when it is absent.
func nabDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("VIGIL_NAB_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "datasets", "nab")
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Skipf("NAB dataset not found at %s; set VIGIL_NAB_DIR", dir)
	}
	return dir
}

// readNAB reads one NAB data file (timestamp,value with a header row).
func readNAB(t testing.TB, path string) ([]time.Time, []float64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	ts := make([]time.Time, 0, len(rows)-1)
	xs := make([]float64, 0, len(rows)-1)
	for _, r := range rows[1:] {
		tm, err := time.Parse(time.DateTime, r[0])
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		x, err := strconv.ParseFloat(r[1], 64)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		ts = append(ts, tm)
		xs = append(xs, x)
	}
	return ts, xs
}
