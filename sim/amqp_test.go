package sim

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestAMQPLinkValidate(t *testing.T) {
	if err := DefaultAMQPLink().Validate(); err != nil {
		t.Fatalf("default link: %v", err)
	}
	for name, edit := range map[string]func(*AMQPLink){
		"mqtt url":         func(l *AMQPLink) { l.URL = "mqtt://127.0.0.1:1883" },
		"commands no {id}": func(l *AMQPLink) { l.Commands = "/exchange/amq.topic/commands" },
		"no telemetry":     func(l *AMQPLink) { l.Telemetry = "" },
		"empty batch":      func(l *AMQPLink) { l.Batch = 0 },
		"empty spread":     func(l *AMQPLink) { l.SpreadTelemetry = []string{"/amq/queue/t.0", ""} },
	} {
		l := DefaultAMQPLink()
		edit(&l)
		if err := l.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, l)
		}
	}
}

func TestAMQPFleetMirrorsMQTTFleet(t *testing.T) {
	cfg := DefaultFleetConfig()
	cfg.N, cfg.Faulty = 5, 2
	f, err := NewAMQPFleet(cfg, DefaultAMQPLink(), func(name string) string { return "key-" + name })
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewFleet(cfg, func(name string) string { return "key-" + name })
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range f.Devices {
		if d.Name() != m.Devices[i].Name() || d.Faulty() != m.Devices[i].Faulty() || d.cfg.Key != "key-"+d.Name() {
			t.Fatalf("device %d: %s faulty=%v, MQTT fleet has %s faulty=%v", i, d.Name(), d.Faulty(), m.Devices[i].Name(), m.Devices[i].Faulty())
		}
	}
}

func TestAMQPDeviceUnreachableBroker(t *testing.T) {
	l := DefaultAMQPLink()
	l.URL = "amqp://127.0.0.1:1" // nothing listens on port 1
	d := NewAMQPDevice(DeviceConfig{Name: "d1", Key: "k", Interval: time.Millisecond, DayLength: time.Minute}, l)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Run(ctx); err == nil || !strings.Contains(err.Error(), "d1") {
		t.Fatalf("Run = %v, want a connection error naming the device", err)
	}
}

func TestAMQPFleetSpreadsTelemetry(t *testing.T) {
	cfg := DefaultFleetConfig()
	cfg.N = 5
	link := DefaultAMQPLink()
	link.SpreadTelemetry = []string{"/amq/queue/t.0", "/amq/queue/t.1"}
	f, err := NewAMQPFleet(cfg, link, func(string) string { return "k" })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/amq/queue/t.0", "/amq/queue/t.1", "/amq/queue/t.0", "/amq/queue/t.1", "/amq/queue/t.0"}
	for i, d := range f.Devices {
		if d.link.Telemetry != want[i] {
			t.Errorf("device %d sends to %q, want %q", i, d.link.Telemetry, want[i])
		}
	}
}
