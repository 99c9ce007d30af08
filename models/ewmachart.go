package models

import (
	"errors"
	"math"
	"time"

	"github.com/vigil-iot/vigil/features"
)

// KindEWMAChart is the Spec.Kind of the EWMAChart detector.
const KindEWMAChart = "ewma_chart"

// EWMAChartConfig sets the parameters of an EWMAChart detector.
type EWMAChartConfig struct {
	// Window is how many past readings the reference level (median) and
	// scale (MAD) are taken over.
	Window int `json:"window"`
	// WarmUp is how many readings are learned before any is scored
	// (at most Window).
	WarmUp int `json:"warm_up"`
	// Lambda is the weight of the newest residual in the chart statistic
	// (0 < Lambda <= 1); small values find small sustained shifts.
	Lambda float64 `json:"lambda"`
	// L is the width of the control limits in standard deviations of the
	// statistic: the distance at which the score reaches 0.5.
	L float64 `json:"l"`
	// MinStd floors the robust standard deviation.
	MinStd float64 `json:"min_std"`
}

// DefaultEWMAChartConfig returns the parameters used when none are given:
// λ = 0.1 and L = 5, far wider than the textbook L = 2.7 (in-control average
// run length about 500, Lucas and Saccucci, "Exponentially weighted moving
// average control schemes", Technometrics 32(1), 1990) because the
// reference level and scale are estimated from a short window, which makes
// false alarms much more frequent than with known parameters (Jensen et
// al., "Effects of parameter estimation on control chart properties", J.
// Quality Technology 38(4), 2006), and a fleet of thousands of series
// cannot afford them.
func DefaultEWMAChartConfig() EWMAChartConfig {
	return EWMAChartConfig{Window: 128, WarmUp: 128, Lambda: 0.1, L: 5, MinStd: 1e-3}
}

// Validate reports the first parameter that is out of range.
func (c EWMAChartConfig) Validate() error {
	switch {
	case c.Window < 3:
		return errors.New("ewma_chart: window must be at least 3")
	case c.Window > 1<<20:
		return errors.New("ewma_chart: window must be at most 2^20 (1048576)")
	case c.WarmUp < 3 || c.WarmUp > c.Window:
		return errors.New("ewma_chart: warm_up must be in [3, window]")
	case !(c.Lambda > 0 && c.Lambda <= 1):
		return errors.New("ewma_chart: lambda must be in (0, 1]")
	case !(c.L > 0):
		return errors.New("ewma_chart: l must be positive")
	case !(c.MinStd > 0):
		return errors.New("ewma_chart: min_std must be positive")
	}
	return nil
}

// EWMAChart is Roberts' exponentially weighted moving average control chart
// (Roberts, "Control chart tests based on geometric moving averages",
// Technometrics 1(3), 1959; limits as in Lucas and Saccucci 1990):
// the statistic z = λu + (1-λ)z, over the standardised residual u of each
// reading against the median and MAD of the preceding Window readings, is
// compared with L·sqrt(λ/(2-λ)), its asymptotic standard deviation times L.
// Averaging makes it see small sustained shifts a per-reading z-score misses.
//
// The score is r²/(1+r²) with r = z/limit; Deviation is z in units of its
// standard deviation.
type EWMAChart struct {
	cfg EWMAChartConfig
	win features.Window
	z   float64
	sdZ float64
}

var _ Detector = (*EWMAChart)(nil)

// NewEWMAChart returns an EWMAChart detector with the given parameters.
func NewEWMAChart(cfg EWMAChartConfig) (*EWMAChart, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &EWMAChart{
		cfg: cfg,
		win: features.NewWindow(cfg.Window),
		sdZ: math.Sqrt(cfg.Lambda / (2 - cfg.Lambda)),
	}, nil
}

// Update folds x's residual into the chart statistic and scores it, then
// adds x to the reference window.
func (d *EWMAChart) Update(_ time.Time, x float64) Score {
	s := Score{Feature: KindEWMAChart, Observed: x, Expected: x}
	if !finite(x) {
		return s
	}
	if d.win.Len() >= d.cfg.WarmUp {
		med, sd := robustCenter(&d.win, d.cfg.MinStd)
		u := (x - med) / sd
		d.z += d.cfg.Lambda * (u - d.z)
		dev := d.z / d.sdZ
		s.Value, s.Expected, s.Deviation = squash(dev/d.cfg.L), med, dev
	}
	d.win.Push(x)
	return s
}
