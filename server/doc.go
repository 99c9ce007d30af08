// Package server wires vigil's stages into one running service: the store,
// the device gateway, the ingest batcher, the detectors, the command
// controller and the HTTP API. `vigil serve` and `vigil demo` are thin
// wrappers around Start and Close.
//
// Readings flow gateway → ingest.Batcher → store (one transaction per
// batch) → the scorer, which feeds each committed reading to a
// models.Monitor; an opened anomaly episode is stored and handed to the
// actions.Controller, which may command the device; a closed episode tells
// the controller the device recovered.
//
// Beside the API the HTTP server serves the counters every stage keeps in
// the Prometheus format at /metrics (metrics.go), read at each scrape.
package server
