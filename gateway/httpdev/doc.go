// Package httpdev is vigil's HTTP device gateway, for devices that cannot
// keep an MQTT session open: cellular or battery devices that wake, post
// their readings and sleep, or firmware with nothing but an HTTP client. It
// follows the shape of Azure IoT Hub's HTTPS device API:
//
//   - POST /devices/{id}/messages/events: telemetry (the same JSON bodies as
//     MQTT), answered 204 once committed, 400 with the reason when the body
//     is not telemetry (it is kept as a dead letter), 503 when it could not
//     be stored (send it again);
//   - GET /devices/{id}/messages/deviceBound: the oldest command waiting for
//     the device (long polling up to ?wait=SECONDS, 20 s by default), or 204;
//   - DELETE /devices/{id}/messages/deviceBound/{command id}: the device has
//     carried the command out (?reject: it refuses it).
//
// A device authenticates every request with HTTP Basic: user = device id,
// password = its key (use TLS). A command is offered to a device only while
// it polls (within OnlineFor of its last poll); a command handed out and not
// answered within LockFor is handed out again, so delivery is at least
// once, in order. Each device's requests are rate limited (a token bucket,
// Rate a second, Burst at once; 429 with Retry-After beyond).
package httpdev
