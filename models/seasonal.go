package models

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/vigil-iot/vigil/features"
)

// KindSeasonal is the Spec.Kind of the Seasonal detector.
const KindSeasonal = "seasonal"

// SeasonalConfig sets the parameters of a Seasonal detector.
type SeasonalConfig struct {
	// Season is "hour_of_day", "hour_of_week" or "day_of_week".
	Season string `json:"season"`
	// Alpha is the EWMA weight of the newest reading in its bucket's
	// baseline (0 < Alpha <= 1).
	Alpha float64 `json:"alpha"`
	// MinSeen is how many readings a bucket must have seen before readings
	// in it are scored.
	MinSeen int `json:"min_seen"`
	// Horizon is the number of residuals the residual scale is averaged
	// over.
	Horizon float64 `json:"horizon"`
	// Z is the |residual| in residual standard deviations at which the
	// score reaches 0.5.
	Z float64 `json:"z"`
	// Clip is the |residual|, in residual standard deviations, beyond which
	// a reading is an outlier: scored but not learned.
	Clip float64 `json:"clip"`
	// Relearn is how many outliers in a row make the detector learn them
	// after all, taking the level to have really moved.
	Relearn int `json:"relearn"`
	// MinStd floors the residual standard deviation.
	MinStd float64 `json:"min_std"`
}

// DefaultSeasonalConfig returns the parameters used when none are given.
func DefaultSeasonalConfig() SeasonalConfig {
	return SeasonalConfig{Season: "hour_of_day", Alpha: 0.1, MinSeen: 3, Horizon: 500, Z: 6, Clip: 3, Relearn: 600, MinStd: 1e-3}
}

func (c SeasonalConfig) season() features.Season {
	switch c.Season {
	case "hour_of_day":
		return features.HourOfDay
	case "hour_of_week":
		return features.HourOfWeek
	case "day_of_week":
		return features.DayOfWeek
	}
	return 0
}

// Validate reports the first parameter that is out of range.
func (c SeasonalConfig) Validate() error {
	switch {
	case c.season() == 0:
		return fmt.Errorf("seasonal: season must be hour_of_day, hour_of_week or day_of_week, not %q", c.Season)
	case !(c.Alpha > 0 && c.Alpha <= 1):
		return errors.New("seasonal: alpha must be in (0, 1]")
	case c.MinSeen < 1:
		return errors.New("seasonal: min_seen must be at least 1")
	case !(c.Horizon >= 1):
		return errors.New("seasonal: horizon must be at least 1")
	case !(c.Z > 0):
		return errors.New("seasonal: z must be positive")
	case !(c.Clip > 0):
		return errors.New("seasonal: clip must be positive")
	case c.Relearn < 1:
		return errors.New("seasonal: relearn must be at least 1")
	case !(c.MinStd > 0):
		return errors.New("seasonal: min_std must be positive")
	}
	return nil
}

// Seasonal scores a reading by its residual against a seasonal baseline,
// the mean of past readings at the same hour of the day (or of the week),
// in units of the typical residual. It is the seasonal-decomposition idea
// of Hochenbaum, Vallis and Kejariwal ("Automatic anomaly detection in the
// cloud via statistical learning", arXiv:1704.07706, 2017: remove the
// seasonal component, then test the residual) with the seasonal component
// kept online per bucket (see features.Seasonal) instead of by STL.
// A load that is normal at noon but not at 3 a.m. is caught here, and a
// daily peak is not mistaken for an anomaly.
//
// The residual scale is a running root mean square of residuals. A reading
// whose residual is beyond Clip scales is scored but not learned, by the
// bucket's baseline or by the scale (the "skip" rule of robust filtering;
// Huber, "Robust Statistics", Wiley 1981, chapter 1), so a fault such as an
// overheating ramp is not absorbed as the new normal, and the series is
// normal again as soon as the fault ends. After Relearn outliers in a row
// the level is taken to have really moved and is learned. The score is
// r²/(1+r²) with r = z/Z.
type Seasonal struct {
	cfg      SeasonalConfig
	scale    features.Moments
	outliers int
	base     features.Seasonal
}

var _ Detector = (*Seasonal)(nil)

// NewSeasonal returns a Seasonal detector with the given parameters.
func NewSeasonal(cfg SeasonalConfig) (*Seasonal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Seasonal{
		cfg:   cfg,
		base:  features.NewSeasonal(cfg.season(), cfg.Alpha),
		scale: features.NewMoments(cfg.Horizon),
	}, nil
}

// Update scores x against its bucket's baseline, then learns from x.
func (d *Seasonal) Update(ts time.Time, x float64) Score {
	s := Score{Feature: KindSeasonal, Observed: x, Expected: x}
	if !finite(x) {
		return s
	}
	sd := math.Max(math.Sqrt(d.scale.Mean()), d.cfg.MinStd)
	c := d.cfg.Clip * sd
	if d.scale.N() < 2 {
		c = math.Inf(1)
	}
	bucket := d.base.Bucket(ts)
	mean, seen := d.base.BaselineAt(bucket)
	if seen == 0 || seen < d.cfg.MinSeen {
		// Too little history for this bucket: learn x as it is.
		d.base.UpdateAt(bucket, x)
		return s
	}
	r := x - mean
	if d.scale.N() >= 2 {
		z := r / sd
		s.Value, s.Expected, s.Deviation = squash(z/d.cfg.Z), mean, z
	}
	// Winsorise before learning, so a fault moves neither the bucket's
	// baseline nor the scale by more than Clip scales per reading.
	if math.Abs(r) > c {
		d.outliers++
		if d.outliers < d.cfg.Relearn {
			// An outlier is scored but not learned.
			return s
		}
		// So many outliers in a row: the level has moved. Learn it, with
		// the residual clipped so the scale does not explode.
		r = math.Max(-c, math.Min(c, r))
	} else {
		d.outliers = 0
	}
	d.base.UpdateAt(bucket, x)
	d.scale.Add(r * r)
	return s
}
