package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	duckdb "github.com/duckdb/duckdb-go/v2"
)

// FileName is the name of the database file inside a data directory.
const FileName = "vigil.duckdb"

// RowGroupRows is how many rows DuckDB keeps in one row group of a table.
// A transaction that inserts at least this many rows writes its full row
// groups straight to the database file, compressed; a smaller one goes to
// the write-ahead log first and is compressed again at the next checkpoint
// (~200 vs ~330 ns of CPU per reading here; BenchmarkAppend). Batches of
// this size are the cheapest to commit.
const RowGroupRows = 122_880

// TelemetrySchema is the Arrow schema of a telemetry batch; its columns are
// those of the telemetry table, in order.
var TelemetrySchema = arrow.NewSchema([]arrow.Field{
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Microsecond}},
	{Name: "device_id", Type: arrow.PrimitiveTypes.Int32},
	{Name: "metric_id", Type: arrow.PrimitiveTypes.Int16},
	{Name: "value", Type: arrow.PrimitiveTypes.Float64},
}, nil)

// TelemetryColumns is a batch of readings as plain columns, row i being
// the value Value[i] of metric MetricID[i] of device DeviceID[i] at TS[i]
// (microseconds since the Unix epoch). All four have the same length.
type TelemetryColumns struct {
	TS       []int64
	DeviceID []int32
	MetricID []int16
	Value    []float64
}

// Len returns how many readings the columns hold.
func (c *TelemetryColumns) Len() int { return len(c.Value) }

// Reset empties the columns and keeps their room for the next batch.
func (c *TelemetryColumns) Reset() {
	c.TS, c.DeviceID, c.MetricID, c.Value = c.TS[:0], c.DeviceID[:0], c.MetricID[:0], c.Value[:0]
}

// Record wraps the columns as a record of TelemetrySchema without copying
// them: the record holds the slices, which must not change while it lives.
// Every value is valid, so no validity bitmap is built or scanned.
func (c TelemetryColumns) Record() arrow.RecordBatch {
	n := len(c.Value)
	if len(c.TS) != n || len(c.DeviceID) != n || len(c.MetricID) != n {
		panic(fmt.Sprintf("store: telemetry columns of %d, %d, %d and %d rows", len(c.TS), len(c.DeviceID), len(c.MetricID), n))
	}
	col := func(t arrow.DataType, b []byte) arrow.Array {
		d := array.NewData(t, n, []*memory.Buffer{nil, memory.NewBufferBytes(b)}, nil, 0, 0)
		defer d.Release()
		return array.MakeFromData(d)
	}
	f := TelemetrySchema.Fields()
	cols := []arrow.Array{
		col(f[0].Type, arrow.Int64Traits.CastToBytes(c.TS)),
		col(f[1].Type, arrow.Int32Traits.CastToBytes(c.DeviceID)),
		col(f[2].Type, arrow.Int16Traits.CastToBytes(c.MetricID)),
		col(f[3].Type, arrow.Float64Traits.CastToBytes(c.Value)),
	}
	rec := array.NewRecordBatch(TelemetrySchema, cols, int64(n))
	for _, a := range cols {
		a.Release()
	}
	return rec
}

// MetricError is MetricID refusing a metric name itself — not valid, or
// no room for another — as opposed to the store failing to register it:
// telemetry naming it will never be stored, whereas after a failure it may
// be once the store recovers.
type MetricError struct{ msg string }

// Error says which name was refused and why.
func (e *MetricError) Error() string { return e.msg }

// Errors callers branch on.
var (
	// ErrUnknownDevice: no device of that name is registered.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrDeviceDisabled: the device is registered but disabled.
	ErrDeviceDisabled = errors.New("device disabled")
	// ErrWrongKey: the key does not match the device's.
	ErrWrongKey = errors.New("wrong device key")
	// ErrDeviceExists: a device of that name is already registered.
	ErrDeviceExists = errors.New("device already registered")
	// ErrReadOnly: a query tried to change the database.
	ErrReadOnly = errors.New("only read-only statements (SELECT, EXPLAIN, DESCRIBE, SHOW) are allowed")
	// ErrOneStatement: a query held more than one statement.
	ErrOneStatement = errors.New("send one statement per query (no ';' between statements)")
)

// Store is an open vigil database. Its methods are safe for concurrent use.
type Store struct {
	db     *sql.DB
	writer *sql.Conn // telemetry commits, so RegisterView and INSERT share a connection
	wmu    sync.Mutex

	mu        sync.RWMutex
	devices   map[string]*Device
	metrics   map[string]int16
	metricIDs []string // index = id
	nextDev   int32
	nextAnom  int64
	nextCmd   int64

	keySecret []byte // device keys are hashed with it (KeySecretName)
}

// Options tunes the database.
type Options struct {
	// Threads is how many threads DuckDB runs queries on; 0 means
	// DefaultThreads. Every DuckDB thread beyond the first costs CPU on
	// each commit even though a commit does not use it (BenchmarkAppend,
	// 100k-row batches, CPU per reading: 290 ns with 1 thread, 487 ns with
	// 2, 594 ns with 8 on a 2-core machine), while large analytic queries
	// run faster with more (1.3× with 2 threads on 2 cores).
	Threads int
	// ExternalAccess lets SQL through Query and QueryArrow read files and
	// URLs the server process can reach (read_csv, read_parquet,
	// read_text, ...). Off by default: the query API is for the readings,
	// and anyone who may query must not read the server's files. Turn it
	// on only where every API user may read what the vigil process may,
	// e.g. to join archived Parquet files.
	ExternalAccess bool
}

// DefaultThreads returns the DuckDB thread count vigil uses unless told
// otherwise: half the CPUs Go may use (at least one), leaving the rest to
// ingest and scoring.
func DefaultThreads() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// Open opens (creating if needed) the database in dir with the default
// Options and brings its schema up to date.
func Open(ctx context.Context, dir string) (*Store, error) {
	return OpenOptions(ctx, dir, Options{})
}

// lockConflict reports whether err is DuckDB refusing to open a database
// file that another process holds open: `IO Error: Could not set lock on
// file "…/vigil.duckdb": Conflicting lock is held in /usr/bin/vigil (PID
// 4242)`.
func lockConflict(err error) bool {
	return strings.Contains(err.Error(), "Could not set lock on file")
}

// OpenOptions opens (creating if needed) the database in dir and brings its
// schema up to date.
func OpenOptions(ctx context.Context, dir string, opts Options) (*Store, error) {
	if opts.Threads < 0 {
		return nil, fmt.Errorf("open store: %d DuckDB threads: want 1 or more (0 for the default)", opts.Threads)
	}
	if opts.Threads == 0 {
		opts.Threads = DefaultThreads()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	connector, err := duckdb.NewConnector(path+"?threads="+strconv.Itoa(opts.Threads), nil)
	if err != nil {
		if lockConflict(err) {
			return nil, fmt.Errorf("open store %s: %w (another process has this data directory open, a running vigil serve perhaps: stop it, or go through that server's HTTP API instead)", path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db := sql.OpenDB(connector)
	s := &Store{db: db, devices: map[string]*Device{}, metrics: map[string]int16{}}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	keyed := 0
	for _, d := range s.devices {
		if strings.HasPrefix(d.keyHash, keyHashPrefix) {
			keyed++
		}
	}
	if s.keySecret, err = loadKeySecret(dir, keyed); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	if !opts.ExternalAccess {
		// For the whole database and for good: a query cannot set it back
		// (and may not SET anything).
		if _, err := db.ExecContext(ctx, `SET enable_external_access = false`); err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	for _, stmt := range schema {
		if _, err := s.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
	}
	var err error
	if s.writer, err = s.db.Conn(ctx); err != nil {
		return err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, key_sha256, status, created FROM devices`)
	if err != nil {
		return err
	}
	for rows.Next() {
		d := &Device{}
		if err := rows.Scan(&d.ID, &d.Name, &d.keyHash, &d.Status, &d.Created); err != nil {
			rows.Close()
			return err
		}
		s.devices[d.Name] = d
		s.nextDev = max(s.nextDev, d.ID)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT id, name FROM metrics ORDER BY id`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id int16
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			rows.Close()
			return err
		}
		s.metrics[name] = id
		for len(s.metricIDs) <= int(id) {
			s.metricIDs = append(s.metricIDs, "")
		}
		s.metricIDs[id] = name
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := s.db.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM anomalies`).Scan(&s.nextAnom); err != nil {
		return err
	}
	return s.db.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM commands`).Scan(&s.nextCmd)
}

// Close commits nothing further and closes the database file.
func (s *Store) Close() error {
	var errs []error
	if s.writer != nil {
		errs = append(errs, s.writer.Close())
	}
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
}

// DB returns the underlying database handle, for read queries in tests and
// tools that run inside the owning process.
func (s *Store) DB() *sql.DB { return s.db }

// DeviceStatus says whether a device may connect.
type DeviceStatus string

// Device states.
const (
	Enabled  DeviceStatus = "enabled"
	Disabled DeviceStatus = "disabled"
)

// Device is a registered device.
type Device struct {
	ID      int32        `json:"id"`
	Name    string       `json:"name"`
	Status  DeviceStatus `json:"status"`
	Created time.Time    `json:"created"`
	keyHash string
}

var deviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)

// ValidDeviceName reports whether name can be used as a device id: 1–128
// characters from letters, digits and . _ : @ -, starting with a letter or
// digit (no / + # so it is safe inside MQTT topics).
func ValidDeviceName(name string) bool { return deviceName.MatchString(name) }

// NewDeviceKey returns a random device key: 32 hex characters (128 bits).
func NewDeviceKey() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("store: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// AddDevice registers a device with its key. Only a hash of the key is kept:
// HMAC-SHA256 under the data directory's secret (KeySecretName).
func (s *Store) AddDevice(ctx context.Context, name, key string) (Device, error) {
	if !ValidDeviceName(name) {
		return Device{}, fmt.Errorf("add device %q: a device id is 1-128 letters, digits or . _ : @ - and starts with a letter or digit", name)
	}
	if len(key) < 8 {
		return Device{}, fmt.Errorf("add device %q: the key must be at least 8 characters", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.devices[name]; ok {
		return Device{}, fmt.Errorf("add device %q: %w", name, ErrDeviceExists)
	}
	d := &Device{ID: s.nextDev + 1, Name: name, Status: Enabled, Created: time.Now().UTC().Truncate(time.Microsecond), keyHash: s.hashKey(key)}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO devices VALUES (?, ?, ?, ?, ?)`, d.ID, d.Name, d.keyHash, string(d.Status), d.Created); err != nil {
		return Device{}, fmt.Errorf("add device %q: %w", name, err)
	}
	s.nextDev = d.ID
	s.devices[name] = d
	return *d, nil
}

// SetDeviceStatus enables or disables a device.
func (s *Store) SetDeviceStatus(ctx context.Context, name string, st DeviceStatus) (Device, error) {
	if st != Enabled && st != Disabled {
		return Device{}, fmt.Errorf("set device status: %q is not enabled or disabled", st)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[name]
	if !ok {
		return Device{}, fmt.Errorf("device %q: %w", name, ErrUnknownDevice)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE devices SET status = ? WHERE id = ?`, string(st), d.ID); err != nil {
		return Device{}, fmt.Errorf("set device %q %s: %w", name, st, err)
	}
	d.Status = st
	return *d, nil
}

// SetDeviceKey replaces a device's key (key rotation). Connections already
// open stay open; the new key is required from the next connect.
func (s *Store) SetDeviceKey(ctx context.Context, name, key string) (Device, error) {
	if len(key) < 8 {
		return Device{}, fmt.Errorf("set key of %q: the key must be at least 8 characters", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[name]
	if !ok {
		return Device{}, fmt.Errorf("device %q: %w", name, ErrUnknownDevice)
	}
	h := s.hashKey(key)
	if _, err := s.db.ExecContext(ctx, `UPDATE devices SET key_sha256 = ? WHERE id = ?`, h, d.ID); err != nil {
		return Device{}, fmt.Errorf("set key of %q: %w", name, err)
	}
	d.keyHash = h
	return *d, nil
}

// Devices lists the registered devices by name.
func (s *Store) Devices() []Device {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Device, 0, len(s.devices))
	for _, d := range s.devices {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Device returns the registered device of that name.
func (s *Store) Device(name string) (Device, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.devices[name]
	if !ok {
		return Device{}, false
	}
	return *d, true
}

// Authenticate checks a device's key. It returns ErrUnknownDevice,
// ErrDeviceDisabled or ErrWrongKey (wrapped) when the device may not connect.
func (s *Store) Authenticate(name, key string) (Device, error) {
	s.mu.RLock()
	d, ok := s.devices[name]
	var dev Device
	if ok {
		dev = *d
	}
	s.mu.RUnlock()
	if !ok {
		return Device{}, fmt.Errorf("device %q: %w", name, ErrUnknownDevice)
	}
	match, legacy := s.keyMatches(dev.keyHash, key)
	if match && legacy {
		s.rehashKey(name, key, dev.keyHash)
	}
	switch {
	case !match:
		return Device{}, fmt.Errorf("device %q: %w", name, ErrWrongKey)
	case dev.Status != Enabled:
		return Device{}, fmt.Errorf("device %q: %w", name, ErrDeviceDisabled)
	}
	return dev, nil
}

// DeviceName returns the name of a device id, or "" if there is none.
func (s *Store) DeviceName(id int32) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, d := range s.devices {
		if d.ID == id {
			return d.Name
		}
	}
	return ""
}

var metricName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$`)

// ValidMetricName reports whether name can be a metric: 1–64 characters
// from letters, digits and _ . : -, starting with a letter or underscore.
func ValidMetricName(name string) bool { return metricName.MatchString(name) }

// MetricID returns the integer key of a metric name, registering the name on
// first use.
func (s *Store) MetricID(ctx context.Context, name string) (int16, error) {
	s.mu.RLock()
	id, ok := s.metrics[name]
	s.mu.RUnlock()
	if ok {
		return id, nil
	}
	if !ValidMetricName(name) {
		return 0, &MetricError{fmt.Sprintf("metric %q: a metric name is 1-64 letters, digits or _ . : - and starts with a letter or _", name)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.metrics[name]; ok {
		return id, nil
	}
	if len(s.metricIDs) >= 1<<15-1 {
		return 0, &MetricError{fmt.Sprintf("metric %q: the store already holds %d metric names, the most it can", name, len(s.metricIDs))}
	}
	id = int16(len(s.metricIDs))
	if _, err := s.db.ExecContext(ctx, `INSERT INTO metrics VALUES (?, ?)`, id, name); err != nil {
		return 0, fmt.Errorf("register metric %q: %w", name, err)
	}
	s.metrics[name] = id
	s.metricIDs = append(s.metricIDs, name)
	return id, nil
}

// MetricName returns the name of a metric id, or "" if there is none.
func (s *Store) MetricName(id int16) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if id < 0 || int(id) >= len(s.metricIDs) {
		return ""
	}
	return s.metricIDs[id]
}

// DeadLetter is telemetry that could not be stored, kept with the reason.
type DeadLetter struct {
	Received time.Time
	DeviceID int32 // 0 when the device is not known
	Device   string
	Source   string // where it came from, e.g. the MQTT topic
	Reason   string
	Body     []byte
}

// MessageIDSchema is the Arrow schema of the message ids a batch records
// for deduplication; its columns are those of the message_ids table.
var MessageIDSchema = arrow.NewSchema([]arrow.Field{
	{Name: "device_id", Type: arrow.PrimitiveTypes.Int32},
	{Name: "msg_id", Type: arrow.BinaryTypes.String},
	{Name: "received", Type: &arrow.TimestampType{Unit: arrow.Microsecond}},
}, nil)

// Batch is what one commit writes: readings in the TelemetrySchema, the
// dead letters of the same messages, and the ids of the messages
// (MessageIDSchema), so that a redelivered message is recognised even after
// a restart.
type Batch struct {
	// Readings and MessageIDs may be nil. The Store does not release them.
	Readings    arrow.RecordBatch
	MessageIDs  arrow.RecordBatch
	DeadLetters []DeadLetter
}

// MessageKey identifies a message for deduplication.
type MessageKey struct {
	Device int32
	ID     string
}

// RecentMessageIDs returns the keys of the messages committed since t, with
// the time each was received.
func (s *Store) RecentMessageIDs(ctx context.Context, since time.Time) (map[MessageKey]time.Time, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device_id, msg_id, received FROM message_ids WHERE received >= ?`, since.UTC())
	if err != nil {
		return nil, fmt.Errorf("recent message ids: %w", err)
	}
	defer rows.Close()
	out := map[MessageKey]time.Time{}
	for rows.Next() {
		var k MessageKey
		var t time.Time
		if err := rows.Scan(&k.Device, &k.ID, &t); err != nil {
			return nil, fmt.Errorf("recent message ids: %w", err)
		}
		out[k] = t
	}
	return out, rows.Err()
}

// ForgetMessageIDs deletes the message ids received before t; duplicates of
// those messages are no longer recognised.
func (s *Store) ForgetMessageIDs(ctx context.Context, before time.Time) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM message_ids WHERE received < ?`, before.UTC()); err != nil {
		return fmt.Errorf("forget message ids: %w", err)
	}
	return nil
}

// SourcePosition returns the position saved for a source with
// SaveSourcePosition, and false when there is none.
func (s *Store) SourcePosition(ctx context.Context, source string) (string, bool, error) {
	var pos string
	err := s.db.QueryRowContext(ctx, `SELECT position FROM source_positions WHERE source = ?`, source).Scan(&pos)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("position of %s: %w", source, err)
	}
	return pos, true, nil
}

// SaveSourcePosition records how far a source has been read: the position
// of the last message of an unbroken run whose messages are all committed.
func (s *Store) SaveSourcePosition(ctx context.Context, source, position string) error {
	if _, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO source_positions VALUES (?, ?, ?)`, source, position, time.Now().UTC()); err != nil {
		return fmt.Errorf("save the position of %s: %w", source, err)
	}
	return nil
}

// Commit writes a batch in one transaction: readings in bulk through
// DuckDB's Arrow scan (never row by row) and dead letters beside them. When
// Commit returns nil every row is durable; on error none is.
func (s *Store) Commit(ctx context.Context, b Batch) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.writer.Raw(func(dc any) error {
		conn, ok := dc.(driver.ExecerContext)
		if !ok {
			return errors.New("duckdb connection cannot execute")
		}
		if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION", nil); err != nil {
			return err
		}
		if err := commitBody(ctx, dc.(driver.Conn), conn, b); err != nil {
			_, rbErr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK", nil)
			return errors.Join(err, rbErr)
		}
		_, err := conn.ExecContext(ctx, "COMMIT", nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("commit batch: %w", err)
	}
	return nil
}

// appendArrow inserts rec into table through DuckDB's Arrow scan, on the
// connection dc (RegisterView and the INSERT must share it).
func appendArrow(ctx context.Context, dc driver.Conn, conn driver.ExecerContext, table string, schema *arrow.Schema, rec arrow.RecordBatch) error {
	if rec == nil || rec.NumRows() == 0 {
		return nil
	}
	if !rec.Schema().Equal(schema) {
		return fmt.Errorf("%s: record schema %s does not match the table", table, rec.Schema())
	}
	ar, err := duckdb.NewArrowFromConn(dc)
	if err != nil {
		return err
	}
	rdr, err := array.NewRecordReader(schema, []arrow.RecordBatch{rec})
	if err != nil {
		return err
	}
	defer rdr.Release()
	view := "vigil_batch_" + table
	release, err := ar.RegisterView(rdr, view)
	if err != nil {
		return err
	}
	defer release()
	if _, err := conn.ExecContext(ctx, "INSERT INTO "+table+" SELECT * FROM "+view, nil); err != nil {
		return fmt.Errorf("%s: %w", table, err)
	}
	return nil
}

func commitBody(ctx context.Context, dc driver.Conn, conn driver.ExecerContext, b Batch) error {
	if err := appendArrow(ctx, dc, conn, "telemetry", TelemetrySchema, b.Readings); err != nil {
		return err
	}
	if err := appendArrow(ctx, dc, conn, "message_ids", MessageIDSchema, b.MessageIDs); err != nil {
		return err
	}
	for _, d := range b.DeadLetters {
		var dev any
		if d.DeviceID != 0 {
			dev = d.DeviceID
		}
		args := []driver.NamedValue{
			{Ordinal: 1, Value: d.Received.UTC()}, {Ordinal: 2, Value: dev}, {Ordinal: 3, Value: d.Device},
			{Ordinal: 4, Value: d.Source}, {Ordinal: 5, Value: d.Reason}, {Ordinal: 6, Value: d.Body},
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)", args); err != nil {
			return fmt.Errorf("dead letter: %w", err)
		}
	}
	return nil
}
