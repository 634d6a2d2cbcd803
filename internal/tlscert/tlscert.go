// Package tlscert provides the server certificate of the Toygres API and
// console, and certificate pinning for its clients.
//
// A server given a certificate and key (--tls-cert/--tls-key) uses them. A
// server that listens beyond loopback without them uses a self-signed ECDSA
// P-256 certificate that LoadOrGenerate creates on first start and keeps in
// the data dir (mode 0600). Clients of such a server cannot check its
// certificate against a CA; they pin its SHA-256 fingerprint instead
// (PinnedConfig), which the server prints at start and writes to the local
// CLI's credential file.
package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names of the generated certificate in its directory.
const (
	CertFileName = "cert.pem"
	KeyFileName  = "key.pem"
	// Validity of a generated certificate. It is renewed (with a new
	// fingerprint) at the first start after it expired.
	Validity = 5 * 365 * 24 * time.Hour
)

// Cert is a loaded server certificate.
type Cert struct {
	// TLS is the certificate chain and key for a tls.Config.
	TLS tls.Certificate
	// Leaf is the parsed server certificate.
	Leaf *x509.Certificate
	// Fingerprint is the leaf's SHA-256 fingerprint (see Fingerprint).
	Fingerprint string
	// Generated is true when LoadOrGenerate created the certificate now.
	Generated bool
	// SelfSigned is true for a certificate from LoadOrGenerate (new or kept).
	SelfSigned bool
	// CertFile and KeyFile are where the certificate and key are.
	CertFile, KeyFile string
}

// Fingerprint is the SHA-256 fingerprint of a DER certificate, written
// "SHA256:" followed by 64 lower-case hex digits.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "SHA256:" + hex.EncodeToString(sum[:])
}

// ParseFingerprint normalises a fingerprint as users may copy it: with or
// without the "SHA256:" prefix, hex digits in either case, with or without
// colons between the bytes.
func ParseFingerprint(s string) (string, error) {
	h := strings.TrimSpace(s)
	if i := strings.IndexByte(h, ':'); i >= 0 && strings.EqualFold(h[:i], "sha256") {
		h = h[i+1:]
	}
	h = strings.ToLower(strings.ReplaceAll(h, ":", ""))
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("invalid certificate fingerprint %q: want SHA256: and 64 hex digits, as 'toygres server start' prints it", s)
	}
	return "SHA256:" + h, nil
}

// Load reads a PEM certificate (chain) and its key.
func Load(certFile, keyFile string) (*Cert, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return newCert(pair, certFile, keyFile)
}

func newCert(pair tls.Certificate, certFile, keyFile string) (*Cert, error) {
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse TLS certificate %s: %w", certFile, err)
	}
	pair.Leaf = leaf
	return &Cert{TLS: pair, Leaf: leaf, Fingerprint: Fingerprint(leaf.Raw), CertFile: certFile, KeyFile: keyFile}, nil
}

// LoadOrGenerate returns the self-signed certificate kept in dir, creating
// it (and dir, mode 0700) when it is missing or has expired. hosts are the
// names and addresses it is issued for (SANs); they matter to browsers
// only, since Toygres' own clients pin the fingerprint. The key and the
// certificate files have mode 0600.
func LoadOrGenerate(dir string, hosts []string, now time.Time) (*Cert, error) {
	certFile, keyFile := filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName)
	c, err := Load(certFile, keyFile)
	switch {
	case err == nil && now.Before(c.Leaf.NotAfter):
		c.SelfSigned = true
		return c, nil
	case err == nil:
		// Expired: make a new one below.
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	default:
		// A half-written pair (one file missing) is regenerated too.
		for _, f := range []string{certFile, keyFile} {
			if _, serr := os.Stat(f); serr != nil && !errors.Is(serr, fs.ErrNotExist) {
				return nil, serr
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create TLS directory: %w", err)
	}
	certPEM, keyPEM, err := generate(hosts, now)
	if err != nil {
		return nil, err
	}
	// The key first: a certificate file never exists without its key.
	if err := writeFile0600(keyFile, keyPEM); err != nil {
		return nil, err
	}
	if err := writeFile0600(certFile, certPEM); err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if c, err = newCert(pair, certFile, keyFile); err != nil {
		return nil, err
	}
	c.Generated, c.SelfSigned = true, true
	return c, nil
}

// generate makes a self-signed ECDSA P-256 certificate for hosts.
func generate(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "toygres", Organization: []string{"Toygres (self-signed)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.Trim(strings.TrimSpace(h), "[]")
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

// writeFile0600 replaces path atomically with a 0600 file.
func writeFile0600(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tls-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Hosts are the SANs of a generated certificate for a listen address:
// the address itself (unless it is every interface, then each interface's
// addresses), the machine's host name, localhost and the loopback addresses.
func Hosts(listen string) []string {
	hosts := []string{listen}
	if ip := net.ParseIP(strings.Trim(listen, "[]")); ip != nil && ip.IsUnspecified() {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					hosts = append(hosts, n.IP.String())
				}
			}
		}
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	return append(hosts, "localhost", "127.0.0.1", "::1")
}

// ServerConfig is the tls.Config of the API server: TLS 1.2 or later.
func ServerConfig(c *Cert) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{c.TLS}}
}

// MismatchError is a server certificate whose fingerprint is not the
// pinned one.
type MismatchError struct {
	Want, Got string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("the server's TLS certificate (%s) is not the pinned one (%s)", e.Got, e.Want)
}

// PinnedConfig is a client tls.Config that accepts exactly the server
// certificate with this fingerprint (normalised by ParseFingerprint), for
// self-signed servers: the CA chain and the host name are not checked,
// the certificate's identity is. The leaf's validity period is checked.
func PinnedConfig(fingerprint string) (*tls.Config, error) {
	want, err := ParseFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no TLS certificate")
			}
			leaf := cs.PeerCertificates[0]
			got := Fingerprint(leaf.Raw)
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				return &MismatchError{Want: want, Got: got}
			}
			if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
				return fmt.Errorf("the server's TLS certificate %s is outside its validity period (%s to %s)", got,
					leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
			}
			return nil
		},
	}, nil
}
