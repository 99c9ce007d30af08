// Package api is vigil's HTTP API: read-only SQL over the store
// (/api/v1/query: one statement, reading the database and nothing else,
// answered as JSON up to a row limit or as an Arrow IPC stream of every
// row; in JSON a BLOB is base64, a UUID its text, and a NaN or an infinity
// the string "NaN", "Infinity" or "-Infinity"), the device registry
// (/api/v1/devices), the model registry (/api/v1/models) and the server's
// status (/api/v1/status). Because only the serving process may open the
// DuckDB file, this API is how everything else — the vigil CLI, the
// Grafana plugin, notebooks — reads vigil's data. Client is its Go client.
package api
