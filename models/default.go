package models

import "encoding/json"

// defaultEnsembleConfig returns the members of the default ensemble.
func defaultEnsembleConfig() EnsembleConfig {
	return EnsembleConfig{Members: []Spec{
		{Kind: KindTail, Params: json.RawMessage(`{"model":{"kind":"seasonal","params":{"clip":2}}}`)},
		{Kind: KindTail, Params: json.RawMessage(`{"model":{"kind":"ewma_z"}}`)},
	}}
}

// DefaultSpec returns the detector vigil recommends when none is chosen:
// the ensemble with its default members.
func DefaultSpec() Spec {
	return Spec{Kind: KindEnsemble}
}
