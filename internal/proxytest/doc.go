// Package proxytest runs TCP proxies for tests: in front of a test broker
// to put it behind TLS (given a TLS listener), and to lose what clients
// send from a chosen moment, as a network that fails in one direction.
package proxytest
