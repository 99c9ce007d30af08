package sim

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestHTTPDeviceMessageIDsDifferAcrossRuns: a simulated HTTP device started
// again sends new message ids, so vigil, which drops a message whose id it
// has stored in the last hour, keeps the second run's readings.
func TestHTTPDeviceMessageIDsDifferAcrossRuns(t *testing.T) {
	ids := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			ids <- r.Header.Get("Message-Id")
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	d := NewHTTPDevice(DeviceConfig{Name: "h1", Key: "k", Interval: time.Millisecond, DayLength: time.Hour}, srv.URL, srv.Client())
	seen := map[string]int{}
	for run := 1; run <= 2; run++ {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		for range 3 {
			id := <-ids
			if r, ok := seen[id]; ok {
				t.Fatalf("run %d sent message id %q again (first sent in run %d)", run, id, r)
			}
			seen[id] = run
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// A post that was in flight when the run ended.
		for len(ids) > 0 {
			seen[<-ids] = run
		}
	}
}
