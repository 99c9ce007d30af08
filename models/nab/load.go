package nab

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TimeLayout is the timestamp layout of NAB data files and labels. When
// parsing, fractional seconds after the seconds field are also accepted.
const TimeLayout = time.DateTime

// Series is one NAB data file.
type Series struct {
	// Name is the file's key in the label files: "<category>/<file>.csv",
	// with a forward slash whatever the operating system.
	Name string
	// Timestamps holds one timestamp per row, in file order, in UTC.
	Timestamps []time.Time
	// Values holds one reading per row, in file order.
	Values []float64
}

// Window is one labelled anomaly window; both ends are inclusive and must
// be timestamps of the file's rows.
type Window struct {
	Start, End time.Time
}

// Windows maps a file's key ("<category>/<file>.csv") to its labelled
// anomaly windows. A file without anomalies has an empty list.
type Windows map[string][]Window

// Profile is a NAB cost matrix: the weights of true positives, false
// negatives, false positives and true negatives.
type Profile struct {
	// Name identifies the profile, e.g. "standard".
	Name string
	// TPWeight scales the reward of a detected window.
	TPWeight float64
	// FNWeight is the cost of a missed window.
	FNWeight float64
	// FPWeight scales the cost of a false positive.
	FPWeight float64
	// TNWeight is part of NAB's cost matrices but unused by its scoring;
	// LoadProfiles leaves it zero when the file omits it.
	TNWeight float64
}

// Names of NAB's three standard profiles.
const (
	ProfileStandard = "standard"
	ProfileLowFP    = "reward_low_FP_rate"
	ProfileLowFN    = "reward_low_FN_rate"
)

// DefaultProfiles returns NAB v1.1's three profiles (config/profiles.json):
// standard, reward_low_FP_rate and reward_low_FN_rate, in that order.
func DefaultProfiles() []Profile {
	return []Profile{
		{Name: ProfileStandard, TPWeight: 1, FNWeight: 1, FPWeight: 0.11, TNWeight: 1},
		{Name: ProfileLowFP, TPWeight: 1, FNWeight: 1, FPWeight: 0.22, TNWeight: 1},
		{Name: ProfileLowFN, TPWeight: 1, FNWeight: 2, FPWeight: 0.11, TNWeight: 1},
	}
}

// ParseTime parses a NAB timestamp such as "2014-04-10 07:15:00" or
// "2014-04-10 07:15:00.000000" as UTC. An ISO 8601 "T" separator and an
// RFC 3339 zone offset are accepted too; zoned times are converted to UTC.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, layout := range []string{TimeLayout, "2006-01-02T15:04:05", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("nab: bad timestamp %q", s)
}

// LoadCorpus reads every data file under dataDir, laid out as NAB's data
// folder (<category>/<file>.csv), and returns the series sorted by name.
func LoadCorpus(dataDir string) ([]Series, error) {
	paths, err := filepath.Glob(filepath.Join(dataDir, "*", "*.csv"))
	if err != nil {
		return nil, fmt.Errorf("nab: list %s: %w", dataDir, err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("nab: no <category>/<file>.csv under %s", dataDir)
	}
	out := make([]Series, 0, len(paths))
	for _, p := range paths {
		name := filepath.Base(filepath.Dir(p)) + "/" + filepath.Base(p)
		s, err := LoadSeries(p, name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Series) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// LoadSeries reads one NAB data file (a CSV with a header naming the
// columns timestamp and value) and gives it the key name.
func LoadSeries(path, name string) (Series, error) {
	f, err := os.Open(path)
	if err != nil {
		return Series{}, fmt.Errorf("nab: %w", err)
	}
	defer f.Close()
	s, err := readSeries(f, name)
	if err != nil {
		return Series{}, fmt.Errorf("nab: read %s: %w", path, err)
	}
	return s, nil
}

func readSeries(r io.Reader, name string) (Series, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if err == io.EOF {
		return Series{}, errors.New("empty file")
	}
	if err != nil {
		return Series{}, err
	}
	tCol, vCol := -1, -1
	for i, h := range header {
		switch strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")) {
		case "timestamp":
			tCol = i
		case "value":
			vCol = i
		}
	}
	if tCol < 0 || vCol < 0 {
		return Series{}, fmt.Errorf("header %q lacks timestamp or value", header)
	}
	s := Series{Name: name}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Series{}, err
		}
		// The record's line in the file: blank lines are skipped, so it is
		// not the record number.
		line, _ := cr.FieldPos(0)
		t, err := ParseTime(rec[tCol])
		if err != nil {
			return Series{}, fmt.Errorf("line %d: %w", line, err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rec[vCol]), 64)
		if err != nil {
			return Series{}, fmt.Errorf("line %d: %w", line, err)
		}
		s.Timestamps = append(s.Timestamps, t)
		s.Values = append(s.Values, v)
	}
	return s, nil
}

// LoadWindows reads a NAB windows file such as labels/combined_windows.json:
// a JSON object mapping each file's key to a list of [start, end] timestamp
// pairs.
func LoadWindows(path string) (Windows, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nab: %w", err)
	}
	var raw map[string][][]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("nab: parse windows %s: %w", path, err)
	}
	out := make(Windows, len(raw))
	for key, pairs := range raw {
		ws := make([]Window, 0, len(pairs))
		for _, p := range pairs {
			if len(p) != 2 {
				return nil, fmt.Errorf("nab: windows %s: %s: window %q is not a [start, end] pair", path, key, p)
			}
			start, err := ParseTime(p[0])
			if err != nil {
				return nil, fmt.Errorf("nab: windows %s: %s: %w", path, key, err)
			}
			end, err := ParseTime(p[1])
			if err != nil {
				return nil, fmt.Errorf("nab: windows %s: %s: %w", path, key, err)
			}
			if end.Before(start) {
				return nil, fmt.Errorf("nab: windows %s: %s: window ends before it starts (%s)", path, key, p)
			}
			ws = append(ws, Window{Start: start, End: end})
		}
		out[key] = ws
	}
	return out, nil
}

// LoadProfiles reads a NAB profiles file (config/profiles.json): a JSON
// object mapping each profile name to {"CostMatrix": {"tpWeight": ...,
// "fnWeight": ..., "fpWeight": ..., "tnWeight": ...}}. The three standard
// profiles come first, in DefaultProfiles order, then any others by name.
func LoadProfiles(path string) ([]Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nab: %w", err)
	}
	type costMatrix struct {
		TP *float64 `json:"tpWeight"`
		FN *float64 `json:"fnWeight"`
		FP *float64 `json:"fpWeight"`
		TN *float64 `json:"tnWeight"`
	}
	var raw map[string]struct {
		CostMatrix *costMatrix `json:"CostMatrix"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("nab: parse profiles %s: %w", path, err)
	}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	rank := func(n string) int {
		switch n {
		case ProfileStandard:
			return 0
		case ProfileLowFP:
			return 1
		case ProfileLowFN:
			return 2
		}
		return 3
	}
	slices.SortFunc(names, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	out := make([]Profile, 0, len(names))
	for _, name := range names {
		cm := raw[name].CostMatrix
		if cm == nil || cm.TP == nil || cm.FN == nil || cm.FP == nil {
			return nil, fmt.Errorf("nab: profiles %s: %s lacks a CostMatrix with tpWeight, fnWeight and fpWeight", path, name)
		}
		p := Profile{Name: name, TPWeight: *cm.TP, FNWeight: *cm.FN, FPWeight: *cm.FP}
		if cm.TN != nil {
			p.TNWeight = *cm.TN
		}
		out = append(out, p)
	}
	return out, nil
}
