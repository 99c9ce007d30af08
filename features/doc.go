// Package features defines the per-series quantities that vigil's detectors
// are built on.
//
// A feature is written once, as a small state value with an Update method that
// takes the next observation of one (device, metric) series in time order. The
// live pipeline calls Update as readings are committed; training, evaluation
// and `vigil score` call the very same Update over stored history, so there is
// no second implementation that could drift from the first (no train/serve
// skew). Eval is that offline form: it replays a stored series (timestamps and
// values) through a feature and returns the column of its values; a parity
// test checks, on real NAB series, that online and offline values are equal
// and agree within 1e-9 with a from-scratch computation of each definition.
//
// The features:
//
//   - EWMA (TimedEWMA as a Stream): exponentially weighted mean and variance.
//   - Moments: mean and variance with equal weights up to a horizon and
//     exponential forgetting after it.
//   - Window: rolling mean, standard deviation, minimum, maximum, quantiles,
//     median and MAD over the last n readings.
//   - Rate: rate of change per second between consecutive readings.
//   - Seasonal: a baseline per hour of the day, hour of the week or day of
//     the week.
//   - Gap: time since the previous reading.
//
// Set is all of them over one series, read as one row of named columns
// (SetColumns) after each reading: the feature table `vigil features`
// writes for notebooks. The parity test drives the Set online and checks
// each of its columns against Eval of the feature alone.
//
// Update never allocates once a feature is built. None of the types is safe
// for concurrent use; each series owns its own.
package features
