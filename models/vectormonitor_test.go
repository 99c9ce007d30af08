package models

import (
	"reflect"
	"testing"
	"time"
)

// recorder is a VectorDetector that records the vectors it is given and
// answers with a script of scores (0 once the script runs out).
type recorder struct {
	ts     []time.Time
	got    [][]float64
	scores []Score
}

func (s *recorder) Update(ts time.Time, xs []float64) Score {
	s.ts, s.got = append(s.ts, ts), append(s.got, append([]float64(nil), xs...))
	if len(s.scores) == 0 {
		return Score{Feature: "mahalanobis[0]"}
	}
	sc := s.scores[0]
	s.scores = s.scores[1:]
	return sc
}

func vsec(n int) time.Time { return vecT0.Add(time.Duration(n) * time.Second) }

func newVectorMonitor(t *testing.T, window int) *VectorMonitor {
	t.Helper()
	m, err := NewVectorMonitor(DefaultMonitorConfig(), window)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestVectorMonitorAssembles feeds readings one metric at a time and
// checks which vectors are scored, when, and with what values.
func TestVectorMonitorAssembles(t *testing.T) {
	m := newVectorMonitor(t, 4)
	det := &recorder{}
	if err := m.Set(1, det, []int16{3, 5}, vsec(0)); err != nil {
		t.Fatal(err)
	}
	type reading struct {
		dev    int32
		metric int16
		at     int
		x      float64
		scored bool
	}
	for i, r := range []reading{
		{1, 3, 1, 10, false},
		{1, 9, 1, 99, false}, // not a metric of the model
		{2, 3, 1, 77, false}, // a device without a vector model
		{1, 5, 1, 11, true},  // completes t1
		{1, 5, 2, 21, false}, // t2 stays incomplete
		{1, 5, 4, 41, false}, // t4 waits for metric 3
		{1, 3, 3, 30, false}, // t3 arrives out of order, before t4
		{1, 5, 3, 31, true},  // completes t3: t2 is dropped, t4 kept
		{1, 3, 2, 20, false}, // t2 is now late
		{1, 5, 4, 43, false}, // a repeated reading replaces the earlier one
		{1, 3, 4, 42, true},  // completes t4
		{1, 5, 0, 1, false},  // before the warm-up history's end: late
	} {
		_, scored := m.Observe(r.dev, r.metric, vsec(r.at), r.x)
		if scored != r.scored {
			t.Fatalf("reading %d %+v: scored %v", i, r, scored)
		}
	}
	if want := []time.Time{vsec(1), vsec(3), vsec(4)}; !reflect.DeepEqual(det.ts, want) {
		t.Fatalf("scored at %v, want %v", det.ts, want)
	}
	if want := [][]float64{{10, 11}, {30, 31}, {42, 43}}; !reflect.DeepEqual(det.got, want) {
		t.Fatalf("vectors %v, want %v", det.got, want)
	}
	if st := m.Stats(); st != (VectorStats{Scored: 3, Dropped: 1, Late: 2}) {
		t.Fatalf("stats %+v", st)
	}
	if m.Pending(1) != 0 || !m.Has(1) || m.Has(2) {
		t.Fatalf("pending %d", m.Pending(1))
	}
}

// TestVectorMonitorBoundedMemory: a device that never sends one of its
// model's metrics holds at most the window's vectors, and once the window
// is full, readings allocate nothing.
func TestVectorMonitorBoundedMemory(t *testing.T) {
	m := newVectorMonitor(t, 4)
	det := &recorder{}
	if err := m.Set(7, det, []int16{1, 2, 3}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		m.Observe(7, 1, vsec(i), 1)
		m.Observe(7, 2, vsec(i), 2)
		if m.Pending(7) > 4 {
			t.Fatalf("%d pending after %d timestamps", m.Pending(7), i+1)
		}
	}
	if st := m.Stats(); st.Dropped != 996 || st.Scored != 0 || len(det.got) != 0 {
		t.Fatalf("stats %+v", st)
	}
	i := 1000
	allocs := testing.AllocsPerRun(200, func() {
		m.Observe(7, 1, vsec(i), 1)
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per reading with a full window", allocs)
	}
	// An old timestamp that would be the oldest of a full window is dropped
	// at once.
	before := m.Stats().Dropped
	m.Observe(7, 1, vsec(1001), 1)
	if m.Pending(7) != 4 || m.Stats().Dropped != before+1 {
		t.Fatalf("pending %d, dropped %d", m.Pending(7), m.Stats().Dropped-before)
	}
	// Completing the newest vector scores it and clears the rest.
	m.Observe(7, 2, vsec(i-1), 2)
	if _, ok := m.Observe(7, 3, vsec(i-1), 3); !ok || m.Pending(7) != 0 {
		t.Fatalf("completing the newest vector: scored %v, pending %d", ok, m.Pending(7))
	}
}

// TestVectorMonitorEpisodes: vector scores open and close episodes with
// the Monitor's hysteresis, the opening names the metric that drove the
// score, and the closing reports that same metric.
func TestVectorMonitorEpisodes(t *testing.T) {
	m := newVectorMonitor(t, 4)
	values := []float64{0.1, 0.6, 0.7, 0.1, 0.1, 0.1, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9}
	det := &recorder{}
	for i, v := range values {
		f := "mahalanobis[1]"
		if i > 2 {
			f = "mahalanobis[0]"
		}
		det.scores = append(det.scores, Score{Value: v, Feature: f})
	}
	if err := m.Set(4, det, []int16{8, 6}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// The same scores through a Monitor give the reference transitions.
	ref, err := NewMonitor(DefaultMonitorConfig())
	if err != nil {
		t.Fatal(err)
	}
	key := SeriesKey{Device: 4, Metric: 6}
	var got, want []Transition
	for i, v := range values {
		m.Observe(4, 8, vsec(i+1), 0)
		ev, ok := m.Observe(4, 6, vsec(i+1), 0)
		if !ok || ev.Score.Value != v || !ev.TS.Equal(vsec(i+1)) {
			t.Fatalf("vector %d: %+v %v", i, ev, ok)
		}
		// The first episode opens on metric 6 (driver 1) and closes on it
		// although the driver is then metric 8; the second opens on 8.
		if wantMetric := map[int]int16{1: 6, 12: 6, 13: 8}[i]; ev.Transition != Steady && ev.Metric != wantMetric {
			t.Fatalf("vector %d: transition %v reported on metric %d, want %d", i, ev.Transition, ev.Metric, wantMetric)
		}
		ref.Replace(key, constant(v), true) // keeps the episode state
		_, tr := ref.Observe(key, vsec(i+1), 0)
		got, want = append(got, ev.Transition), append(want, tr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("transitions %v, Monitor gives %v", got, want)
	}
	if want[1] != Began || want[12] != Ended || want[13] != Began || !m.Anomalous(4) {
		t.Fatalf("reference transitions %v", want)
	}
}
