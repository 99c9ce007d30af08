package nabtest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Dir returns the dataset folder (holding data/, labels/ and
// profiles.json), or skips the test when it is not there.
func Dir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("VIGIL_NAB_DIR")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "testdata", "nab")
	}
	if _, err := os.Stat(filepath.Join(dir, "labels", "combined_windows.json")); err != nil {
		tb.Skipf("NAB dataset not found at %s; set VIGIL_NAB_DIR to its folder (data/, labels/, profiles.json)", dir)
	}
	return dir
}
