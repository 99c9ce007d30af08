package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vigil-iot/vigil/server"
	"github.com/vigil-iot/vigil/sim"
	"github.com/vigil-iot/vigil/store"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	devices := fs.Int("devices", 10, "number of simulated devices")
	faulty := fs.Int("faulty", -1, "how many of them overheat (default: a fifth, at least one)")
	duration := fs.Duration("duration", 30*time.Second, "how long to run; 0 runs until Ctrl-C")
	dataDir := fs.String("data", "", "data directory (default: a temporary one, removed afterwards)")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object on the last line")
	interval := fs.Duration("interval", 500*time.Millisecond, "time between two messages of a device")
	faultAfter := fs.Duration("fault-after", 12*time.Second, "when faulty devices start to overheat")
	mqttAddr := fs.String("mqtt", "127.0.0.1:0", "MQTT gateway address (port 0 picks a free one)")
	httpAddr := fs.String("http", "127.0.0.1:0", "HTTP API address (port 0 picks a free one)")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *faulty < 0 {
		*faulty = max(1, *devices/5)
	}
	dir := *dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "vigil-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	log := newLogger(stderr, *logLevel)
	cfg := server.DefaultConfig(dir)
	cfg.MQTT.Addr, cfg.HTTPAddr = *mqttAddr, *httpAddr
	srv, err := server.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			srv.Close(context.Background())
		}
	}()

	fc := sim.DefaultFleetConfig()
	fc.Addr, fc.N, fc.Faulty, fc.Interval, fc.FaultAfter = srv.MQTTAddr(), *devices, *faulty, *interval, *faultAfter
	fc.Prefix = "demo-"
	keys := map[string]string{}
	fleet, err := sim.NewFleet(fc, func(name string) string {
		keys[name] = sim.NewKey()
		return keys[name]
	})
	if err != nil {
		return err
	}
	for _, d := range fleet.Devices {
		_, err := srv.Store().AddDevice(ctx, d.Name(), keys[d.Name()])
		if errors.Is(err, store.ErrDeviceExists) { // a reused --data directory
			_, err = srv.Store().SetDeviceKey(ctx, d.Name(), keys[d.Name()])
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "vigil demo: %d devices (%d faulty) → MQTT %s, API http://%s, data %s\n",
		*devices, *faulty, srv.MQTTAddr(), srv.HTTPAddr(), dir)

	runCtx, cancel := context.WithCancel(ctx)
	if *duration > 0 {
		runCtx, cancel = context.WithTimeout(ctx, *duration)
	}
	defer cancel()
	var wg sync.WaitGroup
	var fleetErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		fleetErr = fleet.Run(runCtx)
	}()
	statusLines(runCtx, srv, stderr)
	wg.Wait()
	if fleetErr != nil {
		fmt.Fprintf(stderr, "vigil demo: some devices failed: %v\n", fleetErr)
	}

	// Every reading a device saw acknowledged is committed by now, because
	// the gateway acknowledges only after the commit.
	sum, err := srv.Summary(context.Background())
	closed = true
	if cerr := srv.Close(context.Background()); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(sum)
	}
	fmt.Fprintf(stdout, "devices %d, readings stored %d, anomalies %d, commands sent %d, acknowledged %d, devices recovered %d, dead letters %d\n",
		sum.Devices, sum.ReadingsStored, sum.Anomalies, sum.CommandsSent, sum.CommandsAcked, sum.DevicesRecovered, sum.DeadLetters)
	return nil
}

// statusLines prints one status line a second until ctx ends.
func statusLines(ctx context.Context, srv *server.Server, w io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st := srv.Status()
			fmt.Fprintf(w, "[%6s] devices %d/%d  readings/s %5d  stored %7d  anomalies %3d  commands %3d sent %3d acked  recovered %3d  dead letters %d\n",
				st.Uptime, st.Connected, st.Devices, st.Readings-last, st.Readings, st.Anomalies,
				st.Sent, st.Acknowledged, st.DevicesHealed, st.DeadLetters)
			last = st.Readings
		}
	}
}
