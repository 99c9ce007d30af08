package models

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrCSVHeader is returned by ScoreCSV when the input has no usable header
// row.
var ErrCSVHeader = errors.New("csv needs a header row naming timestamp and value columns")

// csvTimeLayouts are the timestamp forms ScoreCSV reads, tried in order.
var csvTimeLayouts = []string{time.DateTime, "2006-01-02 15:04:05.999999999", time.RFC3339Nano}

// ParseTimestamp parses a timestamp as ScoreCSV does: "YYYY-MM-DD HH:MM:SS"
// (optionally with fractional seconds), taken as UTC, or RFC 3339.
func ParseTimestamp(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range csvTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad timestamp %q (want YYYY-MM-DD HH:MM:SS or RFC 3339)", s)
}

// ScoreCSV scores a stored series with a fresh detector built from spec.
// It reads CSV with a header row naming the columns timestamp and value
// (other columns are ignored; without those names the first two columns
// are taken), in time order, and writes timestamp,value,anomaly_score: one
// row per input row, in the same order, with the timestamp and value text
// exactly as read and the score in the shortest form that parses back to
// the same float64. The output depends only on spec and the input, byte for
// byte. A value that is empty or not a number gets score 0 and is not
// learned; a bad timestamp is an error naming its line.
func ScoreCSV(spec Spec, in io.Reader, out io.Writer) error {
	d, err := New(spec)
	if err != nil {
		return fmt.Errorf("score csv: %w", err)
	}
	w := bufio.NewWriter(out)
	w.WriteString("timestamp,value,anomaly_score\n")
	var buf []byte
	err = readCSV(in, func(_ int, tsText, valText string, ts time.Time) error {
		x, perr := strconv.ParseFloat(strings.TrimSpace(valText), 64)
		score := 0.0
		if perr == nil {
			score = d.Update(ts, x).Value
		}
		buf = buf[:0]
		buf = appendCSVField(buf, tsText)
		buf = append(buf, ',')
		buf = appendCSVField(buf, valText)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, score, 'g', -1, 64)
		buf = append(buf, '\n')
		_, err := w.Write(buf)
		return err
	})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return fmt.Errorf("score csv: %w", err)
	}
	return nil
}

// ReadSeriesCSV reads a timestamp,value CSV as ScoreCSV does (header row,
// timestamp and value columns found by name) and returns the series. A
// value that is not a number is an error naming its line.
func ReadSeriesCSV(in io.Reader) ([]time.Time, []float64, error) {
	var ts []time.Time
	var xs []float64
	err := readCSV(in, func(line int, _, valText string, t time.Time) error {
		x, err := strconv.ParseFloat(strings.TrimSpace(valText), 64)
		if err != nil {
			return fmt.Errorf("line %d: value %q is not a number", line, valText)
		}
		ts, xs = append(ts, t), append(xs, x)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read csv: %w", err)
	}
	return ts, xs, nil
}

// readCSV reads the header of a timestamp,value CSV, then calls row for
// every data row, in order, with its line number, the timestamp and value
// text as read and the parsed timestamp. A bad timestamp is an error naming its line.
func readCSV(in io.Reader, row func(line int, tsText, valText string, ts time.Time) error) error {
	r := csv.NewReader(in)
	r.ReuseRecord = true
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err == io.EOF {
		return ErrCSVHeader
	}
	if err != nil {
		return err
	}
	tcol, vcol := 0, 1
	for i, h := range header {
		switch strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))) {
		case "timestamp":
			tcol = i
		case "value":
			vcol = i
		}
	}
	if len(header) < 2 || tcol == vcol {
		return ErrCSVHeader
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return nil
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return err
		}
		if len(rec) <= max(tcol, vcol) {
			return fmt.Errorf("line %d: %d fields, need %d", line, len(rec), max(tcol, vcol)+1)
		}
		ts, err := ParseTimestamp(rec[tcol])
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if err := row(line, rec[tcol], rec[vcol], ts); err != nil {
			return err
		}
	}
}

// appendCSVField appends s, quoted as RFC 4180 requires when it holds a
// comma, quote or line break.
func appendCSVField(dst []byte, s string) []byte {
	if !strings.ContainsAny(s, ",\"\r\n") {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	dst = append(dst, strings.ReplaceAll(s, `"`, `""`)...)
	return append(dst, '"')
}

// ReadVectorCSV reads a CSV of several metrics of one device: a header row
// naming a timestamp column ("timestamp", else the first column) and one
// column per metric, then one row per timestamp, in time order. It returns
// the metric names in column order and one row of values per timestamp,
// NaN where a cell is empty (the metric was not read then). A value that is
// not a number, or a bad timestamp, is an error naming its line.
func ReadVectorCSV(in io.Reader) (metrics []string, ts []time.Time, rows [][]float64, err error) {
	r := csv.NewReader(in)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil && err != io.EOF {
		return nil, nil, nil, fmt.Errorf("read csv: %w", err)
	}
	tcol := 0
	for i, h := range header {
		if strings.EqualFold(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")), "timestamp") {
			tcol = i
		}
	}
	var cols []int
	for i, h := range header {
		if i != tcol {
			cols, metrics = append(cols, i), append(metrics, strings.TrimSpace(h))
		}
	}
	if len(cols) == 0 {
		return nil, nil, nil, errors.New("read csv: needs a header row timestamp,METRIC,METRIC,... with a column per metric")
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return metrics, ts, rows, nil
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read csv: %w", err)
		}
		if len(rec) != len(header) {
			return nil, nil, nil, fmt.Errorf("read csv: line %d: %d fields, the header has %d", line, len(rec), len(header))
		}
		t, err := ParseTimestamp(rec[tcol])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read csv: line %d: %w", line, err)
		}
		row := make([]float64, len(cols))
		for j, c := range cols {
			s := strings.TrimSpace(rec[c])
			if s == "" {
				row[j] = math.NaN()
				continue
			}
			if row[j], err = strconv.ParseFloat(s, 64); err != nil {
				return nil, nil, nil, fmt.Errorf("read csv: line %d: %s %q is not a number", line, metrics[j], rec[c])
			}
		}
		ts, rows = append(ts, t), append(rows, row)
	}
}
