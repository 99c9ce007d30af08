package features

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/internal/nabtest"
	"github.com/vigil-iot/vigil/models/nab"
)

// nabDir returns the NAB dataset folder (see nabtest.Dir).
func nabDir(t testing.TB) string { return nabtest.Dir(t) }

// readNAB reads one NAB data file (timestamp,value with a header row).
func readNAB(t testing.TB, path string) ([]time.Time, []float64) {
	t.Helper()
	s, err := nab.LoadSeries(path, filepath.Base(path))
	if err != nil {
		t.Fatal(err)
	}
	return s.Timestamps, s.Values
}
