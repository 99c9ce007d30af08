// Package mqtt is vigil's embedded MQTT device gateway (MQTT 3.1.1 and 5,
// on mochi-mqtt), speaking the topic scheme of Azure IoT Hub's MQTT device
// API so that devices written for IoT Hub connect with few changes:
//
//   - connect with client id = device id and the device key as password
//     (the user name may be IoT Hub's "{host}/{deviceId}/?api-version=...";
//     if it names a device, it must be the same one);
//   - publish telemetry (QoS 0 or 1) to devices/{id}/messages/events/,
//     optionally followed by a URL-encoded property bag;
//   - subscribe devices/{id}/messages/devicebound/# to receive commands;
//   - acknowledge a command by publishing to the events topic with the
//     property bag "%24.cid={command id}&ack=completed" (or ack=rejected),
//     optionally with a JSON body {"detail": "..."}.
//
// A device may publish and subscribe only its own topics. A QoS 1 telemetry
// publish is acknowledged (PUBACK) only after its readings are committed:
// the gateway withholds mochi's own PUBACK and writes it when the sink
// settles the message. A body kept as a dead letter is acknowledged on MQTT
// 5 with reason code 0x99 (payload format invalid) and the reason.
//
// Commands are published as QoS 1 by an in-process MQTT 5 client, with the
// command's expiry as the message expiry interval: mochi tells MQTT 5
// devices how long a command stays valid and drops one that waits in an
// offline device's persistent session past its expiry.
package mqtt
