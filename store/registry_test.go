package store

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestModelRegistryVersionsAndRollback(t *testing.T) {
	ctx := context.Background()
	s, dir := openTemp(t)
	from := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	put := func(name, kind string) Model {
		m := Model{Name: name, Spec: json.RawMessage(`{"kind":"` + kind + `"}`), From: from, To: from.Add(time.Hour), Metrics: json.RawMessage(`{"readings":10}`)}
		if err := s.PutModel(ctx, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := put("default", "ewma_z"); m.Version != 1 {
		t.Fatalf("first version %d", m.Version)
	}
	if m := put("default", "robust_z"); m.Version != 2 {
		t.Fatalf("second version %d", m.Version)
	}
	if m := put("motor-1/temperature", "spike"); m.Version != 1 {
		t.Fatalf("per-series version %d", m.Version)
	}
	bad := Model{Name: "no slash", Spec: json.RawMessage(`{}`)}
	if err := s.PutModel(ctx, &bad); err == nil {
		t.Fatal("a malformed name was accepted")
	}
	active, _ := s.Models(ctx, false)
	if len(active) != 2 || active[0].Name != "default" || active[0].Version != 2 || string(active[0].Spec) != `{"kind":"robust_z"}` {
		t.Fatalf("active %+v", active)
	}
	if err := s.ActivateModel(ctx, "default", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.ActivateModel(ctx, "default", 9); !errors.Is(err, ErrNoSuchModel) {
		t.Fatalf("activate missing version: %v", err)
	}
	s.Close()
	s2, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	all, _ := s2.Models(ctx, true)
	if len(all) != 3 || !all[0].Active || all[1].Active || !all[0].From.Equal(from) {
		t.Fatalf("after rollback and reopen: %+v", all)
	}
}

func TestSeriesHistory(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var rows []row
	for i := 0; i < 10; i++ {
		rows = append(rows, row{t0.Add(time.Duration(i) * time.Second), 1, 0, float64(i)}, row{t0, 2, 0, -1})
	}
	rec := record(t, rows)
	defer rec.Release()
	if err := s.Commit(ctx, Batch{Readings: rec}); err != nil {
		t.Fatal(err)
	}
	ts, xs, err := s.SeriesHistory(ctx, 1, 0, time.Time{}, time.Time{}, 3)
	if err != nil || len(xs) != 3 || xs[0] != 7 || xs[2] != 9 || !ts[2].Equal(t0.Add(9*time.Second)) {
		t.Fatalf("last 3: %v %v %v", ts, xs, err)
	}
	_, xs, _ = s.SeriesHistory(ctx, 1, 0, t0.Add(2*time.Second), t0.Add(5*time.Second), 0)
	if len(xs) != 3 || xs[0] != 2 {
		t.Fatalf("window: %v", xs)
	}
}

// TestDeviceModelNames: "DEVICE/*" is a valid registry name and is told
// apart from per-series names.
func TestDeviceModelNames(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	m := Model{Name: DeviceModel("press-4"), Spec: json.RawMessage(`{"kind":"mahalanobis"}`)}
	if err := s.PutModel(ctx, &m); err != nil || m.Name != "press-4/*" || m.Version != 1 {
		t.Fatalf("put %+v: %v", m, err)
	}
	for _, name := range []string{"/*", "press-4/*x", "press-4/**", "*/*"} {
		if err := s.PutModel(ctx, &Model{Name: name, Spec: json.RawMessage(`{}`)}); err == nil {
			t.Errorf("name %q was accepted", name)
		}
	}
	for name, want := range map[string]string{"press-4/*": "press-4", "press-4/temp": "", "default": "", "/*": ""} {
		if dev, ok := ModelDevice(name); dev != want || ok != (want != "") {
			t.Errorf("ModelDevice(%q) = %q, %v", name, dev, ok)
		}
	}
}
