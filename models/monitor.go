package models

import (
	"errors"
	"fmt"
	"time"
)

// SeriesKey identifies one (device, metric) series by the store's integer
// keys.
type SeriesKey struct {
	Device int32
	Metric int16
}

// Transition tells whether a reading opened or closed an anomaly episode.
type Transition int

// Transitions of a series between normal and anomalous.
const (
	// Steady: the series stayed in the state it was in.
	Steady Transition = iota
	// Began: the reading opened an anomaly episode.
	Began
	// Ended: the reading closed an anomaly episode (the series is normal
	// again).
	Ended
)

// MonitorConfig sets how a Monitor turns scores into episodes.
type MonitorConfig struct {
	// Model is the detector every series gets.
	Model Spec
	// Threshold opens an episode when a score reaches it.
	Threshold float64
	// Clear and ClearCount close an episode after ClearCount consecutive
	// scores below Clear (hysteresis, so a noisy series near the threshold
	// does not open and close episodes on every reading).
	Clear      float64
	ClearCount int
}

// DefaultMonitorConfig returns the configuration vigil runs with by default.
func DefaultMonitorConfig() MonitorConfig {
	return MonitorConfig{Model: LiveSpec(), Threshold: 0.5, Clear: 0.2, ClearCount: 5}
}

// Validate checks the configuration without building anything.
func (c MonitorConfig) Validate() error {
	if !(c.Threshold > 0 && c.Threshold <= 1) {
		return errors.New("monitor: threshold must be in (0, 1]")
	}
	if !(c.Clear >= 0 && c.Clear <= c.Threshold) {
		return errors.New("monitor: clear must be in [0, threshold]")
	}
	if c.ClearCount < 1 {
		return errors.New("monitor: clear count must be at least 1")
	}
	if _, ok := factories[c.Model.Kind]; !ok {
		return fmt.Errorf("monitor: unknown model kind %q (known: %v)", c.Model.Kind, Kinds())
	}
	return nil
}

// episode is the anomaly state of one series (or one device, for a vector
// model) between readings.
type episode struct {
	anomalous bool
	calm      int // consecutive scores below Clear in an open episode
}

// step moves the episode on by one score, with the hysteresis of c: open
// at Threshold, close after ClearCount consecutive scores below Clear.
func (e *episode) step(c *MonitorConfig, v float64) Transition {
	switch {
	case !e.anomalous && v >= c.Threshold:
		e.anomalous, e.calm = true, 0
		return Began
	case e.anomalous && v < c.Clear:
		e.calm++
		if e.calm >= c.ClearCount {
			e.anomalous, e.calm = false, 0
			return Ended
		}
	case e.anomalous:
		e.calm = 0
	}
	return Steady
}

type seriesState struct {
	det Detector
	own bool // det comes from a model of this series, not the default
	episode
}

// Monitor keeps one detector and one episode state per series. It is not
// safe for concurrent use: the pipeline feeds it from one goroutine, which
// also keeps each series in time order.
type Monitor struct {
	cfg    MonitorConfig
	series map[SeriesKey]*seriesState
}

// NewMonitor returns an empty Monitor.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := New(cfg.Model); err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	return &Monitor{cfg: cfg, series: make(map[SeriesKey]*seriesState)}, nil
}

// Observe scores the next reading of a series and reports whether it opened
// or closed an anomaly episode.
func (m *Monitor) Observe(key SeriesKey, ts time.Time, x float64) (Score, Transition) {
	st, ok := m.series[key]
	if !ok {
		det, err := New(m.cfg.Model)
		if err != nil {
			panic("models: spec validated in NewMonitor no longer builds: " + err.Error())
		}
		st = &seriesState{det: det}
		m.series[key] = st
	}
	s := st.det.Update(ts, x)
	return s, st.step(&m.cfg, s.Value)
}

// SetDefault changes the model of series that have none of their own; it
// applies to series seen from now on. Existing series keep their detector
// until Replace gives them a new one (see DefaultSeries).
func (m *Monitor) SetDefault(spec Spec) error {
	if _, err := New(spec); err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	m.cfg.Model = spec
	return nil
}

// Default returns the spec of series without a model of their own.
func (m *Monitor) Default() Spec { return m.cfg.Model }

// DefaultSeries lists the series that run the default model.
func (m *Monitor) DefaultSeries() []SeriesKey {
	var out []SeriesKey
	for k, st := range m.series {
		if !st.own {
			out = append(out, k)
		}
	}
	return out
}

// Replace gives a series a new detector (already warmed on its history by
// the caller), keeping its episode state. own marks a detector built from
// the series' own model rather than the default.
func (m *Monitor) Replace(key SeriesKey, det Detector, own bool) {
	st, ok := m.series[key]
	if !ok {
		st = &seriesState{}
		m.series[key] = st
	}
	st.det, st.own = det, own
}

// Anomalous reports whether a series is in an open episode.
func (m *Monitor) Anomalous(key SeriesKey) bool {
	st, ok := m.series[key]
	return ok && st.anomalous
}

// Len returns the number of series the Monitor holds state for.
func (m *Monitor) Len() int { return len(m.series) }
