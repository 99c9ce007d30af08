package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat"
)

// MaxVectorMetrics is the most metrics one vector model scores together.
const MaxVectorMetrics = 64

// MahalanobisParams are the params of a Spec of kind mahalanobis, the
// device-level model: which of a device's metrics it scores together, the
// detector's configuration and, once trained, the fitted mean and
// covariance it starts from. Dim may be left out; it is the number of
// metrics.
//
// The score rests on two standard results: the squared Mahalanobis distance
// (Mahalanobis, "On the generalised distance in statistics", 1936) of a
// k-variate Gaussian vector from its mean is chi-square with k degrees of
// freedom, so Tail sets the false-alarm rate on data like the training
// data; and, for an estimated mean and covariance, it is Hotelling's T²
// (see Mahalanobis).
type MahalanobisParams struct {
	// Metrics names the device's metrics, in the order of the vector's
	// elements. At least two, at most MaxVectorMetrics, no repeats.
	Metrics []string `json:"metrics"`
	MahalanobisConfig
	// Mean and Cov are the mean vector and the covariance matrix (one row
	// per metric, symmetric) that TrainVector estimated from Count
	// vectors. When set, the detector starts from them as if it had seen
	// those vectors, and scores from its first vector if Count reaches
	// WarmUp; it goes on learning online from there.
	Mean  []float64   `json:"mean,omitempty"`
	Cov   [][]float64 `json:"cov,omitempty"`
	Count int         `json:"count,omitempty"`
}

// Validate reports the first parameter that is missing or out of range.
func (p MahalanobisParams) Validate() error {
	k := len(p.Metrics)
	switch {
	case k < 2:
		return errors.New(`mahalanobis: params.metrics must name at least two of the device's metrics, e.g. {"metrics": ["load", "temperature"]}; for one metric use a DEVICE/METRIC model`)
	case k > MaxVectorMetrics:
		return fmt.Errorf("mahalanobis: %d metrics; at most %d can be scored together", k, MaxVectorMetrics)
	case p.Dim != 0 && p.Dim != k:
		return fmt.Errorf("mahalanobis: dim %d does not match the %d metrics (leave dim out)", p.Dim, k)
	}
	for i, name := range p.Metrics {
		if name == "" {
			return fmt.Errorf("mahalanobis: metric %d has an empty name", i)
		}
		if slices.Index(p.Metrics, name) != i {
			return fmt.Errorf("mahalanobis: metric %q is named twice", name)
		}
	}
	if err := p.config().Validate(); err != nil {
		return err
	}
	if p.Mean == nil && p.Cov == nil {
		if p.Count != 0 {
			return errors.New("mahalanobis: count is only meaningful with a fitted mean and cov")
		}
		return nil
	}
	if len(p.Mean) != k || len(p.Cov) != k {
		return fmt.Errorf("mahalanobis: a fitted model needs a mean of %d values and a %d×%d cov (retrain with vigil train --multivariate)", k, k, k)
	}
	if p.Count < 1 {
		return errors.New("mahalanobis: count must be the number of vectors the mean and cov were fitted on (at least 1)")
	}
	for i, row := range p.Cov {
		if len(row) != k {
			return fmt.Errorf("mahalanobis: cov row %d has %d values, want %d", i, len(row), k)
		}
		if !finite(p.Mean[i]) {
			return fmt.Errorf("mahalanobis: mean of %s is not a finite number", p.Metrics[i])
		}
		if !(row[i] >= 0) {
			return fmt.Errorf("mahalanobis: variance of %s (cov[%d][%d]) must be a non-negative number", p.Metrics[i], i, i)
		}
		for j, c := range row {
			if !finite(c) || math.Abs(c-p.Cov[j][i]) > 1e-9*(math.Abs(c)+math.Abs(p.Cov[j][i])) {
				return fmt.Errorf("mahalanobis: cov[%d][%d] must be finite and equal cov[%d][%d]", i, j, j, i)
			}
		}
	}
	return nil
}

// config returns the detector configuration, with Dim taken from Metrics.
func (p MahalanobisParams) config() MahalanobisConfig {
	c := p.MahalanobisConfig
	c.Dim = len(p.Metrics)
	return c
}

// decodeMahalanobis reads and validates the params of a mahalanobis Spec
// over the defaults.
func decodeMahalanobis(raw json.RawMessage) (MahalanobisParams, error) {
	p := MahalanobisParams{MahalanobisConfig: DefaultMahalanobisConfig(0)}
	if len(raw) == 0 {
		return p, p.Validate()
	}
	return p, decodeParams(KindMahalanobis, raw, &p)
}

// VectorKinds lists the kinds NewVector accepts: models of several metrics
// of one device, registered under a DEVICE/* name.
func VectorKinds() []string { return []string{KindMahalanobis} }

// IsVectorKind reports whether kind names a device-level (vector) model.
func IsVectorKind(kind string) bool { return slices.Contains(VectorKinds(), kind) }

// NewVector builds the vector detector a Spec names and returns the metrics
// it scores, in the order its vectors must hold them.
func NewVector(spec Spec) (VectorDetector, []string, error) {
	if !IsVectorKind(spec.Kind) {
		if _, ok := factories[spec.Kind]; ok {
			return nil, nil, fmt.Errorf("%q scores one metric; a device-level (DEVICE/*) model needs a kind of %v", spec.Kind, VectorKinds())
		}
		return nil, nil, fmt.Errorf("unknown vector model kind %q (known: %v)", spec.Kind, VectorKinds())
	}
	p, err := decodeMahalanobis(spec.Params)
	if err != nil {
		return nil, nil, err
	}
	m, err := NewMahalanobis(p.config())
	if err != nil {
		return nil, nil, err
	}
	if p.Mean != nil && !m.start(p.Mean, p.Cov, p.Count) {
		return nil, nil, errors.New("mahalanobis: the fitted cov is not positive definite even with the ridge; retrain or raise ridge")
	}
	return m, p.Metrics, nil
}

// VectorFitMetrics describes a vector model's training, as FitMetrics does
// for a series model.
type VectorFitMetrics struct {
	// Vectors is how many complete vectors the mean and covariance were
	// estimated from; Skipped how many timestamps lacked a metric (or held
	// a value that is not a finite number) and were left out.
	Vectors int `json:"vectors"`
	Skipped int `json:"skipped_incomplete"`
	// The score quantiles and AlarmRate are of the fitted model on its own
	// training vectors, without learning from them: AlarmRate estimates
	// the false-alarm rate if that history was normal.
	P50       float64 `json:"score_p50"`
	P99       float64 `json:"score_p99"`
	Max       float64 `json:"score_max"`
	AlarmRate float64 `json:"alarm_rate"`
	Threshold float64 `json:"threshold"`
}

// TrainVector fits a vector model: the sample mean and (unbiased) covariance
// of the complete rows, which it writes into the returned Spec's params
// (Mean, Cov, Count) over the other params of spec. rows[i] holds the
// value of each of the spec's metrics at ts[i], NaN where missing; rows
// with a missing or non-finite value are skipped. At least WarmUp complete
// rows are needed. The metrics report how the fitted model scores the
// training rows at threshold.
func TrainVector(spec Spec, ts []time.Time, rows [][]float64, threshold float64) (Spec, VectorFitMetrics, error) {
	if spec.Kind != KindMahalanobis {
		return Spec{}, VectorFitMetrics{}, fmt.Errorf("train: kind %q cannot be trained as a vector model (known: %v)", spec.Kind, VectorKinds())
	}
	if len(ts) != len(rows) {
		return Spec{}, VectorFitMetrics{}, errors.New("train: one timestamp per row is required")
	}
	p, err := decodeMahalanobis(spec.Params)
	if err != nil {
		return Spec{}, VectorFitMetrics{}, fmt.Errorf("train: %w", err)
	}
	k := len(p.Metrics)
	fm := VectorFitMetrics{Threshold: threshold}
	data := make([]float64, 0, len(rows)*k)
	for i, row := range rows {
		if len(row) != k {
			return Spec{}, VectorFitMetrics{}, fmt.Errorf("train: row %d has %d values for %d metrics", i, len(row), k)
		}
		if !slices.ContainsFunc(row, func(x float64) bool { return !finite(x) }) {
			data = append(data, row...)
			fm.Vectors++
		} else {
			fm.Skipped++
		}
	}
	if fm.Vectors < p.WarmUp {
		return Spec{}, fm, fmt.Errorf("train: %d complete vectors of %v (%d skipped for a missing metric); need at least warm_up = %d: give more history, fewer metrics or a lower warm_up",
			fm.Vectors, p.Metrics, fm.Skipped, p.WarmUp)
	}
	x := mat.NewDense(fm.Vectors, k, data)
	var cov mat.SymDense
	stat.CovarianceMatrix(&cov, x, nil)
	p.Dim = k
	p.Mean, p.Cov, p.Count = make([]float64, k), make([][]float64, k), fm.Vectors
	for j := range k {
		p.Mean[j] = stat.Mean(mat.Col(nil, j, x), nil)
		p.Cov[j] = make([]float64, k)
		for i := range k {
			p.Cov[j][i] = cov.At(j, i)
		}
	}
	params, err := json.Marshal(p)
	if err != nil {
		return Spec{}, fm, fmt.Errorf("train: %w", err)
	}
	trained := Spec{Kind: spec.Kind, Params: params}
	det, _, err := NewVector(trained)
	if err != nil {
		return Spec{}, fm, fmt.Errorf("train: %w", err)
	}
	m := det.(*Mahalanobis)
	vals := make([]float64, fm.Vectors)
	for i := range vals {
		vals[i] = m.score(data[i*k : (i+1)*k]).Value
	}
	fm.P50, fm.P99, fm.Max, fm.AlarmRate = summarise(vals, threshold)
	return trained, fm, nil
}

// JoinSeries lines up several series of one device by timestamp: it
// returns every timestamp any of them has, in order, and for each a row
// with the series' values at it (one per series, in the order given), NaN
// where a series has no reading then. Of two readings of one series at the
// same timestamp the later one counts.
func JoinSeries(ts [][]time.Time, xs [][]float64) ([]time.Time, [][]float64) {
	at := map[int64]int{}
	var out []time.Time
	for _, s := range ts {
		for _, t := range s {
			if _, ok := at[t.UnixNano()]; !ok {
				at[t.UnixNano()] = len(out)
				out = append(out, t)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	for i, t := range out {
		at[t.UnixNano()] = i
	}
	rows := make([][]float64, len(out))
	cells := make([]float64, len(out)*len(ts))
	for i := range cells {
		cells[i] = math.NaN()
	}
	for i := range rows {
		rows[i] = cells[i*len(ts) : (i+1)*len(ts)]
	}
	for j, s := range ts {
		for i, t := range s {
			rows[at[t.UnixNano()]][j] = xs[j][i]
		}
	}
	return out, rows
}

// ScoreVectors runs d over assembled vectors in order and returns one score
// per vector, as ScoreSeries does for one series.
func ScoreVectors(d VectorDetector, ts []time.Time, rows [][]float64) []Score {
	if len(ts) != len(rows) {
		panic("models: ScoreVectors needs one timestamp per row")
	}
	out := make([]Score, len(rows))
	for i := range rows {
		out[i] = d.Update(ts[i], rows[i])
	}
	return out
}
