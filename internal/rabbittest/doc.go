// Package rabbittest gives vigil's tests the RabbitMQ node that .ci/rabbitmq
// runs: where it is, and fresh virtual hosts with device users for a test.
// Tests skip without the node, or fail when VIGIL_REQUIRE_AMQP=1 (as in CI).
package rabbittest
