// Package amqp links vigil to an AMQP 1.0 broker (RabbitMQ with its
// rabbitmq_amqp1_0 plugin, through github.com/Azure/go-amqp) for devices
// that talk to the broker rather than to vigil's embedded MQTT gateway.
//
// The Gateway holds a connection to the broker and, on it:
//
//   - a receiver on each telemetry source (default one,
//     /amq/queue/vigil.telemetry; several for a shard of a fleet the broker
//     spreads over queues or partitions), each with its own credit and
//     settler. A message is handed to the Sink unsettled and settled only when the
//     sink settles it: accepted once its batch is committed, rejected with
//     the reason once it is committed as a dead letter (its body is not
//     telemetry), released when the commit failed so the broker delivers
//     it again. Messages the gateway refuses itself (no device
//     identity, unknown or disabled device, a body that is neither AMQP data
//     nor a string) are rejected with an error description and counted;
//   - a sender for commands, to an address built from a template per device
//     (default routing key devices.{id}.messages.devicebound on amq.topic),
//     persistent, with message-id and correlation-id = command id and a TTL
//     until the command expires;
//   - a receiver on the feedback source (default /amq/queue/vigil.feedback)
//     for the devices' acknowledgements: correlation-id = command id,
//     application property ack = completed|rejected, optional JSON body
//     {"detail": "..."}.
//
// Commands and their feedback may have a connection of their own
// (Config.CommandURL): Azure IoT Hub hands out telemetry on its built-in,
// Event Hub-compatible endpoint and takes commands on its own host, signed
// in with a shared access signature (SAS). Config.UseIoTHub sets that up:
// one link to /messages/devicebound, the device in each command's to
// property, and the hub's feedback records (FeedbackIoTHub).
//
// A source that is a log rather than a queue (an Event Hubs partition:
// every message carries its x-opt-offset) keeps what it delivered, so the
// gateway saves how far it has settled each one (Positions) and resumes
// after that on every new link.
//
// A device's identity is the message's user-id property, which RabbitMQ
// checks against the authenticated user, or, for a trusted field gateway
// that forwards for many devices, an application property named in
// Config.TrustProperty, honoured only from the user-ids in
// Config.TrustedGateways when that is set; or, behind a hub that stamps
// every message with its sender (Azure IoT Hub's iothub-connection-device-id),
// the message annotation named in Config.DeviceAnnotation. Each is resolved
// through a Registry; message bodies are never trusted for identity.
//
// The gateway reconnects with exponential backoff (capped at
// Config.MaxBackoff) whenever the connection is lost, also when the broker
// is unreachable at Start; each failed attempt is logged with the step
// that failed (network, TLS, credentials, virtual host, an address) and a
// hint of what to do. Messages not yet accepted when a connection
// drops are redelivered by the broker; the sink recognises the ones it
// already stored by (device, message id), so devices should always set a
// message-id.
//
// Telemetry messages are patient (gateway.Message.Patient): no device waits
// for vigil's accept, so ingest may hold them until a batch fills a DuckDB
// row group. vigil dials the broker itself and writes frames through a
// coalescer: the dispositions of a committed batch leave in a few writes
// instead of one system call and one TCP segment each.
//
// Work-arounds for RabbitMQ 3.10's AMQP 1.0 plugin with go-amqp (see the
// project's stack notes): link credit is at least 2000 (smaller credit can
// stall delivery), links are never closed one by one (the broker never
// completes the detach; the connection is closed instead), the Modified
// outcome is never used (it kills the session), outgoing messages carry no
// delivery annotations (they kill the connection), and queues are declared,
// durable, before a receiver attaches to them (a refused attach takes the
// connection down).
package amqp
