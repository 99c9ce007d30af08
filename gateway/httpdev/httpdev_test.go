package httpdev

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/gateway"
)

// devices authenticates d1 (key k1), d2 (key k2) and refuses a disabled d3.
type devices struct{}

func (devices) AuthenticateDevice(name, key string) (gateway.Device, error) {
	switch {
	case name == "d3":
		return gateway.Device{}, fmt.Errorf("%w: %q", gateway.ErrDeviceDisabled, name)
	case (name == "d1" && key == "k1") || (name == "d2" && key == "k2"):
		return gateway.Device{ID: int32(name[1] - '0'), Name: name}, nil
	case name == "plant:m1" && key == "k:4":
		return gateway.Device{ID: 4, Name: name}, nil
	case name == "d1" || name == "d2":
		return gateway.Device{}, fmt.Errorf("%w: %q", gateway.ErrWrongKey, name)
	}
	return gateway.Device{}, fmt.Errorf("%w: %q", gateway.ErrUnknownDevice, name)
}

// sink settles each message with fail (nil: stored), or, a body that does
// not start with '{', as a dead letter.
type sink struct {
	mu   sync.Mutex
	got  []gateway.Message
	fail error
}

func (s *sink) Submit(_ context.Context, m gateway.Message) error {
	s.mu.Lock()
	s.got = append(s.got, m)
	fail := s.fail
	s.mu.Unlock()
	if fail == nil && !strings.HasPrefix(string(m.Body), "{") {
		fail = &gateway.InvalidError{Reason: "not a JSON object"}
	}
	m.Settle(fail)
	return nil
}

type acks chan gateway.Ack

func (a acks) HandleAck(_ context.Context, x gateway.Ack) error {
	a <- x
	switch x.CommandID {
	case "unknown":
		return errors.New("no such command")
	case "not-recorded": // as a controller whose store failed
		return errors.Join(gateway.ErrAckNotRecorded, errors.New("disk full"))
	}
	return nil
}

type fixture struct {
	g    *Gateway
	srv  *httptest.Server
	sink *sink
	acks acks
	mu   sync.Mutex
	now  time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{sink: &sink{}, acks: make(acks, 16), now: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}
	cfg := DefaultConfig()
	cfg.MaxBody = 1024
	g, err := New(cfg, devices{}, f.sink, f.acks, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	g.now = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	f.g, f.srv = g, httptest.NewServer(g.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) advance(d time.Duration) { f.mu.Lock(); f.now = f.now.Add(d); f.mu.Unlock() }

// do sends a request as user/key (none when user is empty) and returns the
// status and body.
func (f *fixture) do(t *testing.T, method, path, user, key, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, key)
	}
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

// TestDeviceIDWithAColon: a device whose id holds a colon (IoT Hub allows
// one, and so does vigil) authenticates with HTTP Basic, which splits user
// and password at the first colon; the path says where the id ends.
func TestDeviceIDWithAColon(t *testing.T) {
	f := newFixture(t)
	const path = "/devices/plant:m1/messages/events"
	if code, body := f.do(t, "POST", path, "plant:m1", "k:4", `{"temperature": 71.5}`); code != http.StatusNoContent {
		t.Fatalf("device plant:m1 with its key: %d %s", code, body)
	}
	if len(f.sink.got) != 1 || f.sink.got[0].Device.Name != "plant:m1" {
		t.Fatalf("sink got %+v", f.sink.got)
	}
	for _, c := range []struct{ user, key, path string }{
		{"plant:m1", "k:5", path},                             // wrong key
		{"plant", "m1:k:4", "/devices/plant/messages/events"}, // another device's path
		{"d1", "k1", path},                                    // another device's credentials
	} {
		if code, body := f.do(t, "POST", c.path, c.user, c.key, `{"a": 1}`); code == http.StatusNoContent {
			t.Errorf("%s/%s on %s: accepted (%s)", c.user, c.key, c.path, body)
		}
	}
	if len(f.sink.got) != 1 {
		t.Fatalf("%d messages reached the sink, want 1", len(f.sink.got))
	}
}

// TestWrongKeysAreThrottled: after five wrong keys in a row from one host,
// a device must wait before its next request from there: 429 with
// Retry-After, even with the right key, its key unchecked.
func TestWrongKeysAreThrottled(t *testing.T) {
	f := newFixture(t)
	f.g.throttle.Base = time.Minute
	const path = "/devices/d1/messages/events"
	for i := range 5 {
		if code, body := f.do(t, "POST", path, "d1", "wrong", `{"a": 1}`); code != http.StatusUnauthorized {
			t.Fatalf("wrong key %d: %d %s", i+1, code, body)
		}
	}
	code, body := f.do(t, "POST", path, "d1", "k1", `{"a": 1}`)
	if code != http.StatusTooManyRequests || !strings.Contains(body, "too many wrong keys") {
		t.Fatalf("after five wrong keys: %d %s, want 429", code, body)
	}
	if s := f.g.Stats(); s.Throttled != 1 || len(f.sink.got) != 0 {
		t.Fatalf("stats %+v, %d messages stored", s, len(f.sink.got))
	}
	if code, body := f.do(t, "POST", "/devices/d2/messages/events", "d2", "k2", `{"a": 1}`); code != http.StatusNoContent {
		t.Fatalf("another device from the same host: %d %s", code, body)
	}
}

func TestTelemetry(t *testing.T) {
	f := newFixture(t)
	const path = "/devices/d1/messages/events"
	if code, body := f.do(t, "POST", path, "d1", "k1", `{"temperature": 71.5}`, "Message-Id", "m-1"); code != http.StatusNoContent {
		t.Fatalf("stored telemetry: %d %s", code, body)
	}
	if len(f.sink.got) != 1 || f.sink.got[0].ID != "m-1" || f.sink.got[0].Device.ID != 1 || string(f.sink.got[0].Body) != `{"temperature": 71.5}` {
		t.Fatalf("sink got %+v", f.sink.got)
	}
	if code, body := f.do(t, "POST", path, "d1", "k1", `[1, 2]`); code != http.StatusBadRequest || !strings.Contains(body, "not a JSON object") || !strings.Contains(body, "dead letter") {
		t.Fatalf("invalid telemetry: %d %s", code, body)
	}
	if code, body := f.do(t, "POST", path, "d1", "k1", `{"a": 1}`+strings.Repeat(" ", 2000)); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "1024 bytes") {
		t.Fatalf("oversized body: %d %s", code, body)
	}
	f.sink.fail = errors.New("disk full")
	if code, body := f.do(t, "POST", path, "d1", "k1", `{"a": 1}`); code != http.StatusServiceUnavailable || !strings.Contains(body, "send it again") {
		t.Fatalf("failed commit: %d %s", code, body)
	}
	f.sink.fail = nil
	for _, c := range []struct {
		user, key, path string
		code            int
		says            string
	}{
		{"", "", path, http.StatusUnauthorized, "HTTP Basic"},
		{"d1", "wrong", path, http.StatusUnauthorized, "wrong device key"},
		{"d9", "k9", "/devices/d9/messages/events", http.StatusUnauthorized, "unknown device"},
		{"d3", "k3", "/devices/d3/messages/events", http.StatusForbidden, "disabled"},
		{"d2", "k2", path, http.StatusForbidden, "cannot act for device"},
	} {
		if code, body := f.do(t, "POST", c.path, c.user, c.key, `{"a": 1}`); code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s/%s on %s: %d %s, want %d saying %q", c.user, c.key, c.path, code, body, c.code, c.says)
		}
	}
	if s := f.g.Stats(); s.Telemetry != 1 || s.Invalid != 1 || s.Refused != 5 || len(f.sink.got) != 3 {
		t.Fatalf("stats %+v, %d messages reached the sink", s, len(f.sink.got))
	}
}

func TestCommands(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const poll = "/devices/d1/messages/deviceBound"
	cmd := func(id string) gateway.Command {
		return gateway.Command{ID: id, Device: "d1", Name: "reduce_load", Payload: json.RawMessage(`{"percent": 30}`), Expires: f.now.Add(time.Minute)}
	}
	if err := f.g.Send(ctx, cmd("1")); !errors.Is(err, gateway.ErrDeviceOffline) {
		t.Fatalf("send to a device that never polled: %v", err)
	}
	if code, _ := f.do(t, "GET", poll+"?wait=0", "d1", "k1", ""); code != http.StatusNoContent {
		t.Fatalf("empty poll: %d", code)
	}
	for _, id := range []string{"1", "2"} {
		if err := f.g.Send(ctx, cmd(id)); err != nil {
			t.Fatal(err)
		}
	}
	take := func(want string) {
		t.Helper()
		code, body := f.do(t, "GET", poll+"?wait=0", "d1", "k1", "")
		var doc struct{ ID, Name string }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &doc) != nil || doc.ID != want || doc.Name != "reduce_load" {
			t.Fatalf("poll: %d %s, want command %s", code, body, want)
		}
		if a := <-f.acks; a.CommandID != want || a.Status != gateway.AckDelivered || a.Device.Name != "d1" {
			t.Fatalf("delivery report %+v", a)
		}
	}
	take("1")
	take("2") // 1 is locked while the device works on it: the next one comes
	if code, _ := f.do(t, "GET", poll+"?wait=0", "d1", "k1", ""); code != http.StatusNoContent {
		t.Fatalf("poll with every command locked: %d", code)
	}
	if code, body := f.do(t, "DELETE", poll+"/2?reject&detail=busy", "d1", "k1", ""); code != http.StatusNoContent {
		t.Fatalf("reject: %d %s", code, body)
	}
	if a := <-f.acks; a.CommandID != "2" || a.Status != gateway.AckRejected || a.Detail != "busy" {
		t.Fatalf("rejection %+v", a)
	}
	f.advance(31 * time.Second) // command 1's lock ran out unanswered: it comes again
	take("1")
	if code, _ := f.do(t, "DELETE", poll+"/1", "d1", "k1", ""); code != http.StatusNoContent {
		t.Fatalf("complete: %d", code)
	}
	if a := <-f.acks; a.CommandID != "1" || a.Status != gateway.AckCompleted {
		t.Fatalf("completion %+v", a)
	}
	if code, body := f.do(t, "DELETE", poll+"/unknown", "d1", "k1", ""); code != http.StatusConflict || !strings.Contains(body, "no such command") {
		t.Fatalf("answer to an unknown command: %d %s", code, body)
	}
	<-f.acks
	// An answer vigil could not record for now is to be sent again.
	req, _ := http.NewRequest("DELETE", f.srv.URL+poll+"/not-recorded", nil)
	req.SetBasicAuth("d1", "k1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("answer not recorded: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	<-f.acks

	// A waiting poll gets a command sent while it waits; an expired command
	// is never handed out.
	if err := f.g.Send(ctx, gateway.Command{ID: "old", Device: "d1", Name: "x", Expires: f.now.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	f.advance(2 * time.Second)
	got := make(chan string, 1)
	go func() {
		_, body := f.do(t, "GET", poll+"?wait=30", "d1", "k1", "")
		got <- body
	}()
	if err := f.g.Send(ctx, cmd("3")); err != nil {
		t.Fatal(err)
	}
	if body := <-got; !strings.Contains(body, `"id":"3"`) {
		t.Fatalf("long poll answered %s, want command 3", body)
	}
	f.advance(2 * time.Minute) // no poll for longer than OnlineFor
	if err := f.g.Send(ctx, cmd("4")); !errors.Is(err, gateway.ErrDeviceOffline) {
		t.Fatalf("send to a device that stopped polling: %v", err)
	}
}

// TestRateLimit: a device over its rate is answered 429 with Retry-After,
// another device is not held back, and the bucket refills with time.
func TestRateLimit(t *testing.T) {
	f := newFixture(t)
	f.g.cfg.Rate, f.g.cfg.Burst = 1, 3
	const path = "/devices/d1/messages/events"
	for i := range 3 {
		if code, body := f.do(t, "POST", path, "d1", "k1", `{"a": 1}`); code != http.StatusNoContent {
			t.Fatalf("request %d within the burst: %d %s", i, code, body)
		}
	}
	req, _ := http.NewRequest("POST", f.srv.URL+path, strings.NewReader(`{"a": 1}`))
	req.SetBasicAuth("d1", "k1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("over the burst: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, _ := f.do(t, "POST", "/devices/d2/messages/events", "d2", "k2", `{"a": 1}`); code != http.StatusNoContent {
		t.Fatalf("another device was held back: %d", code)
	}
	f.advance(time.Second)
	if code, _ := f.do(t, "POST", path, "d1", "k1", `{"a": 1}`); code != http.StatusNoContent {
		t.Fatalf("after a second's refill: %d", code)
	}
	if s := f.g.Stats(); s.Limited != 1 || s.Telemetry != 5 {
		t.Fatalf("stats %+v", s)
	}
}
