package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
)

// Score is a detector's verdict on one reading.
type Score struct {
	// Value is the anomaly score in [0, 1]; 0.5 and above is anomalous for
	// the default Monitor threshold.
	Value float64
	// Feature names the feature that drove the score, e.g. "ewma_z".
	Feature string
	// Observed is the reading's value and Expected what the model predicted.
	Observed, Expected float64
	// Deviation is how far Observed is from Expected in the model's own
	// unit of spread (a z-score for z-score models).
	Deviation float64
}

// Explain returns a short sentence a person can act on, for example
// "temperature 83.20 is 9.1σ above its EWMA baseline 71.05 (ewma_z)".
func (s Score) Explain(metric string) string {
	dir := "above"
	dev := s.Deviation
	if dev < 0 {
		dir, dev = "below", -dev
	}
	return fmt.Sprintf("%s %.2f is %.1fσ %s its baseline %.2f (%s)", metric, s.Observed, dev, dir, s.Expected, s.Feature)
}

// Detector scores one series, one reading at a time, in time order.
//
// Implementations are causal: the score of a reading depends only on that
// reading and earlier ones. A Detector is not safe for concurrent use; each
// series owns one.
type Detector interface {
	Update(ts time.Time, x float64) Score
}

// Spec names a detector kind and its parameters. It is the unit the model
// registry versions and the argument of New.
type Spec struct {
	Kind   string          `json:"kind"`
	Params json.RawMessage `json:"params,omitempty"`
}

// ParseSpec decodes a Spec from JSON a person wrote, {"kind": "...",
// "params": {...}}. Unlike json.Unmarshal it refuses unknown fields, so a
// misspelt "params" is an error rather than a model silently run with its
// defaults. It does not build the detector (New does, and refuses unknown
// params).
func ParseSpec(b []byte) (Spec, error) {
	var spec Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return Spec{}, fmt.Errorf(`model spec must be JSON {"kind": "...", "params": {...}}: %w`, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Spec{}, errors.New(`model spec must be one JSON object {"kind": "...", "params": {...}}, with nothing after it`)
	}
	return spec, nil
}

// Factory builds a Detector from JSON parameters; empty params mean defaults.
type Factory func(params json.RawMessage) (Detector, error)

// factories maps a Spec.Kind to its constructor. It is written only at
// package initialisation (here and in the init of ensemble.go, for the kinds
// that build other kinds) and read-only afterwards.
var factories = map[string]Factory{
	KindEWMAZ:     factoryOf(KindEWMAZ, DefaultEWMAZConfig, NewEWMAZ),
	KindRobustZ:   factoryOf(KindRobustZ, DefaultRobustZConfig, NewRobustZ),
	KindSpike:     factoryOf(KindSpike, DefaultSpikeConfig, NewSpike),
	KindCUSUM:     factoryOf(KindCUSUM, DefaultCUSUMConfig, NewCUSUM),
	KindEWMAChart: factoryOf(KindEWMAChart, DefaultEWMAChartConfig, NewEWMAChart),
	KindSeasonal:  factoryOf(KindSeasonal, DefaultSeasonalConfig, NewSeasonal),
	KindContext:   factoryOf(KindContext, DefaultContextConfig, NewContext),
}

// Kinds lists the detector kinds New accepts, sorted.
func Kinds() []string {
	out := make([]string, 0, len(factories))
	for k := range factories {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// New builds the detector a Spec names.
func New(spec Spec) (Detector, error) {
	f, ok := factories[spec.Kind]
	if !ok && IsVectorKind(spec.Kind) {
		return nil, fmt.Errorf("%q scores several metrics of a device together: register it as DEVICE/* and build it with NewVector", spec.Kind)
	}
	if !ok {
		return nil, fmt.Errorf("unknown model kind %q (known: %v)", spec.Kind, Kinds())
	}
	return f(spec.Params)
}

// ScoreSeries runs d over a stored series in order and returns one score per
// reading. It is the offline twin of feeding the same readings to a Monitor:
// both call d.Update and nothing else.
func ScoreSeries(d Detector, ts []time.Time, xs []float64) []Score {
	if len(ts) != len(xs) {
		panic("models: ScoreSeries needs one timestamp per value")
	}
	out := make([]Score, len(xs))
	for i := range xs {
		out[i] = d.Update(ts[i], xs[i])
	}
	return out
}
