package models

import (
	"errors"
	"math"
	"time"

	"github.com/vigil-iot/vigil/features"
)

// KindRobustZ is the Spec.Kind of the RobustZ detector.
const KindRobustZ = "robust_z"

// madToStd and meanADToStd turn a Gaussian's median absolute deviation and
// mean absolute deviation into its standard deviation.
const (
	madToStd    = 1.482602218505602 // 1 / Φ⁻¹(3/4)
	meanADToStd = 1.2533141373155   // sqrt(π/2)
)

// RobustZConfig sets the parameters of a RobustZ detector.
type RobustZConfig struct {
	// Window is how many past readings the median and MAD are taken over.
	Window int `json:"window"`
	// WarmUp is how many readings are learned before any is scored
	// (at most Window).
	WarmUp int `json:"warm_up"`
	// Z is the robust |z| at which the score reaches 0.5.
	Z float64 `json:"z"`
	// MinStd floors the robust standard deviation, so a flat series does
	// not turn the smallest change into an infinite z.
	MinStd float64 `json:"min_std"`
}

// DefaultRobustZConfig returns the parameters used when none are given.
func DefaultRobustZConfig() RobustZConfig {
	return RobustZConfig{Window: 128, WarmUp: 32, Z: 6, MinStd: 1e-3}
}

// Validate reports the first parameter that is out of range.
func (c RobustZConfig) Validate() error {
	switch {
	case c.Window < 3:
		return errors.New("robust_z: window must be at least 3")
	case c.Window > 1<<20:
		return errors.New("robust_z: window must be at most 2^20 (1048576)")
	case c.WarmUp < 3 || c.WarmUp > c.Window:
		return errors.New("robust_z: warm_up must be in [3, window]")
	case !(c.Z > 0):
		return errors.New("robust_z: z must be positive")
	case !(c.MinStd > 0):
		return errors.New("robust_z: min_std must be positive")
	}
	return nil
}

// RobustZ scores a reading by its distance from the median of the last
// Window readings in units of their median absolute deviation, the
// "modified z-score" of Iglewicz and Hoaglin ("How to Detect and Handle
// Outliers", ASQC Basic References in Quality Control 16, 1993),
// whose breakdown point makes it insensitive to the outliers it is looking
// for (Hampel, "The influence curve and its role in robust estimation",
// JASA 69(346), 1974; Leys et al., "Detecting outliers: do not use standard
// deviation around the mean, use absolute deviation around the median",
// J. Exp. Soc. Psych. 49(4), 2013). When more than half the window is one
// value (MAD 0) the scale falls back to the mean absolute deviation, as
// Iglewicz and Hoaglin recommend.
//
// The score maps |z| to [0, 1) as r²/(1+r²) with r = z/Z.
type RobustZ struct {
	cfg RobustZConfig
	win features.Window
}

var _ Detector = (*RobustZ)(nil)

// NewRobustZ returns a RobustZ detector with the given parameters.
func NewRobustZ(cfg RobustZConfig) (*RobustZ, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &RobustZ{cfg: cfg, win: features.NewWindow(cfg.Window)}, nil
}

// Update scores x against the window of past readings, then adds x to it.
func (d *RobustZ) Update(_ time.Time, x float64) Score {
	s := Score{Feature: KindRobustZ, Observed: x}
	if !finite(x) {
		return s
	}
	if d.win.Len() >= d.cfg.WarmUp {
		med, sd := robustCenter(&d.win, d.cfg.MinStd)
		z := (x - med) / sd
		s.Value, s.Expected, s.Deviation = squash(z/d.cfg.Z), med, z
	} else {
		s.Expected = x
	}
	d.win.Push(x)
	return s
}

// robustCenter returns a window's median and robust standard deviation.
func robustCenter(w *features.Window, minStd float64) (med, sd float64) {
	med = w.Median()
	sd = madToStd * w.MAD()
	if sd == 0 {
		sd = meanADToStd * w.MeanAbsDev(med)
	}
	return med, math.Max(sd, minStd)
}
