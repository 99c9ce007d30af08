package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// fillSeries stores n readings, one a second, for each metric of each
// device: value = device*1000 + metric*100 + i.
func fillSeries(tb testing.TB, s *Store, devices, metrics, n int) {
	tb.Helper()
	_, err := s.DB().Exec(`INSERT INTO telemetry
		SELECT TIMESTAMP '2026-11-29' + to_seconds(i), d::INTEGER, m::SMALLINT, d * 1000 + m * 100 + i
		FROM range(1, ? + 1) t1(d), range(?) t2(m), range(?) t3(i)`, devices, metrics, n)
	if err != nil {
		tb.Fatal(err)
	}
}

// TestRecentHistories: each series of the shard's devices comes once, with
// its last limit readings in time order; other shards' devices do not.
func TestRecentHistories(t *testing.T) {
	s, err := Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fillSeries(t, s, 3, 2, 5)
	got := map[[2]int][]float64{}
	err = s.RecentHistories(context.Background(), 3, time.Time{}, 1, 2, func(d int32, m int16, ts []time.Time, xs []float64) error {
		k := [2]int{int(d), int(m)}
		if _, dup := got[k]; dup {
			t.Errorf("series %v came twice", k)
		}
		for i := 1; i < len(ts); i++ {
			if !ts[i].After(ts[i-1]) {
				t.Errorf("series %v not in time order: %v", k, ts)
			}
		}
		got[k] = append([]float64(nil), xs...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[[2]int][]float64{
		{1, 0}: {1002, 1003, 1004}, {1, 1}: {1102, 1103, 1104},
		{3, 0}: {3002, 3003, 3004}, {3, 1}: {3102, 3103, 3104},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("histories of shard 1 of 2:\n got %v\nwant %v", got, want)
	}
	for i, c := range [][3]int{{0, 0, 1}, {1, 2, 2}, {1, -1, 2}} {
		if err := s.RecentHistories(context.Background(), c[0], time.Time{}, c[1], c[2], func(int32, int16, []time.Time, []float64) error { return nil }); err == nil {
			t.Errorf("case %d: limit %d shard %d of %d accepted", i, c[0], c[1], c[2])
		}
	}
}

// TestSeriesHistories: exactly the series asked for come, each once with
// its last limit readings at or after since in time order, the same as
// SeriesHistory gives for it alone; a series without readings does not
// come.
func TestSeriesHistories(t *testing.T) {
	s, err := Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fillSeries(t, s, 4, 3, 10) // ts 2026-11-29 00:00:00 + i s, i = 0..9
	ctx := context.Background()
	since := time.Date(2026, 11, 29, 0, 0, 6, 0, time.UTC)
	ids := []SeriesID{{3, 2}, {1, 0}, {9, 9}, {3, 0}} // {9, 9} has no readings
	got := map[SeriesID][]float64{}
	err = s.SeriesHistories(ctx, ids, 3, since, func(d int32, m int16, ts []time.Time, xs []float64) error {
		k := SeriesID{d, m}
		if _, dup := got[k]; dup {
			t.Errorf("series %v came twice", k)
		}
		got[k] = append([]float64(nil), xs...)
		wantTS, wantXS, err := s.SeriesHistory(ctx, d, m, since, time.Time{}, 3)
		if err != nil || fmt.Sprint(ts, xs) != fmt.Sprint(wantTS, wantXS) {
			t.Errorf("series %v: %v %v; SeriesHistory gives %v %v (%v)", k, ts, xs, wantTS, wantXS, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[SeriesID][]float64{{1, 0}: {1007, 1008, 1009}, {3, 0}: {3007, 3008, 3009}, {3, 2}: {3207, 3208, 3209}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("histories:\n got %v\nwant %v", got, want)
	}
	n := 0
	if err := s.SeriesHistories(ctx, []SeriesID{{2, 1}}, 100, since, func(_ int32, _ int16, ts []time.Time, _ []float64) error { n = len(ts); return nil }); err != nil || n != 4 {
		t.Fatalf("a limit above the readings since: %d readings (%v), want 4", n, err)
	}
	if err := s.SeriesHistories(ctx, ids, 0, since, nil); err == nil {
		t.Error("limit 0 accepted")
	}
}

// TestRecentHistoriesSince: readings before since are left out, also when
// a series has fewer than limit readings after it; a series with none
// after it does not come at all.
func TestRecentHistoriesSince(t *testing.T) {
	s, err := Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fillSeries(t, s, 2, 1, 10) // ts 2026-11-29 00:00:00 + i s, i = 0..9
	// Device 3's only reading is older than since.
	if _, err := s.DB().Exec(`INSERT INTO telemetry VALUES (TIMESTAMP '2026-11-28 23:00:00', 3, 0, 42)`); err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 11, 29, 0, 0, 7, 0, time.UTC)
	got := map[int32][]float64{}
	err = s.RecentHistories(context.Background(), 5, since, 0, 1, func(d int32, _ int16, ts []time.Time, xs []float64) error {
		for _, x := range ts {
			if x.Before(since) {
				t.Errorf("device %d: reading at %v, before since", d, x)
			}
		}
		got[d] = append([]float64(nil), xs...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32][]float64{1: {1007, 1008, 1009}, 2: {2007, 2008, 2009}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("histories since %v:\n got %v\nwant %v", since, got, want)
	}
	latest, ok, err := s.LatestReading(context.Background())
	if err != nil || !ok || !latest.Equal(time.Date(2026, 11, 29, 0, 0, 9, 0, time.UTC)) {
		t.Fatalf("latest reading %v (%v, %v), want 2026-11-29 00:00:09", latest, ok, err)
	}
}

// BenchmarkWarmHistories reads the last 200 readings of 2,000 series (1M
// stored readings), as a new default model's warm-up does: vigil's one scan
// against one SeriesHistory query per series.
func BenchmarkWarmHistories(b *testing.B) {
	s, err := Open(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const devices, metrics, limit = 200, 10, 200
	fillSeries(b, s, devices, metrics, 500)
	ctx := context.Background()
	b.Run("vigil_one_scan", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := s.RecentHistories(ctx, limit, time.Time{}, 0, 1, func(int32, int16, []time.Time, []float64) error { n++; return nil }); err != nil || n != devices*metrics {
				b.Fatalf("%d series, %v", n, err)
			}
		}
		b.ReportMetric(float64(devices*metrics)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	})
	b.Run("vigil_listed_series", func(b *testing.B) { // the series named one by one, as new per-series models are
		var ids []SeriesID
		for d := 1; d <= devices; d++ {
			for m := range metrics {
				ids = append(ids, SeriesID{int32(d), int16(m)})
			}
		}
		for b.Loop() {
			n := 0
			if err := s.SeriesHistories(ctx, ids, limit, time.Time{}, func(int32, int16, []time.Time, []float64) error { n++; return nil }); err != nil || n != devices*metrics {
				b.Fatalf("%d series, %v", n, err)
			}
		}
		b.ReportMetric(float64(devices*metrics)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	})
	b.Run("query_per_series", func(b *testing.B) {
		for b.Loop() {
			for d := 1; d <= devices; d++ {
				for m := range metrics {
					if _, _, err := s.SeriesHistory(ctx, int32(d), int16(m), time.Time{}, time.Time{}, limit); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
		b.ReportMetric(float64(devices*metrics)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	})
}

// BenchmarkWarmHistoriesSince reads the last 200 readings of 2,000 series
// from 4M readings stored in arrival order (2,000 seconds of a fleet
// reporting every second), bounded to the last 300 seconds as the scorer
// bounds it, against the same scan over all history.
func BenchmarkWarmHistoriesSince(b *testing.B) {
	s, err := Open(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const devices, metrics, seconds, limit = 200, 10, 2000, 200
	if _, err := s.DB().Exec(`INSERT INTO telemetry
		SELECT TIMESTAMP '2026-11-29' + to_seconds(i), d::INTEGER, m::SMALLINT, i
		FROM range(?) t3(i), range(1, ? + 1) t1(d), range(?) t2(m)`, seconds, devices, metrics); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	since := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC).Add((seconds - 300) * time.Second)
	for _, c := range []struct {
		name  string
		since time.Time
	}{{"vigil_since", since}, {"all_history", time.Time{}}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				n := 0
				err := s.RecentHistories(ctx, limit, c.since, 0, 1, func(_ int32, _ int16, ts []time.Time, _ []float64) error {
					if len(ts) != limit {
						return fmt.Errorf("%d readings, want %d", len(ts), limit)
					}
					n++
					return nil
				})
				if err != nil || n != devices*metrics {
					b.Fatalf("%d series, %v", n, err)
				}
			}
			b.ReportMetric(float64(devices*metrics)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
		})
	}
}
