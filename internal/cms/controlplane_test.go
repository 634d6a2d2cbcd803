package cms

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFingerprintSQLite(t *testing.T)   { runControlPlane(t, sqliteDB) }
func TestKeyFingerprintPostgres(t *testing.T) { runControlPlane(t, postgresDB) }

func runControlPlane(t *testing.T, newDB factory) {
	t.Run("FirstKeyIsRecorded", testFirstKeyRecorded)
	t.Run("LegacyStoreAdoptsItsKey", func(t *testing.T) { testLegacyStore(t, newDB) })
	t.Run("Placement", func(t *testing.T) { testPlacement(t, newDB) })
}

// testFirstKeyRecorded: on a fresh SQLite file the generated key is
// recorded, and a replaced key file is refused at the next open.
func testFirstKeyRecorded(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "toygres.db")
	keyFile := filepath.Join(dir, "secret.key")
	s, err := OpenSQLite(ctx, path, Options{KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	k1, err := ReadKeyFile(keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	_, err = OpenSQLite(ctx, path, Options{KeyFile: keyFile}) // generates another key
	k2, _ := ReadKeyFile(keyFile, nil)
	if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), KeyID(k1)) || !strings.Contains(err.Error(), KeyID(k2)) {
		t.Fatalf("open with a new key file: %v", err)
	}
}

// testLegacyStore: a store written before fingerprints were recorded
// adopts the key its passwords were encrypted with, and refuses a key
// none of them was encrypted with.
func testLegacyStore(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	open := newDB(t)
	s := openT(t, open, Options{SecretKey: testKey})
	a := mustCreate(t, s, spec("lg", "00000001"))
	if err := s.SetPassword(ctx, a.InternalName, "pw-legacy"); err != nil {
		t.Fatal(err)
	}
	st := s.(*store)
	if _, err := st.db.ExecContext(ctx, st.q("DELETE FROM {p}settings")); err != nil {
		t.Fatal(err)
	}
	other := bytes.Repeat([]byte{3}, KeySize)
	if s2, err := open(ctx, Options{SecretKey: other}); err == nil {
		s2.Close()
		t.Fatal("a legacy store accepted a key none of its passwords uses")
	} else if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), KeyID(testKey)) {
		t.Fatalf("legacy store, other key: %v", err)
	}
	s3 := openT(t, open, Options{SecretKey: testKey})
	if pw, err := s3.Password(ctx, a.InternalName); err != nil || pw != "pw-legacy" {
		t.Fatalf("legacy store, its key: %q %v", pw, err)
	}
	if v, ok, err := st.setting(ctx, settingKeyID); err != nil || !ok || v != KeyID(testKey) {
		t.Fatalf("fingerprint not recorded: %q %v %v", v, ok, err)
	}
}

func testPlacement(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("pl", "00000001"))
	if h, err := s.Placement(ctx, a.InternalName); err != nil || h != "" {
		t.Fatalf("placement before claim: %q %v", h, err)
	}
	if h, err := s.ClaimPlacement(ctx, a.InternalName, "host-a:/data"); err != nil || h != "host-a:/data" {
		t.Fatalf("first claim: %q %v", h, err)
	}
	if h, err := s.ClaimPlacement(ctx, a.InternalName, "host-b:/data"); err != nil || h != "host-a:/data" {
		t.Fatalf("second claim: %q %v", h, err)
	}
	if h, err := s.Placement(ctx, a.InternalName); err != nil || h != "host-a:/data" {
		t.Fatalf("placement: %q %v", h, err)
	}
	if _, err := s.ClaimPlacement(ctx, "nope-00000000", "host-a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("claim of an unknown instance: %v", err)
	}
}
