package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/sim"
	"github.com/vigil-iot/vigil/store"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// startWithDevice starts a server that polls the model registry every
// 50 ms, registers a device and connects it over MQTT. Both are closed when
// the test ends.
func startWithDevice(t *testing.T, name, key string) (*Server, *paho.Client) {
	t.Helper()
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.ModelPoll = 50 * time.Millisecond
	srv := startServer(t, cfg)
	if _, err := srv.Store().AddDevice(ctx, name, key); err != nil {
		t.Fatal(err)
	}
	dev, err := sim.Connect(ctx, srv.MQTTAddr(), name, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Disconnect(&paho.Disconnect{}) })
	return srv, dev
}

// startServer starts a server with cfg and closes it when the test ends.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	return startServerLog(t, cfg, quietLog())
}

// startServerLog is startServer with the server logging to log.
func startServerLog(t *testing.T, cfg Config, log *slog.Logger) *Server {
	t.Helper()
	srv, err := Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv
}

// register returns a sim key function that registers each device in st
// with a fresh key.
func register(t *testing.T, st *store.Store) func(name string) string {
	return func(name string) string {
		key := sim.NewKey()
		if _, err := st.AddDevice(context.Background(), name, key); err != nil {
			t.Fatal(err)
		}
		return key
	}
}
