package nab

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// WriteResults writes a detector's scores in NAB's results layout,
// dir/<detector>/<category>/<detector>_<file>.csv with the columns
// timestamp, value and anomaly_score, which NAB's own tools read. scores[i]
// holds one anomaly score per row of series[i]. Scores are written in the
// shortest form that parses back to the same float64.
func WriteResults(dir, detector string, series []Series, scores [][]float64) error {
	if detector == "" || strings.ContainsAny(detector, `/\`) {
		return fmt.Errorf("nab: bad detector name %q", detector)
	}
	if len(series) != len(scores) {
		return fmt.Errorf("nab: %d series but %d score lists", len(series), len(scores))
	}
	for i, s := range series {
		category, file, ok := strings.Cut(s.Name, "/")
		if !ok || category == "" || file == "" || strings.Contains(file, "/") {
			return fmt.Errorf("nab: series name %q is not <category>/<file>.csv", s.Name)
		}
		if len(scores[i]) != len(s.Timestamps) || len(s.Values) != len(s.Timestamps) {
			return fmt.Errorf("nab: %s: %d timestamps, %d values, %d scores", s.Name, len(s.Timestamps), len(s.Values), len(scores[i]))
		}
		folder := filepath.Join(dir, detector, category)
		if err := os.MkdirAll(folder, 0o755); err != nil {
			return fmt.Errorf("nab: %w", err)
		}
		if err := writeResultFile(filepath.Join(folder, detector+"_"+file), s, scores[i]); err != nil {
			return err
		}
	}
	return nil
}

func writeResultFile(path string, s Series, scores []float64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("nab: %w", err)
	}
	w := bufio.NewWriter(f)
	w.WriteString("timestamp,value,anomaly_score\n")
	for i, t := range s.Timestamps {
		w.WriteString(t.Format("2006-01-02 15:04:05.999999"))
		w.WriteByte(',')
		w.WriteString(strconv.FormatFloat(s.Values[i], 'g', -1, 64))
		w.WriteByte(',')
		w.WriteString(strconv.FormatFloat(scores[i], 'g', -1, 64))
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("nab: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("nab: write %s: %w", path, err)
	}
	return nil
}
