package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/sim"
)

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sim", stderr)
	def := sim.DefaultFleetConfig()
	addr := fs.String("mqtt", def.Addr, "the gateway's MQTT address")
	url, token := serverFlag(fs)
	n := fs.Int("devices", def.N, "number of devices")
	faulty := fs.Int("faulty", def.Faulty, "how many of them overheat")
	prefix := fs.String("prefix", "sim-", "device id prefix")
	key := fs.String("key", "", "use this key for every device and do not register them (they must already exist)")
	interval := fs.Duration("interval", def.Interval, "time between two messages of a device")
	faultAfter := fs.Duration("fault-after", def.FaultAfter, "when faulty devices start to overheat")
	duration := fs.Duration("duration", 0, "how long to run; 0 runs until Ctrl-C")
	link := sim.DefaultAMQPLink()
	amqpURL := fs.String("amqp", "", "run the devices as AMQP clients of this broker (amqp://HOST:PORT) instead of MQTT; each logs in as its device id with --key as password")
	amqpVHost := fs.String("amqp-vhost", "", "the broker's virtual host")
	httpDevices := fs.Bool("http", false, "run the devices as HTTP clients of vigil's device gateway at --server (post readings, poll commands) instead of MQTT")
	amqpCommands := fs.String("amqp-commands", link.Commands, "address each device receives commands from; {id} is its id (/amq/queue/commands.{id} when serve sends to /queue/commands.{id})")
	amqpTelemetry := fs.String("amqp-telemetry", link.Telemetry, "address the devices send telemetry to; a comma-separated list spreads them over several (serve's --amqp-source)")
	amqpFeedback := fs.String("amqp-feedback", link.Feedback, "address the devices send command acknowledgements to")
	amqpCA := fs.String("amqp-ca", "", "amqps://: trust the broker's certificate when one of the PEM CA certificates in this file signs it (default: the system's roots)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *amqpURL != "" && *httpDevices {
		return errors.New("--amqp and --http pick the devices' protocol: give one of them")
	}
	if *amqpURL != "" && *key == "" {
		return errors.New("--amqp needs --key: the devices' broker password (create the broker users first)")
	}
	tc, err := brokerTLS(*amqpURL, *amqpCA, "", "")
	if err != nil {
		return err
	}
	link.TLS = tc
	switch t := commaList(*amqpTelemetry); len(t) {
	case 0:
		return errors.New("--amqp-telemetry is empty: give the address the devices send telemetry to")
	case 1:
		link.Telemetry = t[0]
	default:
		link.SpreadTelemetry = t
	}
	fc := def
	fc.Addr, fc.N, fc.Faulty, fc.Prefix, fc.Interval, fc.FaultAfter = *addr, *n, *faulty, *prefix, *interval, *faultAfter
	c := &api.Client{BaseURL: *url, Token: *token}
	var regErr error
	fleet, err := sim.NewFleet(fc, func(name string) string {
		if *key != "" {
			return *key
		}
		d, err := c.AddDevice(ctx, name, "")
		var se *api.StatusError
		if errors.As(err, &se) && se.Code == 409 {
			err = fmt.Errorf("%s is already registered and its key is unknown here: pass --key, or pick another --prefix", name)
		}
		regErr = errors.Join(regErr, err)
		return d.Key
	})
	if err != nil {
		return err
	}
	if regErr != nil {
		return fmt.Errorf("register devices: %w", regErr)
	}
	type runner interface {
		Run(context.Context) error
		Totals() sim.Stats
	}
	var run runner = fleet
	if *httpDevices {
		hf, err := sim.HTTPFleetOf(fleet, *url, nil)
		if err != nil {
			return err
		}
		run = hf
		fc.Addr = *url
	}
	if *amqpURL != "" {
		link.URL, link.VHost, link.Commands, link.Feedback = *amqpURL, *amqpVHost, *amqpCommands, *amqpFeedback
		// Registered with vigil so it accepts their telemetry; the broker
		// authenticates them.
		for _, d := range fleet.Devices {
			if _, err := c.AddDevice(ctx, d.Name(), *key); err != nil {
				var se *api.StatusError
				if !errors.As(err, &se) || se.Code != 409 {
					return fmt.Errorf("register %s: %w", d.Name(), err)
				}
			}
		}
		af, err := sim.NewAMQPFleet(fc, link, func(string) string { return *key })
		if err != nil {
			return err
		}
		run = af
		fc.Addr = redact(*amqpURL)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	fmt.Fprintf(stderr, "vigil sim: %d devices (%d faulty) → %s\n", fc.N, fc.Faulty, fc.Addr)
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() { defer wg.Done(); runErr = run.Run(ctx) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			tot := run.Totals()
			fmt.Fprintf(stderr, "sim: acknowledged readings %d, failed publishes %d, commands %d, acks sent %d\n", tot.Readings, tot.Failed, tot.Commands, tot.Acknowledged)
		}
	}
	wg.Wait()
	tot := run.Totals()
	fmt.Fprintf(stdout, "devices %d, readings acknowledged %d, failed publishes %d, commands received %d, acknowledged %d\n", fc.N, tot.Readings, tot.Failed, tot.Commands, tot.Acknowledged)
	return runErr
}
