package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

type fakeSender struct {
	err  error
	sent int
}

func (f *fakeSender) Send(context.Context, Command) error { f.sent++; return f.err }

func TestSendersFallThroughOfflineOnly(t *testing.T) {
	offline := &fakeSender{err: fmt.Errorf("mqtt: %w", ErrDeviceOffline)}
	broken := &fakeSender{err: errors.New("link down")}
	ok := &fakeSender{}
	if err := (Senders{offline, ok, broken}).Send(context.Background(), Command{}); err != nil || ok.sent != 1 || broken.sent != 0 {
		t.Fatalf("err %v, ok sent %d, broken sent %d", err, ok.sent, broken.sent)
	}
	if err := (Senders{broken, ok}).Send(context.Background(), Command{}); err == nil || ok.sent != 1 {
		t.Fatal("a real failure fell through to the next gateway")
	}
	if err := (Senders{offline}).Send(context.Background(), Command{}); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("all offline: %v", err)
	}
	if err := (Senders{}).Send(context.Background(), Command{}); !errors.Is(err, ErrDeviceOffline) {
		t.Fatalf("no gateways: %v", err)
	}
}
