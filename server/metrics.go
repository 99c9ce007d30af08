package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-iot/vigil/ingest"
)

// metricsHandler serves the server's counters in the Prometheus exposition
// format, with the Go runtime's, the build's and the process's own
// metrics. Each scrape reads the counters the stages keep (those
// /api/v1/status reads too) at that moment; nothing is kept twice.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewBuildInfoCollector(), // go_build_info: the module's version and the Go release
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collector{s},
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// desc describes one of vigil's metrics.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("vigil_"+name, help, labels, nil)
}

// The metrics, by the part of vigil that counts them.
var (
	devicesRegistered = desc("devices_registered", "Devices registered in the store.")
	modelsApplied     = desc("model_versions_applied_total", "Model versions from the registry applied to running detectors.")
	modelsWaiting     = desc("model_versions_waiting", "Active model versions whose device is not registered yet.")
	anomalies         = desc("anomalies_total", "Anomaly episodes detected.")
	readingsScored    = desc("readings_scored_total", "Committed readings scored by the detectors.")
	scoringQueue      = desc("scoring_queue_batches", "Committed batches not yet scored by the slowest scoring shard; when the queues fill (80 batches), commits wait for scoring.")

	ingestMessages    = desc("ingest_messages_total", "Telemetry messages committed, as readings or as dead letters.")
	ingestReadings    = desc("ingest_readings_total", "Readings committed to the store.")
	ingestDead        = desc("ingest_dead_letters_total", "Messages kept as dead letters because their body is not telemetry; the reason is in the dead_letters table.")
	ingestDuplicates  = desc("ingest_duplicates_total", "Messages recognised by device and message id as stored already (a resend, a redelivery) and not stored again.")
	ingestEvicted     = desc("ingest_dedupe_evicted_total", "Message ids forgotten before the end of the dedupe window to stay within its memory.")
	ingestCommits     = desc("ingest_commits_total", "Batch commits to the store, by result; after a failed one devices resend.", "result")
	ingestCommitTimes = desc("ingest_commit_duration_seconds", "How long batch commits took; messages are acknowledged only after theirs.")

	mqttSessions = desc("mqtt_sessions", "Devices connected to the embedded MQTT gateway.")
	mqttConnects = desc("mqtt_connections_total", "MQTT connections accepted.")
	mqttRefused  = desc("mqtt_connections_refused_total", "MQTT connections refused, by reason.", "reason")
	mqttDenied   = desc("mqtt_denied_total", "Publishes and subscriptions refused for being outside the device's own topics.")
	mqttMessages = desc("mqtt_telemetry_messages_total", "Telemetry messages received over MQTT.")
	mqttAcks     = desc("mqtt_acks_total", "Command acknowledgements received over MQTT.")
	mqttBadAcks  = desc("mqtt_bad_acks_total", "Command acknowledgements received over MQTT that could not be applied (unknown or finished command).")

	httpMessages   = desc("http_telemetry_messages_total", "Telemetry messages stored from HTTP devices.")
	httpInvalid    = desc("http_invalid_total", "HTTP telemetry bodies kept as dead letters and answered 400.")
	httpRefused    = desc("http_refused_total", "HTTP device requests refused: unknown device, wrong key or disabled device.")
	httpLimited    = desc("http_rate_limited_total", "HTTP device requests over the device's rate, answered 429.")
	httpThrottled  = desc("http_throttled_total", "HTTP device requests refused unchecked after too many wrong keys from their host, answered 429.")
	httpPolls      = desc("http_command_polls_total", "Command polls by HTTP devices.")
	httpDelivered  = desc("http_commands_delivered_total", "Commands handed to HTTP devices.")
	httpAnswers    = desc("http_acks_total", "Command answers from HTTP devices applied to their command.")
	httpBadAnswers = desc("http_bad_acks_total", "Command answers from HTTP devices that could not be applied, answered 409.")

	amqpConnected   = desc("amqp_connected", "1 while the link to the AMQP broker is up, else 0.")
	amqpConnects    = desc("amqp_connects_total", "Connections established to the AMQP broker.")
	amqpDisconnects = desc("amqp_disconnects_total", "Established connections to the AMQP broker that were lost.")
	amqpReceived    = desc("amqp_received_total", "Telemetry messages received from the broker, refused ones included, by source address.", "source")
	amqpAccepted    = desc("amqp_accepted_total", "Telemetry messages accepted after their batch was committed, by source address.", "source")
	amqpRejected    = desc("amqp_rejected_total", "Telemetry messages rejected, by reason.", "reason")
	amqpReleased    = desc("amqp_released_total", "Telemetry messages released for redelivery because their batch could not be committed.")
	amqpUnsettled   = desc("amqp_unsettled_total", "Settlements that could not be sent because the connection was gone; the broker redelivers those messages.")
	amqpCommands    = desc("amqp_commands_sent_total", "Commands the broker accepted.")
	amqpResets      = desc("amqp_command_session_resets_total", "Command sessions ended to keep at most 256 per-device command links attached.")
	amqpAcks        = desc("amqp_acks_total", "Command acknowledgements from the feedback address handed on to their command.")
	amqpBadAcks     = desc("amqp_bad_acks_total", "Command acknowledgements from the feedback address rejected as malformed, or handed on but not applied.")
	amqpStalls      = desc("amqp_stalls_total", "Broker connections ended because a telemetry source delivered nothing for the stall time with nothing unsettled (the broker's credit accounting stalled, or the queue ran empty).")

	commands     = desc("commands_total", "Corrective commands by the step of their lifecycle they reached: sent, delivered, acknowledged, rejected, expired, failed; suppressed ones were never sent (cooldown, rate limit).", "step")
	verification = desc("command_verifications_total", "Commands whose device was checked after its recovery window, by result.", "result")
	recovered    = desc("devices_recovered_total", "Devices that recovered after a command.")
)

// collector reads the server's counters at each scrape.
type collector struct{ s *Server }

// Describe sends the description of every metric Collect sends.
func (c collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

// Collect sends every metric's value now.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}

	gauge(devicesRegistered, int64(len(s.store.Devices())))
	counter(modelsApplied, s.modelsOn.Load())
	gauge(modelsWaiting, s.modelsWait.Load())
	counter(anomalies, s.anomalies.Load())
	var scored int64
	slowest := 0
	for _, sh := range s.shards {
		scored += sh.scored.Load()
		slowest = max(slowest, len(sh.in))
	}
	counter(readingsScored, scored)
	gauge(scoringQueue, int64(len(s.recs)+slowest))

	is := s.batcher.Stats()
	counter(ingestMessages, is.Messages)
	counter(ingestReadings, is.Readings)
	counter(ingestDead, is.DeadLetters)
	counter(ingestDuplicates, is.Duplicates)
	counter(ingestEvicted, is.DedupeEvicted)
	counter(ingestCommits, is.Batches, "ok")
	counter(ingestCommits, is.CommitErrors, "error")
	buckets := make(map[float64]uint64, len(ingest.CommitBounds))
	var cum uint64
	for i, bound := range ingest.CommitBounds {
		cum += uint64(is.CommitDurations[i])
		buckets[bound] = cum
	}
	cum += uint64(is.CommitDurations[len(ingest.CommitBounds)])
	ch <- prometheus.MustNewConstHistogram(ingestCommitTimes, cum, is.CommitSeconds, buckets)

	gs := s.gw.Stats()
	gauge(mqttSessions, int64(s.gw.ConnectedDevices()))
	counter(mqttConnects, gs.Connected)
	counter(mqttRefused, gs.RefusedUnknown, "unknown_device")
	counter(mqttRefused, gs.RefusedKey, "wrong_key")
	counter(mqttRefused, gs.RefusedOff, "disabled_device")
	counter(mqttRefused, gs.Throttled, "throttled")
	counter(mqttDenied, gs.Denied)
	counter(mqttMessages, gs.Telemetry)
	counter(mqttAcks, gs.Acks)
	counter(mqttBadAcks, gs.BadAcks)

	if s.httpdev != nil {
		hs := s.httpdev.Stats()
		counter(httpMessages, hs.Telemetry)
		counter(httpInvalid, hs.Invalid)
		counter(httpRefused, hs.Refused)
		counter(httpLimited, hs.Limited)
		counter(httpThrottled, hs.Throttled)
		counter(httpPolls, hs.Polls)
		counter(httpDelivered, hs.Delivered)
		counter(httpAnswers, hs.Answers)
		counter(httpBadAnswers, hs.BadAnswers)
	}

	if s.amqp != nil {
		as := s.amqp.Stats()
		up := int64(0)
		if s.amqp.Connected() {
			up = 1
		}
		gauge(amqpConnected, up)
		counter(amqpConnects, as.Connects)
		counter(amqpDisconnects, as.Disconnects)
		for addr, src := range as.Sources {
			counter(amqpReceived, src.Received, addr)
			counter(amqpAccepted, src.Accepted, addr)
		}
		counter(amqpRejected, as.RefusedNoID, "no_identity")
		counter(amqpRejected, as.RefusedUnknown, "unknown_device")
		counter(amqpRejected, as.RefusedOff, "disabled_device")
		counter(amqpRejected, as.RefusedClaim, "foreign_device_claim")
		counter(amqpRejected, as.RefusedBody, "body_type")
		counter(amqpRejected, as.Invalid, "invalid_telemetry")
		counter(amqpReleased, as.Released)
		counter(amqpUnsettled, as.Unsettled)
		counter(amqpCommands, as.Commands)
		counter(amqpResets, as.CommandResets)
		counter(amqpAcks, as.Acks)
		counter(amqpBadAcks, as.BadAcks)
		counter(amqpStalls, as.Stalls)
	}

	cs := s.ctrl.Stats()
	for _, step := range []struct {
		name string
		n    int64
	}{
		{"sent", cs.Sent}, {"delivered", cs.Delivered}, {"acknowledged", cs.Acknowledged}, {"rejected", cs.Rejected},
		{"expired", cs.Expired}, {"failed", cs.Failed}, {"suppressed", cs.Suppressed},
	} {
		counter(commands, step.n, step.name)
	}
	counter(verification, cs.Recovered, "recovered")
	counter(verification, cs.NotRecovered, "not_recovered")
	counter(recovered, cs.DevicesHealed)
}
