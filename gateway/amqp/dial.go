package amqp

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"

	amqp "github.com/Azure/go-amqp"
)

// dial opens the AMQP connection to rawURL (amqp or amqps; user and
// password in the URL are sent with SASL PLAIN) over a network connection
// vigil dials itself, so that it can shape how frames are written.
func dial(ctx context.Context, rawURL string, tlsCfg *tls.Config, opts amqp.ConnOptions) (*amqp.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	host, port := u.Hostname(), u.Port()
	secure := false
	switch u.Scheme {
	case "amqp":
	case "amqps":
		secure = true
	default:
		return nil, fmt.Errorf("unsupported scheme %q: use amqp:// or amqps://", u.Scheme)
	}
	if port == "" {
		port = "5672"
		if secure {
			port = "5671"
		}
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		opts.SASLType = amqp.SASLTypePlain(u.User.Username(), pass)
	}
	if opts.HostName == "" {
		opts.HostName = host
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, err
	}
	nc = newCoalescer(nc)
	if secure {
		cfg := &tls.Config{}
		if tlsCfg != nil {
			cfg = tlsCfg.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	conn, err := amqp.NewConn(ctx, nc, &opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return conn, nil
}
