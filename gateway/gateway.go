package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Device is an authenticated device identity.
type Device struct {
	ID   int32  // the store's integer key
	Name string // the device id devices and operators use
}

// Reasons an Authenticator refuses a device; gateways count them apart.
var (
	ErrUnknownDevice  = errors.New("unknown device")
	ErrWrongKey       = errors.New("wrong device key")
	ErrDeviceDisabled = errors.New("device disabled")
)

// Authenticator checks a device's credentials. Implementations return an
// error wrapping ErrUnknownDevice, ErrWrongKey or ErrDeviceDisabled when the
// device may not connect. It must be safe for concurrent use.
type Authenticator interface {
	AuthenticateDevice(name, key string) (Device, error)
}

// InvalidError settles a message that was stored as a dead letter: its body
// is not telemetry. The message is kept; sending it again will not help.
type InvalidError struct {
	Reason string // what is wrong with the body, in words meant for the device's developer
}

// Error returns the reason.
func (e *InvalidError) Error() string { return e.Reason }

// Invalid returns the reason a settlement error says the message is not
// telemetry (it was stored as a dead letter), and false if it does not.
func Invalid(err error) (reason string, ok bool) {
	var inv *InvalidError
	if errors.As(err, &inv) {
		return inv.Reason, true
	}
	return "", false
}

// Message is one telemetry message as a gateway received it.
type Message struct {
	Device   Device
	Source   string // where it arrived, e.g. the MQTT topic
	ID       string // the message id the device gave, if any
	Body     []byte // owned by the receiver after the call
	Received time.Time
	// Settle must be called exactly once: with nil once the message is
	// durably stored as readings; with an *InvalidError once it is durably
	// stored as a dead letter, its body not being telemetry, so the gateway
	// can tell the device why and that sending it again will not help; or
	// with the error that kept it from being stored, so the gateway can
	// make the device send it again. Settle must not block.
	Settle func(err error)
	// Patient says that no device waits for this message's settlement: a
	// broker has already taken it from its device and only keeps it until
	// it is settled (AMQP). The sink may then hold it longer to store it in
	// larger, cheaper batches. Messages whose device waits for the answer
	// (an MQTT PUBACK, an HTTP response) are not patient.
	Patient bool
}

// Sink takes telemetry messages from a gateway. Submit may block to apply
// backpressure; it returns an error only when the message will never be
// settled (for example the sink is shutting down: ErrSinkClosed), in which
// case the gateway must not acknowledge it. It must be safe for concurrent
// use.
type Sink interface {
	Submit(ctx context.Context, m Message) error
}

// ErrSinkClosed is what a Sink's Submit returns, wrapped, once it takes no
// more messages because vigil is shutting down. A gateway then stops taking
// telemetry, but keeps its connections until it is closed itself, so the
// acknowledgements of the sink's last commit still reach the devices.
var ErrSinkClosed = errors.New("telemetry sink closed: vigil is shutting down")

// Command is a cloud-to-device command.
type Command struct {
	ID      string // unique; the device echoes it in its acknowledgement
	Device  string
	Name    string
	Payload json.RawMessage
	Expires time.Time
}

// Body returns the command as the JSON document devices receive:
// {"id": ..., "name": ..., "payload": ...}.
func (c Command) Body() []byte {
	payload := c.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	b, err := json.Marshal(struct {
		ID      string          `json:"id"`
		Name    string          `json:"name"`
		Payload json.RawMessage `json:"payload"`
	}{c.ID, c.Name, payload})
	if err != nil {
		panic("gateway: command payload is not valid JSON: " + err.Error())
	}
	return b
}

// Sender delivers commands to devices. Send returns once the gateway has
// taken the command for delivery; ErrDeviceOffline when it cannot be
// delivered now. It must be safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, c Command) error
}

// ErrDeviceOffline is returned by Sender.Send when the device has no
// connection or session to deliver to.
var ErrDeviceOffline = errors.New("device offline")

// AckStatus is a device's answer to a command.
type AckStatus string

// Device answers to a command, and AckDelivered, which a gateway reports
// when the device's session has taken the command (an MQTT PUBACK) but the
// device has not answered yet.
const (
	AckCompleted AckStatus = "completed"
	AckRejected  AckStatus = "rejected"
	AckDelivered AckStatus = "delivered"
)

// Ack is a device's acknowledgement of a command.
type Ack struct {
	Device    Device
	CommandID string
	Status    AckStatus
	Detail    string
	Received  time.Time
}

// AckHandler takes acknowledgements. It must be safe for concurrent use.
// HandleAck returns an error wrapping ErrAckNotRecorded when it could not
// record the acknowledgement for now (the store failed); the gateway then
// has it sent again — an error PUBACK or a disconnect on MQTT, 503 on
// HTTP, a release to the broker on AMQP — instead of dropping it. Any other
// error is final (an unknown command, one already answered).
type AckHandler interface {
	HandleAck(ctx context.Context, a Ack) error
}

// ErrAckNotRecorded says an acknowledgement could not be recorded for now
// and should be sent again.
var ErrAckNotRecorded = errors.New("acknowledgement not recorded: send it again")

// AckHandlerFunc adapts a function to AckHandler.
type AckHandlerFunc func(ctx context.Context, a Ack) error

// HandleAck calls f.
func (f AckHandlerFunc) HandleAck(ctx context.Context, a Ack) error { return f(ctx, a) }

// Senders delivers a command through the first gateway that can reach the
// device: each Sender is tried in order until one returns anything but
// ErrDeviceOffline. With the embedded MQTT gateway first and a broker link
// second, a device connected to vigil directly gets its commands there and
// every other device through the broker.
type Senders []Sender

// Send tries each Sender in turn.
func (s Senders) Send(ctx context.Context, c Command) error {
	err := error(ErrDeviceOffline)
	for _, g := range s {
		if err = g.Send(ctx, c); !errors.Is(err, ErrDeviceOffline) {
			return err
		}
	}
	return err
}
