package server

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/gateway/amqp"
	"github.com/vigil-iot/vigil/internal/rabbittest"
	"github.com/vigil-iot/vigil/sim"
)

// TestLoopThroughBroker runs the whole loop through a real RabbitMQ:
// simulated AMQP devices → broker (two telemetry queues) → vigil → store; the faulty device's
// anomaly → command → broker → device → acknowledgement → lifecycle
// acknowledged → recovery verified.
func TestLoopThroughBroker(t *testing.T) {
	b := rabbittest.Need(t)
	ctx := context.Background()
	fc := sim.DefaultFleetConfig()
	fc.N, fc.Faulty, fc.Prefix = 3, 1, "amqp-"
	fc.Interval, fc.FaultAfter, fc.RampPerSecond = 100*time.Millisecond, 4*time.Second, 3
	names := []string{"amqp-001", "amqp-002", "amqp-003"}
	vhost, keys := b.Provision(t, names...)

	cfg := testConfig(t)
	ac := amqp.DefaultConfig()
	// The fleet spread over two queues by device, as a broker that shards
	// it routes it: this vigil serves both.
	shards := []string{"/amq/queue/telemetry.0", "/amq/queue/telemetry.1"}
	ac.URL, ac.VHost, ac.Sources = b.URL, vhost, shards
	cfg.AMQP = &ac
	srv, err := Start(ctx, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(ctx)
	for _, n := range names {
		if _, err := srv.Store().AddDevice(ctx, n, keys[n]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the broker link", 30*time.Second, func() any { return srv.Status() }, func() bool { return srv.Status().AMQP.Connected })

	link := sim.DefaultAMQPLink()
	link.URL, link.VHost, link.Batch, link.SpreadTelemetry = b.DeviceURL(), vhost, 5, shards
	fleet, err := sim.NewAMQPFleet(fc, link, func(name string) string { return keys[name] })
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fleet.Run(runCtx) }()
	waitFor(t, "the faulty device to be commanded, acknowledge and recover", 60*time.Second, func() any { return srv.Status() }, func() bool {
		s := srv.Status()
		return s.Acknowledged >= 1 && s.DevicesHealed >= 1
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("fleet: %v", err)
	}

	st := srv.Store()
	for _, d := range fleet.Devices {
		var n int64
		st.DB().QueryRow(`SELECT count(*) FROM readings WHERE device = ?`, d.Name()).Scan(&n)
		if s := d.Stats(); n != s.Readings || n == 0 {
			t.Errorf("%s: %d readings stored, %d accepted by the broker", d.Name(), n, s.Readings)
		}
		if s := d.Stats(); d.Faulty() != (s.Commands > 0) || s.Commands != s.Acknowledged {
			t.Errorf("%s (faulty %v): %d commands received, %d acknowledged", d.Name(), d.Faulty(), s.Commands, s.Acknowledged)
		}
	}
	var faulty string
	for _, d := range fleet.Devices {
		if d.Faulty() {
			faulty = d.Name()
		}
	}
	acked := column(t, st, `SELECT d.name || ':' || c.state || ':' || c.verification FROM commands c JOIN devices d ON d.id = c.device_id`)
	if len(acked) != 1 || acked[0] != faulty+":acknowledged:recovered" {
		t.Errorf("commands %v, want one to %s, acknowledged and recovered", acked, faulty)
	}
	if s := srv.Status().AMQP; s.Commands < 1 || s.Acks < 1 || s.RefusedUnknown != 0 {
		t.Errorf("broker link stats %+v", s)
	}

	// What Prometheus scrapes: the link is up, each queue counts what it
	// delivered, and the one command was acknowledged.
	fams := scrape(t, srv, "")
	if up := sample(t, fams, "vigil_amqp_connected"); up != 1 {
		t.Errorf("vigil_amqp_connected = %g while linked", up)
	}
	sources := srv.Status().AMQP.Sources
	for _, q := range shards {
		got, want := sample(t, fams, "vigil_amqp_received_total", "source", q), float64(sources[q].Received)
		if got != want || got == 0 {
			t.Errorf("vigil_amqp_received_total{source=%q} = %g; the link counted %g", q, got, want)
		}
	}
	if got := sample(t, fams, "vigil_commands_total", "step", "acknowledged"); got != 1 {
		t.Errorf("vigil_commands_total{step=\"acknowledged\"} = %g, want 1", got)
	}
}
