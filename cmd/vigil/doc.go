// Command vigil watches over fleets of connected devices: it takes their
// telemetry through a device gateway (an embedded MQTT broker speaking Azure
// IoT Hub's topics, and optionally an AMQP 1.0 broker link), stores it in
// DuckDB, scores it for anomalies and sends corrective commands back.
//
// Subcommands: demo (the whole loop with a simulated fleet), serve, sim,
// devices, query, train, models, score and eval. Run `vigil help`, or
// `vigil COMMAND -h` for a command's flags. This package only parses flags,
// wires packages together and prints; the logic lives in the packages.
package main
