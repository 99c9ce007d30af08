package models

import (
	"errors"
	"fmt"
	"time"
)

// DefaultVectorWindow is how many incomplete vectors a VectorMonitor holds
// per device by default.
const DefaultVectorWindow = 8

// VectorEvent is what a VectorMonitor reports when a reading completes a
// vector: its score and the episode transition it caused.
type VectorEvent struct {
	// TS is the vector's timestamp.
	TS    time.Time
	Score Score
	// Metric is the metric that drove the score; for Ended, the one that
	// opened the episode, so that a recovery is reported on the series
	// the anomaly was.
	Metric     int16
	Transition Transition
}

// VectorStats counts what a VectorMonitor did with the readings of devices
// that have a vector model.
type VectorStats struct {
	// Scored is the number of complete vectors scored.
	Scored int64
	// Dropped is the number of incomplete vectors given up on.
	Dropped int64
	// Late is the number of readings dated at or before the device's last
	// scored (or warmed) vector, which cannot be scored in time order.
	Late int64
}

// pendingVector is a vector still missing some of its metrics.
type pendingVector struct {
	ts   time.Time
	xs   []float64
	have uint64 // bit i set: xs[i] is filled
}

type deviceVectors struct {
	det     VectorDetector
	metrics []int16
	pending []pendingVector // by ts, oldest first; at most window
	spare   [][]float64     // buffers of dropped vectors, for reuse
	last    time.Time
	episode
	epMetric int16
}

// VectorMonitor assembles the readings of devices that have a vector model
// into vectors by timestamp, scores each complete vector once, in time
// order, and turns the scores into episodes with the hysteresis of its
// MonitorConfig (whose Model it does not use).
//
// Readings arrive one metric at a time, in commit order. The readings of a
// device's model metrics that share a timestamp form one vector; it is
// scored as soon as every metric has a value (a repeated reading of a
// metric replaces the earlier one). The rules that keep it in time order
// and its memory bounded, per device:
//
//   - a reading dated at or before the last vector scored (or the end of the
//     history the detector was warmed on) is late and is ignored;
//   - scoring a vector drops every incomplete vector older than it, which
//     could no longer be scored in order;
//   - at most Window incomplete vectors are held; a reading that starts
//     one more drops the oldest (which may be the new one itself).
//
// So a device holds at most Window vectors of its model's width. Readings
// of devices without a vector model, and of metrics outside the model, are
// ignored at the cost of a map lookup. A VectorMonitor is not safe for
// concurrent use.
type VectorMonitor struct {
	cfg     MonitorConfig
	window  int
	devices map[int32]*deviceVectors
	stats   VectorStats
}

// NewVectorMonitor returns an empty VectorMonitor holding at most window
// incomplete vectors per device.
func NewVectorMonitor(cfg MonitorConfig, window int) (*VectorMonitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if window < 1 {
		return nil, errors.New("vector monitor: window must be at least 1")
	}
	return &VectorMonitor{cfg: cfg, window: window, devices: map[int32]*deviceVectors{}}, nil
}

// Set gives a device a vector detector (already warmed by the caller) over
// the metrics with the given ids, in the order of its vectors, keeping the
// device's episode state. Readings dated at or before after are late (pass
// the timestamp of the last vector the detector was warmed on, or zero).
// Incomplete vectors of the previous model are dropped.
func (m *VectorMonitor) Set(device int32, det VectorDetector, metrics []int16, after time.Time) error {
	if len(metrics) < 1 || len(metrics) > MaxVectorMetrics {
		return fmt.Errorf("vector monitor: %d metrics, want 1 to %d", len(metrics), MaxVectorMetrics)
	}
	st, ok := m.devices[device]
	if !ok {
		st = &deviceVectors{}
		m.devices[device] = st
	}
	m.stats.Dropped += int64(len(st.pending))
	st.det, st.metrics, st.pending, st.spare = det, append([]int16(nil), metrics...), nil, nil
	if after.After(st.last) {
		st.last = after
	}
	return nil
}

// Observe takes the next reading of a device's metric. When it completes a
// vector, Observe scores it and returns the event and true.
func (m *VectorMonitor) Observe(device int32, metric int16, ts time.Time, x float64) (VectorEvent, bool) {
	st, ok := m.devices[device]
	if !ok {
		return VectorEvent{}, false
	}
	slot := -1
	for i, id := range st.metrics {
		if id == metric {
			slot = i
			break
		}
	}
	if slot < 0 {
		return VectorEvent{}, false
	}
	if !ts.After(st.last) {
		m.stats.Late++
		return VectorEvent{}, false
	}
	p := m.vectorAt(st, ts)
	if p < 0 {
		return VectorEvent{}, false
	}
	v := &st.pending[p]
	v.xs[slot] = x
	v.have |= 1 << slot
	if v.have != 1<<len(st.metrics)-1 {
		return VectorEvent{}, false
	}
	sc := st.det.Update(ts, v.xs)
	m.stats.Scored++
	m.stats.Dropped += int64(p)
	st.last = ts
	m.release(st, p+1)
	ev := VectorEvent{TS: ts, Score: sc, Transition: st.step(&m.cfg, sc.Value)}
	if i, ok := VectorDriver(sc); ok && i < len(st.metrics) {
		ev.Metric = st.metrics[i]
	} else {
		ev.Metric = st.metrics[0]
	}
	switch ev.Transition {
	case Began:
		st.epMetric = ev.Metric
	case Ended:
		ev.Metric = st.epMetric
	}
	return ev, true
}

// vectorAt returns the index in st.pending of the vector at ts, starting
// one (in order, dropping the oldest beyond the window) if there is none;
// -1 if the new vector is itself the one dropped.
func (m *VectorMonitor) vectorAt(st *deviceVectors, ts time.Time) int {
	i := len(st.pending)
	for i > 0 && st.pending[i-1].ts.After(ts) {
		i--
	}
	if i > 0 && st.pending[i-1].ts.Equal(ts) {
		return i - 1
	}
	if len(st.pending) == m.window {
		m.stats.Dropped++
		if i == 0 {
			return -1
		}
		m.release(st, 1)
		i--
	}
	var xs []float64
	if n := len(st.spare); n > 0 {
		xs, st.spare = st.spare[n-1], st.spare[:n-1]
	} else {
		xs = make([]float64, len(st.metrics))
	}
	st.pending = append(st.pending, pendingVector{})
	copy(st.pending[i+1:], st.pending[i:])
	st.pending[i] = pendingVector{ts: ts, xs: xs}
	return i
}

// release removes the n oldest pending vectors, keeping their buffers.
func (m *VectorMonitor) release(st *deviceVectors, n int) {
	for _, v := range st.pending[:n] {
		st.spare = append(st.spare, v.xs)
	}
	k := copy(st.pending, st.pending[n:])
	clear(st.pending[k:])
	st.pending = st.pending[:k]
}

// Has reports whether a device has a vector model.
func (m *VectorMonitor) Has(device int32) bool {
	_, ok := m.devices[device]
	return ok
}

// Pending returns how many incomplete vectors a device holds.
func (m *VectorMonitor) Pending(device int32) int {
	if st, ok := m.devices[device]; ok {
		return len(st.pending)
	}
	return 0
}

// Anomalous reports whether a device's vector model is in an open episode.
func (m *VectorMonitor) Anomalous(device int32) bool {
	st, ok := m.devices[device]
	return ok && st.anomalous
}

// Stats returns the counters since the VectorMonitor was made.
func (m *VectorMonitor) Stats() VectorStats { return m.stats }
