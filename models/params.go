package models

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// validator is a detector configuration that can check itself.
type validator interface {
	Validate() error
}

// decodeParams overlays JSON params on cfg (which holds the defaults) and
// validates the result. Unknown fields are refused, so a misspelt parameter
// is an error rather than a silently ignored default.
func decodeParams[C validator](kind string, p json.RawMessage, cfg *C) error {
	if len(bytes.TrimSpace(p)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(p))
		dec.DisallowUnknownFields()
		if err := dec.Decode(cfg); err != nil {
			return fmt.Errorf("%s params: %w", kind, err)
		}
	}
	return (*cfg).Validate()
}

// factoryOf adapts a constructor taking a typed configuration to a Factory.
func factoryOf[C validator, D Detector](kind string, defaults func() C, build func(C) (D, error)) Factory {
	return func(p json.RawMessage) (Detector, error) {
		cfg := defaults()
		if err := decodeParams(kind, p, &cfg); err != nil {
			return nil, err
		}
		return build(cfg)
	}
}

// squash maps a ratio r (a statistic divided by its alarm level) to a score
// in [0, 1): 0 at r = 0, 0.5 at |r| = 1, approaching 1 as |r| grows. Every
// detector uses it, so that 0.5 means "at its alarm level" for all of them.
// It is r²/(1+r²) rather than EWMAZ's 1 - 2^(-r²) because the latter rounds
// to exactly 1 from |r| ≈ 7 on, and scores that tie at 1 cannot be told
// apart by a threshold; this one keeps order up to |r| ≈ 10⁸.
func squash(r float64) float64 {
	r2 := r * r
	return r2 / (1 + r2)
}

// finite reports whether x is neither NaN nor infinite.
func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
