package amqp

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/ingest"
	"github.com/vigil-iot/vigil/store"
)

// benchBody is a telemetry message of 50 samples × 2 metrics = 100
// readings (~4 KB), as a device that batches sends it.
func benchBody(seq int) []byte {
	var sb strings.Builder
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Minute)
	sb.WriteByte('[')
	for i := range 50 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"ts":%q,"temperature":%.3f,"vibration":%.4f}`, t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339), 70+float64(i%7)*0.1, 0.3+float64(i%5)*0.01)
	}
	sb.WriteByte(']')
	return []byte(sb.String())
}

const benchReadingsPerMessage = 100

// fillQueue declares a durable queue and puts n persistent messages in it
// as device dev, pipelining unsettled sends.
func fillQueue(tb testing.TB, br *testBroker, vhost, dev, key, queue, idPrefix string, n int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	u, _ := url.Parse(br.DeviceURL())
	u.User = url.UserPassword(dev, key)
	conn, err := amqp.Dial(ctx, u.String(), &amqp.ConnOptions{HostName: "vhost:" + vhost})
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	snd, err := sess.NewSender(ctx, "/queue/"+queue, &amqp.SenderOptions{TargetDurability: amqp.DurabilityConfiguration})
	if err != nil {
		tb.Fatal(err)
	}
	const window = 500
	receipts := make(chan amqp.SendReceipt, window)
	errs := make(chan error, 1)
	go func() {
		for r := range receipts {
			st, err := r.Wait(ctx)
			if _, ok := st.(*amqp.StateAccepted); err == nil && !ok {
				err = fmt.Errorf("outcome %T", st)
			}
			if err != nil {
				errs <- err
				for range receipts {
				}
				return
			}
		}
		errs <- nil
	}()
	for i := range n {
		m := amqp.NewMessage(benchBody(i))
		m.Header = &amqp.MessageHeader{Durable: true}
		m.Properties = &amqp.MessageProperties{MessageID: idPrefix + strconv.Itoa(i), UserID: []byte(dev)}
		r, err := snd.SendWithReceipt(ctx, m, nil)
		if err != nil {
			tb.Fatal(err)
		}
		receipts <- r
	}
	close(receipts)
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
}

// bareConsume receives n messages from queue and accepts each: the least
// any consumer on this broker and client library does. With decode set it
// also decodes each body with ingest.Decode before accepting it, which
// tells the cost of decoding apart from that of the gateway and the store.
func bareConsume(tb testing.TB, br *testBroker, vhost, queue string, n int, decode bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := amqp.Dial(ctx, br.URL, &amqp.ConnOptions{HostName: "vhost:" + vhost})
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	rcv, err := sess.NewReceiver(ctx, "/amq/queue/"+queue, &amqp.ReceiverOptions{Credit: int32(DefaultConfig().Credit)})
	if err != nil {
		tb.Fatal(err)
	}
	for range n {
		m, err := rcv.Receive(ctx, nil)
		if err != nil {
			tb.Fatal(err)
		}
		if decode {
			if _, err := ingest.Decode(m.GetData(), time.Now()); err != nil {
				tb.Fatal(err)
			}
		}
		if err := rcv.AcceptMessage(ctx, m); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkAMQPConsume measures how fast vigil drains a queue of
// telemetry (gateway → Batcher → DuckDB store, until every message is
// committed and accepted) against a bare go-amqp receive-and-accept of an
// identically filled queue in the same run, and against a bare consumer
// that also decodes each body (single goroutine). VIGIL_BENCH_MSGS sets the
// messages per queue (default 20,000, 100 readings each: 2M readings, a
// drain of a few seconds, so that starting the link and committing the last
// batch weigh little against the steady rate); run it with -benchtime 3x
// (or a multiple) so that each consumer goes first once.
// Beside the rates it reports the CPU time this process spends per message
// with each consumer (the broker's excluded): on a machine whose cores the
// broker shares, vigil's extra CPU per message is what lowers its rate. It
// also reports vigil's readings per commit: AMQP messages are patient, so
// batches should reach store.RowGroupRows.
func BenchmarkAMQPConsume(b *testing.B) {
	br := needBroker(b)
	n := 20_000
	if s := os.Getenv("VIGIL_BENCH_MSGS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("VIGIL_BENCH_MSGS=%q: want a positive number", s)
		}
	}
	const dev = "bench-dev"
	vhost, keys := br.Provision(b, dev)
	ctx := context.Background()
	var bare, bareDecode, vigil time.Duration
	var cpu [3]int64  // CPU time of this process (the broker excluded) in each consumer's runs, ns
	var commits int64 // vigil's batches
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bareQ, decodeQ, vigilQ := fmt.Sprintf("bench.bare.%d", i), fmt.Sprintf("bench.decode.%d", i), fmt.Sprintf("bench.vigil.%d", i)
		fillQueue(b, br, vhost, dev, keys[dev], bareQ, bareQ+"-", n)
		fillQueue(b, br, vhost, dev, keys[dev], decodeQ, decodeQ+"-", n)
		fillQueue(b, br, vhost, dev, keys[dev], vigilQ, vigilQ+"-", n)
		s, err := store.Open(ctx, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.AddDevice(ctx, dev, "device-key-bench"); err != nil {
			b.Fatal(err)
		}
		bt, err := ingest.NewBatcher(ingest.DefaultConfig(), s, nil, testLogger())
		if err != nil {
			b.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.URL, cfg.VHost, cfg.Source = br.URL, vhost, "/amq/queue/"+vigilQ
		g := New(cfg, storeRegistry{s}, bt, make(ackChan, 1), testLogger())
		b.StartTimer()

		runs := []func(){
			func() {
				t0 := time.Now()
				bareConsume(b, br, vhost, bareQ, n, false)
				bare += time.Since(t0)
			},
			func() {
				t0 := time.Now()
				bareConsume(b, br, vhost, decodeQ, n, true)
				bareDecode += time.Since(t0)
			},
			func() {
				if f := os.Getenv("VIGIL_PROF"); f != "" {
					pf, _ := os.Create(fmt.Sprintf("%s.%d", f, i))
					pprof.StartCPUProfile(pf)
					defer func() { pprof.StopCPUProfile(); pf.Close() }()
				}
				t0 := time.Now()
				if err := g.Start(); err != nil {
					b.Fatal(err)
				}
				deadline := t0.Add(5 * time.Minute)
				for g.Stats().Accepted < int64(n) {
					if time.Now().After(deadline) {
						b.Fatalf("vigil consumed %d of %d messages: gateway %+v, batcher %+v", g.Stats().Accepted, n, g.Stats(), bt.Stats())
					}
					time.Sleep(time.Millisecond)
				}
				vigil += time.Since(t0)
			},
		}
		// Each iteration starts with a different consumer, so that none
		// of them always drains the queue the broker filled first or
		// last.
		for k := range runs {
			r := (i + k) % len(runs)
			c0 := cpuTime(b)
			runs[r]()
			cpu[r] += cpuTime(b) - c0
		}

		b.StopTimer()
		if err := g.Close(); err != nil {
			b.Fatal(err)
		}
		if err := bt.Close(ctx); err != nil {
			b.Fatal(err)
		}
		if st := bt.Stats(); st.Readings != int64(n*benchReadingsPerMessage) {
			b.Fatalf("stored %d readings, want %d", st.Readings, n*benchReadingsPerMessage)
		}
		commits += bt.Stats().Batches
		s.Close()
		b.StartTimer()
	}
	total := float64(b.N * n)
	b.ReportMetric(total/vigil.Seconds(), "vigil_msgs/s")
	b.ReportMetric(total*benchReadingsPerMessage/vigil.Seconds(), "vigil_readings/s")
	b.ReportMetric(total/bare.Seconds(), "bare_msgs/s")
	b.ReportMetric(total*benchReadingsPerMessage/bare.Seconds(), "bare_readings/s")
	b.ReportMetric(total/bareDecode.Seconds(), "bare+decode_msgs/s")
	b.ReportMetric(total*benchReadingsPerMessage/float64(commits), "vigil_readings/commit")
	b.ReportMetric(float64(cpu[2])/total/1e3, "vigil_cpu_µs/msg")
	b.ReportMetric(float64(cpu[0])/total/1e3, "bare_cpu_µs/msg")
	b.ReportMetric(float64(cpu[1])/total/1e3, "bare+decode_cpu_µs/msg")
	b.ReportMetric(bare.Seconds()/vigil.Seconds(), "vigil/bare")
	b.ReportMetric(bareDecode.Seconds()/vigil.Seconds(), "vigil/bare+decode")
}

// BenchmarkDecodeTelemetry decodes the body BenchmarkAMQPConsume sends,
// without a broker: the per-message CPU cost that bounds vigil's consume
// rate on a small machine.
func BenchmarkDecodeTelemetry(b *testing.B) {
	body := benchBody(0)
	now := time.Now()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ingest.Decode(body, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchReadingsPerMessage)/b.Elapsed().Seconds(), "readings/s")
}

// cpuTime returns the CPU time this process has used, user and system, in
// nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
