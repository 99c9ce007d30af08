package models

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

var vecT0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

// gaussian2 draws n vectors of a 2-D Gaussian with the given means,
// standard deviations and correlation.
func gaussian2(seed uint64, n int, mu [2]float64, sd [2]float64, rho float64) ([]time.Time, [][]float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	ts, rows := make([]time.Time, n), make([][]float64, n)
	for i := range rows {
		a, b := rng.NormFloat64(), rng.NormFloat64()
		ts[i] = vecT0.Add(time.Duration(i) * time.Second)
		rows[i] = []float64{mu[0] + sd[0]*a, mu[1] + sd[1]*(rho*a+math.Sqrt(1-rho*rho)*b)}
	}
	return ts, rows
}

func trainedParams(t *testing.T, spec Spec) MahalanobisParams {
	t.Helper()
	var p MahalanobisParams
	if err := json.Unmarshal(spec.Params, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTrainVectorRecoversGaussian fits a correlated 2-D Gaussian, checks
// the fitted mean and covariance against the generating ones, and that the
// trained model tells a point that breaks the correlation from one at the
// same marginal distances along it.
func TestTrainVectorRecoversGaussian(t *testing.T) {
	mu, sd, rho := [2]float64{50, 30}, [2]float64{10, 5}, 0.9
	ts, rows := gaussian2(3, 5000, mu, sd, rho)
	for i := 100; i < 5000; i += 250 { // 20 timestamps lack a metric
		rows[i][i%2] = math.NaN()
	}
	spec := Spec{Kind: KindMahalanobis, Params: json.RawMessage(`{"metrics": ["load", "temperature"]}`)}
	trained, fm, err := TrainVector(spec, ts, rows, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if fm.Vectors != 4980 || fm.Skipped != 20 || fm.Threshold != 0.5 {
		t.Fatalf("fit metrics %+v", fm)
	}
	if fm.AlarmRate > 0.001 || fm.P50 > 0.05 || fm.Max <= fm.P99 || fm.P99 <= fm.P50 {
		t.Fatalf("the fitted model on its own Gaussian training data: %+v", fm)
	}
	p := trainedParams(t, trained)
	// Tolerances are about four standard errors at n = 4980.
	wantCov := [2][2]float64{{sd[0] * sd[0], rho * sd[0] * sd[1]}, {rho * sd[0] * sd[1], sd[1] * sd[1]}}
	tolCov := [2][2]float64{{8, 4}, {4, 2}}
	for i := range 2 {
		if math.Abs(p.Mean[i]-mu[i]) > 4*sd[i]/math.Sqrt(4980) {
			t.Errorf("mean[%d] = %.3f, want %.1f", i, p.Mean[i], mu[i])
		}
		for j := range 2 {
			if math.Abs(p.Cov[i][j]-wantCov[i][j]) > tolCov[i][j] {
				t.Errorf("cov[%d][%d] = %.3f, want %.1f", i, j, p.Cov[i][j], wantCov[i][j])
			}
		}
	}
	if p.Count != 4980 || p.Dim != 2 || !reflect.DeepEqual(p.Metrics, []string{"load", "temperature"}) {
		t.Fatalf("trained params %+v", p)
	}

	score := func(xs ...float64) Score {
		det, metrics, err := NewVector(trained)
		if err != nil {
			t.Fatal(err)
		}
		if len(metrics) != 2 {
			t.Fatalf("metrics %v", metrics)
		}
		return det.Update(vecT0, xs) // trained: scores its first vector
	}
	// 1.5σ on each metric, in opposite directions against a correlation
	// of 0.9: D² ≈ 45, beyond the chi-square(2) quantile at 1 - 1e-6.
	broken := score(mu[0]+1.5*sd[0], mu[1]-1.5*sd[1])
	// The same marginal distances in the direction of the correlation.
	along := score(mu[0]+1.5*sd[0], mu[1]+1.5*sd[1])
	if broken.Value < 0.5 || along.Value >= 0.5 {
		t.Fatalf("broken correlation scored %.3f, along it %.3f", broken.Value, along.Value)
	}
	if i, ok := VectorDriver(broken); !ok || i > 1 || math.Abs(broken.Deviation) > 2 {
		t.Fatalf("broken: driver %d %v, deviation %.2f (each metric is within 2σ)", i, ok, broken.Deviation)
	}
}

// TestTrainVectorNeedsWarmUpVectors: too few complete vectors is an error
// that says what to change.
func TestTrainVectorNeedsWarmUpVectors(t *testing.T) {
	ts, rows := gaussian2(4, 60, [2]float64{0, 0}, [2]float64{1, 1}, 0)
	for i := range 20 {
		rows[i][1] = math.NaN()
	}
	spec := Spec{Kind: KindMahalanobis, Params: json.RawMessage(`{"metrics": ["a", "b"]}`)}
	_, fm, err := TrainVector(spec, ts, rows, 0.5)
	if err == nil || !strings.Contains(err.Error(), "warm_up = 50") || fm.Vectors != 40 || fm.Skipped != 20 {
		t.Fatalf("err %v, metrics %+v", err, fm)
	}
	spec.Params = json.RawMessage(`{"metrics": ["a", "b"], "warm_up": 30}`)
	if _, _, err := TrainVector(spec, ts, rows, 0.5); err != nil {
		t.Fatal(err)
	}
}

// TestVectorSpecRoundTrip: a trained spec survives JSON (as the registry
// stores it) and builds a detector that scores exactly as the original.
func TestVectorSpecRoundTrip(t *testing.T) {
	ts, rows := gaussian2(5, 400, [2]float64{5, -3}, [2]float64{2, 1}, -0.6)
	spec := Spec{Kind: KindMahalanobis, Params: json.RawMessage(`{"metrics": ["x", "y"], "alpha": 0.02, "tail": 1e-4}`)}
	trained, _, err := TrainVector(spec, ts, rows, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(trained)
	if err != nil {
		t.Fatal(err)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	p, q := trainedParams(t, trained), trainedParams(t, back)
	if !reflect.DeepEqual(p, q) || p.Alpha != 0.02 || p.Tail != 1e-4 {
		t.Fatalf("params changed in the round trip:\n%+v\n%+v", p, q)
	}
	d1, _, err1 := NewVector(trained)
	d2, _, err2 := NewVector(back)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	for i := range 50 {
		xs := []float64{rows[i][0] + float64(i%3), rows[i][1]}
		if a, b := d1.Update(ts[i], xs), d2.Update(ts[i], xs); a != b {
			t.Fatalf("vector %d: %+v vs %+v", i, a, b)
		}
	}
}

// TestVectorSpecValidation: bad params are refused with an error naming
// what is wrong, and the scalar and vector constructors refuse each other's
// kinds.
func TestVectorSpecValidation(t *testing.T) {
	for _, c := range []struct{ params, want string }{
		{`{}`, "at least two"},
		{`{"metrics": ["a"]}`, "at least two"},
		{`{"metrics": ["a", "a"]}`, `"a" is named twice`},
		{`{"metrics": ["a", ""]}`, "empty name"},
		{`{"metrics": ["a", "b"], "dim": 3}`, "dim 3 does not match"},
		{`{"metrics": ["a", "b"], "alpha": 2}`, "alpha"},
		{`{"metrics": ["a", "b"], "mean": [1, 2]}`, "a mean of 2 values and a 2×2 cov"},
		{`{"metrics": ["a", "b"], "mean": [1, 2], "cov": [[1, 0], [0, 1]]}`, "count"},
		{`{"metrics": ["a", "b"], "mean": [1, 2], "cov": [[1, 0.5], [0, 1]], "count": 9}`, "cov[0][1]"},
		{`{"metrics": ["a", "b"], "mean": [1, 2], "cov": [[-1, 0], [0, 1]], "count": 9}`, "variance of a"},
		{`{"metrics": ["a", "b"], "mean": [1, 2], "cov": [[1, 2], [2, 1]], "count": 9}`, "not positive definite"},
		{`{"metrics": ["a", "b"], "count": 9}`, "count is only meaningful"},
		{`{"metrics": ["a", "b"], "means": [1, 2]}`, "unknown field"},
	} {
		_, _, err := NewVector(Spec{Kind: KindMahalanobis, Params: json.RawMessage(c.params)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", c.params, err, c.want)
		}
	}
	if _, _, err := NewVector(Spec{Kind: KindMahalanobis, Params: json.RawMessage(`{"metrics": ["a", "b"]}`)}); err != nil {
		t.Errorf("untrained model: %v", err)
	}
	if _, err := New(Spec{Kind: KindMahalanobis}); err == nil || !strings.Contains(err.Error(), "DEVICE/*") {
		t.Errorf("New(mahalanobis): %v", err)
	}
	if _, _, err := NewVector(Spec{Kind: KindEWMAZ}); err == nil || !strings.Contains(err.Error(), "scores one metric") {
		t.Errorf("NewVector(ewma_z): %v", err)
	}
}

func TestJoinSeries(t *testing.T) {
	at := func(s ...int) []time.Time {
		out := make([]time.Time, len(s))
		for i, x := range s {
			out[i] = vecT0.Add(time.Duration(x) * time.Second)
		}
		return out
	}
	ts, rows := JoinSeries([][]time.Time{at(1, 2, 4), at(2, 3, 4, 4)}, [][]float64{{10, 20, 40}, {2, 3, 4, 5}})
	if !reflect.DeepEqual(ts, at(1, 2, 3, 4)) {
		t.Fatalf("timestamps %v", ts)
	}
	want := [][]float64{{10, math.NaN()}, {20, 2}, {math.NaN(), 3}, {40, 5}}
	for i := range want {
		for j := range want[i] {
			if a, b := rows[i][j], want[i][j]; a != b && !(math.IsNaN(a) && math.IsNaN(b)) {
				t.Fatalf("rows %v, want %v", rows, want)
			}
		}
	}
}
