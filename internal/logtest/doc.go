// Package logtest holds what tests need to read a log while the code under
// test writes it.
package logtest
