package sim

import (
	"net/url"
	"strings"
	"testing"
)

func TestNewFleetSpreadsFaultyDevices(t *testing.T) {
	for _, tc := range []struct{ n, faulty int }{{10, 2}, {6, 2}, {5, 1}, {3, 0}, {4, 4}, {50, 10}} {
		cfg := DefaultFleetConfig()
		cfg.N, cfg.Faulty = tc.n, tc.faulty
		keys := map[string]bool{}
		f, err := NewFleet(cfg, func(name string) string { keys[name] = true; return "k-" + name })
		if err != nil {
			t.Fatal(err)
		}
		got, gap, last := 0, tc.n, -1
		for i, d := range f.Devices {
			if !keys[d.Name()] || !strings.HasPrefix(d.Name(), cfg.Prefix) {
				t.Fatalf("device %q was not given a key", d.Name())
			}
			if d.Faulty() {
				got++
				if last >= 0 {
					gap = min(gap, i-last)
				}
				last = i
			}
		}
		if got != tc.faulty || len(keys) != tc.n {
			t.Fatalf("n=%d: %d faulty of %d devices, want %d", tc.n, got, len(keys), tc.faulty)
		}
		if tc.faulty > 1 && tc.faulty < tc.n && gap < tc.n/tc.faulty-1 {
			t.Fatalf("n=%d faulty=%d: faulty devices bunch up (gap %d)", tc.n, tc.faulty, gap)
		}
	}
}

func TestFleetConfigValidate(t *testing.T) {
	for _, mutate := range []func(*FleetConfig){
		func(c *FleetConfig) { c.N = 0 },
		func(c *FleetConfig) { c.Faulty = c.N + 1 },
		func(c *FleetConfig) { c.Faulty = -1 },
		func(c *FleetConfig) { c.Interval = 0 },
	} {
		c := DefaultFleetConfig()
		mutate(&c)
		if c.Validate() == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}

func TestTopicsCarryIoTHubPropertyBags(t *testing.T) {
	topic := AckTopic("dev-1", "17", "completed")
	bag, err := url.ParseQuery(strings.TrimPrefix(topic, EventsTopic("dev-1")))
	if err != nil || bag.Get("$.cid") != "17" || bag.Get("ack") != "completed" || !strings.Contains(topic, "%24.cid=17") {
		t.Fatalf("ack topic %q (%v)", topic, bag)
	}
	if tt := TelemetryTopic("dev-1", "r-1"); tt != "devices/dev-1/messages/events/%24.mid=r-1" {
		t.Fatalf("telemetry topic %q", tt)
	}
}
