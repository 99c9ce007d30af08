package server

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/gateway/mqtt"
	"github.com/vigil-iot/vigil/sim"
)

// instantSink acknowledges every message at once and stores nothing: the
// baseline cost of MQTT, the broker and the client without durability.
type instantSink struct{}

func (instantSink) Submit(_ context.Context, m gateway.Message) error { m.Settle(nil); return nil }

type openRegistry struct{}

func (openRegistry) AuthenticateDevice(name, _ string) (gateway.Device, error) {
	return gateway.Device{ID: 1, Name: name}, nil
}

// publishLoad connects devices and has each publish msgs QoS 1 messages of
// 10 readings, inflight at a time per device; it returns the PUBACK
// latencies.
func publishLoad(b *testing.B, addr string, devices, msgs, inflight int) ([]time.Duration, time.Duration) {
	b.Helper()
	body := []byte(`[{"m0":1,"m1":2,"m2":3,"m3":4,"m4":5},{"m0":1,"m1":2,"m2":3,"m3":4,"m4":5}]`)
	clients := make([]*paho.Client, devices)
	for d := range clients {
		c, err := sim.Connect(context.Background(), addr, fmt.Sprintf("bench-%03d", d), "bench-key-1", nil)
		if err != nil {
			b.Fatal(err)
		}
		clients[d] = c
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(&paho.Disconnect{})
		}
	}()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	b.StartTimer()
	start := time.Now()
	for d, c := range clients {
		for w := 0; w < inflight; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := make([]time.Duration, 0, msgs/inflight)
				for i := 0; i < msgs/inflight; i++ {
					t0 := time.Now()
					topic := sim.TelemetryTopic(fmt.Sprintf("bench-%03d", d), fmt.Sprintf("%d-%d-%d", w, i, t0.UnixNano()))
					if _, err := c.Publish(context.Background(), &paho.Publish{QoS: 1, Topic: topic, Payload: body}); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	return lat, elapsed
}

// runLoad runs publishLoad b.N times against addr and reports the rates and
// PUBACK latencies over all of them.
func runLoad(b *testing.B, addr string, devices, msgs, inflight int) {
	b.StopTimer()
	var lat []time.Duration
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		l, e := publishLoad(b, addr, devices, msgs, inflight)
		lat, elapsed = append(lat, l...), elapsed+e
	}
	report(b, lat, elapsed)
}

func report(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	n := len(lat)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(n*10)/elapsed.Seconds(), "readings/s")
	b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "ms_p50")
	b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "ms_p99")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMQTTIngest measures telemetry through the embedded gateway over
// real TCP: 20 devices, 8 publishes in flight each, 10 readings a message.
// "vigil" acknowledges after the batch is committed to DuckDB (the real
// pipeline); "no_store" acknowledges on arrival — the broker-only baseline.
func BenchmarkMQTTIngest(b *testing.B) {
	const devices, inflight = 20, 8
	msgs := 400 // per device per iteration
	b.Run("vigil", func(b *testing.B) {
		cfg := DefaultConfig(b.TempDir())
		cfg.MQTT.Addr, cfg.HTTPAddr = "127.0.0.1:0", ""
		srv, err := Start(context.Background(), cfg, quietLog())
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close(context.Background())
		for d := 0; d < devices; d++ {
			srv.Store().AddDevice(context.Background(), fmt.Sprintf("bench-%03d", d), "bench-key-1")
		}
		runLoad(b, srv.MQTTAddr(), devices, msgs, inflight)
	})
	b.Run("no_store", func(b *testing.B) {
		cfg := mqtt.DefaultConfig()
		cfg.Addr = "127.0.0.1:0"
		g := mqtt.New(cfg, openRegistry{}, instantSink{}, nil, quietLog())
		if err := g.Start(); err != nil {
			b.Fatal(err)
		}
		defer g.Close()
		runLoad(b, g.Addr(), devices, msgs, inflight)
	})
}
