package store

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KeySecretName is the file in a data directory that holds the secret
// device keys are hashed with. It belongs with the database: a copy of one
// without the other authenticates no device.
const KeySecretName = "device-keys.secret"

// keyHashPrefix marks a key hash made with the data directory's secret:
// HMAC-SHA256 (RFC 2104) of the key under it. Without the secret a hash
// read from the devices table (any API query can) is no help in guessing a
// device's key. A hash without the prefix is the plain SHA-256 of earlier
// versions; it still verifies, and is replaced at the device's next
// successful connection.
const keyHashPrefix = "hmac-sha256:"

// keySecretSize is the secret's length in bytes.
const keySecretSize = 32

// loadKeySecret reads the data directory's key secret, making one when
// there is none yet. It refuses to make one when devices already hold
// hashes made with a secret (keyed is their count): their keys would all
// be refused.
func loadKeySecret(dir string, keyed int) ([]byte, error) {
	path := filepath.Join(dir, KeySecretName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) == keySecretSize:
		return b, nil
	case err == nil:
		return nil, fmt.Errorf("%s holds %d bytes, not %d: restore it from the backup of this data directory (without it no device can authenticate)", path, len(b), keySecretSize)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("device key secret: %w", err)
	case keyed > 0:
		return nil, fmt.Errorf("%s is missing, but the keys of %d devices were hashed with it: restore it from the backup of this data directory (without it none of them can authenticate)", path, keyed)
	}
	b = make([]byte, keySecretSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("device key secret: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("device key secret: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("device key secret: %w", err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return nil, fmt.Errorf("device key secret: %w", err)
	}
	return b, nil
}

// hashKey returns the hash of a device key kept in the devices table.
func (s *Store) hashKey(key string) string {
	m := hmac.New(sha256.New, s.keySecret)
	m.Write([]byte(key))
	return keyHashPrefix + hex.EncodeToString(m.Sum(nil))
}

// keyMatches reports whether key is the one stored hash was made of, and
// whether that hash is of the earlier, unkeyed kind.
func (s *Store) keyMatches(stored, key string) (ok, legacy bool) {
	if strings.HasPrefix(stored, keyHashPrefix) {
		return subtle.ConstantTimeCompare([]byte(s.hashKey(key)), []byte(stored)) == 1, false
	}
	h := sha256.Sum256([]byte(key))
	return subtle.ConstantTimeCompare([]byte(hex.EncodeToString(h[:])), []byte(stored)) == 1, true
}

// rehashKey replaces a device's unkeyed key hash by a keyed one, once its
// key is known to match. A failure leaves the old hash, which still
// verifies: it is tried again at the next connection.
func (s *Store) rehashKey(name, key, old string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[name]
	if !ok || d.keyHash != old { // rotated or removed meanwhile
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := s.hashKey(key)
	if _, err := s.db.ExecContext(ctx, `UPDATE devices SET key_sha256 = ? WHERE id = ? AND key_sha256 = ?`, h, d.ID, old); err == nil {
		d.keyHash = h
	}
}
