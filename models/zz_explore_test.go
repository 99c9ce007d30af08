package models

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// Temporary exploration harness (to be deleted).
func TestZZExplore(t *testing.T) {
	specs := os.Getenv("VIGIL_SPECS")
	if specs == "" {
		t.Skip()
	}
	c, err := LoadCorpus(nabDir(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(specs, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var s Spec
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatal(err)
		}
		res, err := c.Evaluate(s)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%6.2f %6.2f %6.2f thr=%.4f  %s\n", res[0].Normalized, res[1].Normalized, res[2].Normalized, res[0].Threshold, line)
		if os.Getenv("VIGIL_FILES") != "" {
			for _, f := range res[0].Files {
				fmt.Printf("   %7.3f w=%d tp=%d fp=%d %s\n", f.Raw, f.ScorableWindows, f.TP, f.FP, f.Name)
			}
		}
	}
}
