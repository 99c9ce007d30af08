// Package tlstest makes throwaway self-signed TLS certificates for tests
// of vigil's MQTTS and HTTPS listeners and its amqps:// link.
package tlstest
