package store

// schema creates every table and view vigil uses. Each statement is
// idempotent so Open can run it on every start.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS devices (
		id         INTEGER PRIMARY KEY,
		name       VARCHAR NOT NULL UNIQUE,
		key_sha256 VARCHAR NOT NULL,
		status     VARCHAR NOT NULL,
		created    TIMESTAMP NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS metrics (
		id   SMALLINT PRIMARY KEY,
		name VARCHAR NOT NULL UNIQUE
	)`,
	`CREATE TABLE IF NOT EXISTS telemetry (
		ts        TIMESTAMP NOT NULL,
		device_id INTEGER   NOT NULL,
		metric_id SMALLINT  NOT NULL,
		value     DOUBLE    NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS anomalies (
		id          BIGINT PRIMARY KEY,
		ts          TIMESTAMP NOT NULL,
		device_id   INTEGER   NOT NULL,
		metric_id   SMALLINT  NOT NULL,
		value       DOUBLE    NOT NULL,
		expected    DOUBLE    NOT NULL,
		score       DOUBLE    NOT NULL,
		model       VARCHAR   NOT NULL,
		explanation VARCHAR   NOT NULL,
		detected    TIMESTAMP NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS commands (
		id           BIGINT PRIMARY KEY,
		device_id    INTEGER   NOT NULL,
		metric_id    SMALLINT,
		anomaly_id   BIGINT,
		name         VARCHAR   NOT NULL,
		payload      VARCHAR   NOT NULL,
		state        VARCHAR   NOT NULL,
		created      TIMESTAMP NOT NULL,
		sent         TIMESTAMP,
		acked        TIMESTAMP,
		expires      TIMESTAMP NOT NULL,
		detail       VARCHAR   NOT NULL DEFAULT '',
		verification VARCHAR   NOT NULL DEFAULT 'pending',
		verified     TIMESTAMP
	)`,
	// Added after the first release: when the device's session took a
	// command.
	`ALTER TABLE commands ADD COLUMN IF NOT EXISTS delivered TIMESTAMP`,
	`CREATE TABLE IF NOT EXISTS dead_letters (
		received  TIMESTAMP NOT NULL,
		device_id INTEGER,
		device    VARCHAR   NOT NULL,
		source    VARCHAR   NOT NULL,
		reason    VARCHAR   NOT NULL,
		body      BLOB      NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS message_ids (
		device_id INTEGER   NOT NULL,
		msg_id    VARCHAR   NOT NULL,
		received  TIMESTAMP NOT NULL
	)`,
	// Where vigil has read a log-like source (an Event Hubs partition) up
	// to: the position of the last message of an unbroken run it has
	// committed, for the gateway to resume after.
	`CREATE TABLE IF NOT EXISTS source_positions (
		source   VARCHAR PRIMARY KEY,
		position VARCHAR   NOT NULL,
		updated  TIMESTAMP NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS models (
		name         VARCHAR   NOT NULL,
		version      INTEGER   NOT NULL,
		spec         VARCHAR   NOT NULL,
		trained_from TIMESTAMP,
		trained_to   TIMESTAMP,
		metrics      VARCHAR   NOT NULL,
		created      TIMESTAMP NOT NULL,
		active       BOOLEAN   NOT NULL,
		PRIMARY KEY (name, version)
	)`,
	`CREATE OR REPLACE VIEW readings AS
		SELECT t.ts, d.name AS device, m.name AS metric, t.value
		FROM telemetry t
		JOIN devices d ON d.id = t.device_id
		JOIN metrics m ON m.id = t.metric_id`,
}
