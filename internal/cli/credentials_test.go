package cli

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestResolveOrder(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	userTok := filepath.Join(dir, "config", "toygres", "token.json")
	now := time.Now()
	o := ResolveOptions{DataDir: dataDir, UserToken: userTok, Now: now}

	// Nothing anywhere.
	c, err := Resolve(o)
	if !errors.Is(err, ErrNoCredentials) || c.URL != DefaultURL {
		t.Fatalf("empty: %+v, %v", c, err)
	}

	// The server's credential file.
	if err := WriteCredentials(ServerCredentialsPath(dataDir), &Credentials{URL: "http://127.0.0.1:9999", Token: "server-tok", PID: 42}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(ServerCredentialsPath(dataDir))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode: %v, %v", st.Mode(), err)
	}
	c, err = Resolve(o)
	if err != nil || c.Token != "server-tok" || c.URL != "http://127.0.0.1:9999" {
		t.Fatalf("server file: %+v, %v", c, err)
	}

	// A saved login token wins over it.
	if err := WriteCredentials(userTok, &Credentials{URL: "http://127.0.0.1:9999/", Token: "login-tok", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	c, err = Resolve(o)
	if err != nil || c.Token != "login-tok" {
		t.Fatalf("login token: %+v, %v", c, err)
	}

	// ...unless it is for another server than an explicit --url.
	o2 := o
	o2.URL = "127.0.0.1:9999"
	if c, _ = Resolve(o2); c.Token != "login-tok" {
		t.Fatalf("same URL: %+v", c)
	}
	if err := WriteCredentials(userTok, &Credentials{URL: "http://remote:8080", Token: "remote-tok"}); err != nil {
		t.Fatal(err)
	}
	if c, _ = Resolve(o2); c.Token != "server-tok" {
		t.Fatalf("other URL: %+v", c)
	}

	// ...or expired.
	if err := WriteCredentials(userTok, &Credentials{URL: "http://127.0.0.1:9999", Token: "old", ExpiresAt: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if c, _ = Resolve(o); c.Token != "server-tok" {
		t.Fatalf("expired login token used: %+v", c)
	}

	// An explicit token wins over everything, at the local server's URL.
	o3 := o
	o3.Token = "explicit"
	if c, err = Resolve(o3); err != nil || c.Token != "explicit" || c.URL != "http://127.0.0.1:9999" {
		t.Fatalf("explicit: %+v, %v", c, err)
	}
}

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "",
		"localhost:8080":          "http://localhost:8080",
		" http://x:1/ ":           "http://x:1",
		"https://toygres.example": "https://toygres.example",
	} {
		if got := NormalizeURL(in); got != want {
			t.Errorf("NormalizeURL(%q) = %q, want %q", in, got, want)
		}
	}
}
