package models

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vigil-iot/vigil/models/nab"
)

// Corpus is a labelled benchmark corpus in NAB's layout, loaded into memory.
type Corpus struct {
	// Series holds the data files, sorted by name.
	Series []nab.Series
	// Windows holds the labelled anomaly windows of every file.
	Windows nab.Windows
	// Profiles holds the scoring profiles (cost matrices).
	Profiles []nab.Profile
}

// LoadCorpus reads a corpus laid out as NAB's repository: dir/data/<category>/<file>.csv,
// dir/labels/combined_windows.json and, if present, dir/profiles.json (or
// dir/config/profiles.json); without a profiles file NAB's three standard
// profiles are used.
func LoadCorpus(dir string) (*Corpus, error) {
	series, err := nab.LoadCorpus(filepath.Join(dir, "data"))
	if err != nil {
		return nil, fmt.Errorf("load corpus: %w", err)
	}
	windows, err := nab.LoadWindows(filepath.Join(dir, "labels", "combined_windows.json"))
	if err != nil {
		return nil, fmt.Errorf("load corpus: %w", err)
	}
	profiles := nab.DefaultProfiles()
	for _, p := range []string{filepath.Join(dir, "profiles.json"), filepath.Join(dir, "config", "profiles.json")} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if profiles, err = nab.LoadProfiles(p); err != nil {
			return nil, fmt.Errorf("load corpus: %w", err)
		}
		break
	}
	return &Corpus{Series: series, Windows: windows, Profiles: profiles}, nil
}

// Run scores every series of the corpus with a fresh detector built from
// spec, causally, and returns one score list per series.
func (c *Corpus) Run(spec Spec) ([]nab.Scored, error) {
	out := make([]nab.Scored, len(c.Series))
	for i, s := range c.Series {
		d, err := New(spec)
		if err != nil {
			return nil, err
		}
		scores := make([]float64, len(s.Values))
		for k, x := range s.Values {
			scores[k] = d.Update(s.Timestamps[k], x).Value
		}
		out[i] = nab.Scored{Name: s.Name, Timestamps: s.Timestamps, Scores: scores}
	}
	return out, nil
}

// Evaluate runs spec over the corpus and scores it with NAB's rules, one
// Result per profile with the threshold optimised as NAB does; a Result's
// Normalized field is the number NAB's scoreboard reports.
func (c *Corpus) Evaluate(spec Spec) ([]nab.Result, error) {
	scored, err := c.Run(spec)
	if err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", spec.Kind, err)
	}
	res, err := nab.Evaluate(scored, c.Windows, c.Profiles)
	if err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", spec.Kind, err)
	}
	return res, nil
}
