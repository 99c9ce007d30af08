package models

import (
	"testing"
	"time"
)

// TestUpdateDoesNotAllocate checks that scoring a reading allocates nothing
// once a detector is built, for every kind and for Mahalanobis.
func TestUpdateDoesNotAllocate(t *testing.T) {
	s := noisy(2000, 2000, 31, daily, nil)
	for _, kind := range Kinds() {
		t.Run(kind, func(t *testing.T) {
			d := mustNew(t, Spec{Kind: kind})
			for i := range 1000 {
				d.Update(s.ts[i], s.xs[i])
			}
			i := 1000
			allocs := testing.AllocsPerRun(500, func() {
				d.Update(s.ts[i], s.xs[i])
				i++
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per Update", allocs)
			}
		})
	}
	t.Run(KindMahalanobis, func(t *testing.T) {
		m, err := NewMahalanobis(DefaultMahalanobisConfig(3))
		if err != nil {
			t.Fatal(err)
		}
		xs := make([]float64, 3)
		t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := range 200 {
			xs[0], xs[1], xs[2] = s.xs[i], s.xs[i+1], s.xs[i+2]
			m.Update(t0, xs)
		}
		i := 200
		allocs := testing.AllocsPerRun(200, func() {
			xs[0], xs[1], xs[2] = s.xs[i], s.xs[i+1], s.xs[i+2]
			m.Update(t0, xs)
			i++
		})
		t.Logf("%v allocations per Mahalanobis.Update", allocs)
	})
}
