package models

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// synth is a synthetic series with one known anomaly starting at onset.
type synth struct {
	ts    []time.Time
	xs    []float64
	onset int
}

// noisy returns n readings, 5 minutes apart, of base(i) plus unit Gaussian
// noise, then lets inject change readings from onset on.
func noisy(n, onset int, seed uint64, base func(i int) float64, inject func(i int, x float64) float64) synth {
	rng := rand.New(rand.NewPCG(seed, 7))
	t0 := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)
	s := synth{ts: make([]time.Time, n), xs: make([]float64, n), onset: onset}
	for i := range n {
		s.ts[i] = t0.Add(time.Duration(i) * 5 * time.Minute)
		x := base(i) + rng.NormFloat64()
		if i >= onset {
			x = inject(i, x)
		}
		s.xs[i] = x
	}
	return s
}

func flat(int) float64 { return 100 }

// daily is a daily cycle of amplitude 20 at 5-minute readings.
func daily(i int) float64 { return 100 + 20*math.Sin(2*math.Pi*float64(i)/288) }

func spikeAt(at int, size float64) func(int, float64) float64 {
	return func(i int, x float64) float64 {
		if i == at {
			return x + size
		}
		return x
	}
}

func shift(size float64) func(int, float64) float64 {
	return func(_ int, x float64) float64 { return x + size }
}

// TestDetectors runs every kind on a clean noisy series with one known
// anomaly: nothing in the clean part may score 0.5, and a reading at most
// within readings after the onset must.
func TestDetectors(t *testing.T) {
	const n, onset = 4000, 3000
	tests := []struct {
		name   string
		spec   Spec
		series synth
		within int
	}{
		{"ewma_z/spike", Spec{Kind: KindEWMAZ}, noisy(n, onset, 1, flat, spikeAt(onset, 10)), 1},
		{"robust_z/spike", Spec{Kind: KindRobustZ}, noisy(n, onset, 2, flat, spikeAt(onset, 10)), 1},
		{"robust_z/dip", Spec{Kind: KindRobustZ}, noisy(n, onset, 3, flat, spikeAt(onset, -10)), 1},
		{"spike/spike", Spec{Kind: KindSpike}, noisy(n, onset, 4, flat, spikeAt(onset, 10)), 1},
		{"spike/dip", Spec{Kind: KindSpike}, noisy(n, onset, 5, flat, spikeAt(onset, -10)), 1},
		{"cusum/shift", Spec{Kind: KindCUSUM}, noisy(n, onset, 6, flat, shift(2)), 15},
		{"ewma_chart/shift", Spec{Kind: KindEWMAChart}, noisy(n, onset, 7, flat, shift(2)), 15},
		{"seasonal/out_of_phase", Spec{Kind: KindSeasonal}, noisy(n, onset, 8, daily, func(i int, x float64) float64 {
			// The level of the opposite hour of the day.
			return x - 2*(daily(i)-100)
		}), 40},
		{"likelihood/noise_burst", Spec{Kind: KindLikelihood}, noisy(n, onset, 9, flat, func(i int, x float64) float64 {
			return 100 + 8*(x-100)
		}), 10},
		{"tail/spike", Spec{Kind: KindTail}, noisy(n, onset, 10, daily, spikeAt(onset, 12)), 1},
		{"ensemble/spike", DefaultSpec(), noisy(n, onset, 11, daily, spikeAt(onset, 12)), 1},
		{"ensemble/shift", DefaultSpec(), noisy(n, onset, 12, daily, shift(10)), 1},
		{"context/level_jump", Spec{Kind: KindContext}, noisy(n, onset, 16, daily, shift(40)), 1},
		{"refractory/spike", Spec{Kind: KindRefractory}, noisy(n, onset, 17, daily, spikeAt(onset, 12)), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			s := tc.series
			scores := ScoreSeries(d, s.ts, s.xs)
			for i, sc := range scores[:s.onset] {
				if !(sc.Value >= 0 && sc.Value <= 1) {
					t.Fatalf("reading %d: score %v outside [0, 1]", i, sc.Value)
				}
				if sc.Value >= 0.5 {
					t.Fatalf("clean reading %d (%.2f) scored %.3f (%s)", i, s.xs[i], sc.Value, sc.Feature)
				}
			}
			for i := s.onset; i < s.onset+tc.within; i++ {
				if scores[i].Value >= 0.5 {
					if scores[i].Feature == "" {
						t.Errorf("detection at %d has no Feature", i)
					}
					return
				}
			}
			best := 0.0
			for _, sc := range scores[s.onset : s.onset+tc.within] {
				best = math.Max(best, sc.Value)
			}
			t.Fatalf("no score >= 0.5 within %d readings of the anomaly (best %.3f)", tc.within, best)
		})
	}
}

// TestCausal checks that a score does not depend on later readings: the
// scores of a prefix equal the first scores of the whole series.
func TestCausal(t *testing.T) {
	s := noisy(1500, 1000, 13, daily, spikeAt(1000, 15))
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			full := ScoreSeries(mustNew(t, Spec{Kind: kind}), s.ts, s.xs)
			part := ScoreSeries(mustNew(t, Spec{Kind: kind}), s.ts[:1100], s.xs[:1100])
			for i := range part {
				if part[i] != full[i] {
					t.Fatalf("reading %d: %+v with the prefix, %+v with the whole series", i, part[i], full[i])
				}
			}
		})
	}
}

func mustNew(t *testing.T, spec Spec) Detector {
	t.Helper()
	d, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNonFinite checks that NaN and infinite readings score 0 and do not
// poison the state.
func TestNonFinite(t *testing.T) {
	s := noisy(600, 600, 14, flat, nil)
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			d := mustNew(t, Spec{Kind: kind})
			for i := range s.xs {
				x := s.xs[i]
				if i%50 == 7 {
					x = math.NaN()
				}
				if i%50 == 9 {
					x = math.Inf(1)
				}
				sc := d.Update(s.ts[i], x)
				if math.IsNaN(sc.Value) || sc.Value < 0 || sc.Value > 1 {
					t.Fatalf("reading %d (%v): score %v", i, x, sc.Value)
				}
				if !finite(x) && sc.Value != 0 {
					t.Fatalf("reading %d (%v): score %v, want 0", i, x, sc.Value)
				}
			}
		})
	}
}

// TestParams checks defaults, parameter overrides and refusals for every
// kind.
func TestParams(t *testing.T) {
	tests := []struct {
		kind, params, wantErr string
	}{
		{KindRobustZ, `{"window":128,"z":5}`, ""},
		{KindRobustZ, `{"window":2}`, "window"},
		{KindRobustZ, `{"windw":128}`, "unknown field"},
		{KindSpike, `{"k":1.5}`, ""},
		{KindSpike, `{"k":0}`, "k must"},
		{KindCUSUM, `{"h":4}`, ""},
		{KindCUSUM, `{"k":-1}`, "k must"},
		{KindEWMAChart, `{"lambda":0.3}`, ""},
		{KindEWMAChart, `{"lambda":1.5}`, "lambda"},
		{KindSeasonal, `{"season":"hour_of_week"}`, ""},
		{KindSeasonal, `{"season":"day_of_week"}`, ""},
		{KindSeasonal, `{"season":"minute"}`, "season"},
		{KindLikelihood, `{"model":{"kind":"spike"}}`, ""},
		{KindLikelihood, `{"model":{"kind":"nope"}}`, "unknown model kind"},
		{KindTail, `{"model":{"kind":"robust_z","params":{"z":4}}}`, ""},
		{KindTail, `{"model":{"kind":"tail"}}`, "must not itself"},
		{KindTail, `{"model":{"kind":"robust_z","params":{"z":-4}}}`, "z must"},
		{KindTail, `{"top":64,"warm_up":200,"guard":40}`, ""},
		{KindTail, `{"top":2000000,"warm_up":2000000}`, "at most"},
		{KindEnsemble, `{"members":[{"kind":"ewma_z"},{"kind":"spike"}]}`, ""},
		{KindEnsemble, `{"members":[]}`, "at least one"},
		{KindEWMAZ, `{"alpha":0.5}`, ""},
		{KindEWMAZ, `{"alpah":0.5}`, `unknown field "alpah"`},
		{KindContext, `{"bins":32,"order":3}`, ""},
		{KindContext, `{"bins":1}`, "bins"},
		{KindContext, `{"margin":-0.1}`, "margin"},
		{KindContext, `{"warm_up_seconds":-1}`, "warm_up_seconds"},
		{KindContext, `{"ordr":3}`, "unknown field"},
		{KindRefractory, `{"rest":10,"model":{"kind":"ewma_z"}}`, ""},
		{KindRefractory, `{"model":{"kind":"refractory"}}`, "must not itself"},
		{KindRefractory, `{"alarm":0}`, "alarm"},
		{KindRefractory, `{"rest":-1}`, "rest"},
	}
	for _, tc := range tests {
		t.Run(tc.kind+tc.params, func(t *testing.T) {
			_, err := New(Spec{Kind: tc.kind, Params: json.RawMessage(tc.params)})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	for _, kind := range Kinds() {
		if _, err := New(Spec{Kind: kind}); err != nil {
			t.Errorf("%s with default params: %v", kind, err)
		}
	}
}

// TestParseSpec: a spec written by a person is refused when a field is
// misspelt, at the top level or in the params, with an error naming the
// field, instead of running the model with its defaults.
func TestParseSpec(t *testing.T) {
	spec, err := ParseSpec([]byte(`{"kind":"ewma_z","params":{"z":5}}`))
	if err != nil || spec.Kind != KindEWMAZ || string(spec.Params) != `{"z":5}` {
		t.Fatalf("ParseSpec = %+v, %v", spec, err)
	}
	for _, tc := range []struct{ json, wantErr string }{
		{`{"kind":"ewma_z","param":{"z":5}}`, `unknown field "param"`},
		{`{"kind":"ewma_z","params":{"z":5}} {}`, "nothing after it"},
		{`{"kind":"ewma_z"`, "must be JSON"},
	} {
		if _, err := ParseSpec([]byte(tc.json)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseSpec(%s): error %v, want one containing %q", tc.json, err, tc.wantErr)
		}
	}
	spec, err = ParseSpec([]byte(`{"kind":"ewma_z","params":{"alpah":0.5}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(spec); err == nil || !strings.Contains(err.Error(), `unknown field "alpah"`) {
		t.Errorf("ewma_z with alpah: error %v, want one naming the field", err)
	}
}

// TestParamsRefuseHugeSizes: every parameter that sizes memory has an
// upper bound, so a size that passes validation cannot take the server
// down with an out-of-memory crash when it builds the model (the HTTP API
// builds models from user input). 2^40 readings would need terabytes.
func TestParamsRefuseHugeSizes(t *testing.T) {
	const huge = `1099511627776` // 2^40
	tests := []struct{ kind, params, wantErr string }{
		{KindRobustZ, `{"window":` + huge + `,"warm_up":3}`, "window must be at most"},
		{KindSpike, `{"window":` + huge + `,"warm_up":4}`, "window must be at most"},
		{KindCUSUM, `{"window":` + huge + `,"warm_up":3}`, "window must be at most"},
		{KindEWMAChart, `{"window":` + huge + `,"warm_up":3}`, "window must be at most"},
		{KindContext, `{"order":` + huge + `}`, "at most"},
		{KindContext, `{"short":` + huge + `,"horizon":1e13}`, "at most"},
		{KindContext, `{"warm_up":` + huge + `}`, "at most"},
		{KindContext, `{"max_contexts":` + huge + `}`, "at most"},
		{KindLikelihood, `{"short":` + huge + `,"horizon":1e13}`, "short must be at most"},
		{KindTail, `{"top":` + huge + `,"warm_up":` + huge + `}`, "at most"},
	}
	for _, tc := range tests {
		t.Run(tc.kind+tc.params, func(t *testing.T) {
			_, err := New(Spec{Kind: tc.kind, Params: json.RawMessage(tc.params)})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	// The largest size allowed is still accepted.
	if _, err := New(Spec{Kind: KindRobustZ, Params: json.RawMessage(`{"window":1048576,"warm_up":3}`)}); err != nil {
		t.Errorf("robust_z with a window of 2^20: %v", err)
	}
	mc := DefaultMahalanobisConfig(1 << 20) // a 2^20 × 2^20 covariance
	mc.WarmUp = mc.Dim + 1
	if _, err := NewMahalanobis(mc); err == nil || !strings.Contains(err.Error(), "dim must be at most") {
		t.Errorf("mahalanobis with dim 2^20: error %v, want one containing %q", err, "dim must be at most")
	}
}

// TestMahalanobis breaks the correlation of two metrics without moving
// either outside its own range and expects the detector to name the metric
// that moved.
func TestMahalanobis(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 1))
	m, err := NewMahalanobis(DefaultMahalanobisConfig(3))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	xs := make([]float64, 3)
	for i := range 3000 {
		load := 50 + 10*rng.NormFloat64()
		xs[0] = load                              // CPU load
		xs[1] = 30 + 0.5*load + rng.NormFloat64() // temperature follows load
		xs[2] = 5 * rng.NormFloat64()             // unrelated
		if i == 2500 {
			xs[1] = 30 + 0.5*35 + 0 // a normal temperature, but for a load of 35
			xs[0] = 65              // a normal load on its own
		}
		s := m.Update(t0.Add(time.Duration(i)*time.Second), xs)
		switch {
		case i == 2500:
			if s.Value < 0.5 {
				t.Fatalf("broken correlation scored %.3f", s.Value)
			}
			if s.Feature != "mahalanobis[0]" && s.Feature != "mahalanobis[1]" {
				t.Fatalf("explanation names %s, want metric 0 or 1", s.Feature)
			}
			if !strings.Contains(s.Explain("temp"), s.Feature) {
				t.Fatalf("explanation %q does not name the feature", s.Explain("temp"))
			}
		case i > 100 && s.Value >= 0.5:
			t.Fatalf("clean vector %d scored %.3f", i, s.Value)
		}
	}
}

// TestCUSUMReferences: both references flag a sustained two-sigma shift
// within 40 readings and stay quiet on the same noise without it; an
// unknown reference is refused.
func TestCUSUMReferences(t *testing.T) {
	for _, ref := range []string{"window", "ewma"} {
		mk := func() Detector {
			return mustNew(t, Spec{Kind: KindCUSUM, Params: json.RawMessage(`{"reference":"` + ref + `"}`)})
		}
		quiet, shifted := mk(), mk()
		rng := rand.New(rand.NewPCG(9, 9))
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		first := -1
		for i := range 1040 {
			x := 10 + rng.NormFloat64()
			ts := t0.Add(time.Duration(i) * time.Minute)
			if s := quiet.Update(ts, x); s.Value >= 0.5 {
				t.Fatalf("%s: reading %d of plain noise scored %.2f", ref, i, s.Value)
			}
			if i >= 1000 {
				x += 2
			}
			if s := shifted.Update(ts, x); s.Value >= 0.5 && first < 0 {
				first = i
			}
		}
		if first < 1000 || first >= 1040 {
			t.Errorf("%s: a two-sigma shift at reading 1000 first flagged at %d", ref, first)
		}
	}
	if _, err := New(Spec{Kind: KindCUSUM, Params: json.RawMessage(`{"reference":"median"}`)}); err == nil || !strings.Contains(err.Error(), "window") {
		t.Errorf("unknown reference: %v", err)
	}
}
