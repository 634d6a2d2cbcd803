package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadOrGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Now()
	c, err := LoadOrGenerate(dir, []string{"10.1.2.3", "db.example", "localhost", "0.0.0.0"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Generated || !c.SelfSigned {
		t.Errorf("Generated %v SelfSigned %v", c.Generated, c.SelfSigned)
	}
	k, ok := c.Leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", c.Leaf.PublicKey)
	}
	if !slices.Equal(c.Leaf.DNSNames, []string{"db.example", "localhost"}) || len(c.Leaf.IPAddresses) != 1 || !c.Leaf.IPAddresses[0].Equal(net.ParseIP("10.1.2.3")) {
		t.Errorf("SANs %v %v", c.Leaf.DNSNames, c.Leaf.IPAddresses)
	}
	for _, f := range []string{c.CertFile, c.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", fi.Mode().Perm())
	}
	if !strings.HasPrefix(c.Fingerprint, "SHA256:") || len(c.Fingerprint) != 7+64 {
		t.Errorf("fingerprint %q", c.Fingerprint)
	}
	// Kept across starts: same fingerprint.
	c2, err := LoadOrGenerate(dir, []string{"other"}, now.Add(time.Hour))
	if err != nil || c2.Generated || c2.Fingerprint != c.Fingerprint {
		t.Fatalf("second start: %+v %v", c2, err)
	}
	// Renewed once expired.
	c3, err := LoadOrGenerate(dir, nil, now.Add(Validity+time.Hour))
	if err != nil || !c3.Generated || c3.Fingerprint == c.Fingerprint {
		t.Fatalf("after expiry: generated %v, same fingerprint %v, %v", c3 != nil && c3.Generated, c3 != nil && c3.Fingerprint == c.Fingerprint, err)
	}
	// A damaged file is an error, not silently replaced.
	if err := os.WriteFile(c.CertFile, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrGenerate(dir, nil, now); err == nil {
		t.Error("a damaged certificate was accepted or replaced")
	}
}

func TestParseFingerprint(t *testing.T) {
	fp := Fingerprint([]byte("x"))
	hexpart := strings.TrimPrefix(fp, "SHA256:")
	var colons []string
	for i := 0; i < len(hexpart); i += 2 {
		colons = append(colons, strings.ToUpper(hexpart[i:i+2]))
	}
	for _, in := range []string{fp, hexpart, "sha256:" + strings.ToUpper(hexpart), strings.Join(colons, ":"), " " + fp + "\n"} {
		if got, err := ParseFingerprint(in); err != nil || got != fp {
			t.Errorf("ParseFingerprint(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "SHA256:abc", "MD5:" + hexpart, hexpart + "00"} {
		if _, err := ParseFingerprint(in); err == nil {
			t.Errorf("ParseFingerprint(%q) accepted", in)
		}
	}
}

// TestPinnedConfig: a client pinned to one certificate talks to the server
// that has it and refuses a server with another, at the same address.
func TestPinnedConfig(t *testing.T) {
	now := time.Now()
	a, err := LoadOrGenerate(filepath.Join(t.TempDir(), "a"), []string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrGenerate(filepath.Join(t.TempDir(), "b"), []string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = ServerConfig(a)
	srv.StartTLS()
	defer srv.Close()

	get := func(fp string) error {
		cfg, err := PinnedConfig(fp)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		resp, err := hc.Get(srv.URL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(a.Fingerprint); err != nil {
		t.Fatalf("pinned to the server's certificate: %v", err)
	}
	err = get(b.Fingerprint)
	var me *MismatchError
	if !errors.As(err, &me) || me.Got != a.Fingerprint || me.Want != b.Fingerprint {
		t.Fatalf("pinned to another certificate: %v, want a MismatchError", err)
	}
	// A client that trusts the certificate file as its CA (Prometheus'
	// tls_config.ca_file) accepts it for the SAN 127.0.0.1.
	pool := x509.NewCertPool()
	pool.AddCert(a.Leaf)
	caClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	if resp, err := caClient.Get(srv.URL); err != nil {
		t.Fatalf("the certificate as its own CA: %v", err)
	} else {
		resp.Body.Close()
	}
	// An unpinned client with the system roots refuses the self-signed one.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}, Timeout: 10 * time.Second}
	if resp, err := hc.Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Fatal("an unpinned client accepted a self-signed certificate")
	}
}
