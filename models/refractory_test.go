package models

import (
	"math"
	"testing"
	"time"
)

// scripted is a Detector that returns given scores in turn.
type scripted struct {
	vals []float64
	i    int
}

func (s *scripted) Update(time.Time, float64) Score {
	v := s.vals[s.i%len(s.vals)]
	s.i++
	return Score{Value: v, Feature: "scripted"}
}

func TestRefractory(t *testing.T) {
	tests := []struct {
		name string
		cfg  RefractoryConfig
		in   []float64
		x    []float64 // readings; 0 when shorter than in
		want []float64
	}{
		{"no_rest", RefractoryConfig{Alarm: 0.5, Rest: 0}, []float64{0.9, 0.9, 0.2}, nil, []float64{0.9, 0.9, 0.2}},
		{"rest_2", RefractoryConfig{Alarm: 0.5, Rest: 2}, []float64{0.9, 0.9, 0.7, 0.8, 0.3}, nil, []float64{0.9, 0, 0, 0.8, 0}},
		{"below_alarm_passes", RefractoryConfig{Alarm: 0.5, Rest: 3}, []float64{0.4, 0.45, 0.6, 0.4}, nil, []float64{0.4, 0.45, 0.6, 0}},
		{"nan_does_not_count", RefractoryConfig{Alarm: 0.5, Rest: 1}, []float64{0.9, 0.9, 0.9}, []float64{1, math.NaN(), 1}, []float64{0.9, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Refractory{cfg: tc.cfg, inner: &scripted{vals: tc.in}}
			for i, want := range tc.want {
				x := 0.0
				if i < len(tc.x) {
					x = tc.x[i]
				}
				if got := d.Update(time.Time{}, x).Value; got != want {
					t.Fatalf("reading %d: score %v, want %v", i, got, want)
				}
			}
		})
	}
}

// TestRefractoryRepeatedSpikes checks the wrapper on a real detector: of
// two spikes 50 readings apart only the first is reported with a rest of
// 100, both with a rest of 10.
func TestRefractoryRepeatedSpikes(t *testing.T) {
	s := noisy(3000, 2000, 21, flat, func(i int, x float64) float64 {
		if i == 2000 || i == 2050 {
			return x + 15
		}
		return x
	})
	for _, tc := range []struct {
		rest int
		want int
	}{{100, 1}, {10, 2}} {
		d, err := NewRefractory(RefractoryConfig{Model: Spec{Kind: KindEWMAZ}, Alarm: 0.5, Rest: tc.rest})
		if err != nil {
			t.Fatal(err)
		}
		alarms := 0
		for i, sc := range ScoreSeries(d, s.ts, s.xs) {
			if sc.Value >= 0.5 {
				if i != 2000 && i != 2050 {
					t.Fatalf("rest %d: reading %d scored %.3f", tc.rest, i, sc.Value)
				}
				alarms++
			}
		}
		if alarms != tc.want {
			t.Errorf("rest %d: %d alarms, want %d", tc.rest, alarms, tc.want)
		}
	}
}
