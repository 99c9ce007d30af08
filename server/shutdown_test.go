package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/sim"
	"github.com/vigil-iot/vigil/store"
)

// closeOnlyConfig is a test configuration whose batches only Close
// commits.
func closeOnlyConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.Ingest.MaxDelay, cfg.Ingest.MaxRows, cfg.Ingest.Idle = time.Hour, 1_000_000, 0
	return cfg
}

// TestCloseCommitsInFlight: messages waiting in a batch when the server is
// told to stop are committed, and their devices acknowledged, before the
// devices are disconnected.
func TestCloseCommitsInFlight(t *testing.T) {
	ctx := context.Background()
	cfg := closeOnlyConfig(t)
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

// TestCloseWithAnEndedContext: shutting the pipeline down with a context
// that has already ended returns its error at once, and the batch still
// pending is committed and settled in the background and handed to the
// scorer — which panicked on a closed channel when shutdown closed that
// channel without waiting for the batcher.
func TestCloseWithAnEndedContext(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, closeOnlyConfig(t))
	settled := make(chan error, 1)
	err := srv.batcher.Submit(ctx, gateway.Message{
		Device: gateway.Device{ID: 1, Name: "d1"}, Body: []byte(`{"a": 1}`), Received: time.Now(),
		Settle: func(err error) { settled <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	// The pipeline part of Close, so that the store stays open for the
	// background commit.
	if err := srv.shutdownPipeline(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("shutdown with an ended context: %v, want context.Canceled", err)
	}
	if err := <-settled; err != nil {
		t.Fatalf("the pending message was settled with %v", err)
	}
	<-srv.scored
	var n int
	if err := srv.Store().DB().QueryRow(`SELECT count(*) FROM telemetry`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d readings stored (%v), want the pending one", n, err)
	}
}

// TestCloseAnswersLongPolls: a device waiting in a command poll when the
// server shuts down is answered at once with 204 (no command), and Close
// does not wait for the poll's wait to run out (a minute here).
func TestCloseAnswersLongPolls(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, testConfig(t))
	if _, err := srv.Store().AddDevice(ctx, "poller-1", "poller-key-1"); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("GET", "http://"+srv.HTTPAddr()+"/devices/poller-1/messages/deviceBound?wait=60", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("poller-1", "poller-key-1")
	answered := make(chan int, 1)
	go func() {
		client := &http.Client{Timeout: 30 * time.Second} // half the poll's wait
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("the poll was not answered: %v", err)
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	waitFor(t, "the poll to arrive", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.httpdev.Stats().Polls == 1 })
	if err := srv.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if code := <-answered; code != http.StatusNoContent {
		t.Fatalf("the waiting poll was answered %d, want 204", code)
	}
}

// TestCloseCutsStuckAPIRequests: an API request still running when the
// server shuts down — here an Arrow answer of a hundred million rows to a client
// that stopped reading — is cut after the grace period, its query
// cancelled, instead of holding the shutdown for good.
func TestCloseCutsStuckAPIRequests(t *testing.T) {
	defer func(g time.Duration) { apiGrace = g }(apiGrace)
	apiGrace = 200 * time.Millisecond
	ctx := context.Background()
	srv := startServer(t, testConfig(t))
	req, err := http.NewRequest("GET", "http://"+srv.HTTPAddr()+"/api/v1/query?sql="+url.QueryEscape("SELECT * FROM range(100000000)"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", api.ArrowStream)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("query: %s", resp.Status)
	}
	// The answer is streaming; the client reads no more of it.
	closed := make(chan error, 1)
	go func() { closed <- srv.Close(ctx) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Close still waits for the API request a minute later")
	}
}
