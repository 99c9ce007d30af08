package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// KindEnsemble is the Spec.Kind of the Ensemble detector.
const KindEnsemble = "ensemble"

// EnsembleConfig sets the members of an Ensemble.
type EnsembleConfig struct {
	// Members are the detectors combined; at least one.
	Members []Spec `json:"members"`
}

// Validate reports the first problem with the members. It does not build
// them; NewEnsemble does.
func (c EnsembleConfig) Validate() error {
	if len(c.Members) == 0 {
		return errors.New("ensemble: at least one member is needed")
	}
	for i, m := range c.Members {
		if _, ok := factories[m.Kind]; !ok {
			return fmt.Errorf("ensemble: member %d: unknown model kind %q", i, m.Kind)
		}
	}
	return nil
}

// Ensemble runs several detectors on the same series and reports, for each
// reading, the score of the most alarmed member, with that member's
// explanation. Taking the maximum keeps each member's calibration (0.5 is
// still "at its alarm level") and its explanation, which an average would
// blur; detectors that see different kinds of anomaly (spikes, level
// shifts, seasonal misfits) then cover for one another.
//
// Up to four members are held in the Ensemble itself rather than in a
// slice of their own, and the Ensemble has no pointers into itself, so a
// wrapper (Refractory, Handover) can hold it by value: a reading then
// follows one pointer fewer to each member.
type Ensemble struct {
	n     int
	first [4]Detector // the members, when there are at most four (the default has four)
	more  []Detector  // the members, when there are more
}

var _ Detector = (*Ensemble)(nil)

// NewEnsemble builds the members its configuration names.
func NewEnsemble(cfg EnsembleConfig) (*Ensemble, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Ensemble{n: len(cfg.Members)}
	members := e.first[:]
	if e.n > len(e.first) {
		e.more = make([]Detector, e.n)
		members = e.more
	}
	for i, m := range cfg.Members {
		d, err := New(m)
		if err != nil {
			return nil, fmt.Errorf("ensemble: member %d: %w", i, err)
		}
		members[i] = d
	}
	return e, nil
}

// Update feeds x to every member and returns the highest score; ties go to
// the earlier member.
func (e *Ensemble) Update(ts time.Time, x float64) Score {
	members := e.more
	if members == nil {
		members = e.first[:e.n]
	}
	best := members[0].Update(ts, x)
	for _, d := range members[1:] {
		if s := d.Update(ts, x); s.Value > best.Value {
			best = s
		}
	}
	return best
}

// ensembleFactory builds an Ensemble from JSON params; empty params mean
// DefaultSpec's members. Members given in params replace the default ones
// as a whole.
func ensembleFactory(p json.RawMessage) (Detector, error) {
	cfg := defaultEnsembleConfig()
	if len(bytes.TrimSpace(p)) > 0 {
		cfg = EnsembleConfig{}
	}
	if err := decodeParams(KindEnsemble, p, &cfg); err != nil {
		return nil, err
	}
	return NewEnsemble(cfg)
}

// init adds the kinds whose factories build other kinds
// through New; a map literal cannot name them without an initialisation
// cycle.
func init() {
	factories[KindLikelihood] = likelihoodFactory
	factories[KindEnsemble] = ensembleFactory
	factories[KindTail] = tailFactory
	factories[KindRefractory] = refractoryFactory
}
