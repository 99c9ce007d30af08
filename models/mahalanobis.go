package models

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat/distuv"
)

// VectorDetector scores several metrics of one device together, one
// timestamped vector at a time, in time order.
//
// Implementations are causal, like Detector. The caller keeps ownership of
// xs: a VectorDetector copies what it needs and does not retain the slice.
// A VectorDetector is not safe for concurrent use; each device owns one.
// The returned Score's Feature names the metric (by its index in xs) that
// contributed most, and Observed, Expected and Deviation describe that
// metric.
type VectorDetector interface {
	Update(ts time.Time, xs []float64) Score
}

// KindMahalanobis names the Mahalanobis vector detector in Feature strings.
const KindMahalanobis = "mahalanobis"

// MahalanobisConfig sets the parameters of a Mahalanobis detector.
type MahalanobisConfig struct {
	// Dim is the number of metrics in each vector.
	Dim int `json:"dim"`
	// Alpha is the EWMA weight of the newest vector in the mean and
	// covariance (0 < Alpha < 1).
	Alpha float64 `json:"alpha"`
	// WarmUp is how many vectors are learned before any is scored.
	WarmUp int `json:"warm_up"`
	// Tail is the chi-squared tail probability at which the score reaches
	// 0.5.
	Tail float64 `json:"tail"`
	// Ridge is added to the covariance's diagonal, relative to its mean
	// variance, so that perfectly correlated or constant metrics still give
	// an invertible matrix.
	Ridge float64 `json:"ridge"`
	// MinVar floors every variance on the diagonal.
	MinVar float64 `json:"min_var"`
}

// DefaultMahalanobisConfig returns the parameters used for dim metrics when
// none are given.
func DefaultMahalanobisConfig(dim int) MahalanobisConfig {
	return MahalanobisConfig{Dim: dim, Alpha: 0.01, WarmUp: 50, Tail: 1e-6, Ridge: 1e-6, MinVar: 1e-9}
}

// Validate reports the first parameter that is out of range.
func (c MahalanobisConfig) Validate() error {
	switch {
	case c.Dim < 1:
		return errors.New("mahalanobis: dim must be at least 1")
	case c.Dim > MaxVectorMetrics:
		return fmt.Errorf("mahalanobis: dim must be at most %d", MaxVectorMetrics)
	case !(c.Alpha > 0 && c.Alpha < 1):
		return errors.New("mahalanobis: alpha must be in (0, 1)")
	case c.WarmUp < c.Dim+1:
		return errors.New("mahalanobis: warm_up must exceed dim")
	case !(c.Tail > 0 && c.Tail < 1):
		return errors.New("mahalanobis: tail must be in (0, 1)")
	case !(c.Ridge >= 0):
		return errors.New("mahalanobis: ridge must not be negative")
	case !(c.MinVar > 0):
		return errors.New("mahalanobis: min_var must be positive")
	}
	return nil
}

// Mahalanobis scores a vector of a device's metrics by its Mahalanobis
// distance from their exponentially weighted mean, under their
// exponentially weighted covariance (Mahalanobis, "On the generalised
// distance in statistics", Proc. National Institute of Sciences of India
// 2(1), 1936; as a control chart, Hotelling's T², Hotelling, "Multivariate
// quality control", in Techniques of Statistical Analysis, 1947; with
// exponential weights, Lowry et al., "A multivariate exponentially weighted
// moving average control chart", Technometrics 34(1), 1992). It sees what no
// per-metric detector can: a combination of values each normal on its own
// but not together, such as a fan at full speed with a cold CPU.
//
// D² = dᵀ Σ⁻¹ d with d the deviation from the mean is, for a Gaussian,
// chi-squared with Dim degrees of freedom; the score is r²/(1+r²) with r² =
// D²/q and q the chi-squared quantile of 1-Tail, so 0.5 is "as rare as
// Tail". D² splits exactly into per-metric terms dᵢ·(Σ⁻¹d)ᵢ; the largest
// names the metric in Feature ("mahalanobis[2]"). Vectors at or above 0.5
// are not learned, so a fault does not become the new normal.
type Mahalanobis struct {
	cfg   MahalanobisConfig
	q     float64
	n     int
	mean  []float64
	cov   *mat.SymDense
	reg   *mat.SymDense
	chol  mat.Cholesky
	d     *mat.VecDense
	w     *mat.VecDense
	names []string
}

var _ VectorDetector = (*Mahalanobis)(nil)

// NewMahalanobis returns a Mahalanobis detector with the given parameters.
func NewMahalanobis(cfg MahalanobisConfig) (*Mahalanobis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := cfg.Dim
	names := make([]string, k)
	for i := range names {
		names[i] = KindMahalanobis + "[" + strconv.Itoa(i) + "]"
	}
	return &Mahalanobis{
		cfg:   cfg,
		q:     distuv.ChiSquared{K: float64(k)}.Quantile(1 - cfg.Tail),
		mean:  make([]float64, k),
		cov:   mat.NewSymDense(k, nil),
		reg:   mat.NewSymDense(k, nil),
		d:     mat.NewVecDense(k, nil),
		w:     mat.NewVecDense(k, nil),
		names: names,
	}, nil
}

// Update scores xs against the mean and covariance learned so far, then
// learns from it unless it was anomalous. It panics if len(xs) is not Dim,
// which is a programming error. A vector with a NaN or infinite element is
// neither scored nor learned.
func (m *Mahalanobis) Update(_ time.Time, xs []float64) Score {
	if len(xs) != m.cfg.Dim {
		panic(fmt.Sprintf("models: Mahalanobis got %d metrics, configured for %d", len(xs), m.cfg.Dim))
	}
	for _, x := range xs {
		if !finite(x) {
			return Score{Feature: m.names[0], Observed: xs[0]}
		}
	}
	s := Score{Feature: m.names[0], Observed: xs[0], Expected: xs[0]}
	if m.n >= m.cfg.WarmUp {
		s = m.score(xs)
	}
	if s.Value < 0.5 {
		m.learn(xs)
	}
	return s
}

// score measures finite xs against the current mean and covariance without
// learning from it.
func (m *Mahalanobis) score(xs []float64) Score {
	s := Score{Feature: m.names[0], Observed: xs[0], Expected: xs[0]}
	if !m.factor() {
		return s
	}
	for i, x := range xs {
		m.d.SetVec(i, x-m.mean[i])
	}
	if err := m.chol.SolveVecTo(m.w, m.d); err != nil {
		return s
	}
	d2, best, bestC := 0.0, 0, math.Inf(-1)
	for i := range xs {
		c := m.d.AtVec(i) * m.w.AtVec(i)
		d2 += c
		if c > bestC {
			best, bestC = i, c
		}
	}
	r2 := math.Max(d2, 0) / m.q
	sd := math.Sqrt(math.Max(m.cov.At(best, best), m.cfg.MinVar))
	return Score{
		Value:     r2 / (1 + r2),
		Feature:   m.names[best],
		Observed:  xs[best],
		Expected:  m.mean[best],
		Deviation: (xs[best] - m.mean[best]) / sd,
	}
}

// VectorDriver returns the index, in the scored vector, of the metric that
// drove a Mahalanobis score: the inverse of its Feature naming
// ("mahalanobis[2]" is 2). ok is false for a Feature of another form.
func VectorDriver(s Score) (i int, ok bool) {
	rest, found := strings.CutPrefix(s.Feature, KindMahalanobis+"[")
	if !found {
		return 0, false
	}
	rest, found = strings.CutSuffix(rest, "]")
	if !found {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil && i >= 0
}

// start replaces what the detector has learned with a fitted mean and
// covariance (row-major) estimated from count vectors, as if it had seen
// them. It reports false when the covariance cannot be factored even with
// the ridge.
func (m *Mahalanobis) start(mean []float64, cov [][]float64, count int) bool {
	copy(m.mean, mean)
	for i := range cov {
		for j := i; j < len(cov); j++ {
			m.cov.SetSym(i, j, cov[i][j])
		}
	}
	m.n = count
	return m.factor()
}

// factor builds the Cholesky factor of the regularised covariance.
func (m *Mahalanobis) factor() bool {
	k := m.cfg.Dim
	var tr float64
	for i := range k {
		tr += m.cov.At(i, i)
	}
	ridge := m.cfg.Ridge * tr / float64(k)
	m.reg.CopySym(m.cov)
	for i := range k {
		m.reg.SetSym(i, i, math.Max(m.cov.At(i, i), m.cfg.MinVar)+ridge)
	}
	return m.chol.Factorize(m.reg)
}

// learn folds xs into the mean and covariance with the recursion of Finch
// (see features.EWMA), using equal weights until 1/Alpha vectors are seen.
func (m *Mahalanobis) learn(xs []float64) {
	m.n++
	a := math.Max(m.cfg.Alpha, 1/float64(m.n))
	for i, x := range xs {
		m.d.SetVec(i, x-m.mean[i])
	}
	for i := range xs {
		m.mean[i] += a * m.d.AtVec(i)
	}
	// cov = (1-a)·(cov + a·d·dᵀ)
	m.cov.SymRankOne(m.cov, a, m.d)
	m.cov.ScaleSym(1-a, m.cov)
}
