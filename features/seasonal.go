package features

import (
	"math"
	"time"
)

// Season chooses how a Seasonal baseline splits time into buckets.
type Season int

// Seasons a Seasonal baseline can follow. Buckets are taken in UTC.
const (
	// HourOfDay keeps 24 buckets, one per hour of the day.
	HourOfDay Season = iota + 1
	// HourOfWeek keeps 168 buckets, one per hour of the week (day of week
	// times hour of day).
	HourOfWeek
	// DayOfWeek keeps 7 buckets, one per day of the week (Sunday 0).
	DayOfWeek
)

// Buckets returns the number of buckets of the season, or 0 if it is unknown.
func (s Season) Buckets() int {
	switch s {
	case HourOfDay:
		return 24
	case HourOfWeek:
		return 168
	case DayOfWeek:
		return 7
	}
	return 0
}

// Bucket returns the bucket ts falls into: the UTC hour of the day (0-23),
// for HourOfWeek the UTC weekday times 24 plus the hour (Sunday 0 am is 0),
// for DayOfWeek the UTC weekday (Sunday 0). It works on Unix seconds rather
// than calendar fields, which is exact for UTC (no leap seconds in Unix
// time) and several times faster.
func (s Season) Bucket(ts time.Time) int {
	const hour, day = 3600, 86400
	sec := ts.Unix()
	h := int(((sec % day) + day) % day / hour)
	if s == HourOfWeek || s == DayOfWeek {
		// 1970-01-01 was a Thursday (weekday 4).
		days := sec / day
		if sec < 0 && sec%day != 0 {
			days--
		}
		wd := int(((days+4)%7 + 7) % 7)
		if s == DayOfWeek {
			return wd
		}
		return wd*24 + h
	}
	return h
}

// Seasonal is a seasonal baseline: one exponentially weighted mean and
// variance per bucket of the season (hour of day, hour of week or day of
// week), the "seasonal index" of classical decomposition (Holt-Winters: Winters,
// "Forecasting sales by exponentially weighted moving averages", Management
// Science 6(3), 1960, section 3, here kept per bucket without trend).
// Each bucket follows the recursion of an EWMA with weight alpha (see EWMA).
//
// Update first computes the residual of the reading against its bucket's
// baseline as it stood before the reading, then folds the reading in, so the
// residual is causal. The zero value is not usable: construct it with
// NewSeasonal.
//
// The 24 buckets of HourOfDay are held in the value itself, so a detector
// that embeds a Seasonal finds its bucket without following a pointer.
type Seasonal struct {
	season   Season
	alpha    float64
	week     []bucket // the buckets of HourOfWeek
	residual float64
	expected float64
	spread   float64 // variance of the last reading's bucket before it
	day      [24]bucket
}

// bucket is the state of one EWMA of a Seasonal, without the weight, which
// all buckets share.
type bucket struct {
	mean, vari float64
	n          int
}

var _ Stream = (*Seasonal)(nil)

// NewSeasonal returns an empty seasonal baseline whose buckets are EWMAs
// with weight alpha. It panics on an unknown season or an alpha outside
// (0, 1], which are programming errors.
func NewSeasonal(season Season, alpha float64) Seasonal {
	n := season.Buckets()
	if n == 0 {
		panic("features: unknown season")
	}
	NewEWMA(alpha) // checks alpha
	s := Seasonal{season: season, alpha: alpha}
	if n != len(s.day) {
		s.week = make([]bucket, n)
	}
	return s
}

// at returns bucket i.
func (s *Seasonal) at(i int) *bucket {
	if s.week != nil {
		return &s.week[i]
	}
	return &s.day[i]
}

// Bucket returns the index of the bucket of ts, for BaselineAt and
// UpdateAt: a caller with several questions about one reading finds its
// bucket once.
func (s *Seasonal) Bucket(ts time.Time) int { return s.season.Bucket(ts) }

// Update computes the residual of x against the baseline of ts's bucket,
// then folds x into that bucket.
func (s *Seasonal) Update(ts time.Time, x float64) { s.UpdateAt(s.Bucket(ts), x) }

// UpdateAt is Update for a reading in bucket i (see Bucket).
func (s *Seasonal) UpdateAt(i int, x float64) {
	b := s.at(i)
	if b.n == 0 {
		s.expected, s.spread, s.residual = x, 0, 0
	} else {
		s.expected, s.spread = b.mean, b.vari
		s.residual = x - s.expected
	}
	// The first reading sets the mean, as in EWMA.Update.
	b.n++
	if b.n == 1 {
		b.mean = x
		return
	}
	b.mean, b.vari = ewmaStep(b.mean, b.vari, s.alpha, x)
}

// Baseline returns the expected value and spread for a reading at ts, and
// whether its bucket has seen any reading yet.
func (s *Seasonal) Baseline(ts time.Time) (mean, std float64, ok bool) {
	b := s.at(s.Bucket(ts))
	return b.mean, math.Sqrt(b.vari), b.n > 0
}

// BaselineAt returns the expected value for a reading in bucket i (see
// Bucket) and how many readings that bucket has seen.
func (s *Seasonal) BaselineAt(i int) (mean float64, seen int) {
	b := s.at(i)
	return b.mean, b.n
}

// Residual returns the last reading minus the baseline of its bucket before
// that reading (0 for the first reading of a bucket).
func (s *Seasonal) Residual() float64 { return s.residual }

// Expected returns the baseline the last reading was compared with.
func (s *Seasonal) Expected() float64 { return s.expected }

// Spread returns the standard deviation of the last reading's bucket before
// that reading.
func (s *Seasonal) Spread() float64 { return math.Sqrt(s.spread) }

// Seen returns how many readings the bucket of ts has seen.
func (s *Seasonal) Seen(ts time.Time) int {
	return s.at(s.Bucket(ts)).n
}
