package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vigil-iot/vigil/store"
)

// FleetConfig describes a fleet of simulated devices.
type FleetConfig struct {
	Addr   string
	Prefix string // device ids are Prefix + zero-padded number
	N      int
	// Faulty is how many of the N devices overheat (spread evenly).
	Faulty        int
	Interval      time.Duration
	DayLength     time.Duration
	FaultAfter    time.Duration
	RampPerSecond float64
	Seed          uint64
}

// DefaultFleetConfig returns a fleet of 10 devices, 2 of them faulty, that
// report every 500 ms with a 10-minute "day".
func DefaultFleetConfig() FleetConfig {
	return FleetConfig{
		Addr: "127.0.0.1:1883", Prefix: "dev-", N: 10, Faulty: 2, Interval: 500 * time.Millisecond,
		DayLength: 10 * time.Minute, FaultAfter: 10 * time.Second, RampPerSecond: 1.5, Seed: 1,
	}
}

// Validate checks the configuration.
func (c FleetConfig) Validate() error {
	switch {
	case c.N < 1:
		return errors.New("sim: a fleet needs at least one device")
	case c.Faulty < 0 || c.Faulty > c.N:
		return fmt.Errorf("sim: faulty devices (%d) must be between 0 and the fleet size (%d)", c.Faulty, c.N)
	case c.Interval <= 0 || c.DayLength <= 0:
		return errors.New("sim: interval and day length must be positive")
	}
	return nil
}

// Fleet is a set of simulated devices.
type Fleet struct {
	Devices []*Device
}

// NewKey returns a random device key (store.NewDeviceKey).
func NewKey() string { return store.NewDeviceKey() }

// NewFleet builds the devices of cfg. key returns each device's key (they
// must be registered with vigil before Run).
func NewFleet(cfg FleetConfig, key func(name string) string) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fleet{}
	width := len(fmt.Sprint(cfg.N))
	for i := 0; i < cfg.N; i++ {
		name := fmt.Sprintf("%s%0*d", cfg.Prefix, max(width, 3), i+1)
		// Spread faulty devices evenly: device i is faulty when the count of
		// faulty devices up to i steps up.
		faulty := cfg.Faulty > 0 && (i+1)*cfg.Faulty/cfg.N != i*cfg.Faulty/cfg.N
		f.Devices = append(f.Devices, NewDevice(DeviceConfig{
			Name: name, Key: key(name), Addr: cfg.Addr, Interval: cfg.Interval, DayLength: cfg.DayLength,
			Faulty: faulty, FaultAfter: cfg.FaultAfter, RampPerSecond: cfg.RampPerSecond, Seed: cfg.Seed + uint64(i),
		}))
	}
	return f, nil
}

// Run runs every device until ctx ends and returns the errors of devices
// that could not connect or lost their connection.
func (f *Fleet) Run(ctx context.Context) error {
	return runStaggered(ctx, len(f.Devices), func(i int) (time.Duration, func(context.Context) error) {
		return f.Devices[i].cfg.Interval, f.Devices[i].Run
	})
}

// Totals sums the stats of all devices.
func (f *Fleet) Totals() Stats {
	return sumStats(len(f.Devices), func(i int) Stats { return f.Devices[i].Stats() })
}

// runStaggered runs n devices until ctx ends, starting device i after i/n of
// its reporting interval so the fleet does not publish in lock step.
func runStaggered(ctx context.Context, n int, device func(i int) (time.Duration, func(context.Context) error)) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		interval, run := device(i)
		wg.Go(func() {
			select {
			case <-time.After(time.Duration(i) * interval / time.Duration(n)):
			case <-ctx.Done():
				return
			}
			errs[i] = run(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sumStats adds up the counters of n devices.
func sumStats(n int, stats func(i int) Stats) Stats {
	var t Stats
	for i := range n {
		s := stats(i)
		t.Messages += s.Messages
		t.Readings += s.Readings
		t.Failed += s.Failed
		t.Commands += s.Commands
		t.Acknowledged += s.Acknowledged
	}
	return t
}
