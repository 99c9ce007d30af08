package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Model is a versioned model artifact in the registry. Name is its scope:
// "default" for every series without a model of its own, "DEVICE/METRIC"
// for one series, or "DEVICE/*" for a device-level model that scores
// several of the device's metrics together (its spec names them).
type Model struct {
	Name    string          `json:"name"`
	Version int             `json:"version"`
	Spec    json.RawMessage `json:"spec"` // {"kind": ..., "params": ...}
	From    time.Time       `json:"trained_from,omitzero"`
	To      time.Time       `json:"trained_to,omitzero"`
	Metrics json.RawMessage `json:"metrics"`
	Created time.Time       `json:"created"`
	Active  bool            `json:"active"`
}

// DefaultModel is the registry name of the fleet-wide model.
const DefaultModel = "default"

// ErrNoSuchModel: the registry has no model of that name and version.
var ErrNoSuchModel = errors.New("no such model version")

// AllMetrics is the metric part of a device-level model's name,
// "DEVICE/*". It cannot be a metric name.
const AllMetrics = "*"

// DeviceModel returns the registry name of a device's device-level model.
func DeviceModel(device string) string { return device + "/" + AllMetrics }

// ModelDevice returns the device of a device-level model name
// ("DEVICE/*"), and false for any other name.
func ModelDevice(name string) (string, bool) {
	dev, ok := strings.CutSuffix(name, "/"+AllMetrics)
	if !ok || dev == "" {
		return "", false
	}
	return dev, true
}

var modelName = regexp.MustCompile(`^(default|[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}/([A-Za-z_][A-Za-z0-9_.:-]{0,63}|\*))$`)

// PutModel stores m as the next version of its name and makes it the active
// one; earlier versions stay for rollback. It sets m.Version and m.Created.
func (s *Store) PutModel(ctx context.Context, m *Model) error {
	if !modelName.MatchString(m.Name) {
		return fmt.Errorf("put model: name %q must be %q, DEVICE/METRIC or DEVICE/%s", m.Name, DefaultModel, AllMetrics)
	}
	if !json.Valid(m.Spec) {
		return fmt.Errorf("put model %s: spec is not JSON", m.Name)
	}
	if len(m.Metrics) == 0 {
		m.Metrics = json.RawMessage("{}")
	}
	s.wmu.Lock() // versions are assigned by the single writer
	defer s.wmu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put model %s: %w", m.Name, err)
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) + 1 FROM models WHERE name = ?`, m.Name).Scan(&m.Version); err != nil {
		return fmt.Errorf("put model %s: %w", m.Name, err)
	}
	m.Created, m.Active = time.Now().UTC().Truncate(time.Microsecond), true
	if _, err := tx.ExecContext(ctx, `UPDATE models SET active = false WHERE name = ? AND active`, m.Name); err != nil {
		return fmt.Errorf("put model %s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, true)`,
		m.Name, m.Version, string(m.Spec), nullTime(m.From), nullTime(m.To), string(m.Metrics), m.Created); err != nil {
		return fmt.Errorf("put model %s: %w", m.Name, err)
	}
	return tx.Commit()
}

// ActivateModel makes an existing version the active one (a rollback or
// roll-forward).
func (s *Store) ActivateModel(ctx context.Context, name string, version int) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM models WHERE name = ? AND version = ?`, name, version).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("activate %s version %d: %w", name, version, ErrNoSuchModel)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE models SET active = (version = ?) WHERE name = ?`, version, name); err != nil {
		return fmt.Errorf("activate %s version %d: %w", name, version, err)
	}
	return tx.Commit()
}

// Models lists the registry: every version of every name when all is true,
// else only the active versions.
func (s *Store) Models(ctx context.Context, all bool) ([]Model, error) {
	q := `SELECT name, version, spec, trained_from, trained_to, metrics, created, active FROM models`
	if !all {
		q += ` WHERE active`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY name, version`)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	defer rows.Close()
	var out []Model
	for rows.Next() {
		var m Model
		var spec, metrics string
		var from, to sql.NullTime
		if err := rows.Scan(&m.Name, &m.Version, &spec, &from, &to, &metrics, &m.Created, &m.Active); err != nil {
			return nil, fmt.Errorf("list models: %w", err)
		}
		m.Spec, m.Metrics, m.From, m.To = json.RawMessage(spec), json.RawMessage(metrics), from.Time, to.Time
		out = append(out, m)
	}
	return out, rows.Err()
}

// SeriesHistory returns the stored readings of one series in time order,
// within [from, to) when those are not zero, at most limit of the most
// recent ones when limit > 0.
func (s *Store) SeriesHistory(ctx context.Context, device int32, metric int16, from, to time.Time, limit int) ([]time.Time, []float64, error) {
	if from.IsZero() {
		from = time.Unix(0, 0)
	}
	if to.IsZero() {
		to = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	q := `SELECT ts, value FROM telemetry WHERE device_id = ? AND metric_id = ? AND ts >= ? AND ts < ? ORDER BY ts DESC`
	args := []any{device, metric, from.UTC(), to.UTC()}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT * FROM (`+q+`) ORDER BY ts`, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("series history: %w", err)
	}
	defer rows.Close()
	var ts []time.Time
	var xs []float64
	for rows.Next() {
		var t time.Time
		var x float64
		if err := rows.Scan(&t, &x); err != nil {
			return nil, nil, fmt.Errorf("series history: %w", err)
		}
		ts, xs = append(ts, t), append(xs, x)
	}
	return ts, xs, rows.Err()
}

// LatestReading returns the time of the newest stored reading; ok is false
// when there is none.
func (s *Store) LatestReading(ctx context.Context) (t time.Time, ok bool, err error) {
	var nt sql.NullTime
	if err := s.db.QueryRowContext(ctx, `SELECT max(ts) FROM telemetry`).Scan(&nt); err != nil {
		return time.Time{}, false, fmt.Errorf("latest reading: %w", err)
	}
	return nt.Time, nt.Valid, nil
}

// RecentHistories streams the most recent readings (at most limit, limit >
// 0) of every series of the devices whose id is shard modulo shards, one
// series at a time, in time order, to fn (which must not keep ts and xs:
// they are reused for the next series). Only readings at or after since
// count (all of them when since is zero): telemetry is stored in arrival
// order, so DuckDB skips the row groups wholly before since, and the scan
// costs what the recent history holds, not what the table does. It reads
// the telemetry once, where a SeriesHistory per series would scan it once
// per series: warming a new default model on a large fleet is one query per
// scoring shard. An error returned by fn stops the scan and is returned.
func (s *Store) RecentHistories(ctx context.Context, limit int, since time.Time, shard, shards int, fn func(device int32, metric int16, ts []time.Time, xs []float64) error) error {
	if limit < 1 || shards < 1 || shard < 0 || shard >= shards {
		return fmt.Errorf("recent histories: limit %d, shard %d of %d: want limit ≥ 1 and 0 ≤ shard < shards", limit, shard, shards)
	}
	return s.recentHistories(ctx, "", "t.device_id::UBIGINT % ? = ?", []any{shards, shard}, limit, since, fn)
}

// recentHistories runs the query RecentHistories and SeriesHistories
// share: the last limit readings from since on of each series of
// telemetry t that join and cond (SQL, with args in their order) select,
// streamed to fn by eachSeries. A zero since is 0001-01-01: every reading.
func (s *Store) recentHistories(ctx context.Context, join, cond string, args []any, limit int, since time.Time, fn func(device int32, metric int16, ts []time.Time, xs []float64) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT t.device_id, t.metric_id, t.ts, t.value FROM telemetry t `+join+`
		WHERE `+cond+` AND t.ts >= ?
		QUALIFY row_number() OVER (PARTITION BY t.device_id, t.metric_id ORDER BY t.ts DESC) <= ?
		ORDER BY t.device_id, t.metric_id, t.ts`, append(args, since.UTC(), limit)...)
	if err != nil {
		return fmt.Errorf("histories: %w", err)
	}
	return eachSeries(rows, fn)
}

// SeriesID names one series: a device and one of its metrics.
type SeriesID struct {
	Device int32
	Metric int16
}

// SeriesHistories streams the most recent readings (at most limit, limit >
// 0) at or after since (all when since is zero) of each of the series in
// ids that has any, as RecentHistories does, in one scan of the telemetry
// for all of them: warming many new per-series or per-device models at
// once costs one scan, not one per series. Series come in (device,
// metric) order; one without readings is left out.
func (s *Store) SeriesHistories(ctx context.Context, ids []SeriesID, limit int, since time.Time, fn func(device int32, metric int16, ts []time.Time, xs []float64) error) error {
	if limit < 1 {
		return fmt.Errorf("series histories: limit %d: want 1 or more", limit)
	}
	if len(ids) == 0 {
		return nil
	}
	devs, mets := make([]int32, len(ids)), make([]int16, len(ids))
	for i, id := range ids {
		devs[i], mets[i] = id.Device, id.Metric
	}
	return s.recentHistories(ctx, `SEMI JOIN (SELECT unnest(?::INTEGER[]) AS device_id, unnest(?::SMALLINT[]) AS metric_id) k USING (device_id, metric_id)`,
		"true", []any{devs, mets}, limit, since, fn)
}

// eachSeries hands fn the rows (device_id, metric_id, ts, value, ordered
// by series and time) one series at a time, reusing ts and xs, and closes
// them.
func eachSeries(rows *sql.Rows, fn func(device int32, metric int16, ts []time.Time, xs []float64) error) error {
	defer rows.Close()
	var (
		dev    int32
		met    int16
		ts     []time.Time
		xs     []float64
		series bool
	)
	for rows.Next() {
		var d int32
		var m int16
		var t time.Time
		var x float64
		if err := rows.Scan(&d, &m, &t, &x); err != nil {
			return fmt.Errorf("histories: %w", err)
		}
		if series && (d != dev || m != met) {
			if err := fn(dev, met, ts, xs); err != nil {
				return err
			}
			ts, xs = ts[:0], xs[:0]
		}
		dev, met, series = d, m, true
		ts, xs = append(ts, t), append(xs, x)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("histories: %w", err)
	}
	if series {
		return fn(dev, met, ts, xs)
	}
	return nil
}
