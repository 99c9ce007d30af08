// Package features defines the per-series quantities that vigil's detectors
// are built on.
//
// A feature is written once, as a small state value with an Update method that
// takes the next observation of one (device, metric) series in time order. The
// live pipeline calls Update as readings are committed; training, evaluation
// and `vigil score` call the very same Update over stored history, so there is
// no second implementation that could drift from the first (no train/serve
// skew).
package features
