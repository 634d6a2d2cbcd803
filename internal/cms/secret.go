package cms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the length of the secret key: AES-256.
const KeySize = 32

// ErrDecrypt is returned (wrapped) by Password when a stored password cannot
// be decrypted: it was written with another secret key, or the row was
// tampered with.
var ErrDecrypt = errors.New("cms: cannot decrypt password (wrong secret key or corrupted data)")

// sealer encrypts passwords with AES-256-GCM. Each write uses a fresh random
// nonce, and the instance's internal name is authenticated as additional
// data, so a ciphertext copied to another instance's row does not decrypt.
type sealer struct {
	aead  cipher.AEAD
	keyID string // short fingerprint of the key, stored with each row
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("cms: secret key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cms: secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cms: secret key: %w", err)
	}
	return &sealer{aead: aead, keyID: KeyID(key)}, nil
}

// KeyID returns a short public fingerprint of a secret key (8 hex digits of
// a domain-separated SHA-256). It is stored next to each encrypted password
// so that a wrong key is reported as such; it reveals nothing useful about
// the key.
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("toygres-cms-key-id\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:4])
}

func (s *sealer) seal(internalName, password string) (nonce, ct []byte, err error) {
	nonce = make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return nonce, s.aead.Seal(nil, nonce, []byte(password), []byte(internalName)), nil
}

func (s *sealer) open(internalName, keyID string, nonce, ct []byte) (string, error) {
	if keyID != s.keyID {
		return "", fmt.Errorf("%w: encrypted with key %s, this store uses key %s", ErrDecrypt, keyID, s.keyID)
	}
	if len(nonce) != s.aead.NonceSize() {
		return "", fmt.Errorf("%w: bad nonce length %d", ErrDecrypt, len(nonce))
	}
	pt, err := s.aead.Open(nil, nonce, ct, []byte(internalName))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	return string(pt), nil
}

// resolveKey returns the secret key from opts: SecretKey, or the key in
// KeyFile (generated on first use).
func resolveKey(opts Options, log *slog.Logger) ([]byte, error) {
	switch {
	case len(opts.SecretKey) > 0 && opts.KeyFile != "":
		return nil, errors.New("cms: set Options.SecretKey or Options.KeyFile, not both")
	case len(opts.SecretKey) > 0:
		if len(opts.SecretKey) != KeySize {
			return nil, fmt.Errorf("cms: Options.SecretKey must be %d bytes, got %d", KeySize, len(opts.SecretKey))
		}
		return append([]byte(nil), opts.SecretKey...), nil
	case opts.KeyFile != "":
		return LoadOrCreateKeyFile(opts.KeyFile, log)
	default:
		return nil, errors.New("cms: no secret key: set Options.SecretKey or Options.KeyFile")
	}
}

// LoadOrCreateKeyFile reads the secret key stored at path. If the file does
// not exist it generates a random key and writes it there (hex encoded, mode
// 0600, parent directories created with mode 0700). Concurrent callers agree
// on one key: the file appears atomically, fully written, and only the first
// writer wins. The file may hold the key as 64 hex digits, standard base64 or
// 32 raw bytes. log may be nil.
func LoadOrCreateKeyFile(path string, log *slog.Logger) ([]byte, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := readKeyFile(path, log)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("cms: generate key: %w", err)
	}
	created, err := writeNewFile(path, []byte(hex.EncodeToString(key)+"\n"))
	if err != nil {
		return nil, fmt.Errorf("cms: write key file: %w", err)
	}
	if !created { // another process was faster: use its key
		return readKeyFile(path, log)
	}
	log.Info("cms: generated a new secret key; back it up, passwords cannot be decrypted without it",
		"key_file", path, "key_id", KeyID(key))
	return key, nil
}

func readKeyFile(path string, log *slog.Logger) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cms: read key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("cms: key file is accessible by other users; chmod 600 it", "key_file", path, "mode", fi.Mode().Perm().String())
	}
	if len(b) == KeySize {
		return b, nil
	}
	s := strings.TrimSpace(string(b))
	if k, err := hex.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	return nil, fmt.Errorf("cms: key file %s: want %d bytes as hex, base64 or raw", path, KeySize)
}

// writeNewFile creates path with data and mode 0600 unless it exists. The
// data is written to a temporary file first and then linked into place, so
// readers never see a partial file. It reports whether it created the file.
func writeNewFile(path string, data []byte) (bool, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, ".cms-key-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		// No hard links on this file system: fall back to an exclusive create.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		_, err = f.Write(data)
		if serr := f.Sync(); err == nil {
			err = serr
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return false, err
		}
	}
	if d, err := os.Open(dir); err == nil { // make the new entry durable
		d.Sync()
		d.Close()
	}
	return true, nil
}

// ParseKey decodes a secret key given as 64 hex digits or standard base64
// (surrounding white space ignored), as TOYGRES_SECRET_KEY holds it.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if k, err := hex.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	return nil, fmt.Errorf("cms: secret key: want %d bytes as 64 hex digits or base64 (generate one with: openssl rand -hex %d)", KeySize, KeySize)
}

// ReadKeyFile reads the secret key stored at path (64 hex digits, base64 or
// 32 raw bytes) without ever creating it: a missing file is an error
// wrapping fs.ErrNotExist. log may be nil.
func ReadKeyFile(path string, log *slog.Logger) ([]byte, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return readKeyFile(path, log)
}

// ErrKeyMismatch is returned (wrapped) by OpenSQLite and OpenPostgres when
// the secret key is not the one the store's passwords are encrypted with.
// Every server that shares a store must use the same key.
var ErrKeyMismatch = errors.New("cms: secret key mismatch")

// settingKeyID is the settings row that records the fingerprint (KeyID) of
// the secret key the store's passwords are encrypted with.
const settingKeyID = "secret_key_id"

// checkKeyID makes sure every process on this store uses one secret key.
// The first process records its key's fingerprint; a later one with another
// key is refused, naming both fingerprints. A store from before fingerprints
// were recorded adopts this key if any stored password was encrypted with
// it (or none is stored), and is refused if only other keys were used.
func (s *store) checkKeyID(ctx context.Context) error {
	stored, found, err := s.setting(ctx, settingKeyID)
	if err != nil {
		return err
	}
	if found {
		if stored != s.seal.keyID {
			return fmt.Errorf("%w: this database's passwords are encrypted with key %s, this server has key %s", ErrKeyMismatch, stored, s.seal.keyID)
		}
		return nil
	}
	rows, err := s.db.QueryContext(ctx, s.q("SELECT key_id, count(*) FROM {p}instance_secrets GROUP BY key_id ORDER BY key_id"))
	if err != nil {
		return fmt.Errorf("cms: read password key ids: %w", err)
	}
	var others []string
	mine := 0
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return fmt.Errorf("cms: read password key ids: %w", err)
		}
		if id == s.seal.keyID {
			mine = n
		} else {
			others = append(others, fmt.Sprintf("%s (%d)", id, n))
		}
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("cms: read password key ids: %w", err)
	}
	if mine == 0 && len(others) > 0 {
		return fmt.Errorf("%w: this database's passwords are encrypted with key %s, this server has key %s", ErrKeyMismatch, strings.Join(others, ", "), s.seal.keyID)
	}
	if len(others) > 0 {
		s.log.Warn("cms: some stored passwords were encrypted with other secret keys and cannot be read", "key_id", s.seal.keyID, "other_keys", strings.Join(others, ", "))
	}
	// Two processes may get here at once with different keys: one insert
	// wins and the other sees the winner's fingerprint.
	if _, err := s.db.ExecContext(ctx, s.q("INSERT INTO {p}settings (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"),
		settingKeyID, s.seal.keyID, s.d.ts(s.now())); err != nil {
		return fmt.Errorf("cms: record secret key id: %w", err)
	}
	stored, _, err = s.setting(ctx, settingKeyID)
	if err != nil {
		return err
	}
	if stored != s.seal.keyID {
		return fmt.Errorf("%w: this database's passwords are encrypted with key %s, this server has key %s", ErrKeyMismatch, stored, s.seal.keyID)
	}
	s.log.Info("cms: recorded the secret key's fingerprint", "key_id", s.seal.keyID)
	return nil
}

// setting reads one settings row.
func (s *store) setting(ctx context.Context, name string) (string, bool, error) {
	var v string
	err := s.db.QueryRowContext(ctx, s.q("SELECT value FROM {p}settings WHERE name = ?"), name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("cms: read setting %s: %w", name, err)
	}
	return v, true, nil
}
