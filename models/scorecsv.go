package models

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
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
	r := csv.NewReader(in)
	r.ReuseRecord = true
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err == io.EOF {
		return fmt.Errorf("score csv: %w", ErrCSVHeader)
	}
	if err != nil {
		return fmt.Errorf("score csv: %w", err)
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
		return fmt.Errorf("score csv: %w", ErrCSVHeader)
	}
	w := bufio.NewWriter(out)
	w.WriteString("timestamp,value,anomaly_score\n")
	var buf []byte
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return fmt.Errorf("score csv: %w", err)
		}
		if len(rec) <= max(tcol, vcol) {
			return fmt.Errorf("score csv: line %d: %d fields, need %d", line, len(rec), max(tcol, vcol)+1)
		}
		ts, err := ParseTimestamp(rec[tcol])
		if err != nil {
			return fmt.Errorf("score csv: line %d: %w", line, err)
		}
		x, perr := strconv.ParseFloat(strings.TrimSpace(rec[vcol]), 64)
		score := 0.0
		if perr == nil {
			score = d.Update(ts, x).Value
		}
		buf = buf[:0]
		buf = appendCSVField(buf, rec[tcol])
		buf = append(buf, ',')
		buf = appendCSVField(buf, rec[vcol])
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, score, 'g', -1, 64)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("score csv: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("score csv: %w", err)
	}
	return nil
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
