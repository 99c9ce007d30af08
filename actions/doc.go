// Package actions turns anomalies into corrective commands and follows each
// command through its lifecycle.
//
// A Rule maps an anomaly on a metric to a command (a name and a JSON
// payload). The Controller applies the rules with a per-device cooldown, a
// cap on commands pending per device and a fleet-wide rate limit (real
// gateways throttle cloud-to-device traffic hard: IoT Hub allows about 100
// sends a minute per unit and 50 pending per device). Every command is
// persisted at each step — queued → sent → delivered (the device's MQTT
// session took it; an answer implies it) → acknowledged | rejected |
// expired, or failed — and, after it is sent, verified: if the metric's
// anomaly episode ends within the recovery window the device is recorded as
// recovered, otherwise as not recovered.
package actions
