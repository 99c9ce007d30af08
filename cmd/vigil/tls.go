package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
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
