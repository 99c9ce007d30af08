package nab

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2014, 4, 10, 7, 15, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "2014-04-10 07:15:00", want: want},
		{in: "2014-04-10 07:15:00.000000", want: want},
		{in: " 2014-04-10 07:15:00 ", want: want},
		{in: "2014-04-10T07:15:00", want: want},
		{in: "2014-04-10T09:15:00+02:00", want: want},
		{in: "2014-04-10 07:15:00.5", want: want.Add(500 * time.Millisecond)},
		{in: "10/04/2014 07:15", bad: true},
		{in: "", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTime(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseTime(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) || got.Location() != time.UTC {
				t.Fatalf("ParseTime(%q) = %v, %v; want %v UTC", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestLoadCorpus(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "zeta", "b.csv"), "timestamp,value\n2014-01-01 00:00:00,1.5\n2014-01-01 00:05:00,-2\n")
	writeFile(t, filepath.Join(dir, "alpha", "a.csv"), "value,timestamp\n3,2014-01-01 00:00:00\n")
	writeFile(t, filepath.Join(dir, "alpha", "notes.txt"), "not data\n")
	got, err := LoadCorpus(dir)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2014, 1, 1, 0, 0, 0, 0, time.UTC)
	want := []Series{
		{Name: "alpha/a.csv", Timestamps: []time.Time{t1}, Values: []float64{3}},
		{Name: "zeta/b.csv", Timestamps: []time.Time{t1, t1.Add(5 * time.Minute)}, Values: []float64{1.5, -2}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadCorpus = %+v, want %+v", got, want)
	}

	bad := []struct {
		name, text, want string
	}{
		{"no value column", "timestamp,v\n2014-01-01 00:00:00,1\n", "lacks"},
		{"bad number", "timestamp,value\n2014-01-01 00:00:00,x\n", "line 2"},
		{"bad time", "timestamp,value\n2014-13-01 00:00:00,1\n", "line 2"},
		// Blank lines are skipped: the bad number is on line 5, the third
		// record.
		{"bad number after blank lines", "timestamp,value\n\n2014-01-01 00:00:00,1\n\n2014-01-01 00:05:00,x\n", "line 5:"},
		{"empty", "", "empty"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			writeFile(t, filepath.Join(d, "c", "f.csv"), tc.text)
			if _, err := LoadCorpus(d); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("no files", func(t *testing.T) {
		if _, err := LoadCorpus(t.TempDir()); err == nil {
			t.Fatal("no error for an empty folder")
		}
	})
}

func TestLoadWindows(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.json")
	writeFile(t, path, `{"c/a.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"]], "c/b.csv": []}`)
	got, err := LoadWindows(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Windows{
		"c/a.csv": {{Start: time.Date(2014, 4, 10, 7, 15, 0, 0, time.UTC), End: time.Date(2014, 4, 11, 16, 45, 0, 0, time.UTC)}},
		"c/b.csv": {},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadWindows = %+v, want %+v", got, want)
	}
	bad := []struct{ name, text, want string }{
		{"not json", `{`, "parse"},
		{"not a pair", `{"c/a.csv": [["2014-04-10 07:15:00"]]}`, "pair"},
		{"bad time", `{"c/a.csv": [["2014-04-10 07:15:00", "soon"]]}`, "bad timestamp"},
		{"reversed", `{"c/a.csv": [["2014-04-11 07:15:00", "2014-04-10 07:15:00"]]}`, "ends before"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "w.json")
			writeFile(t, p, tc.text)
			if _, err := LoadWindows(p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadProfiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.json")
	writeFile(t, path, `{
 "custom": {"CostMatrix": {"tpWeight": 2, "fnWeight": 3, "fpWeight": 0.5}},
 "reward_low_FN_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0}},
 "standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}}
}`)
	got, err := LoadProfiles(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Profile{
		{Name: ProfileStandard, TPWeight: 1, FNWeight: 1, FPWeight: 0.11, TNWeight: 1},
		{Name: ProfileLowFN, TPWeight: 1, FNWeight: 2, FPWeight: 0.11, TNWeight: 1},
		{Name: "custom", TPWeight: 2, FNWeight: 3, FPWeight: 0.5},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadProfiles = %+v, want %+v", got, want)
	}
	p := filepath.Join(t.TempDir(), "p.json")
	writeFile(t, p, `{"x": {"CostMatrix": {"tpWeight": 1}}}`)
	if _, err := LoadProfiles(p); err == nil || !strings.Contains(err.Error(), "lacks") {
		t.Fatalf("err = %v, want one about the missing weights", err)
	}
}

// TestDefaultProfilesMatchDataset checks the hard-coded profiles against
// the dataset's profiles.json.
func TestDefaultProfilesMatchDataset(t *testing.T) {
	dir := datasetDir(t)
	got, err := LoadProfiles(filepath.Join(dir, "profiles.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultProfiles(); !reflect.DeepEqual(got, want) {
		t.Fatalf("profiles.json gives %+v, DefaultProfiles %+v", got, want)
	}
}

func TestWriteResults(t *testing.T) {
	t1 := time.Date(2014, 1, 1, 0, 0, 0, 0, time.UTC)
	s := []Series{{Name: "cat/f.csv", Timestamps: []time.Time{t1, t1.Add(time.Minute)}, Values: []float64{1.5, 2}}}
	dir := t.TempDir()
	if err := WriteResults(dir, "det", s, [][]float64{{0.1, 1.0 / 3}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "det", "cat", "det_f.csv"))
	if err != nil {
		t.Fatal(err)
	}
	want := "timestamp,value,anomaly_score\n2014-01-01 00:00:00,1.5,0.1\n2014-01-01 00:01:00,2,0.3333333333333333\n"
	if string(b) != want {
		t.Fatalf("wrote %q, want %q", b, want)
	}
	if err := WriteResults(dir, "det", s, [][]float64{{0.1}}); err == nil {
		t.Fatal("no error for a short score list")
	}
	if err := WriteResults(dir, "a/b", s, [][]float64{{0.1, 0.2}}); err == nil {
		t.Fatal("no error for a detector name with a slash")
	}
}
