package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/sim"
	"github.com/vigil-iot/vigil/store"
)

// TestCloseCommitsInFlight: messages waiting in a batch when the server is
// told to stop are committed, and their devices acknowledged, before the
// devices are disconnected.
func TestCloseCommitsInFlight(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.Ingest.MaxDelay, cfg.Ingest.MaxRows, cfg.Ingest.Idle = time.Hour, 1_000_000, 0 // only Close can commit
	srv, err := Start(ctx, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Store().AddDevice(ctx, "press-1", "press-key-1"); err != nil {
		t.Fatal(err)
	}
	c, err := sim.Connect(ctx, srv.MQTTAddr(), "press-1", "press-key-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("press-1"), Payload: []byte(`{"pressure": 2.5}`)})
		}()
	}
	waitFor(t, "three messages to reach the batcher", 10*time.Second, func() any { return srv.Status() }, func() bool {
		return srv.gw.Stats().Telemetry == 3
	})
	if n := srv.Status().Readings; n != 0 {
		t.Fatalf("%d readings committed before Close; the test needs them pending", n)
	}
	if err := srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("publish %d was not acknowledged across the shutdown: %v", i, err)
		}
	}
	st, err := store.Open(ctx, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var n int
	st.DB().QueryRow(`SELECT count(*) FROM readings WHERE device = 'press-1'`).Scan(&n)
	if n != 3 {
		t.Fatalf("%d readings stored after shutdown, want 3", n)
	}
}
