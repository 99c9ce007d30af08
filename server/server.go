package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/vigil-iot/vigil/actions"
	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/gateway/amqp"
	"github.com/vigil-iot/vigil/gateway/mqtt"
	"github.com/vigil-iot/vigil/ingest"
	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/store"
)

// Config is the whole configuration of a vigil server.
type Config struct {
	// DataDir holds the DuckDB file.
	DataDir string
	MQTT    mqtt.Config
	// AMQP, when set, also links vigil to an AMQP 1.0 broker (RabbitMQ,
	// Azure IoT Hub, Event Hubs, Service Bus): telemetry from its source,
	// commands to its per-device addresses.
	AMQP *amqp.Config
	// HTTPAddr is where the HTTP API listens; empty disables it.
	HTTPAddr string
	// APIToken, when set, is required as a bearer token by the HTTP API.
	APIToken string
	Ingest   ingest.Config
	Monitor  models.MonitorConfig
	Actions  actions.Config
	// TickInterval is how often command expiry and recovery windows are
	// checked.
	TickInterval time.Duration
	// ModelPoll is how often the model registry is checked for new active
	// versions, which then replace the running detectors without a restart.
	ModelPoll time.Duration
	// WarmReadings is how much of a series' stored history a new detector
	// replays before it scores live readings.
	WarmReadings int
}

// DefaultConfig returns a configuration that serves devices on
// 127.0.0.1:1883 and the API on 127.0.0.1:8080, keeping data in dir.
func DefaultConfig(dir string) Config {
	return Config{
		DataDir: dir, MQTT: mqtt.DefaultConfig(), HTTPAddr: "127.0.0.1:8080",
		Ingest: ingest.DefaultConfig(), Monitor: models.DefaultMonitorConfig(), Actions: actions.DefaultConfig(),
		TickInterval: time.Second, ModelPoll: 2 * time.Second, WarmReadings: 2000,
	}
}

// Validate checks the configuration without touching the disk or network.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("config: a data directory is required (--data DIR)")
	}
	if c.TickInterval <= 0 || c.ModelPoll <= 0 || c.WarmReadings < 0 {
		return errors.New("config: tick interval and model poll must be positive, warm readings not negative")
	}
	errs := []error{c.Ingest.Validate(), c.Monitor.Validate(), c.Actions.Validate()}
	if c.AMQP != nil {
		errs = append(errs, c.AMQP.Validate())
	}
	return errors.Join(errs...)
}

// Server is a running vigil.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	gw      *mqtt.Gateway
	amqp    *amqp.Gateway // nil without a broker link
	batcher *ingest.Batcher
	ctrl    *actions.Controller
	monitor *models.Monitor
	http    *http.Server
	httpLn  net.Listener

	recs      chan arrow.RecordBatch
	scored    chan struct{}
	stopTick  chan struct{}
	tickDone  chan struct{}
	anomalies atomic.Int64
	modelsOn  atomic.Int64 // registry versions applied
	closeOnce sync.Once
	closeErr  error
	started   time.Time

	// Owned by the scorer goroutine: the registry versions applied, and the
	// label ("name@version" or kind) of the model each series runs.
	applied      map[string]int
	labels       map[models.SeriesKey]string
	defaultLabel string
	// vectors runs the device-level (DEVICE/*) models; nil until one is
	// applied, so that without one scoring is what it always was.
	vectors      *models.VectorMonitor
	deviceModels map[int32]deviceModel
}

// deviceModel is what an anomaly of a device-level model is reported with.
type deviceModel struct {
	label   string // "DEVICE/*@VERSION(KIND)"
	feature string // what the explanation names, e.g. "mahalanobis over load,temperature"
}

// registry adapts the store's device registry to the gateway's
// Authenticator.
type registry struct{ st *store.Store }

// AuthenticateDevice checks a device's key against the store.
func (r registry) AuthenticateDevice(name, key string) (gateway.Device, error) {
	d, err := r.st.Authenticate(name, key)
	switch {
	case errors.Is(err, store.ErrUnknownDevice):
		return gateway.Device{}, fmt.Errorf("%w: %q is not registered (vigil devices add %s)", gateway.ErrUnknownDevice, name, name)
	case errors.Is(err, store.ErrDeviceDisabled):
		return gateway.Device{}, fmt.Errorf("%w: %q", gateway.ErrDeviceDisabled, name)
	case err != nil:
		return gateway.Device{}, fmt.Errorf("%w: %q", gateway.ErrWrongKey, name)
	}
	return gateway.Device{ID: d.ID, Name: d.Name}, nil
}

// LookupDevice resolves a device a broker has already authenticated (an
// AMQP user-id): it must be registered and enabled, but no key is checked.
func (r registry) LookupDevice(name string) (gateway.Device, error) {
	d, ok := r.st.Device(name)
	switch {
	case !ok:
		return gateway.Device{}, fmt.Errorf("%w: %q is not registered (vigil devices add %s)", gateway.ErrUnknownDevice, name, name)
	case d.Status != store.Enabled:
		return gateway.Device{}, fmt.Errorf("%w: %q", gateway.ErrDeviceDisabled, name)
	}
	return gateway.Device{ID: d.ID, Name: d.Name}, nil
}

// Start opens the store and starts every stage. On error, whatever was
// started is stopped again.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, recs: make(chan arrow.RecordBatch, 64), scored: make(chan struct{}),
		stopTick: make(chan struct{}), tickDone: make(chan struct{}), started: time.Now(),
		applied: map[string]int{}, labels: map[models.SeriesKey]string{}, defaultLabel: cfg.Monitor.Model.Kind}
	var err error
	if s.store, err = store.Open(ctx, cfg.DataDir); err != nil {
		return nil, err
	}
	if s.monitor, err = models.NewMonitor(cfg.Monitor); err != nil {
		s.store.Close()
		return nil, err
	}
	if s.batcher, err = ingest.NewBatcher(cfg.Ingest, s.store, s.observe, log); err != nil {
		s.store.Close()
		return nil, err
	}
	go s.score()
	// The gateway sends the controller's commands and delivers the devices'
	// acknowledgements back to it; acknowledgements reach the controller
	// through a function because the controller is built after the gateway.
	acks := gateway.AckHandlerFunc(func(ctx context.Context, a gateway.Ack) error { return s.ctrl.HandleAck(ctx, a) })
	s.gw = mqtt.New(cfg.MQTT, registry{s.store}, s.batcher, acks, log)
	senders := gateway.Senders{s.gw}
	if cfg.AMQP != nil {
		s.amqp = amqp.New(*cfg.AMQP, registry{s.store}, s.batcher, acks, log)
		senders = append(senders, s.amqp)
	}
	if s.ctrl, err = actions.New(ctx, cfg.Actions, s.store, senders, log); err != nil {
		s.shutdownPipeline(context.Background())
		s.store.Close()
		return nil, err
	}
	if s.amqp != nil {
		// Connects in the background and keeps retrying, saying so in the
		// log, when the broker is unreachable.
		if err := s.amqp.Start(); err != nil {
			s.shutdownPipeline(context.Background())
			s.store.Close()
			return nil, err
		}
	}
	if err := s.gw.Start(); err != nil {
		s.closeAMQP()
		s.shutdownPipeline(context.Background())
		s.store.Close()
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			s.gw.Close()
			s.closeAMQP()
			s.shutdownPipeline(context.Background())
			s.store.Close()
			return nil, fmt.Errorf("http api: listen %s: %w", cfg.HTTPAddr, err)
		}
		s.httpLn = ln
		s.http = &http.Server{Handler: api.Handler(s.store, func() any { return s.Status() }, cfg.APIToken, log), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http api stopped", "err", err)
			}
		}()
	}
	go s.tick()
	return s, nil
}

// observe receives each committed batch from the batcher.
func (s *Server) observe(rec arrow.RecordBatch) { s.recs <- rec }

// score feeds committed readings to the detectors, in commit order, and
// applies new model versions from the registry between batches.
func (s *Server) score() {
	defer close(s.scored)
	ctx := context.Background()
	s.applyModels(ctx)
	poll := time.NewTicker(s.cfg.ModelPoll)
	defer poll.Stop()
	for {
		select {
		case <-poll.C:
			s.applyModels(ctx)
		case rec, ok := <-s.recs:
			if !ok {
				return
			}
			s.scoreRecord(ctx, rec)
		}
	}
}

func (s *Server) scoreRecord(ctx context.Context, rec arrow.RecordBatch) {
	defer rec.Release()
	ts := rec.Column(0).(interface{ Value(int) arrow.Timestamp })
	dev := rec.Column(1).(interface{ Value(int) int32 })
	met := rec.Column(2).(interface{ Value(int) int16 })
	val := rec.Column(3).(interface{ Value(int) float64 })
	for i := 0; i < int(rec.NumRows()); i++ {
		key := models.SeriesKey{Device: dev.Value(i), Metric: met.Value(i)}
		t := ts.Value(i).ToTime(arrow.Microsecond)
		sc, tr := s.monitor.Observe(key, t, val.Value(i))
		s.transition(ctx, key, t, sc, tr, "")
		if s.vectors != nil {
			s.scoreVector(ctx, key, t, val.Value(i))
		}
	}
}

// scoreVector feeds a reading to its device's device-level model, if it has
// one; a vector it completes may open or close an episode, reported on the
// metric that drove the score.
func (s *Server) scoreVector(ctx context.Context, key models.SeriesKey, t time.Time, x float64) {
	ev, ok := s.vectors.Observe(key.Device, key.Metric, t, x)
	if !ok || ev.Transition == models.Steady {
		return
	}
	dm := s.deviceModels[key.Device]
	ev.Score.Feature = dm.feature
	s.transition(ctx, models.SeriesKey{Device: key.Device, Metric: ev.Metric}, ev.TS, ev.Score, ev.Transition, dm.label)
}

// transition acts on an episode opening (an anomaly, labelled with model,
// or with the series' own label when model is empty) or closing (a
// recovery).
func (s *Server) transition(ctx context.Context, key models.SeriesKey, t time.Time, sc models.Score, tr models.Transition, model string) {
	switch tr {
	case models.Began:
		s.onAnomaly(ctx, key, t, sc, model)
	case models.Ended:
		if err := s.ctrl.OnRecovered(ctx, key.Device, key.Metric, t); err != nil {
			s.log.Error("recording recovery", "err", err)
		}
	}
}

// applyModels puts the registry's active versions to work: a new default
// version replaces the detector of every series without a model of its own,
// a per-series version that series' detector, a device-level (DEVICE/*)
// version the device's vector detector. Each new detector first replays
// the recent stored history through the same Update it will run live, so
// it starts warm.
func (s *Server) applyModels(ctx context.Context) {
	ms, err := s.store.Models(ctx, false)
	if err != nil {
		s.log.Error("reading the model registry", "err", err)
		return
	}
	for _, m := range ms {
		if s.applied[m.Name] == m.Version {
			continue
		}
		var spec models.Spec
		if err := json.Unmarshal(m.Spec, &spec); err != nil {
			s.log.Error("model not applied: bad spec", "model", m.Name, "version", m.Version, "err", err)
			s.applied[m.Name] = m.Version
			continue
		}
		label := fmt.Sprintf("%s@%d(%s)", m.Name, m.Version, spec.Kind)
		if m.Name == store.DefaultModel {
			if err := s.monitor.SetDefault(spec); err != nil {
				s.log.Error("model not applied", "model", m.Name, "version", m.Version, "err", err)
				s.applied[m.Name] = m.Version
				continue
			}
			s.defaultLabel = label
			for _, key := range s.monitor.DefaultSeries() {
				s.warm(ctx, key, spec, false, label)
			}
		} else if devName, ok := store.ModelDevice(m.Name); ok {
			if err := s.applyVector(ctx, devName, spec, label); err != nil {
				s.log.Error("model not applied", "model", m.Name, "version", m.Version, "err", err)
				s.applied[m.Name] = m.Version
				continue
			}
		} else {
			devName, metric, _ := strings.Cut(m.Name, "/")
			dev, ok := s.store.Device(devName)
			mid, err := s.store.MetricID(ctx, metric)
			if !ok || err != nil {
				s.log.Warn("model for an unknown series not applied", "model", m.Name, "version", m.Version)
				s.applied[m.Name] = m.Version
				continue
			}
			s.warm(ctx, models.SeriesKey{Device: dev.ID, Metric: mid}, spec, true, label)
		}
		s.applied[m.Name] = m.Version
		s.modelsOn.Add(1)
		s.log.Info("model version active", "model", m.Name, "version", m.Version, "kind", spec.Kind)
	}
}

func (s *Server) warm(ctx context.Context, key models.SeriesKey, spec models.Spec, own bool, label string) {
	det, err := models.New(spec)
	if err != nil {
		s.log.Error("model not applied", "label", label, "err", err)
		return
	}
	if s.cfg.WarmReadings > 0 {
		ts, xs, err := s.store.SeriesHistory(ctx, key.Device, key.Metric, time.Time{}, time.Time{}, s.cfg.WarmReadings)
		if err != nil {
			s.log.Error("warming a model on history", "label", label, "err", err)
		}
		models.ScoreSeries(det, ts, xs)
	}
	s.monitor.Replace(key, det, own)
	if own {
		s.labels[key] = label
	}
}

// applyVector builds a device's vector model, warms it on the device's
// recent stored history of its metrics, lined up by timestamp, and puts it
// to work from the next reading after that history.
func (s *Server) applyVector(ctx context.Context, devName string, spec models.Spec, label string) error {
	dev, ok := s.store.Device(devName)
	if !ok {
		return fmt.Errorf("device %q is not registered", devName)
	}
	det, names, err := models.NewVector(spec)
	if err != nil {
		return err
	}
	ids := make([]int16, len(names))
	tss, xss := make([][]time.Time, len(names)), make([][]float64, len(names))
	for i, name := range names {
		if ids[i], err = s.store.MetricID(ctx, name); err != nil {
			return err
		}
		if s.cfg.WarmReadings > 0 {
			if tss[i], xss[i], err = s.store.SeriesHistory(ctx, dev.ID, ids[i], time.Time{}, time.Time{}, s.cfg.WarmReadings); err != nil {
				s.log.Error("warming a model on history", "label", label, "err", err)
			}
		}
	}
	ts, rows := models.JoinSeries(tss, xss)
	models.ScoreVectors(det, ts, rows)
	var after time.Time
	if len(ts) > 0 {
		after = ts[len(ts)-1]
	}
	if s.vectors == nil {
		if s.vectors, err = models.NewVectorMonitor(s.cfg.Monitor, models.DefaultVectorWindow); err != nil {
			return err
		}
		s.deviceModels = map[int32]deviceModel{}
	}
	if err := s.vectors.Set(dev.ID, det, ids, after); err != nil {
		return err
	}
	s.deviceModels[dev.ID] = deviceModel{label: label, feature: spec.Kind + " over " + strings.Join(names, ",")}
	return nil
}

// onAnomaly records an anomaly, labelled with model or, when that is empty,
// with the model the series runs, and hands it to the actions controller.
func (s *Server) onAnomaly(ctx context.Context, key models.SeriesKey, t time.Time, sc models.Score, model string) {
	if model == "" {
		var ok bool
		if model, ok = s.labels[key]; !ok {
			model = s.defaultLabel
		}
	}
	metric := s.store.MetricName(key.Metric)
	device := s.store.DeviceName(key.Device)
	a := store.Anomaly{
		TS: t, DeviceID: key.Device, MetricID: key.Metric, Value: sc.Observed, Expected: sc.Expected,
		Score: sc.Value, Model: model, Explanation: sc.Explain(metric), Detected: time.Now(),
	}
	if err := s.store.AddAnomaly(ctx, &a); err != nil {
		s.log.Error("storing anomaly", "device", device, "metric", metric, "err", err)
		return
	}
	s.anomalies.Add(1)
	s.log.Info("anomaly", "device", device, "metric", metric, "score", fmt.Sprintf("%.3f", sc.Value), "why", a.Explanation)
	cmd, err := s.ctrl.OnAnomaly(ctx, a, device, metric)
	if err != nil {
		s.log.Error("command for anomaly", "device", device, "err", err)
		return
	}
	if cmd != nil {
		s.log.Info("command", "device", device, "id", cmd.ID, "name", cmd.Name, "state", cmd.State)
	}
}

func (s *Server) tick() {
	defer close(s.tickDone)
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopTick:
			return
		case <-t.C:
			if err := s.ctrl.Tick(context.Background()); err != nil {
				s.log.Error("command bookkeeping", "err", err)
			}
		}
	}
}

// shutdownPipeline commits what the batcher holds and lets the scorer
// finish.
func (s *Server) shutdownPipeline(ctx context.Context) error {
	err := s.batcher.Close(ctx)
	close(s.recs)
	<-s.scored
	return err
}

// Close shuts down in the order that loses nothing: stop taking telemetry
// and commit every in-flight batch (its devices get their acknowledgements
// while still connected), finish scoring, then disconnect devices, stop the
// API and close the store.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		var errs []error
		errs = append(errs, s.shutdownPipeline(ctx))
		close(s.stopTick)
		<-s.tickDone
		errs = append(errs, s.gw.Close(), s.closeAMQP())
		if s.http != nil {
			errs = append(errs, s.http.Shutdown(ctx))
		}
		errs = append(errs, s.ctrl.Tick(ctx), s.store.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func (s *Server) closeAMQP() error {
	if s.amqp == nil {
		return nil
	}
	return s.amqp.Close()
}

// Store returns the server's store.
func (s *Server) Store() *store.Store { return s.store }

// MQTTAddr returns the address devices connect to.
func (s *Server) MQTTAddr() string { return s.gw.Addr() }

// HTTPAddr returns the API's address, or "" when it is disabled.
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Status is a snapshot of what the server has done since it started.
type Status struct {
	Uptime         string `json:"uptime"`
	Devices        int    `json:"devices_registered"`
	Connected      int    `json:"devices_connected"`
	Readings       int64  `json:"readings_stored"`
	Messages       int64  `json:"messages"`
	DeadLetters    int64  `json:"dead_letters"`
	Batches        int64  `json:"batches"`
	CommitErrors   int64  `json:"commit_errors"`
	RefusedDevices int64  `json:"connections_refused"`
	Denied         int64  `json:"topics_denied"`
	Anomalies      int64  `json:"anomalies"`
	ModelsApplied  int64  `json:"model_versions_applied"`
	// AMQP is the broker link's state; absent without one.
	AMQP *AMQPStatus `json:"amqp,omitempty"`
	actions.Stats
}

// Status returns the counters of this run.
func (s *Server) Status() Status {
	is, gs := s.batcher.Stats(), s.gw.Stats()
	return Status{
		Uptime: time.Since(s.started).Round(time.Second).String(), Devices: len(s.store.Devices()),
		Connected: s.gw.ConnectedDevices(), Readings: is.Readings, Messages: is.Messages, DeadLetters: is.DeadLetters,
		Batches: is.Batches, CommitErrors: is.CommitErrors, RefusedDevices: gs.RefusedUnknown + gs.RefusedKey + gs.RefusedOff,
		Denied: gs.Denied, Anomalies: s.anomalies.Load(), ModelsApplied: s.modelsOn.Load(), Stats: s.ctrl.Stats(),
		AMQP: s.amqpStatus(),
	}
}

// AMQPStatus is the state of the broker link.
type AMQPStatus struct {
	Connected bool `json:"connected"`
	amqp.Stats
}

func (s *Server) amqpStatus() *AMQPStatus {
	if s.amqp == nil {
		return nil
	}
	return &AMQPStatus{Connected: s.amqp.Connected(), Stats: s.amqp.Stats()}
}

// Summary is the account of a run that `vigil demo --json` prints: totals
// read back from the store, so they count what is durable.
type Summary struct {
	Devices          int   `json:"devices"`
	ReadingsStored   int64 `json:"readings_stored"`
	Anomalies        int64 `json:"anomalies"`
	CommandsSent     int64 `json:"commands_sent"`
	CommandsAcked    int64 `json:"commands_acked"`
	DevicesRecovered int64 `json:"devices_recovered"`
	DeadLetters      int64 `json:"dead_letters"`
	Refused          int64 `json:"connections_refused"`
}

// Summary reads the run's totals from the store.
func (s *Server) Summary(ctx context.Context) (Summary, error) {
	sum := Summary{Devices: len(s.store.Devices()), Refused: s.Status().RefusedDevices}
	err := s.store.DB().QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM telemetry),
		(SELECT count(*) FROM anomalies),
		(SELECT count(*) FROM commands WHERE sent IS NOT NULL),
		(SELECT count(*) FROM commands WHERE state = 'acknowledged'),
		(SELECT count(DISTINCT device_id) FROM commands WHERE verification = 'recovered'),
		(SELECT count(*) FROM dead_letters)`).Scan(
		&sum.ReadingsStored, &sum.Anomalies, &sum.CommandsSent, &sum.CommandsAcked, &sum.DevicesRecovered, &sum.DeadLetters)
	if err != nil {
		return sum, fmt.Errorf("summary: %w", err)
	}
	return sum, nil
}
