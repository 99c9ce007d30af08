// Package sim simulates a fleet of devices that speak vigil's MQTT device
// protocol (Azure IoT Hub's topics) over real TCP connections with the
// paho.golang MQTT 5 client, or that sit behind an AMQP 1.0 broker
// (AMQPDevice, AMQPFleet: each device logs in to the broker as itself).
//
// A simulated device reports temperature (a daily cycle plus noise) and
// vibration. A faulty device starts to overheat after a while (a ramp); when
// it receives a reduce_load command it acknowledges it on its reply topic and
// cools back to normal. The demo, the end-to-end tests and the benchmarks
// all drive vigil with this package.
package sim
