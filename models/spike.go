package models

import (
	"errors"
	"math"
	"time"

	"github.com/vigil-iot/vigil/features"
)

// KindSpike is the Spec.Kind of the Spike detector.
const KindSpike = "spike"

// SpikeConfig sets the parameters of a Spike detector.
type SpikeConfig struct {
	// Window is how many past readings the quartiles are taken over.
	Window int `json:"window"`
	// WarmUp is how many readings are learned before any is scored
	// (at most Window).
	WarmUp int `json:"warm_up"`
	// K is the fence multiplier: a reading K interquartile ranges beyond
	// the upper or lower quartile scores 0.5. Tukey's "far out" is 3; the
	// default is a little wider because the quartiles are estimated from a
	// short window.
	K float64 `json:"k"`
	// MinIQR floors the interquartile range, so a flat series does not turn
	// the smallest change into a spike.
	MinIQR float64 `json:"min_iqr"`
}

// DefaultSpikeConfig returns the parameters used when none are given.
func DefaultSpikeConfig() SpikeConfig {
	return SpikeConfig{Window: 128, WarmUp: 32, K: 3.5, MinIQR: 1e-3}
}

// Validate reports the first parameter that is out of range.
func (c SpikeConfig) Validate() error {
	switch {
	case c.Window < 4:
		return errors.New("spike: window must be at least 4")
	case c.Window > 1<<20:
		return errors.New("spike: window must be at most 2^20 (1048576)")
	case c.WarmUp < 4 || c.WarmUp > c.Window:
		return errors.New("spike: warm_up must be in [4, window]")
	case !(c.K > 0):
		return errors.New("spike: k must be positive")
	case !(c.MinIQR > 0):
		return errors.New("spike: min_iqr must be positive")
	}
	return nil
}

// Spike detects spikes and dips: readings beyond Tukey's fences of the
// recent past, Q3 + K·IQR above or Q1 - K·IQR below, with the quartiles
// taken over the last Window readings (Tukey, "Exploratory Data Analysis",
// Addison-Wesley 1977, the "inner and outer fences"). Unlike a z-score it needs no
// symmetry: a series that sits near a floor and jumps up (CPU load, request
// counts) is fenced on each side by its own quartile.
//
// The score is r²/(1+r²) with r = e/K, where e is the excess beyond the
// quartile in interquartile ranges; Deviation is e, negative for dips.
type Spike struct {
	cfg SpikeConfig
	win features.Window
}

var _ Detector = (*Spike)(nil)

// NewSpike returns a Spike detector with the given parameters.
func NewSpike(cfg SpikeConfig) (*Spike, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Spike{cfg: cfg, win: features.NewWindow(cfg.Window)}, nil
}

// Update scores x against the quartiles of the past readings, then adds x
// to the window.
func (d *Spike) Update(_ time.Time, x float64) Score {
	s := Score{Feature: KindSpike, Observed: x, Expected: x}
	if !finite(x) {
		return s
	}
	if d.win.Len() >= d.cfg.WarmUp {
		q1, q3 := d.win.Quantile(0.25), d.win.Quantile(0.75)
		iqr := q3 - q1
		if iqr == 0 {
			// More than half the window is one value: fall back to the
			// interquartile range of a Gaussian with the same mean
			// absolute deviation.
			iqr = 1.349 * meanADToStd * d.win.MeanAbsDev(q1)
		}
		iqr = math.Max(iqr, d.cfg.MinIQR)
		var e float64
		switch {
		case x > q3:
			e, s.Expected = (x-q3)/iqr, q3
		case x < q1:
			e, s.Expected = (x-q1)/iqr, q1
		}
		s.Value, s.Deviation = squash(e/d.cfg.K), e
	}
	d.win.Push(x)
	return s
}
