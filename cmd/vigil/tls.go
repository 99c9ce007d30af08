package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// certFiles serves a certificate and key read from files, and reads them
// again when either file changes (checked at most every recheck), so a
// renewed certificate takes effect without a restart.
type certFiles struct {
	certFile, keyFile string
	recheck           time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]time.Time // modification times of the files loaded
	checked time.Time
}

// loadCertFiles reads a PEM certificate (chain) and its key, or says what
// is wrong with them.
func loadCertFiles(certFile, keyFile string, recheck time.Duration) (*certFiles, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together: give the PEM certificate (chain) and its private key")
	}
	c := &certFiles{certFile: certFile, keyFile: keyFile, recheck: recheck}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads both files.
func (c *certFiles) load() error {
	var stamp [2]time.Time
	for i, f := range []string{c.certFile, c.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		stamp[i] = st.ModTime()
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls: %s and %s: %w (want a PEM certificate and its PEM private key)", c.certFile, c.keyFile, err)
	}
	c.cert, c.stamp = &cert, stamp
	return nil
}

// getCertificate is a tls.Config.GetCertificate that picks up renewed
// files. If the new files cannot be read (say, half written), it keeps
// serving the previous certificate and tries again later.
func (c *certFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= c.recheck {
		c.checked = now
		for i, f := range []string{c.certFile, c.keyFile} {
			if st, err := os.Stat(f); err == nil && !st.ModTime().Equal(c.stamp[i]) {
				_ = c.load() // on error c.cert stays the previous one
				break
			}
		}
	}
	return c.cert, nil
}

// config returns a server TLS configuration (TLS 1.2 or later) serving
// these files.
func (c *certFiles) config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.getCertificate}
}

// getClientCertificate is a tls.Config.GetClientCertificate that presents
// the files' certificate, renewed ones included.
func (c *certFiles) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.getCertificate(nil)
}

// brokerTLS returns the TLS configuration of the amqps:// link to
// brokerURL: the broker's certificate verified against the PEM certificates
// in caFile (the system's roots when empty), and the client certificate of
// certFile and keyFile presented when the broker asks for one. It returns
// nil when all three are empty: Go's defaults. Files given for a URL that
// is not amqps:// are refused, not ignored.
func brokerTLS(brokerURL, caFile, certFile, keyFile string) (*tls.Config, error) {
	var given []string
	for flag, file := range map[string]string{"--amqp-ca": caFile, "--amqp-cert": certFile, "--amqp-key": keyFile} {
		if file != "" {
			given = append(given, flag)
		}
	}
	if len(given) == 0 {
		return nil, nil
	}
	if !strings.HasPrefix(brokerURL, "amqps://") {
		slices.Sort(given)
		return nil, fmt.Errorf("%s: for a broker reached over TLS: give --amqp amqps://USER:PASS@HOST:PORT", strings.Join(given, ", "))
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--amqp-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--amqp-ca %s: no PEM certificate in it (want the CA certificates that sign the broker's, PEM encoded)", caFile)
		}
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("--amqp-cert and --amqp-key go together: give vigil's PEM client certificate (chain) and its private key")
		}
		certs, err := loadCertFiles(certFile, keyFile, 10*time.Second)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = certs.getClientCertificate
	}
	return cfg, nil
}
