package gateway

import (
	"encoding/json"
	"testing"
)

func TestCommandBody(t *testing.T) {
	for _, tc := range []struct {
		payload json.RawMessage
		want    string
	}{
		{json.RawMessage(`{"percent":30}`), `{"id":"7","name":"reduce_load","payload":{"percent":30}}`},
		{nil, `{"id":"7","name":"reduce_load","payload":{}}`},
	} {
		got := string(Command{ID: "7", Device: "d", Name: "reduce_load", Payload: tc.payload}.Body())
		if got != tc.want {
			t.Errorf("got %s, want %s", got, tc.want)
		}
	}
}
