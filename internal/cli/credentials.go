// Package cli holds the Toygres command line's helpers: where its bearer
// token comes from, the REST client, and table/JSON output.
//
// Credentials. The CLI needs no manual login on the machine that runs the
// server: the server writes <data dir>/credentials.json (mode 0600, so only
// the account that runs the server and root can read it) with its URL and a
// bearer token, the way kind writes a kubeconfig. `toygres login` stores a
// token of its own in <user config dir>/toygres/token.json (0600), for
// servers elsewhere or other accounts. Resolve picks, in order: --token or
// $TOYGRES_TOKEN, the saved login token, the server's credential file.
//
// TLS. Both files may hold the fingerprint of the server's certificate;
// Client.Pin then accepts exactly that certificate (a self-signed server's),
// and a server presenting another is refused with a CertificateError that
// says what to do.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CredentialsFileName is the server's credential file in its data dir.
const CredentialsFileName = "credentials.json"

// Credentials are a server URL and a bearer token for it.
type Credentials struct {
	URL       string    `json:"url"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at,omitempty"`
	Username  string    `json:"username,omitempty"`
	// PID is the server process that wrote the file (server credentials only).
	PID int `json:"pid,omitempty"`
	// Fingerprint pins the server's TLS certificate ("SHA256:…"): the CLI
	// accepts exactly that certificate at URL and no other (see
	// tlscert.PinnedConfig). Empty: the system's CAs decide.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Source says where the credentials came from (not stored).
	Source string `json:"-"`
}

// Expired reports whether the token has expired (a zero ExpiresAt never does).
func (c *Credentials) Expired(now time.Time) bool {
	return !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt)
}

// ServerCredentialsPath is the server's credential file for a data dir.
func ServerCredentialsPath(dataDir string) string {
	return filepath.Join(dataDir, CredentialsFileName)
}

// UserTokenPath is where `toygres login` keeps its token:
// $XDG_CONFIG_HOME/toygres/token.json, or ~/.config/toygres/token.json.
func UserTokenPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the user config directory: %w", err)
	}
	return filepath.Join(dir, "toygres", "token.json"), nil
}

// ReadCredentials reads a credential file; fs.ErrNotExist (wrapped) if absent.
func ReadCredentials(path string) (*Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if c.Token == "" {
		return nil, fmt.Errorf("read %s: no token in file", path)
	}
	c.Source = path
	return &c, nil
}

// WriteCredentials writes a credential file with mode 0600 (its directory,
// when created, gets mode 0700). The file is replaced atomically, so a
// reader never sees half of it and the mode holds from the first byte.
func WriteCredentials(path string, c *Credentials) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// NormalizeURL trims a server URL and adds http:// when no scheme is given
// (https:// must be written).
func NormalizeURL(u string) string {
	u = strings.TrimSpace(u)
	if u == "" {
		return ""
	}
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	return strings.TrimRight(u, "/")
}

// DefaultURL is the server URL when nothing says otherwise.
const DefaultURL = "http://127.0.0.1:8080"

// ResolveOptions are the inputs of Resolve.
type ResolveOptions struct {
	URL       string // --url / $TOYGRES_URL (empty: from the credentials)
	Token     string // --token / $TOYGRES_TOKEN
	DataDir   string // server data dir, for its credentials.json
	UserToken string // path of the login token (empty: UserTokenPath())
	Now       time.Time
}

// ErrNoCredentials means no token was found anywhere.
var ErrNoCredentials = errors.New("no credentials")

// Resolve finds the URL and token the CLI uses: an explicit token first,
// then the saved login token, then the server's credential file. File
// tokens for another URL than an explicit one, and expired ones, are
// skipped. With no token at all it returns the URL and ErrNoCredentials.
func Resolve(o ResolveOptions) (*Credentials, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	explicitURL := NormalizeURL(o.URL)
	serverPath := ""
	if o.DataDir != "" {
		serverPath = ServerCredentialsPath(o.DataDir)
	}
	if o.Token != "" {
		u := explicitURL
		fp := ""
		// The token says nothing about where; use the local server's URL,
		// and its certificate pin when that is the URL.
		if c, err := ReadCredentials(serverPath); err == nil && (u == "" || NormalizeURL(c.URL) == u) {
			u, fp = NormalizeURL(c.URL), c.Fingerprint
		}
		if u == "" {
			u = DefaultURL
		}
		return &Credentials{URL: u, Token: o.Token, Fingerprint: fp, Source: "--token/TOYGRES_TOKEN"}, nil
	}
	userPath := o.UserToken
	if userPath == "" {
		if p, err := UserTokenPath(); err == nil {
			userPath = p
		}
	}
	var problems []string
	for _, path := range []string{userPath, serverPath} {
		if path == "" {
			continue
		}
		c, err := ReadCredentials(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		c.URL = NormalizeURL(c.URL)
		if explicitURL != "" && c.URL != explicitURL {
			continue
		}
		if c.Expired(o.Now) {
			problems = append(problems, fmt.Sprintf("the token in %s expired at %s", path, c.ExpiresAt.Local().Format(time.RFC3339)))
			continue
		}
		return c, nil
	}
	u := explicitURL
	if u == "" {
		u = DefaultURL
	}
	err := ErrNoCredentials
	if len(problems) > 0 {
		err = fmt.Errorf("%w (%s)", ErrNoCredentials, strings.Join(problems, "; "))
	}
	return &Credentials{URL: u}, err
}
