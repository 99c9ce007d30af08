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
	// Clip is the |z| beyond which a reading is an outlier: it is scored but
	// not learned from.
	Clip float64 `json:"clip"`
	// Relearn is how many outliers in a row make the detector accept a new
	// level: it forgets its baseline and warms up again from there.
	Relearn int `json:"relearn"`
	// MinStd is a floor on the standard deviation, so a perfectly flat
	// series does not turn the smallest change into an infinite z.
	MinStd float64 `json:"min_std"`
}

// DefaultEWMAZConfig returns the parameters vigil uses when none are given.
func DefaultEWMAZConfig() EWMAZConfig {
	return EWMAZConfig{Alpha: 0.02, WarmUp: 20, Z: 6, Clip: 4, Relearn: 600, MinStd: 1e-3}
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
	case c.Relearn < 1:
		return errors.New("ewma_z: relearn must be at least 1")
	case !(c.MinStd > 0):
		return errors.New("ewma_z: min_std must be positive")
	}
	return nil
}

// EWMAZ scores a reading by its z-score against an exponentially weighted
// moving mean and variance (Roberts, "Control chart tests based on geometric
// moving averages", Technometrics 1(3), 1959), made robust by rejecting
// outliers from the update (the "skip" rule of robust filtering; see Huber,
// "Robust Statistics", Wiley 1981, ch. 1): a reading more than Clip standard
// deviations from the mean is scored but not learned. A single spike thus
// leaves the baseline untouched, and a sustained fault such as an overheating
// ramp is not learned as the new normal — without the rule, the variance
// grows with the ramp and the z-score never gets far above Clip. After
// Relearn outliers in a row the level is taken to have really moved and the
// baseline restarts there.
//
// The EWMA starts warm (features.NewWarmEWMA), so the variance is not
// biased low in the first 1/Alpha readings. The score maps |z| to [0, 1) as
// 1 - 2^(-(z/Z)^2): 0.5 at |z| = Z.
type EWMAZ struct {
	cfg      EWMAZConfig
	ewma     features.EWMA
	outliers int
	// noValue leaves Score.Value at 0, for a wrapper (Tail) that reads
	// only the deviation and would discard the value.
	noValue bool
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
// unless it is an outlier. NaN and infinite readings score 0 and change
// nothing.
func (d *EWMAZ) Update(_ time.Time, x float64) Score {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		// Not a measurement: neither scored nor learned.
		return Score{Feature: "ewma_z", Observed: x, Expected: d.ewma.Mean()}
	}
	e := &d.ewma
	if e.N() < d.cfg.WarmUp {
		e.Update(x)
		return Score{Feature: "ewma_z", Observed: x, Expected: e.Mean()}
	}
	mean := e.Mean()
	sd := math.Max(e.Std(), d.cfg.MinStd)
	z := (x - mean) / sd
	s := Score{Feature: "ewma_z", Observed: x, Expected: mean, Deviation: z}
	if !d.noValue {
		r := z / d.cfg.Z
		s.Value = 1 - math.Exp2(-r*r)
	}
	switch {
	case math.Abs(z) <= d.cfg.Clip:
		d.outliers = 0
		e.Update(x)
	case d.outliers+1 >= d.cfg.Relearn:
		d.outliers = 0
		d.ewma = features.NewWarmEWMA(d.cfg.Alpha)
		d.ewma.Update(x)
	default:
		d.outliers++
	}
	return s
}
