// Package nab scores anomaly detectors with the rules of the Numenta Anomaly
// Benchmark (NAB).
//
// NAB is a corpus of labelled real and artificial time series together with
// a scoring method that rewards early detection of anomalies and penalises
// false alarms. It is described in Lavin & Ahmad, "Evaluating Real-time
// Anomaly Detection Algorithms — the Numenta Anomaly Benchmark", IEEE ICMLA
// 2015, and implemented in the NAB v1.1 repository (github.com/numenta/NAB,
// MIT licence). This package contains no NAB code: it reimplements the
// published rules so that vigil's detectors can be compared with the
// published NAB results without leaving Go.
//
// # Inputs
//
// LoadCorpus reads the data files (data/<category>/<file>.csv, columns
// timestamp and value), LoadWindows reads the labelled anomaly windows
// (labels/combined_windows.json) and LoadProfiles reads the cost matrices
// (profiles.json); DefaultProfiles returns NAB's three profiles without a
// file. A detector is run causally over each series and gives one anomaly
// score in [0, 1] per row; the scores, with the series' timestamps, form a
// Scored value.
//
// # Scoring
//
// Evaluate applies the NAB rules:
//
//   - The first rows of every file are a probationary period in which the
//     detector may learn; they are not scored at all. Its length is
//     min(floor(0.15·n), 0.15·5000) rows for a file of n rows (see
//     ProbationLength).
//   - A row is a detection when its score is at least the threshold.
//   - Inside a labelled window only the earliest detection counts. Its value
//     is tpWeight·σ(p)/σ(-1), where p = -(r-i+1)/w is the row's position
//     relative to the window's right edge r and width w, and σ is the scaled
//     sigmoid of ScaledSigmoid: a detection at the window's first row is
//     worth tpWeight, later ones less. A window with no detection costs
//     fnWeight.
//   - A detection outside every window is a false positive worth
//     fpWeight·σ(q), with q = (i-r)/(w-1) measured from the right edge of the
//     closest preceding window, so an alarm just after a window costs little
//     and one far from it (q > 3), or with no window before it, costs the
//     full fpWeight.
//   - One threshold is shared by all files; for each profile the threshold
//     that maximises the summed raw score is chosen by sweeping every
//     distinct anomaly score from the highest down, keeping the first
//     maximum (so ties go to the higher threshold, and "detect nothing",
//     reported as NoDetectionThreshold, wins ties against every level).
//   - The raw score is normalised to 100·(raw-null)/(perfect-null), where
//     null is the optimised raw score of the NAB null detector (a constant
//     score of 0.5 on every row) and perfect is tpWeight times the number of
//     labelled windows. On real files null is -fnWeight per scored window
//     (detecting every row costs far more), but on a short file with few
//     rows outside its windows detecting everything can score higher, and
//     then that is the null score. Perfect counts every labelled window,
//     even one that lies inside the probationary period and so can never be
//     detected.
//
// The package tests check that the results agree with an independent
// Python implementation of the same rules on every file of the NAB subset
// vigil evaluates on.
package nab
