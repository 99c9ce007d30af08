package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/sim"
	"github.com/vigil-iot/vigil/store"
)

// TestModelHotReload: a model version registered through the API replaces
// the running detector of its series without a restart, and a rollback
// puts the earlier version back.
func TestModelHotReload(t *testing.T) {
	ctx := context.Background()
	srv, dev := startWithDevice(t, "hot-1", "hot-key-01")
	seq := 0
	send := func(n int) {
		for i := 0; i < n; i++ {
			seq++
			body := fmt.Sprintf(`{"temperature": %.2f}`, 70+0.1*float64(seq%7))
			if _, err := dev.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("hot-1"), Payload: []byte(body)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(60)
	c := &api.Client{BaseURL: "http://" + srv.HTTPAddr()}
	if n := srv.Status().Anomalies; n != 0 {
		t.Fatalf("%d anomalies on a steady series under the default model", n)
	}

	// Version 1: a hair-trigger ewma_z that calls every wiggle anomalous.
	touchy := store.Model{Name: "hot-1/temperature", Spec: json.RawMessage(`{"kind":"ewma_z","params":{"z":0.05}}`)}
	got, err := c.PutModel(ctx, touchy)
	if err != nil || got.Version != 1 {
		t.Fatalf("put: %+v %v", got, err)
	}
	waitFor(t, "version 1 to be applied", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().ModelsApplied == 1 })
	send(30)
	// Scoring follows the commit that acknowledged the publish.
	waitFor(t, "the new version to flag the series", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().Anomalies > 0 })
	var label string
	srv.Store().DB().QueryRow(`SELECT model FROM anomalies ORDER BY id LIMIT 1`).Scan(&label)
	if !strings.HasPrefix(label, "hot-1/temperature@1") {
		t.Fatalf("anomaly model label %q", label)
	}

	// A spec that cannot build is refused before it can become active.
	if _, err := c.PutModel(ctx, store.Model{Name: "hot-1/temperature", Spec: json.RawMessage(`{"kind":"crystal_ball"}`)}); err == nil {
		t.Fatal("an unknown kind was registered")
	}

	// Version 2 is calm; then roll back to version 1.
	if _, err := c.PutModel(ctx, store.Model{Name: "hot-1/temperature", Spec: json.RawMessage(`{"kind":"ewma_z"}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "version 2 to be applied", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().ModelsApplied == 2 })
	if err := c.ActivateModel(ctx, "hot-1/temperature", 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rollback to be applied", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().ModelsApplied == 3 })
	all, err := c.Models(ctx, true)
	if err != nil || len(all) != 2 || !all[0].Active || all[1].Active {
		t.Fatalf("registry after rollback: %+v %v", all, err)
	}
}

// TestModelWaitsForItsDevice: a model trained for a device that is not
// registered yet waits (and says so in the status) instead of being
// dropped; once the device is registered the model is applied and scores
// its series.
func TestModelWaitsForItsDevice(t *testing.T) {
	ctx := context.Background()
	srv, _ := startWithDevice(t, "early-1", "early-key-01")
	m := store.Model{Name: "late-1/temperature", Spec: json.RawMessage(`{"kind":"ewma_z","params":{"z":0.05}}`)}
	if err := srv.Store().PutModel(ctx, &m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the model to wait for its device", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().ModelsWaiting == 1 })
	if n := srv.Status().ModelsApplied; n != 0 {
		t.Fatalf("%d versions applied without their device", n)
	}
	if _, err := srv.Store().AddDevice(ctx, "late-1", "late-key-001"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the model to be applied", 10*time.Second, func() any { return srv.Status() }, func() bool {
		s := srv.Status()
		return s.ModelsApplied == 1 && s.ModelsWaiting == 0
	})
	dev, err := sim.Connect(ctx, srv.MQTTAddr(), "late-1", "late-key-001", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Disconnect(&paho.Disconnect{})
	for i := range 30 {
		body := fmt.Sprintf(`{"temperature": %.2f}`, 70+0.1*float64(i%7))
		if _, err := dev.Publish(ctx, &paho.Publish{QoS: 1, Topic: sim.EventsTopic("late-1"), Payload: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the waiting model to flag the series", 10*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().Anomalies > 0 })
	var label string
	srv.Store().DB().QueryRow(`SELECT model FROM anomalies ORDER BY id LIMIT 1`).Scan(&label)
	if !strings.HasPrefix(label, "late-1/temperature@1") {
		t.Fatalf("anomaly model label %q, want the waiting model's", label)
	}
}
