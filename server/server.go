package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/vigil-iot/vigil/actions"
	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/gateway"
	"github.com/vigil-iot/vigil/gateway/amqp"
	"github.com/vigil-iot/vigil/gateway/httpdev"
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
	// HTTPTLS, when set, serves the HTTP API (and the HTTP device
	// gateway) over TLS (HTTPS).
	HTTPTLS *tls.Config
	// HTTPDevices tunes the HTTP device gateway served beside the API
	// under /devices/.
	HTTPDevices httpdev.Config
	Ingest      ingest.Config
	Monitor     models.MonitorConfig
	Actions     actions.Config
	// TickInterval is how often command expiry and recovery windows are
	// checked.
	TickInterval time.Duration
	// ModelPoll is how often the model registry is checked for new active
	// versions, which then replace the running detectors without a restart.
	ModelPoll time.Duration
	// WarmReadings is how much of a series' stored history a new detector
	// replays before it scores live readings.
	WarmReadings int
	// WarmWindow bounds that history in time: only readings within this
	// long before the newest stored reading are replayed (0: no bound).
	// Telemetry is stored in arrival order, so the bound lets DuckDB skip
	// older row groups, and a new model applies as fast on years of data
	// as on a week.
	WarmWindow time.Duration
	// Scorers is how many goroutines score readings, each for its own share
	// of the devices; 0 means one per CPU (GOMAXPROCS).
	Scorers int
	// Store tunes the database (DuckDB threads).
	Store store.Options
}

// scorers returns the number of scoring goroutines to run.
func (c Config) scorers() int {
	if c.Scorers > 0 {
		return c.Scorers
	}
	return runtime.GOMAXPROCS(0)
}

// DefaultConfig returns a configuration that serves devices on
// 127.0.0.1:1883 and the API on 127.0.0.1:8080, keeping data in dir.
func DefaultConfig(dir string) Config {
	return Config{
		DataDir: dir, MQTT: mqtt.DefaultConfig(), HTTPAddr: "127.0.0.1:8080",
		Ingest: ingest.DefaultConfig(), Monitor: models.DefaultMonitorConfig(), Actions: actions.DefaultConfig(), HTTPDevices: httpdev.DefaultConfig(),
		TickInterval: time.Second, ModelPoll: 2 * time.Second, WarmReadings: 2000, WarmWindow: 30 * 24 * time.Hour,
	}
}

// Validate checks the configuration without touching the disk or network.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("config: a data directory is required (--data DIR)")
	}
	if c.TickInterval <= 0 || c.ModelPoll <= 0 || c.WarmReadings < 0 || c.WarmWindow < 0 || c.Scorers < 0 {
		return errors.New("config: tick interval and model poll must be positive, warm readings, warm window and scorers not negative")
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
	amqp    *amqp.Gateway    // nil without a broker link
	httpdev *httpdev.Gateway // nil without an HTTP address
	batcher *ingest.Batcher
	ctrl    *actions.Controller
	http    *http.Server
	httpLn  net.Listener

	recs chan arrow.RecordBatch
	// closeRecsOnce closes recs once the batcher is done.
	closeRecsOnce sync.Once
	scored        chan struct{}
	stopTick      chan struct{}
	tickDone      chan struct{}
	anomalies     atomic.Int64
	modelsOn      atomic.Int64 // registry versions applied
	modelsWait    atomic.Int64 // registry versions waiting for their device
	closeOnce     sync.Once
	closeErr      error
	started       time.Time

	// applied and waiting are owned by the score goroutine: the registry
	// versions applied so far, and those waiting for their device.
	applied, waiting map[string]int
	// shards score the readings, each those of its own devices.
	shards []*shard
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

// SourcePosition returns how far the broker link has read a log source
// (an Event Hubs partition), from the store.
func (r registry) SourcePosition(ctx context.Context, source string) (string, bool, error) {
	return r.st.SourcePosition(ctx, source)
}

// SaveSourcePosition records in the store how far the broker link has
// read a log source.
func (r registry) SaveSourcePosition(ctx context.Context, source, position string) error {
	return r.st.SaveSourcePosition(ctx, source, position)
}

var _ amqp.Positions = registry{}

// Start opens the store and starts every stage. On error, whatever was
// started is stopped again.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, recs: make(chan arrow.RecordBatch, 64), scored: make(chan struct{}),
		stopTick: make(chan struct{}), tickDone: make(chan struct{}), started: time.Now(),
		applied: map[string]int{}, waiting: map[string]int{}}
	var err error
	if s.store, err = store.OpenOptions(ctx, cfg.DataDir, cfg.Store); err != nil {
		return nil, err
	}
	if s.shards, err = newShards(s, cfg.scorers()); err != nil {
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
	if cfg.HTTPAddr != "" {
		if s.httpdev, err = httpdev.New(cfg.HTTPDevices, registry{s.store}, s.batcher, acks, log); err != nil {
			s.shutdownPipeline(context.Background())
			s.store.Close()
			return nil, err
		}
		senders = append(senders, s.httpdev)
	}
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
		if cfg.HTTPTLS != nil {
			ln = tls.NewListener(ln, cfg.HTTPTLS)
		}
		s.httpLn = ln
		mux := http.NewServeMux()
		mux.Handle("/devices/", s.httpdev.Handler())
		mux.Handle("GET /metrics", api.RequireToken(cfg.APIToken, s.metricsHandler()))
		mux.Handle("/", api.Handler(s.store, func() any { return s.Status() }, cfg.APIToken, log))
		// net/http reports what it cannot hand to a handler (a failed TLS
		// handshake: a device without the CA, a client speaking plain
		// HTTP) to ErrorLog; without one it would bypass vigil's log.
		s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)}
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
// finish, or returns when ctx ends first. The batcher may hand over a
// committed batch until it is done, so only then is recs closed, even when
// ctx has ended (closing it earlier made that hand-over panic).
func (s *Server) shutdownPipeline(ctx context.Context) error {
	err := s.batcher.Close(ctx)
	go s.closeRecsOnce.Do(func() {
		<-s.batcher.Done()
		close(s.recs)
	})
	select {
	case <-s.scored:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("scoring: %w", ctx.Err())
		}
	}
	return err
}

// apiGrace is how long Close lets API requests in flight finish before it
// cuts them: a query streaming a large answer to a client that stopped
// reading, or a long one, would otherwise hold the shutdown for good.
var apiGrace = 5 * time.Second

// Close shuts down in the order that loses nothing: stop taking telemetry
// and commit every in-flight batch (its devices get their acknowledgements
// while still connected), finish scoring, then disconnect devices, stop the
// API (requests still running after apiGrace are cut, their queries
// cancelled) and close the store.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		var errs []error
		errs = append(errs, s.shutdownPipeline(ctx))
		close(s.stopTick)
		<-s.tickDone
		errs = append(errs, s.gw.Close(), s.closeAMQP())
		if s.http != nil {
			s.httpdev.Close() // its long polls would hold Shutdown
			grace, cancel := context.WithTimeout(ctx, apiGrace)
			if err := s.http.Shutdown(grace); err != nil {
				s.log.Warn("API requests still running at shutdown were cut", "grace", apiGrace, "err", err)
				s.http.Close() // closes their connections, which cancels their queries
			}
			cancel()
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
	Duplicates     int64  `json:"duplicates"` // messages stored already (a resend, a redelivery), recognised by device and message id
	Batches        int64  `json:"batches"`
	CommitErrors   int64  `json:"commit_errors"`
	RefusedDevices int64  `json:"connections_refused"`
	Denied         int64  `json:"topics_denied"`
	Anomalies      int64  `json:"anomalies"`
	ModelsApplied  int64  `json:"model_versions_applied"`
	// ModelsWaiting counts active versions whose device is not registered
	// yet; each is applied once its device is.
	ModelsWaiting int64 `json:"model_versions_waiting"`
	// AMQP is the broker link's state; absent without one.
	AMQP *AMQPStatus `json:"amqp,omitempty"`
	// HTTPDevices counts the HTTP device gateway's work; absent without the
	// HTTP server.
	HTTPDevices *httpdev.Stats `json:"http_devices,omitempty"`
	actions.Stats
}

// Status returns the counters of this run.
func (s *Server) Status() Status {
	is, gs := s.batcher.Stats(), s.gw.Stats()
	st := Status{
		Uptime: time.Since(s.started).Round(time.Second).String(), Devices: len(s.store.Devices()),
		Connected: s.gw.ConnectedDevices(), Readings: is.Readings, Messages: is.Messages, DeadLetters: is.DeadLetters, Duplicates: is.Duplicates,
		Batches: is.Batches, CommitErrors: is.CommitErrors, RefusedDevices: gs.RefusedUnknown + gs.RefusedKey + gs.RefusedOff,
		Denied: gs.Denied, Anomalies: s.anomalies.Load(), ModelsApplied: s.modelsOn.Load(), ModelsWaiting: s.modelsWait.Load(), Stats: s.ctrl.Stats(),
		AMQP: s.amqpStatus(),
	}
	if s.httpdev != nil {
		hs := s.httpdev.Stats()
		st.HTTPDevices = &hs
		st.RefusedDevices += hs.Refused
	}
	return st
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
