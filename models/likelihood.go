package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/vigil-iot/vigil/features"
)

// KindLikelihood is the Spec.Kind of the Likelihood post-processor.
const KindLikelihood = "likelihood"

// LikelihoodConfig sets the parameters of a Likelihood post-processor.
type LikelihoodConfig struct {
	// Model is the detector whose raw scores are post-processed.
	Model Spec `json:"model"`
	// Short is how many recent raw scores are averaged.
	Short int `json:"short"`
	// Horizon is the number of raw scores the long-run distribution is
	// estimated over (equal weights until then, exponential forgetting
	// after).
	Horizon float64 `json:"horizon"`
	// WarmUp is how many raw scores are learned before any likelihood is
	// reported.
	WarmUp int `json:"warm_up"`
	// MinStd floors the long-run standard deviation of raw scores, so a
	// detector that has only ever said 0 does not make its first small
	// score a certainty.
	MinStd float64 `json:"min_std"`
}

// DefaultLikelihoodConfig returns the parameters used when none are given:
// the averaging window of 10 of Ahmad et al., a long-run horizon of 8640
// readings (their 30 days of 5-minute data), and a 150-reading warm-up.
// The wrapped model defaults to robust_z.
func DefaultLikelihoodConfig() LikelihoodConfig {
	return LikelihoodConfig{Model: Spec{Kind: KindRobustZ}, Short: 10, Horizon: 8640, WarmUp: 150, MinStd: 0.05}
}

// Validate reports the first parameter that is out of range. It does not
// build the wrapped model; NewLikelihood does.
func (c LikelihoodConfig) Validate() error {
	switch {
	case c.Model.Kind == KindLikelihood:
		return errors.New("likelihood: model must not itself be a likelihood")
	case c.Short < 1:
		return errors.New("likelihood: short must be at least 1")
	case c.Short > 1<<20:
		return errors.New("likelihood: short must be at most 2^20 (1048576)")
	case !(c.Horizon >= float64(c.Short)):
		return errors.New("likelihood: horizon must be at least short")
	case c.WarmUp < 2:
		return errors.New("likelihood: warm_up must be at least 2")
	case !(c.MinStd > 0):
		return errors.New("likelihood: min_std must be positive")
	}
	if _, ok := factories[c.Model.Kind]; !ok && c.Model.Kind != KindEnsemble {
		return fmt.Errorf("likelihood: unknown model kind %q", c.Model.Kind)
	}
	return nil
}

// Likelihood turns the raw scores of another detector into the anomaly
// likelihood of Ahmad, Lavin, Purdy and Agha ("Unsupervised real-time
// anomaly detection for streaming data", Neurocomputing 262, 2017, the
// section on computing the anomaly likelihood): the tail probability of the
// mean of the last Short raw scores under a normal distribution fitted to
// the long-run raw scores,
//
//	L = 1 - Q((mean_short - mean_long) / std_long).
//
// It asks "is the detector more surprised now than it usually is on this
// series?", which makes one threshold fit series whose raw scores differ in
// level: a noisy series that keeps its detector at 0.3 does not alarm, a
// quiet one whose detector jumps from 0 to 0.3 does.
//
// The reported score is log(1 - L + 1e-10) / log(1e-10), NAB's mapping of
// the likelihood to [0, 1]; it is 0.5 at a tail probability of 1e-5. Feature
// and the explanation come from the wrapped detector's latest reading.
type Likelihood struct {
	cfg   LikelihoodConfig
	inner Detector
	long  features.Moments
	ring  []float64
	head  int
	sum   float64
}

var _ Detector = (*Likelihood)(nil)

// NewLikelihood returns a Likelihood post-processor around the model its
// configuration names.
func NewLikelihood(cfg LikelihoodConfig) (*Likelihood, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inner, err := New(cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("likelihood: %w", err)
	}
	return &Likelihood{
		cfg:   cfg,
		inner: inner,
		long:  features.NewMoments(cfg.Horizon),
		ring:  make([]float64, 0, cfg.Short),
	}, nil
}

// logEpsilon is NAB's floor on the tail probability.
const logEpsilon = 1e-10

// Update scores x with the wrapped detector and returns the likelihood of
// its recent raw scores.
func (d *Likelihood) Update(ts time.Time, x float64) Score {
	s := d.inner.Update(ts, x)
	raw := s.Value
	if !finite(x) {
		return s
	}
	// Mean of the last Short raw scores, this one included.
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, raw)
		d.sum += raw
	} else {
		d.sum += raw - d.ring[d.head]
		d.ring[d.head] = raw
		d.head = (d.head + 1) % len(d.ring)
	}
	short := d.sum / float64(len(d.ring))
	s.Value = 0
	if d.long.N() >= d.cfg.WarmUp {
		sd := math.Max(d.long.Std(), d.cfg.MinStd)
		z := (short - d.long.Mean()) / sd
		tail := 0.5 * math.Erfc(z/math.Sqrt2)
		s.Value = math.Log(tail+logEpsilon) / math.Log(logEpsilon)
		s.Value = math.Max(0, math.Min(1, s.Value))
	}
	d.long.Add(raw)
	return s
}

// likelihoodFactory builds a Likelihood from JSON params.
func likelihoodFactory(p json.RawMessage) (Detector, error) {
	cfg := DefaultLikelihoodConfig()
	if err := decodeParams(KindLikelihood, p, &cfg); err != nil {
		return nil, err
	}
	return NewLikelihood(cfg)
}
