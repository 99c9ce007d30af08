package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/sim"
)

// TestHTTPDeviceLoop: a device that speaks only HTTP posts its readings,
// runs hot, is commanded through its command poll, answers, cools down and
// is recorded as recovered; a duplicate post is stored once and a bad body
// is answered with its reason and kept as a dead letter.
func TestHTTPDeviceLoop(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.HTTPDevices.Rate, cfg.HTTPDevices.Burst = 1000, 1000 // it posts as fast as it can
	srv := startServer(t, cfg)
	if _, err := srv.Store().AddDevice(ctx, "pump-7", "pump-key-007"); err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.HTTPAddr() + "/devices/pump-7/messages"
	do := func(method, url, body string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("pump-7", "pump-key-007")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	t0 := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	seq, posted := 0, 0
	post := func(temp float64) {
		t.Helper()
		seq++
		body := fmt.Sprintf(`{"ts": %q, "temperature": %.2f}`, t0.Add(time.Duration(seq)*time.Second).Format(time.RFC3339), temp)
		if code, resp := do("POST", base+"/events", body, "Message-Id", fmt.Sprint("m-", seq)); code != http.StatusNoContent {
			t.Fatalf("post %d: %d %s", seq, code, resp)
		}
		posted++
	}
	if code, _ := do("GET", base+"/deviceBound?wait=0", ""); code != http.StatusNoContent {
		t.Fatalf("first poll: %d", code)
	}
	for i := range 40 {
		post(60 + 0.2*float64(i%5))
	}
	// A resend of the last message is acknowledged and not stored again.
	if code, _ := do("POST", base+"/events", fmt.Sprintf(`{"ts": %q, "temperature": 60.8}`, t0.Add(time.Duration(seq)*time.Second).Format(time.RFC3339)), "Message-Id", fmt.Sprint("m-", seq)); code != http.StatusNoContent {
		t.Fatalf("resend: %d", code)
	}
	if code, resp := do("POST", base+"/events", `{"temperature": "hot"}`); code != http.StatusBadRequest || !strings.Contains(resp, "JSON string") {
		t.Fatalf("bad body: %d %s", code, resp)
	}

	// Running hot until a command comes.
	var cmd struct{ ID, Name string }
	for temp := 62.0; cmd.ID == ""; temp += 3 {
		if temp > 200 {
			t.Fatalf("no command while the temperature rose to %.0f; status %+v", temp, srv.Status())
		}
		post(temp)
		code, body := do("GET", base+"/deviceBound?wait=0", "")
		if code == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &cmd); err != nil || cmd.Name != "reduce_load" {
				t.Fatalf("command %s (%v)", body, err)
			}
		}
	}
	if code, resp := do("DELETE", base+"/deviceBound/"+cmd.ID+"?detail=load+reduced", ""); code != http.StatusNoContent {
		t.Fatalf("answer: %d %s", code, resp)
	}
	for i := range 10 { // cooled down
		post(60 + 0.2*float64(i%5))
	}
	waitFor(t, "the command to be verified", 20*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().Recovered == 1 })

	var state, verification, detail string
	var delivered, acked time.Time
	if err := srv.Store().DB().QueryRow(`SELECT state, verification, detail, delivered, acked FROM commands WHERE id = ?`, cmd.ID).Scan(&state, &verification, &detail, &delivered, &acked); err != nil {
		t.Fatal(err)
	}
	if state != "acknowledged" || verification != "recovered" || detail != "load reduced" || delivered.After(acked) {
		t.Fatalf("command %s: %s/%s %q, delivered %v, acked %v", cmd.ID, state, verification, detail, delivered, acked)
	}
	var stored, dead int
	srv.Store().DB().QueryRow(`SELECT count(*) FROM readings WHERE device = 'pump-7'`).Scan(&stored)
	srv.Store().DB().QueryRow(`SELECT count(*) FROM dead_letters WHERE device = 'pump-7'`).Scan(&dead)
	if stored != posted || dead != 1 {
		t.Fatalf("%d readings stored for %d posts, %d dead letters (want 1)", stored, posted, dead)
	}
	if s := srv.Status().HTTPDevices; s == nil || s.Invalid != 1 || s.Answers != 1 {
		t.Fatalf("http device stats %+v", s)
	}
}

// TestHTTPFleet: simulated HTTP-only devices (sim.HTTPFleet, what
// `vigil sim --http` runs) drive the whole loop: every faulty device is
// commanded through its poll, answers and recovers; the healthy ones get no
// command; every reading the gateway answered 204 is stored (and at most
// those of posts cut off by the stop besides).
func TestHTTPFleet(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, testConfig(t))
	st := srv.Store()
	fc := sim.DefaultFleetConfig()
	fc.N, fc.Faulty, fc.Prefix = 4, 2, "hsim-"
	fc.Interval, fc.FaultAfter, fc.RampPerSecond = 100*time.Millisecond, 4*time.Second, 3
	fleet, err := sim.NewHTTPFleet(fc, "http://"+srv.HTTPAddr(), nil, register(t, st))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fleet.Run(runCtx) }()
	waitFor(t, "every faulty HTTP device to be commanded and recover", 60*time.Second, func() any { return srv.Status() }, func() bool {
		return srv.Status().Recovered >= int64(fc.Faulty)
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, d := range fleet.Devices {
		s := d.Stats()
		var stored int64
		if err := st.DB().QueryRow(`SELECT count(*) FROM readings WHERE device = ?`, d.Name()).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		// A post cut off when the fleet stops may be stored without its
		// answer reaching the device: stored ≥ answered, and only by those.
		if stored < s.Readings || stored > s.Readings+2*s.Failed {
			t.Errorf("%s: %d readings stored, %d answered 204, %d posts without an answer", d.Name(), stored, s.Readings, s.Failed)
		}
		if d.Faulty() != (s.Commands > 0) || s.Commands != s.Acknowledged {
			t.Errorf("%s (faulty %v): %d commands, %d answered", d.Name(), d.Faulty(), s.Commands, s.Acknowledged)
		}
	}
}
