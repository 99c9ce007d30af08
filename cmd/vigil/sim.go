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

func newKey() string { return sim.NewKey() }

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
	if err := parse(fs, args); err != nil {
		return err
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
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	fmt.Fprintf(stderr, "vigil sim: %d devices (%d faulty) → %s\n", fc.N, fc.Faulty, fc.Addr)
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() { defer wg.Done(); runErr = fleet.Run(ctx) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			tot := fleet.Totals()
			fmt.Fprintf(stderr, "sim: acknowledged readings %d, failed publishes %d, commands %d, acks sent %d\n", tot.Readings, tot.Failed, tot.Commands, tot.Acknowledged)
		}
	}
	wg.Wait()
	tot := fleet.Totals()
	fmt.Fprintf(stdout, "devices %d, readings acknowledged %d, failed publishes %d, commands received %d, acknowledged %d\n", fc.N, tot.Readings, tot.Failed, tot.Commands, tot.Acknowledged)
	return runErr
}
