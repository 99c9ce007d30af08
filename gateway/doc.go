// Package gateway defines what vigil needs from a device gateway, whatever
// the protocol: telemetry messages in, each with an identity the gateway
// authenticated and a way to settle it; commands out; acknowledgements of
// those commands back.
//
// Implementations live in sub-packages: gateway/mqtt embeds an MQTT broker
// that speaks Azure IoT Hub's device topics. Every implementation takes the
// device identity from the connection or the broker, never from a message
// body.
package gateway
