package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// KindHandover is the Spec.Kind of the Handover detector.
const KindHandover = "handover"

// HandoverConfig sets the parameters of a Handover detector.
type HandoverConfig struct {
	// Early scores the first After readings of a series.
	Early Spec `json:"early"`
	// Late scores every reading after that. Both learn from every reading.
	Late Spec `json:"late"`
	// After is the number of readings Early is in charge of.
	After int `json:"after"`
}

// DefaultHandoverConfig returns the parameters used when none are given:
// the EWMA z-score for the first 600 readings, then the default ensemble
// (whose Context member learns for 600 readings and a day).
func DefaultHandoverConfig() HandoverConfig {
	return HandoverConfig{Early: Spec{Kind: KindEWMAZ}, Late: Spec{Kind: KindEnsemble}, After: 600}
}

// Validate checks the configuration.
func (c HandoverConfig) Validate() error {
	if c.After < 1 {
		return errors.New("handover: after must be at least 1")
	}
	if c.Early.Kind == "" || c.Late.Kind == "" {
		return errors.New("handover: early and late models are required")
	}
	return nil
}

// Handover hands a series from a detector that is ready almost at once to
// one that needs history first. Detectors calibrated on a series' own
// distribution (Tail's peaks-over-threshold fit, Siffer et al., KDD 2017)
// stay silent until they have seen a few hundred readings; a fixed-threshold
// z-score (EWMAZ) scores after twenty but, on heavy-tailed real series, with
// many more false alarms. Handover lets the early detector cover a new
// series' first After readings and the late one everything after, while both
// learn from every reading so the late one is warm when it takes over.
type Handover struct {
	early, late Detector
	after, n    int
}

var _ Detector = (*Handover)(nil)

// NewHandover builds a Handover detector.
func NewHandover(cfg HandoverConfig) (*Handover, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	early, err := New(cfg.Early)
	if err != nil {
		return nil, fmt.Errorf("handover early: %w", err)
	}
	late, err := New(cfg.Late)
	if err != nil {
		return nil, fmt.Errorf("handover late: %w", err)
	}
	e, eok := early.(*EWMAZ)
	l, lok := late.(*Ensemble)
	if eok && lok {
		// Allocate both detectors with the Handover (see Ensemble).
		b := &handoverWith{early: *e, late: *l}
		b.Handover = Handover{early: &b.early, late: &b.late, after: cfg.After}
		return &b.Handover, nil
	}
	return &Handover{early: early, late: late, after: cfg.After}, nil
}

// handoverWith is a Handover allocated together with the default early and
// late detectors.
type handoverWith struct {
	Handover
	early EWMAZ
	late  Ensemble
}

// Update feeds x to both detectors while the early one is in charge and
// returns its score; after the handover only the late detector runs.
func (h *Handover) Update(ts time.Time, x float64) Score {
	if h.n >= h.after {
		// Handed over: the early model's verdicts are never used again.
		return h.late.Update(ts, x)
	}
	e := h.early.Update(ts, x)
	h.late.Update(ts, x)
	h.n++
	return e
}

func handoverFactory(p json.RawMessage) (Detector, error) {
	cfg := DefaultHandoverConfig()
	if err := decodeParams(KindHandover, p, &cfg); err != nil {
		return nil, err
	}
	return NewHandover(cfg)
}

func init() { factories[KindHandover] = handoverFactory }
