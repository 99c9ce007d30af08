package features

import (
	"errors"
	"time"
)

// SetConfig sets the parameters of a Set.
type SetConfig struct {
	// Window is how many of the latest readings the rolling columns cover.
	Window int `json:"window"`
	// Alpha is the weight of the newest reading in the EWMA columns.
	Alpha float64 `json:"alpha"`
	// Season chooses the buckets of the seasonal baseline.
	Season Season `json:"season"`
	// SeasonAlpha is the weight of the newest reading in its bucket.
	SeasonAlpha float64 `json:"season_alpha"`
}

// DefaultSetConfig returns a 64-reading window, an EWMA weight of 0.05 and
// an hour-of-week baseline whose buckets weigh the newest reading 0.1.
func DefaultSetConfig() SetConfig {
	return SetConfig{Window: 64, Alpha: 0.05, Season: HourOfWeek, SeasonAlpha: 0.1}
}

// Validate reports the first parameter that is out of range.
func (c SetConfig) Validate() error {
	switch {
	case c.Window < 1:
		return errors.New("features: window must be at least 1 reading")
	case c.Window > 1<<20:
		return errors.New("features: window must be at most 2^20 (1048576) readings")
	case !(c.Alpha > 0 && c.Alpha <= 1):
		return errors.New("features: alpha must be in (0, 1]")
	case c.Season.Buckets() == 0:
		return errors.New("features: season must be hour of day or hour of week")
	case !(c.SeasonAlpha > 0 && c.SeasonAlpha <= 1):
		return errors.New("features: season alpha must be in (0, 1]")
	}
	return nil
}

// SetColumns names the values of a Set, in the order Set.Values gives
// them: the rolling window's mean, standard deviation, minimum, maximum,
// 10 % quantile, median, 90 % quantile and median absolute deviation; the
// EWMA's mean and standard deviation; the residual against the seasonal
// baseline (before the reading joins it); the rate of change per second;
// and the seconds since the previous reading.
var SetColumns = []string{
	"window_mean", "window_std", "window_min", "window_max", "window_q10", "window_median", "window_q90", "window_mad",
	"ewma_mean", "ewma_std", "seasonal_residual", "rate_per_s", "gap_s",
}

// Set is every feature of this package over one series, read as one row of
// SetColumns after each reading: the feature table `vigil features` writes
// for notebooks, computed by the same Update calls as each feature alone
// (the parity test holds it to Eval of each feature).
type Set struct {
	win  Window
	ewma TimedEWMA
	seas Seasonal
	rate Rate
	gap  Gap
}

var _ Stream = (*Set)(nil)

// NewSet returns an empty Set.
func NewSet(c SetConfig) (*Set, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &Set{win: NewWindow(c.Window), ewma: TimedEWMA{NewEWMA(c.Alpha)}, seas: NewSeasonal(c.Season, c.SeasonAlpha)}, nil
}

// Update folds the next reading of the series into every feature. A NaN or
// infinite reading is not a measurement: it is skipped, as the detectors
// skip it, and changes no feature (Eval skips it too).
func (s *Set) Update(ts time.Time, x float64) {
	if !finite(x) {
		return
	}
	s.win.Update(ts, x)
	s.ewma.Update(ts, x)
	s.seas.Update(ts, x)
	s.rate.Update(ts, x)
	s.gap.Update(ts, x)
}

// Values appends the features after the last reading to dst, in SetColumns
// order, and returns it.
func (s *Set) Values(dst []float64) []float64 {
	w := &s.win
	return append(dst,
		w.Mean(), w.Std(), w.Min(), w.Max(), w.Quantile(0.1), w.Median(), w.Quantile(0.9), w.MAD(),
		s.ewma.Mean(), s.ewma.Std(), s.seas.Residual(), s.rate.PerSecond(), s.gap.Seconds())
}
