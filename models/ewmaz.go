package models

import (
	"errors"
	"math"
	"time"

	"github.com/vigil-iot/vigil/features"
)

// KindEWMAZ is the Spec.Kind of the EWMAZ detector.
const KindEWMAZ = "ewma_z"

// EWMAZConfig sets the parameters of an EWMAZ detector.
type EWMAZConfig struct {
	// Alpha is the EWMA weight of the newest reading (0 < Alpha <= 1).
	Alpha float64 `json:"alpha"`
	// WarmUp is how many readings are learned before any is scored.
	WarmUp int `json:"warm_up"`
	// Z is the |z| at which the score reaches 0.5.
	Z float64 `json:"z"`
	// Clip bounds, in standard deviations, how far one reading can pull the
	// baseline (Huber-style winsorising of the update).
	Clip float64 `json:"clip"`
	// MinStd is a floor on the standard deviation, so a perfectly flat
	// series does not turn the smallest change into an infinite z.
	MinStd float64 `json:"min_std"`
}

// DefaultEWMAZConfig returns the parameters vigil uses when none are given.
func DefaultEWMAZConfig() EWMAZConfig {
	return EWMAZConfig{Alpha: 0.02, WarmUp: 20, Z: 6, Clip: 3, MinStd: 1e-3}
}

// Validate reports the first parameter that is out of range.
func (c EWMAZConfig) Validate() error {
	switch {
	case !(c.Alpha > 0 && c.Alpha <= 1):
		return errors.New("ewma_z: alpha must be in (0, 1]")
	case c.WarmUp < 2:
		return errors.New("ewma_z: warm_up must be at least 2")
	case !(c.Z > 0):
		return errors.New("ewma_z: z must be positive")
	case !(c.Clip > 0):
		return errors.New("ewma_z: clip must be positive")
	case !(c.MinStd > 0):
		return errors.New("ewma_z: min_std must be positive")
	}
	return nil
}

// EWMAZ scores a reading by its z-score against an exponentially weighted
// moving mean and variance (Roberts, "Control chart tests based on geometric
// moving averages", Technometrics 1(3), 1959), made robust in two ways:
//
//   - the update is winsorised: a residual is clipped to Clip standard
//     deviations before it moves the mean and variance (Huber, "Robust
//     estimation of a location parameter", Ann. Math. Stat. 35(1), 1964), so a
//     single spike barely shifts the baseline;
//   - while a reading is anomalous (score >= 0.5) the baseline is frozen, so
//     a sustained fault such as an overheating ramp is not learned as the new
//     normal and the score stays high until the series returns.
//
// The score maps |z| to [0, 1) as 1 - 2^(-(z/Z)^2): 0.5 at |z| = Z.
type EWMAZ struct {
	cfg  EWMAZConfig
	ewma features.EWMA
}

var _ Detector = (*EWMAZ)(nil)

// NewEWMAZ returns an EWMAZ detector with the given parameters.
func NewEWMAZ(cfg EWMAZConfig) (*EWMAZ, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &EWMAZ{cfg: cfg, ewma: features.NewWarmEWMA(cfg.Alpha)}, nil
}

// Update scores x against the baseline learned so far, then learns from x
// unless it was anomalous.
func (d *EWMAZ) Update(_ time.Time, x float64) Score {
	e := &d.ewma
	if e.N() < d.cfg.WarmUp {
		e.Update(x)
		return Score{Feature: "ewma_z", Observed: x, Expected: e.Mean()}
	}
	mean := e.Mean()
	sd := math.Max(e.Std(), d.cfg.MinStd)
	z := (x - mean) / sd
	r := z / d.cfg.Z
	s := Score{
		Value:     1 - math.Exp2(-r*r),
		Feature:   "ewma_z",
		Observed:  x,
		Expected:  mean,
		Deviation: z,
	}
	if s.Value < 0.5 {
		c := d.cfg.Clip * sd
		e.Update(mean + math.Max(-c, math.Min(c, x-mean)))
	}
	return s
}
