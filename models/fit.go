package models

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// FitMetrics describes how a detector behaved over its training history:
// what a model artifact records so that a person can judge a version
// before and after it goes live.
type FitMetrics struct {
	Readings int     `json:"readings"`
	WarmUp   int     `json:"warm_up_readings"` // readings that scored 0 while the model learned
	P50      float64 `json:"score_p50"`
	P99      float64 `json:"score_p99"`
	Max      float64 `json:"score_max"`
	// AlarmRate is the share of scored readings at or above the threshold;
	// on history believed normal it estimates the false-alarm rate.
	AlarmRate float64 `json:"alarm_rate"`
	Threshold float64 `json:"threshold"`
}

// Fit runs a fresh detector of spec over a stored series, through the same
// Update the live pipeline calls, and reports how it scored.
func Fit(spec Spec, ts []time.Time, xs []float64, threshold float64) (FitMetrics, error) {
	if len(ts) != len(xs) {
		return FitMetrics{}, errors.New("fit: one timestamp per value is required")
	}
	if len(xs) == 0 {
		return FitMetrics{}, errors.New("fit: no history to train on")
	}
	d, err := New(spec)
	if err != nil {
		return FitMetrics{}, fmt.Errorf("fit: %w", err)
	}
	scores := ScoreSeries(d, ts, xs)
	m := FitMetrics{Readings: len(xs), Threshold: threshold}
	vals := make([]float64, 0, len(scores))
	for i, s := range scores {
		if s.Value == 0 && s.Deviation == 0 && i == m.WarmUp {
			m.WarmUp++
			continue
		}
		vals = append(vals, s.Value)
	}
	m.P50, m.P99, m.Max, m.AlarmRate = summarise(vals, threshold)
	return m, nil
}

// summarise returns the median, 99th percentile and maximum of scores and
// the share of them at or above threshold; all 0 when there are none. It
// sorts scores.
func summarise(scores []float64, threshold float64) (p50, p99, top, rate float64) {
	if len(scores) == 0 {
		return 0, 0, 0, 0
	}
	sort.Float64s(scores)
	q := func(p float64) float64 {
		return scores[int(math.Min(float64(len(scores)-1), p*float64(len(scores))))]
	}
	alarms := len(scores) - sort.SearchFloat64s(scores, threshold)
	return q(0.5), q(0.99), scores[len(scores)-1], float64(alarms) / float64(len(scores))
}
