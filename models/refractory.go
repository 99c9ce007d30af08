package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// KindRefractory is the Spec.Kind of the Refractory post-processor.
const KindRefractory = "refractory"

// RefractoryConfig sets the parameters of a Refractory post-processor.
type RefractoryConfig struct {
	// Model is the detector whose scores are passed on.
	Model Spec `json:"model"`
	// Alarm is the score at and above which a reading is a detection and
	// starts the refractory period.
	Alarm float64 `json:"alarm"`
	// Rest is how many readings after a detection score 0.
	Rest int `json:"rest"`
}

// DefaultRefractoryConfig returns the parameters used when none are given:
// the Monitor's alarm level of 0.5, a rest of 100 readings, and the live
// default (LiveSpec) as the wrapped model.
func DefaultRefractoryConfig() RefractoryConfig {
	return RefractoryConfig{Model: LiveSpec(), Alarm: 0.5, Rest: 100}
}

// Validate reports the first parameter that is out of range. It does not
// build the wrapped model; NewRefractory does.
func (c RefractoryConfig) Validate() error {
	switch {
	case c.Model.Kind == KindRefractory:
		return errors.New("refractory: model must not itself be a refractory")
	case !(c.Alarm > 0 && c.Alarm <= 1):
		return errors.New("refractory: alarm must be in (0, 1]")
	case c.Rest < 0:
		return errors.New("refractory: rest must not be negative")
	}
	if _, ok := factories[c.Model.Kind]; !ok {
		return fmt.Errorf("refractory: unknown model kind %q", c.Model.Kind)
	}
	return nil
}

// Refractory passes on another detector's scores, except that for Rest
// readings after a detection (a score of at least Alarm) it reports 0: one
// alarm per event rather than one per anomalous reading, like the
// refractory period of a neuron after it fires. The wrapped detector keeps
// learning during the rest.
//
// This is the behaviour the NAB scoring rules reward (Lavin and Ahmad,
// "Evaluating Real-time Anomaly Detection Algorithms — the Numenta Anomaly
// Benchmark", IEEE ICMLA 2015, section on the scoring function): only the
// earliest detection inside an anomaly window counts, and every further
// detection outside it is a false positive. For a live Monitor it means a
// persistent fault is reported once, the episode closes after its quiet
// readings, and the fault is reported again after Rest readings if it is
// still there.
type Refractory struct {
	cfg   RefractoryConfig
	inner Detector
	rest  int
}

var _ Detector = (*Refractory)(nil)

// NewRefractory returns a Refractory post-processor around the model its
// configuration names.
func NewRefractory(cfg RefractoryConfig) (*Refractory, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inner, err := New(cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("refractory: %w", err)
	}
	if e, ok := inner.(*Ensemble); ok {
		// Allocate the ensemble with the Refractory (see Ensemble).
		b := &withModel[Refractory, Ensemble]{model: *e}
		b.outer = Refractory{cfg: cfg, inner: &b.model}
		return &b.outer, nil
	}
	return &Refractory{cfg: cfg, inner: inner}, nil
}

// withModel is a wrapper detector allocated together with the detector it
// wraps, so that a reading touches one allocation where it would touch two.
type withModel[W, D any] struct {
	outer W
	model D
}

// Update scores x with the wrapped detector and passes the score on unless
// a detection happened in the last Rest readings. A non-finite reading
// neither counts towards the rest nor starts one.
func (d *Refractory) Update(ts time.Time, x float64) Score {
	s := d.inner.Update(ts, x)
	if !finite(x) {
		s.Value = 0
		return s
	}
	if d.rest > 0 {
		d.rest--
		s.Value = 0
		return s
	}
	if s.Value >= d.cfg.Alarm {
		d.rest = d.cfg.Rest
	}
	return s
}

// refractoryFactory builds a Refractory from JSON params.
func refractoryFactory(p json.RawMessage) (Detector, error) {
	cfg := DefaultRefractoryConfig()
	if err := decodeParams(KindRefractory, p, &cfg); err != nil {
		return nil, err
	}
	return NewRefractory(cfg)
}
