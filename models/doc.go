// Package models holds vigil's anomaly detectors and the per-series state
// that runs them on live telemetry.
//
// A Detector scores one series causally: Update takes the next reading and
// returns a Score in [0, 1] computed from that reading and the past only,
// with an explanation of what drove it. The same Update runs live (through a
// Monitor, fed by the ingest pipeline after each commit) and offline (through
// ScoreSeries, ScoreCSV or Corpus.Evaluate, over stored history), so a model
// is never reimplemented for training or evaluation.
//
// A Spec (kind plus JSON parameters) names a detector; New builds one from
// it. Specs are what the model registry stores. Every kind has a typed
// configuration with defaults (DefaultXConfig), a Validate method, and
// refuses unknown JSON fields. The kinds:
//
//   - ewma_z (EWMAZ): z-score against a winsorised EWMA baseline.
//   - robust_z (RobustZ): z-score against the median and MAD of a window.
//   - spike (Spike): Tukey's fences on the quartiles of a window.
//   - cusum (CUSUM): Page's two-sided cumulative sum, for level shifts.
//   - ewma_chart (EWMAChart): Roberts' EWMA control chart, for small
//     sustained shifts.
//   - seasonal (Seasonal): residual against an hour-of-day or hour-of-week
//     baseline.
//   - likelihood (Likelihood): Numenta's anomaly likelihood over another
//     detector's scores.
//   - tail (Tail): extreme-value (peaks-over-threshold) calibration of
//     another detector's deviations against the series' own history.
//   - context (Context): novelty of the reading's value bin and of the
//     sequence of recent bins, in the manner of CAD OSE, with Numenta's
//     anomaly likelihood for the sequence part.
//   - ensemble (Ensemble): the most alarmed of several detectors; with
//     empty params, context plus tail-calibrated seasonal and ewma_z.
//   - refractory (Refractory): another detector's scores with the readings
//     after each detection silenced, so an event is reported once; with
//     empty params, the default model (DefaultSpec).
//
// For several metrics of one device together there is the VectorDetector
// interface and its Mahalanobis implementation. Its Spec kind, mahalanobis,
// is a device-level model: NewVector builds it (New refuses it), its params
// (MahalanobisParams) name the metrics it scores together, and TrainVector
// fits their mean and covariance on history so that the detector starts
// trained. JoinSeries lines stored series up into vectors by timestamp; a
// VectorMonitor does the same live, one reading at a time, and turns the
// scores into episodes as the Monitor does.
//
// Every score means the same thing at 0.5 — "at this detector's alarm
// level" — which is the Monitor's default threshold. The squashing of raw
// statistics keeps scores ordered far into the tail, so that benchmark
// thresholds can be optimised over them (see Corpus and the nab
// subpackage).
package models
