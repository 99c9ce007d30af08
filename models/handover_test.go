package models

import (
	"encoding/json"
	"testing"
	"time"
)

// constant scores every reading with the same value, so a test can tell
// which detector answered.
type constant float64

func (c constant) Update(time.Time, float64) Score { return Score{Value: float64(c)} }

func TestHandoverSwitchesAfterN(t *testing.T) {
	h := &Handover{early: constant(0.1), late: constant(0.9), after: 3}
	t0 := time.Unix(0, 0)
	for i, want := range []float64{0.1, 0.1, 0.1, 0.9, 0.9} {
		if got := h.Update(t0, 1).Value; got != want {
			t.Fatalf("reading %d: score %v, want %v", i, got, want)
		}
	}
}

func TestHandoverLateLearnsFromTheStart(t *testing.T) {
	// The late detector must have seen every reading when it takes over:
	// compare it with a detector fed the same series alone.
	spec := Spec{Kind: KindHandover, Params: json.RawMessage(`{"after":50,"early":{"kind":"spike"},"late":{"kind":"ewma_z"}}`)}
	h, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	alone, _ := New(Spec{Kind: KindEWMAZ})
	t0 := time.Unix(0, 0)
	for i := 0; i < 200; i++ {
		x := float64(i%7) + 0.01*float64(i)
		got, want := h.Update(t0, x), alone.Update(t0, x)
		if i >= 50 && got != want {
			t.Fatalf("reading %d: handover %+v, late alone %+v", i, got, want)
		}
	}
}
