package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/vigil-iot/vigil/store"
)

// MaxReadingsPerMessage bounds how many readings one message may carry.
const MaxReadingsPerMessage = 100_000

// Reading is one decoded value of one metric at one time.
type Reading struct {
	TS     time.Time
	Metric string
	Value  float64
}

// Readings is a decoded message in columns: reading i is the value
// Value[i] of the metric Names[Metric[i]] at TS[i], in microseconds since
// the Unix epoch (the store's resolution). Each metric name is held once.
// Columns of plain numbers cost the garbage collector nothing to scan and
// go into a batch's Arrow columns without conversion.
type Readings struct {
	Names  []string
	Metric []int32
	TS     []int64
	Value  []float64
}

// Len returns how many readings there are.
func (r Readings) Len() int { return len(r.Value) }

// At returns reading i.
func (r Readings) At(i int) Reading {
	return Reading{TS: time.UnixMicro(r.TS[i]).UTC(), Metric: r.Names[r.Metric[i]], Value: r.Value[i]}
}

// AppendTo adds the readings to a batch's columns as readings of device,
// the metric Names[k] being stored under metricIDs[k].
func (r Readings) AppendTo(c *store.TelemetryColumns, device int32, metricIDs []int16) {
	c.TS = append(c.TS, r.TS...)
	c.Value = append(c.Value, r.Value...)
	for _, k := range r.Metric {
		c.MetricID = append(c.MetricID, metricIDs[k])
		c.DeviceID = append(c.DeviceID, device)
	}
}

// columns turns readings into Readings.
func columns(rs []Reading) Readings {
	out := Readings{Metric: make([]int32, len(rs)), TS: make([]int64, len(rs)), Value: make([]float64, len(rs))}
	index := map[string]int32{}
	for i, r := range rs {
		k, ok := index[r.Metric]
		if !ok {
			k = int32(len(out.Names))
			index[r.Metric] = k
			out.Names = append(out.Names, r.Metric)
		}
		out.Metric[i], out.TS[i], out.Value[i] = k, r.TS.UnixMicro(), r.Value
	}
	return out
}

// DecodeError says why a body is not valid telemetry, in words meant for
// the person who wrote the device's firmware.
type DecodeError struct {
	Reason string
}

// Error returns the reason.
func (e *DecodeError) Error() string { return e.Reason }

func invalid(format string, args ...any) error {
	return &DecodeError{Reason: fmt.Sprintf(format, args...)}
}

const example = `{"temperature": 71.2, "vibration": 0.31}`

// Decode parses a telemetry body. A body is a JSON object mapping metric
// names to numbers, with an optional "ts" (RFC 3339) that dates all of its
// readings, or a JSON array of such objects. Readings without "ts" are dated
// received. Readings come back in body order for arrays and sorted by metric
// name within an object. Any invalid part makes the whole body invalid, and
// the error is a *DecodeError.
func Decode(body []byte, received time.Time) (Readings, error) {
	return decodeInto(body, received, Readings{})
}

// decodeInto is Decode that puts the readings into the columns of into
// where they have room.
func decodeInto(body []byte, received time.Time, into Readings) (Readings, error) {
	if rs, ok := decodeFast(body, received, into); ok {
		return rs, nil
	}
	rs, err := decodeGeneral(body, received)
	if err != nil {
		return Readings{}, err
	}
	return columns(rs), nil
}

// decodeGeneral is Decode through encoding/json: slower, but it accepts
// every valid body and finds the words for every invalid one.
func decodeGeneral(body []byte, received time.Time) ([]Reading, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, invalid("empty body: send a JSON object such as %s", example)
	}
	var out []Reading
	switch trimmed[0] {
	case '{':
		return decodeObject(trimmed, received, "", out)
	case '[':
		var objs []json.RawMessage
		if err := json.Unmarshal(trimmed, &objs); err != nil {
			return nil, invalid("body is not valid JSON: %v", err)
		}
		if len(objs) == 0 {
			return nil, invalid("empty array: send at least one object such as %s", example)
		}
		for i, o := range objs {
			if t := bytes.TrimSpace(o); len(t) == 0 || t[0] != '{' {
				return nil, invalid("element %d of the array is not an object: each element must look like %s", i, example)
			}
			var err error
			if out, err = decodeObject(o, received, fmt.Sprintf("element %d: ", i), out); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		if !json.Valid(trimmed) {
			return nil, invalid("body is not JSON: send a JSON object such as %s", example)
		}
		return nil, invalid("body is a JSON %s: send a JSON object of metric names to numbers such as %s", kind(trimmed), example)
	}
}

func decodeObject(raw []byte, received time.Time, where string, out []Reading) ([]Reading, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, invalid("%sbody is not valid JSON: %v", where, err)
	}
	ts := received
	if t, ok := fields["ts"]; ok {
		var s string
		if err := json.Unmarshal(t, &s); err != nil {
			return nil, invalid(`%s"ts" is a JSON %s: it must be an RFC 3339 string such as "2026-11-29T04:50:00Z"`, where, kind(t))
		}
		p, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, invalid(`%s"ts" %q is not an RFC 3339 timestamp such as "2026-11-29T04:50:00Z"`, where, s)
		}
		ts = p.UTC()
		delete(fields, "ts")
	}
	if len(fields) == 0 {
		return nil, invalid("%sno readings: send at least one metric such as %s", where, example)
	}
	if len(out)+len(fields) > MaxReadingsPerMessage {
		return nil, invalid("more than %d readings in one message: split it", MaxReadingsPerMessage)
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		if !store.ValidMetricName(name) {
			return nil, invalid("%smetric name %q is not allowed: use 1-64 letters, digits or _ . : - starting with a letter or _", where, name)
		}
		v := fields[name]
		var f float64
		if k := kind(v); k != "number" {
			return nil, invalid("%smetric %q is a JSON %s: values must be JSON numbers, e.g. {%q: 71.2}", where, name, k, name)
		}
		if err := json.Unmarshal(v, &f); err != nil || math.IsInf(f, 0) {
			return nil, invalid("%smetric %q: %s does not fit in a 64-bit float", where, name, v)
		}
		out = append(out, Reading{TS: ts, Metric: name, Value: f})
	}
	return out, nil
}

// kind names the JSON type of a raw value.
func kind(raw []byte) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}
