// Package store is vigil's DuckDB database: the schema, the bulk append of
// telemetry as Arrow records, the device and metric dictionaries, anomalies,
// the command lifecycle, dead letters and the read-only query path.
//
// One process owns a database file (DuckDB allows a single read-write
// process), so a Store is the only writer and can keep the dictionaries in
// memory. Everything outside `vigil serve` reads through its HTTP query API.
// The read-only query path (Query, QueryArrow) runs one SELECT or EXPLAIN
// at a time, and DuckDB's access to files and URLs is off unless
// Options.ExternalAccess turns it on, so a query reads the database and
// nothing else.
//
// Telemetry is stored with integer keys — device_id INTEGER and metric_id
// SMALLINT into the devices and metrics tables — because DuckDB ingests and
// scans integer columns two to four times faster than strings. The view
// `readings` joins the names back for people and dashboards.
package store
