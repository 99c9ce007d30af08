package models

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/vigil-iot/vigil/features"
)

// KindCUSUM is the Spec.Kind of the CUSUM detector.
const KindCUSUM = "cusum"

// CUSUMConfig sets the parameters of a CUSUM detector.
type CUSUMConfig struct {
	// Window is how many past readings the reference level (median) and
	// scale (MAD) are taken over.
	Window int `json:"window"`
	// WarmUp is how many readings are learned before any is scored
	// (at most Window).
	WarmUp int `json:"warm_up"`
	// K is the reference value (allowance) in standard deviations: half the
	// shift the chart is tuned to detect fastest.
	K float64 `json:"k"`
	// H is the decision interval in standard deviations: the cumulative sum
	// at which the score reaches 0.5.
	H float64 `json:"h"`
	// MinStd floors the robust standard deviation.
	MinStd float64 `json:"min_std"`
	// Reference picks how the level and scale are estimated: "window" (the
	// default) takes the median and MAD of the last Window readings;
	// "ewma" keeps O(1) state instead of a window: the level is an EWMA
	// with the same centre of mass ((Window-1)/2 readings) and the scale
	// comes from successive differences (von Neumann's mean square
	// successive difference, Ann. Math. Statist. 12(4), 1941), which a
	// slow drift does not inflate.
	Reference string `json:"reference,omitempty"`
}

// DefaultCUSUMConfig returns the parameters used when none are given: k = 1,
// which tunes the chart to a two-sigma shift (the reference value is half
// the shift, Montgomery, "Introduction to Statistical Quality Control",
// 6th ed., 2009, chapter 9), and h = 12, far wider than the textbook
// h = 5 because the reference level and scale are estimated from a short
// window, which makes false alarms much more frequent than the textbook's
// known-parameter run lengths (Jensen et al., "Effects of parameter
// estimation on control chart properties", J. Quality Technology 38(4),
// 2006), and a fleet of thousands of series cannot afford them.
func DefaultCUSUMConfig() CUSUMConfig {
	return CUSUMConfig{Window: 128, WarmUp: 128, K: 1, H: 12, MinStd: 1e-3}
}

// Validate reports the first parameter that is out of range.
func (c CUSUMConfig) Validate() error {
	switch {
	case c.Window < 3:
		return errors.New("cusum: window must be at least 3")
	case c.Window > 1<<20:
		return errors.New("cusum: window must be at most 2^20 (1048576)")
	case c.WarmUp < 3 || c.WarmUp > c.Window:
		return errors.New("cusum: warm_up must be in [3, window]")
	case !(c.K >= 0):
		return errors.New("cusum: k must not be negative")
	case !(c.H > 0):
		return errors.New("cusum: h must be positive")
	case !(c.MinStd > 0):
		return errors.New("cusum: min_std must be positive")
	case c.Reference != "" && c.Reference != "window" && c.Reference != "ewma":
		return fmt.Errorf("cusum: reference %q: want \"window\" or \"ewma\"", c.Reference)
	}
	return nil
}

// CUSUM detects a change point, a sustained shift of the level, with Page's
// two-sided cumulative sum (Page, "Continuous inspection schemes",
// Biometrika 41(1/2), 1954; the tabular form of Montgomery,
// chapter 9):
//
//	S⁺ = max(0, S⁺ + u - K)   S⁻ = max(0, S⁻ - u - K)
//
// over the standardised residual u of each reading against the median and
// MAD of the preceding Window readings. A shift too small for a z-score to
// notice adds up reading after reading. When either sum reaches H the chart
// signals and, as Page prescribes, inspection restarts from zero; by then
// the rolling reference is moving towards the new level.
//
// The score is r²/(1+r²) with r = S/H and S the larger sum; Deviation is S,
// signed by the direction of the shift.
type CUSUM struct {
	cfg       CUSUMConfig
	win       features.Window // the "window" reference
	high, low float64

	// The "ewma" reference: level, mean squared successive difference,
	// previous reading and readings seen.
	level, msd, prev float64
	n                int
}

var _ Detector = (*CUSUM)(nil)

// NewCUSUM returns a CUSUM detector with the given parameters.
func NewCUSUM(cfg CUSUMConfig) (*CUSUM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Reference == "ewma" {
		return &CUSUM{cfg: cfg}, nil
	}
	return &CUSUM{cfg: cfg, win: features.NewWindow(cfg.Window)}, nil
}

// Update folds x's residual into the sums and scores the result, then adds x
// to the reference window.
func (d *CUSUM) Update(_ time.Time, x float64) Score {
	s := Score{Feature: KindCUSUM, Observed: x, Expected: x}
	if !finite(x) {
		return s
	}
	ewma := d.cfg.Reference == "ewma"
	var ready bool
	var level, sd float64
	if ewma {
		ready = d.n >= d.cfg.WarmUp
		level, sd = d.level, math.Max(math.Sqrt(d.msd/2), d.cfg.MinStd)
	} else if ready = d.win.Len() >= d.cfg.WarmUp; ready {
		level, sd = robustCenter(&d.win, d.cfg.MinStd)
	}
	if ready {
		u := (x - level) / sd
		d.high = math.Max(0, d.high+u-d.cfg.K)
		d.low = math.Max(0, d.low-u-d.cfg.K)
		st := d.high
		if d.low > d.high {
			st = -d.low
		}
		s.Value, s.Expected, s.Deviation = squash(st/d.cfg.H), level, st
		if math.Abs(st) >= d.cfg.H {
			d.high, d.low = 0, 0
		}
	}
	if !ewma {
		d.win.Push(x)
		return s
	}
	// Warm start: plain averages until the EWMA's weight is the smaller.
	d.n++
	a := math.Max(2/float64(d.cfg.Window+1), 1/float64(d.n))
	d.level += a * (x - d.level)
	if d.n > 1 {
		diff := x - d.prev
		b := math.Max(2/float64(d.cfg.Window+1), 1/float64(d.n-1))
		d.msd += b * (diff*diff - d.msd)
	}
	d.prev = x
	return s
}
