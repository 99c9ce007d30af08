package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Anomaly is one detected anomaly episode of a (device, metric) series.
type Anomaly struct {
	ID          int64
	TS          time.Time // the reading that opened the episode
	DeviceID    int32
	MetricID    int16
	Value       float64
	Expected    float64
	Score       float64
	Model       string
	Explanation string
	Detected    time.Time
}

// AddAnomaly stores a and sets its ID.
func (s *Store) AddAnomaly(ctx context.Context, a *Anomaly) error {
	s.mu.Lock()
	s.nextAnom++
	a.ID = s.nextAnom
	s.mu.Unlock()
	_, err := s.db.ExecContext(ctx, `INSERT INTO anomalies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.TS.UTC(), a.DeviceID, a.MetricID, a.Value, a.Expected, a.Score, a.Model, a.Explanation, a.Detected.UTC())
	if err != nil {
		return fmt.Errorf("store anomaly: %w", err)
	}
	return nil
}

// CommandState is where a command is in its lifecycle:
// queued → sent → (delivered →) acknowledged | rejected | expired, or failed
// when it could not be sent at all. delivered means the device's own
// session took the command (its MQTT PUBACK); not every path can tell.
type CommandState string

// Command lifecycle states.
const (
	CommandQueued       CommandState = "queued"
	CommandSent         CommandState = "sent"
	CommandDelivered    CommandState = "delivered"
	CommandAcknowledged CommandState = "acknowledged"
	CommandRejected     CommandState = "rejected"
	CommandExpired      CommandState = "expired"
	CommandFailed       CommandState = "failed"
)

// Final reports whether no further transition can happen.
func (c CommandState) Final() bool {
	return c != CommandQueued && c != CommandSent && c != CommandDelivered
}

// Verification is the outcome of checking that a device recovered after a
// command.
type Verification string

// Verification outcomes.
const (
	VerifyPending      Verification = "pending"
	VerifyRecovered    Verification = "recovered"
	VerifyNotRecovered Verification = "not_recovered"
)

// Command is a corrective command to one device and its persisted lifecycle.
type Command struct {
	ID           int64
	DeviceID     int32
	MetricID     int16 // the metric whose anomaly caused it; -1 for none
	AnomalyID    int64 // 0 when not caused by an anomaly
	Name         string
	Payload      json.RawMessage
	State        CommandState
	Created      time.Time
	Sent         time.Time // zero until sent
	Delivered    time.Time // zero until the device's session took it
	Acked        time.Time // zero until acknowledged or rejected
	Expires      time.Time
	Detail       string
	Verification Verification
	Verified     time.Time
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

// AddCommand stores a new command and sets its ID.
func (s *Store) AddCommand(ctx context.Context, c *Command) error {
	s.mu.Lock()
	s.nextCmd++
	c.ID = s.nextCmd
	s.mu.Unlock()
	var anomaly, metric any
	if c.AnomalyID != 0 {
		anomaly = c.AnomalyID
	}
	if c.MetricID >= 0 {
		metric = c.MetricID
	}
	if c.Verification == "" {
		c.Verification = VerifyPending
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO commands (id, device_id, metric_id, anomaly_id, name, payload, state, created,
		sent, acked, expires, detail, verification, verified, delivered) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.DeviceID, metric, anomaly, c.Name, string(c.Payload), string(c.State), c.Created.UTC(),
		nullTime(c.Sent), nullTime(c.Acked), c.Expires.UTC(), c.Detail, string(c.Verification), nullTime(c.Verified), nullTime(c.Delivered))
	if err != nil {
		return fmt.Errorf("store command: %w", err)
	}
	return nil
}

// UpdateCommand persists the mutable fields of c: state, timestamps, detail
// and verification.
func (s *Store) UpdateCommand(ctx context.Context, c Command) error {
	_, err := s.db.ExecContext(ctx, `UPDATE commands SET state = ?, sent = ?, delivered = ?, acked = ?, detail = ?, verification = ?, verified = ? WHERE id = ?`,
		string(c.State), nullTime(c.Sent), nullTime(c.Delivered), nullTime(c.Acked), c.Detail, string(c.Verification), nullTime(c.Verified), c.ID)
	if err != nil {
		return fmt.Errorf("update command %d: %w", c.ID, err)
	}
	return nil
}

// UnfinishedCommands returns the commands whose lifecycle or verification is
// still open, oldest first, so a restarted server can resume tracking them.
func (s *Store) UnfinishedCommands(ctx context.Context) ([]Command, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, device_id, coalesce(metric_id, -1), coalesce(anomaly_id, 0), name, payload, state, created,
		sent, acked, expires, detail, verification, verified, delivered
		FROM commands WHERE state IN ('queued', 'sent', 'delivered') OR verification = 'pending' ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("unfinished commands: %w", err)
	}
	defer rows.Close()
	var out []Command
	for rows.Next() {
		var c Command
		var payload, state, verif string
		var sent, acked, verified, delivered sql.NullTime
		if err := rows.Scan(&c.ID, &c.DeviceID, &c.MetricID, &c.AnomalyID, &c.Name, &payload, &state, &c.Created,
			&sent, &acked, &c.Expires, &c.Detail, &verif, &verified, &delivered); err != nil {
			return nil, fmt.Errorf("unfinished commands: %w", err)
		}
		c.Payload, c.State, c.Verification = json.RawMessage(payload), CommandState(state), Verification(verif)
		c.Sent, c.Acked, c.Verified, c.Delivered = sent.Time, acked.Time, verified.Time, delivered.Time
		out = append(out, c)
	}
	return out, rows.Err()
}
