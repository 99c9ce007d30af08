package amqp

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	amqp "github.com/Azure/go-amqp"
)

// stageError is a failed connection attempt and the step it failed at:
// dial (network, TLS, SASL, open), session (the virtual host), declare or
// attach (an address), position (vigil's store, asked where to resume a
// source).
type stageError struct {
	stage string
	addr  string // declare, attach and position
	err   error
}

func (e *stageError) Error() string {
	if e.addr != "" {
		return e.stage + " " + e.addr + ": " + e.err.Error()
	}
	return e.stage + ": " + e.err.Error()
}

func (e *stageError) Unwrap() error { return e.err }

// diagnose says, in an operator's terms, why a connection attempt of role
// r failed and what to do about it.
func diagnose(err error, cfg Config, r role) (what, hint string) {
	raw, flag := cfg.URL, "--amqp"
	if r == roleCommands {
		raw, flag = cfg.CommandURL, "--amqp-iothub"
	}
	u, _ := url.Parse(raw)
	host, user := "the broker", "vigil's user"
	if u != nil {
		host = u.Host
		if u.User != nil && u.User.Username() != "" {
			user = u.User.Username()
		}
	}
	vhost := cfg.VHost
	if vhost == "" {
		vhost = "/"
	}
	var (
		se       *stageError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		expired  x509.CertificateInvalidError
		amqpErr  *amqp.Error
		netErr   net.Error
		opErr    *net.OpError
	)
	stage := ""
	if errors.As(err, &se) {
		stage = se.stage
	}
	hub := r == roleCommands && cfg.SAS != nil
	switch {
	case stage == "position":
		return "could not read from vigil's store where to resume " + se.addr,
			"the store failed, not the broker: see the error and vigil's data directory; the source is not read until its saved position is known, and the link is retried with backoff"
	case errors.As(err, &unknown) && hub:
		return "the hub's certificate is not trusted", "it is checked against this machine's root certificates (--amqp-ca is for the --amqp broker only): update the system's CA certificates, and check the host name in " + flag
	case errors.As(err, &unknown):
		return "the broker's certificate is not trusted", "pass the PEM certificate of the CA that signs it with --amqp-ca"
	case errors.As(err, &hostname):
		return "the broker's certificate is not for " + hostname.Host, "connect by a name or address the certificate lists, in " + flag
	case errors.As(err, &expired):
		return "the broker's certificate is not valid", fmt.Sprintf("%v: renew the broker's certificate, or check this machine's clock", expired.Reason)
	case refusedClientCert(err):
		return "the broker refused vigil's TLS client certificate", "give --amqp-cert and --amqp-key with a certificate the broker's CA signs"
	case stage == "dial" && strings.Contains(err.Error(), "SASL") && hub:
		return "the hub refused vigil's shared access signature", fmt.Sprintf("check %s: the connection string of a shared access policy with service connect permission (signed in as %s@sas.root…), and this machine's clock (a signature is valid for %s from when it is made)", flag, cfg.SAS.KeyName, cfg.SAS.TTL)
	case stage == "dial" && strings.Contains(err.Error(), "SASL"):
		return "the broker refused vigil's credentials", fmt.Sprintf("check the user (%s) and password in --amqp; on RabbitMQ: rabbitmqctl authenticate_user %s PASSWORD", user, user)
	case stage == "session" && errors.As(err, &amqpErr) && amqpErr.Condition == amqp.ErrCondUnauthorizedAccess:
		return "the broker refused " + user + " on virtual host " + vhost,
			fmt.Sprintf("check that --amqp-vhost %s exists and that %s may use it: rabbitmqctl set_permissions -p %s %s '.*' '.*' '.*'", vhost, user, vhost, user)
	case stage != "dial" && stage != "" && errors.Is(err, context.DeadlineExceeded):
		what := "the broker did not answer in time"
		if se.addr != "" {
			what += " (" + stage + " " + se.addr + ")"
		}
		return what, fmt.Sprintf("is it overloaded or far away? an attempt has %s (the dial timeout) to connect, declare and attach", cfg.DialTimeout)
	case stage == "declare" || stage == "attach":
		return "the broker refused address " + se.addr,
			fmt.Sprintf("check the address (RabbitMQ 3.x: /amq/queue/NAME, /queue/NAME, /exchange/NAME/KEY) and that %s may configure, read and write it on %s", user, vhost)
	case errors.As(err, &opErr) && opErr.Op == "dial", errors.As(err, &netErr) && netErr.Timeout():
		return "the broker is unreachable", fmt.Sprintf("is it running and listening on %s (AMQP 1.0: rabbitmq-plugins enable rabbitmq_amqp1_0)?", host)
	}
	return "could not link to the broker", "see the error; the link is retried with backoff"
}

// refusedClientCert reports whether the broker ended the TLS handshake
// with an alert about vigil's client certificate. crypto/tls reports a
// peer's alert over TCP only as text ("remote error: tls: ...").
func refusedClientCert(err error) bool {
	msg := err.Error()
	for _, alert := range []string{"tls: certificate required", "tls: bad certificate", "tls: unknown certificate authority", "tls: certificate expired"} {
		if strings.Contains(msg, "remote error: "+alert) {
			return true
		}
	}
	return false
}
