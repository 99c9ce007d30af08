// Package api is vigil's HTTP API: read-only SQL over the store
// (/api/v1/query, JSON out), the device registry (/api/v1/devices) and the
// server's status (/api/v1/status). Because only the serving process may
// open the DuckDB file, this API is how everything else — the vigil CLI, the
// Grafana plugin, notebooks — reads vigil's data. Client is its Go client.
package api
