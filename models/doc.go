// Package models holds vigil's anomaly detectors and the per-series state
// that runs them on live telemetry.
//
// A Detector scores one series causally: Update takes the next reading and
// returns a Score in [0, 1] computed from that reading and the past only,
// with an explanation of what drove it. The same Update runs live (through a
// Monitor, fed by the ingest pipeline after each commit) and offline (through
// ScoreSeries, over stored history or a CSV), so a model is never
// reimplemented for training or evaluation.
//
// A Spec (kind plus JSON parameters) names a detector; New builds one from
// it. Specs are what the model registry stores.
package models
