package amqp

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/vigil-iot/vigil/ingest"
	"github.com/vigil-iot/vigil/store"
)

// benchSamples is how many samples of 2 metrics a benchmark message holds:
// 50 (100 readings, ~4 KB, as a device that batches sends them), or
// VIGIL_BENCH_SAMPLES.
var benchSamples = func() int {
	if n, err := strconv.Atoi(os.Getenv("VIGIL_BENCH_SAMPLES")); err == nil && n > 0 {
		return n
	}
	return 50
}()

// benchBody is a telemetry message of benchSamples samples × 2 metrics.
func benchBody(seq int) []byte {
	var sb strings.Builder
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Minute)
	sb.WriteByte('[')
	for i := range benchSamples {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"ts":%q,"temperature":%.3f,"vibration":%.4f}`, t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339), 70+float64(i%7)*0.1, 0.3+float64(i%5)*0.01)
	}
	sb.WriteByte(']')
	return []byte(sb.String())
}

// benchReadingsPerMessage is the readings in a benchmark message.
var benchReadingsPerMessage = 2 * benchSamples

// fillQueue declares a durable queue and puts n persistent messages in it
// as device dev, pipelining unsettled sends.
func fillQueue(tb testing.TB, br *testBroker, vhost, dev, key, queue, idPrefix string, n int) {
	tb.Helper()
	fillQueueWith(tb, br, vhost, dev, key, queue, idPrefix, n, benchBody)
}

// fillQueueWith is fillQueue with the i-th message's body body(i).
func fillQueueWith(tb testing.TB, br *testBroker, vhost, dev, key, queue, idPrefix string, n int, body func(int) []byte) {
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
		m := amqp.NewMessage(body(i))
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

// bareMode is what a bare consumer does with each message before it
// accepts it.
type bareMode int

const (
	bareAccept bareMode = iota // nothing: the least any consumer does
	bareDecode                 // decode the body with ingest.Decode
	bareStore                  // decode, and store the readings in DuckDB in row-group batches
)

// bareConsume receives n messages from queue, does what mode says with
// each and accepts it, on one goroutine. bareAccept is the least any
// consumer on this broker and client library does; bareDecode tells the
// cost of decoding apart; bareStore is the least a consumer that keeps the
// readings does — decode, one DuckDB commit per store.RowGroupRows
// readings or half the link credit of messages, whichever comes first
// (into s, as device dev), then accept the messages of the batch
// — with none of vigil's gateway, batching, deduplication or settlement
// machinery.
func bareConsume(tb testing.TB, br *testBroker, vhost, queue string, n int, mode bareMode, s *store.Store, dev int32) {
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
	var cols store.TelemetryColumns
	var unsettled []*amqp.Message
	commit := func() {
		rec := cols.Record()
		err := s.Commit(ctx, store.Batch{Readings: rec})
		rec.Release()
		if err != nil {
			tb.Fatal(err)
		}
		for _, m := range unsettled {
			if err := rcv.AcceptMessage(ctx, m); err != nil {
				tb.Fatal(err)
			}
		}
		unsettled = unsettled[:0]
		cols.Reset()
	}
	// A queue drains at thousands of messages a second; half a minute
	// without one is RabbitMQ 3.10's credit stall (see Config.Credit),
	// which no wait ends. A watchdog checks progress, so the loop pays no
	// timer per message (it would weigh on the baseline).
	var received atomic.Int64
	ctx, stall := context.WithCancel(ctx)
	defer stall()
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		last := int64(-1)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n := received.Load()
				if n == last {
					stall()
					return
				}
				last = n
			}
		}
	}()
	for i := range n {
		m, err := rcv.Receive(ctx, nil)
		received.Add(1)
		if err != nil {
			tb.Fatalf("bare consumer (%s), message %d of %d, %d received but not accepted: %v; a broker that stops delivering with credit left is RabbitMQ 3.10's credit stall: run the benchmark again", queue, i+1, n, len(unsettled), err)
		}
		var rs ingest.Readings
		if mode != bareAccept {
			if rs, err = ingest.Decode(m.GetData(), time.Now()); err != nil {
				tb.Fatal(err)
			}
		}
		if mode != bareStore {
			if err := rcv.AcceptMessage(ctx, m); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		var idBuf [8]int16
		ids := idBuf[:0]
		for _, name := range rs.Names {
			id, err := s.MetricID(ctx, name) // the store keeps them in memory
			if err != nil {
				tb.Fatal(err)
			}
			ids = append(ids, id)
		}
		rs.AppendTo(&cols, dev, ids)
		unsettled = append(unsettled, m)
		// A row group, or half the credit: with small messages the broker
		// would stop delivering before a row group fills.
		if cols.Len() >= store.RowGroupRows || len(unsettled) >= DefaultConfig().Credit/2 {
			commit()
		}
	}
	if len(unsettled) > 0 {
		commit()
	}
}

// BenchmarkAMQPConsume measures how fast vigil drains a queue of
// telemetry (gateway → Batcher → DuckDB store, until every message is
// committed and accepted) against bare go-amqp consumers of identically
// filled queues in the same run (bareConsume): one that only receives and
// accepts (the baseline), one that also decodes, and one that also
// stores in DuckDB. VIGIL_BENCH_MSGS sets the messages per queue (default
// 20,000, 100 readings each — VIGIL_BENCH_SAMPLES sets the samples of two
// metrics a message holds, default 50 —: 2M readings, a drain of a few seconds, so
// that starting the link and committing the last batch weigh little
// against the steady rate); run it with -benchtime 4x (or a multiple) so
// that each consumer goes first once.
//
// Beside the rates it reports the CPU time this process spends per message
// with each consumer (the broker's excluded), the broker's CPU time per
// message (when its node's pid file is in VIGIL_RABBIT_DIR, as
// .ci/rabbitmq keeps it) and how many of the machine's cores were busy
// while it ran. When the broker shares the machine and the
// cores are all busy, a consumer's rate is the cores over the broker's and
// its own CPU per message, so vigil's extra CPU per message over the bare
// consumer is what lowers its rate. It also reports vigil's readings per
// commit: AMQP messages are patient, so batches should reach
// store.RowGroupRows.
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
	names := []string{"bare", "bare+decode", "bare+store", "vigil"}
	const vigilRun = 3
	var took [4]time.Duration // each consumer's drain time
	var cpu [4]int64          // CPU time of this process (the broker excluded) in each consumer's runs, ns
	var busy [4]float64       // the machine's busy CPU time in each consumer's runs, s
	var brokerCPU [4]float64  // the broker's CPU time in each consumer's runs, s
	_, brokerKnown := brokerBusy()
	var commits int64 // vigil's batches
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		var queues [4]string
		for k, name := range names {
			queues[k] = fmt.Sprintf("bench.%s.%d", name, i)
			fillQueue(b, br, vhost, dev, keys[dev], queues[k], queues[k]+"-", n)
		}
		s, err := store.Open(ctx, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		d, err := s.AddDevice(ctx, dev, "device-key-bench")
		if err != nil {
			b.Fatal(err)
		}
		bareS, err := store.Open(ctx, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		bt, err := ingest.NewBatcher(ingest.DefaultConfig(), s, nil, testLogger())
		if err != nil {
			b.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.URL, cfg.VHost, cfg.Sources = br.URL, vhost, []string{"/amq/queue/" + queues[vigilRun]}
		g := New(cfg, storeRegistry{s}, bt, make(ackChan, 1), testLogger())
		b.StartTimer()

		bareRun := func(mode bareMode) func() {
			return func() { bareConsume(b, br, vhost, queues[mode], n, mode, bareS, d.ID) }
		}
		runs := []func(){
			bareRun(bareAccept), bareRun(bareDecode), bareRun(bareStore),
			func() {
				if f := os.Getenv("VIGIL_PROF"); f != "" {
					pf, _ := os.Create(fmt.Sprintf("%s.%d", f, i))
					pprof.StartCPUProfile(pf)
					defer func() { pprof.StopCPUProfile(); pf.Close() }()
				}
				if err := g.Start(); err != nil {
					b.Fatal(err)
				}
				deadline := time.Now().Add(5 * time.Minute)
				for g.Stats().Accepted < int64(n) {
					if time.Now().After(deadline) {
						b.Fatalf("vigil consumed %d of %d messages: gateway %+v, batcher %+v", g.Stats().Accepted, n, g.Stats(), bt.Stats())
					}
					time.Sleep(time.Millisecond) // the gateway has no signal for "all accepted"
				}
			},
		}
		// Each iteration starts with a different consumer, so that none
		// of them always drains the queue the broker filled first or
		// last.
		for k := range runs {
			r := (i + k) % len(runs)
			c0, m0, t0 := cpuTime(b), machineBusy(b), time.Now()
			r0, _ := brokerBusy()
			runs[r]()
			took[r] += time.Since(t0)
			cpu[r] += cpuTime(b) - c0
			busy[r] += machineBusy(b) - m0
			r1, _ := brokerBusy()
			brokerCPU[r] += r1 - r0
		}

		b.StopTimer()
		if err := g.Close(); err != nil {
			b.Fatal(err)
		}
		if err := bt.Close(ctx); err != nil {
			b.Fatal(err)
		}
		if st := bt.Stats(); st.Readings != int64(n*benchReadingsPerMessage) {
			b.Fatalf("vigil stored %d readings, want %d", st.Readings, n*benchReadingsPerMessage)
		}
		var stored int64
		if err := bareS.DB().QueryRow(`SELECT count(*) FROM telemetry`).Scan(&stored); err != nil || stored != int64(n*benchReadingsPerMessage) {
			b.Fatalf("the bare consumer stored %d readings (%v), want %d", stored, err, n*benchReadingsPerMessage)
		}
		commits += bt.Stats().Batches
		s.Close()
		bareS.Close()
		b.StartTimer()
	}
	total := float64(b.N * n)
	for k, name := range names {
		b.ReportMetric(total/took[k].Seconds(), name+"_msgs/s")
		b.ReportMetric(float64(cpu[k])/total/1e3, name+"_cpu_µs/msg")
		b.ReportMetric(busy[k]/took[k].Seconds(), name+"_machine_busy_cores")
		if brokerKnown {
			b.ReportMetric(brokerCPU[k]/total*1e6, name+"_broker_cpu_µs/msg")
		}
		if k != vigilRun {
			b.ReportMetric(took[k].Seconds()/took[vigilRun].Seconds(), "vigil/"+name)
		}
	}
	b.ReportMetric(total*float64(benchReadingsPerMessage)/took[vigilRun].Seconds(), "vigil_readings/s")
	b.ReportMetric(total*float64(benchReadingsPerMessage)/took[0].Seconds(), "bare_readings/s")
	b.ReportMetric(total*float64(benchReadingsPerMessage)/float64(commits), "vigil_readings/commit")
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

// machineBusy returns the CPU time all processes on the machine have spent
// busy (everything but idle and I/O wait), in seconds, from /proc/stat.
func machineBusy(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	var busy float64
	for k, v := range f[1:] {
		if k == 3 || k == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100 // USER_HZ
}

// brokerBusy returns the CPU time the test broker's node has used, user
// and system, in seconds, from /proc/PID/stat of the pid in the node's pid
// file (.ci/rabbitmq keeps it in VIGIL_RABBIT_DIR), and false when that is
// not to be had.
func brokerBusy() (float64, bool) {
	dir := os.Getenv("VIGIL_RABBIT_DIR")
	if dir == "" {
		return 0, false
	}
	pid, err := os.ReadFile(filepath.Join(dir, "rabbit.pid"))
	if err != nil {
		return 0, false
	}
	data, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command, in parentheses, may hold spaces: fields count from
	// after it. utime and stime are the 14th and 15th fields.
	_, rest, ok := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (ut + st) / 100, true // USER_HZ
}
