package models

import "encoding/json"

// defaultEnsembleConfig returns the members of the default ensemble: the
// seasonal residual and the EWMA z-score, each calibrated against its own
// series' history by Tail.
func defaultEnsembleConfig() EnsembleConfig {
	return EnsembleConfig{Members: []Spec{
		{Kind: KindTail, Params: json.RawMessage(`{"model":{"kind":"seasonal","params":{"clip":2}}}`)},
		{Kind: KindTail, Params: json.RawMessage(`{"model":{"kind":"ewma_z"}}`)},
	}}
}

// DefaultSpec returns the detector vigil recommends when none is chosen: an
// ensemble of a seasonal-residual detector (hour of day) and the EWMA
// z-score, each turned by Tail into the probability of so large a deviation
// on this series, so that 0.5 means "a deviation this series shows about
// once in 10⁵ readings" on every series alike. On a healthy sensor it stays
// below 0.5; a fault that grows by one noise sigma per reading crosses 0.5
// within about 4 to 10 readings (see TestDefaultSpecDemo).
func DefaultSpec() Spec {
	return Spec{Kind: KindEnsemble}
}
