package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/internal/cli"
	"github.com/toygres/toygres/internal/tlscert"
)

// TestTLSEndToEnd runs the real binary with HTTPS: a background start with
// the generated self-signed certificate, the local CLI through the pin in
// credentials.json, a remote-style login with --fingerprint, the refusal
// of an unpinned certificate, and the refusal of a server with another
// certificate at the same URL.
func TestTLSEndToEnd(t *testing.T) {
	e := newE2E(t)
	const pw = "tls-admin-password"
	admin := []string{"TOYGRES_ADMIN_PASSWORD=" + pw}
	e.port = freePort(t)
	url := "https://127.0.0.1:" + strconv.Itoa(e.port)

	// Background start with HTTPS on loopback (--tls=on: what a listen
	// address beyond loopback gets by default).
	out, errOut, code := e.runWith("", admin, "server", "start", "--port", strconv.Itoa(e.port), "--tls", "on", "--http-read-timeout", "2s")
	if code != 0 {
		t.Fatalf("server start: exit %d\n%s%s", code, out, errOut)
	}
	creds, err := cli.ReadCredentials(cli.ServerCredentialsPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(e.dataDir, "tls", tlscert.CertFileName)
	cert, err := tlscert.Load(certFile, filepath.Join(e.dataDir, "tls", tlscert.KeyFileName))
	if err != nil {
		t.Fatalf("the generated certificate: %v", err)
	}
	fp := cert.Fingerprint
	if creds.URL != url || creds.Fingerprint != fp {
		t.Fatalf("credentials.json: url %q fingerprint %q; want %q and the certificate's %q", creds.URL, creds.Fingerprint, url, fp)
	}
	if !strings.Contains(out, url) || !strings.Contains(out, "Certificate:  "+fp) {
		t.Fatalf("server start output lacks the URL or the fingerprint:\n%s", out)
	}
	for _, f := range []string{cert.CertFile, cert.KeyFile} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}

	// The local CLI needs nothing: it pins the certificate from credentials.json.
	e.ok("list")
	if st := e.ok("server", "status"); !strings.Contains(st, url) || !strings.Contains(st, fp) || !strings.Contains(st, "healthy") {
		t.Fatalf("server status:\n%s", st)
	}

	// A request body trickled in is cut within --http-read-timeout.
	if after := slowLogin(t, "127.0.0.1:"+strconv.Itoa(e.port), fp, 10*time.Second); after > 3500*time.Millisecond {
		t.Errorf("a slow body was cut after %v, want within about the 2s read timeout", after)
	}

	// Elsewhere (no access to the data dir): an untrusted certificate is
	// refused with one line that gives its fingerprint and the command.
	away := []string{"TOYGRES_HOME=" + t.TempDir()}
	_, errOut, code = e.runWith(pw+"\n", away, "login", "--url", url, "--password-stdin")
	if code != 1 {
		t.Fatalf("login without --fingerprint: exit %d, stderr %q", code, errOut)
	}
	assertOneLineError(t, "login without --fingerprint", errOut, "not trusted")
	if !strings.Contains(errOut, "--fingerprint "+fp) {
		t.Errorf("the refusal does not show the certificate's fingerprint %s: %q", fp, errOut)
	}
	// A wrong fingerprint is refused; the right one logs in and is saved.
	other, err := tlscert.LoadOrGenerate(t.TempDir(), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code = e.runWith(pw+"\n", away, "login", "--url", url, "--fingerprint", other.Fingerprint, "--password-stdin")
	if code != 1 {
		t.Fatalf("login with a wrong fingerprint: exit %d, stderr %q", code, errOut)
	}
	assertOneLineError(t, "login with a wrong fingerprint", errOut, "not the pinned "+other.Fingerprint)
	out, errOut, code = e.runWith(pw+"\n", away, "login", "--url", url, "--fingerprint", strings.ToUpper(strings.TrimPrefix(fp, "SHA256:")), "--password-stdin")
	if code != 0 || !strings.Contains(out, "pinned: "+fp) {
		t.Fatalf("login with the fingerprint: exit %d\n%s%s", code, out, errOut)
	}
	tokenFile := filepath.Join(e.home, ".config", "toygres", "token.json")
	var saved cli.Credentials
	if b, err := os.ReadFile(tokenFile); err != nil || json.Unmarshal(b, &saved) != nil || saved.Fingerprint != fp || saved.URL != url {
		t.Fatalf("token.json: %+v, %v", saved, err)
	}
	if out, errOut, code := e.runWith("", away, "--url", url, "list"); code != 0 {
		t.Fatalf("list with the saved login: exit %d\n%s%s", code, out, errOut)
	}
	// Plain HTTP to the HTTPS port is an error, not a hang.
	if _, errOut, code := e.runWith("", away, "--url", "http://127.0.0.1:"+strconv.Itoa(e.port), "--token", "x", "list"); code == 0 {
		t.Fatalf("plain HTTP to the HTTPS port succeeded: %q", errOut)
	}

	// Another server with another certificate at the same URL: the saved
	// login refuses it.
	e.ok("server", "stop")
	dir := t.TempDir()
	if _, err := tlscert.LoadOrGenerate(dir, []string{"127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	impostor, err := tlscert.Load(filepath.Join(dir, tlscert.CertFileName), filepath.Join(dir, tlscert.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code = e.runWith("", admin, "server", "start", "--port", strconv.Itoa(e.port),
		"--tls-cert", impostor.CertFile, "--tls-key", impostor.KeyFile)
	if code != 0 || !strings.Contains(out, impostor.Fingerprint) {
		t.Fatalf("server start with --tls-cert: exit %d\n%s%s", code, out, errOut)
	}
	_, errOut, code = e.runWith("", away, "--url", url, "list")
	if code != 1 {
		t.Fatalf("list against another certificate: exit %d, stderr %q", code, errOut)
	}
	assertOneLineError(t, "list against another certificate", errOut, "not the pinned "+fp)
	for _, want := range []string{impostor.Fingerprint, "toygres login --url " + url + " --fingerprint " + impostor.Fingerprint, "token.json"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the refusal lacks %q: %q", want, errOut)
		}
	}
	// Once the saved login is gone, the local CLI follows the server's new
	// credentials.json.
	e.ok("logout")
	e.ok("list")
}

// TestServerStartFlagErrors: bad TLS and Kubernetes flags are refused
// before anything starts, with a usage error that says what is wrong.
func TestServerStartFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls", "maybe"}, `invalid --tls "maybe"`},
		{[]string{"--tls-cert", filepath.Join(dir, "c.pem")}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", "c", "--tls-key", "k", "--tls", "off"}, "--tls=off with --tls-cert"},
		{[]string{"--k8s-allowed-sources", "10.1.2.3/8"}, "did you mean 10.0.0.0/8"},
		{[]string{"--k8s-allowed-sources", "10.0.0.0/8,everyone"}, `invalid allowed source "everyone"`},
		{[]string{"--http-read-timeout", "0s"}, "must be positive"},
	} {
		out, errOut, code := runCLI(t, append([]string{"server", "start", "-f"}, c.args...)...)
		if code != exitUsage || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 with %q (stdout %q)", c.args, code, errOut, c.want, out)
		}
	}
	// A certificate file that cannot be loaded is an error at once.
	_, errOut, code := runCLI(t, "server", "start", "--tls-cert", filepath.Join(dir, "none.pem"), "--tls-key", filepath.Join(dir, "none.key"))
	if code != exitError || !strings.Contains(errOut, "load TLS certificate") {
		t.Errorf("missing certificate: exit %d, stderr %q", code, errOut)
	}
}

// slowLogin sends POST /api/login over TLS (pinned to fp) with its body
// trickled at 10 bytes/s and returns when the server closed the connection
// (failing after limit).
func slowLogin(t *testing.T, addr, fp string, limit time.Duration) time.Duration {
	t.Helper()
	cfg, err := tlscert.PinnedConfig(fp)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "POST /api/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", addr); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn)
		done <- string(b)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		select {
		case answer := <-done:
			if !strings.Contains(answer, " 408 ") {
				t.Errorf("answer to a slow body: %q, want 408", answer)
			}
			return time.Since(start)
		case <-deadline.C:
			t.Fatalf("a slow body was still being read after %v", limit)
		case <-tick.C:
			_, _ = conn.Write([]byte(" "))
		}
	}
}
