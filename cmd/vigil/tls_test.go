package main

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/internal/tlstest"
)

// TestCertFiles: the flags go in pairs, unreadable files are refused with
// what was expected, and a renewed certificate is served without a
// restart, while a half-written one is not.
func TestCertFiles(t *testing.T) {
	if _, err := loadCertFiles("cert.pem", "", time.Second); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Fatalf("a certificate without a key: %v", err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func(c tlstest.Cert, at time.Time) {
		for f, data := range map[string][]byte{certFile: c.CertPEM, keyFile: c.KeyPEM} {
			if err := os.WriteFile(f, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(f, at, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	served := func(c *certFiles) []byte {
		got, err := c.getCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(got.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Raw
	}
	der := func(c tlstest.Cert) []byte { return c.ServerConfig(t).Certificates[0].Certificate[0] }

	a, b := tlstest.SelfSigned(t, "a"), tlstest.SelfSigned(t, "b")
	t0 := time.Now().Add(-time.Hour)
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, a.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCertFiles(certFile, keyFile, 0); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Fatalf("a broken certificate file: %v", err)
	}

	write(a, t0)
	c, err := loadCertFiles(certFile, keyFile, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(c), der(a)) {
		t.Fatal("not serving the certificate loaded")
	}
	write(b, t0.Add(time.Minute))
	if !bytes.Equal(served(c), der(b)) {
		t.Fatal("the renewed certificate is not served")
	}
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nhalf"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(certFile, t0.Add(2*time.Minute), t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(c), der(b)) {
		t.Fatal("a half-written certificate replaced the one being served")
	}
}
