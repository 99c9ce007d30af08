// Package ingest turns telemetry messages into stored readings.
//
// Decode parses a message body (a JSON object of metric → number with an
// optional RFC 3339 "ts", or an array of them) into readings, or explains
// what is wrong with it. A Batcher collects the readings of many messages
// into one Arrow record and commits it with the store in a single
// transaction; only then does it settle the messages with their gateway, so a
// device's publish is acknowledged exactly when its readings are durable.
// Bodies that cannot be decoded are committed as dead letters with the
// reason, in the same transaction, and settled with a
// *gateway.InvalidError carrying the reason, so the gateway can tell the
// device what is wrong: kept, not lost.
package ingest
