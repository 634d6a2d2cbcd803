package main

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
)

// runCLI runs the CLI in-process against an empty data dir.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	t.Setenv("TOYGRES_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("TOYGRES_TOKEN", "")
	t.Setenv("TOYGRES_URL", "")
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), code
}

func closedPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestUsageErrorsAndExitCodes(t *testing.T) {
	url := "http://127.0.0.1:" + strconv.Itoa(closedPort(t))
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"create"}, 2, "missing NAME argument"},
		{[]string{"create", "x"}, 2, "missing --password"},
		{[]string{"create", "a", "b", "--password", "xxxxxx"}, 2, `unexpected argument "b"`},
		{[]string{"create", "x", "--password"}, 2, "flag needs an argument"},
		{[]string{"list", "-o", "yaml"}, 2, `invalid output format "yaml"`},
		{[]string{"get"}, 2, "missing NAME argument"},
		{[]string{"server", "start", "--log-level", "loud"}, 2, "unknown log level"},
		{[]string{"server", "logs"}, 1, "no server log"},
		{[]string{"--url", url, "list"}, 1, "cannot reach the Toygres server"},
		{[]string{"--url", url, "--token", "t", "get", "x"}, 1, "is it running?"},
		{[]string{"login", "--url", url}, 2, "use --password-stdin"},
	} {
		out, errOut, code := runCLI(t, c.args...)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stdout %q, stderr %q)", c.args, code, c.code, out, errOut)
		}
		if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "toygres: ") || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: stderr %q, want one line containing %q", c.args, errOut, c.want)
		}
		if strings.Contains(errOut+out, "Usage:") {
			t.Errorf("%v: usage dumped:\n%s%s", c.args, out, errOut)
		}
	}
}

func TestServerStatusNotRunning(t *testing.T) {
	out, errOut, code := runCLI(t, "server", "status")
	if code != exitNotRunning || !strings.Contains(out, "not running") || errOut != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, _, code = runCLI(t, "server", "stop")
	if code != 0 || !strings.Contains(out, "not running") {
		t.Errorf("stop: exit %d, stdout %q", code, out)
	}
}

func TestFormatLogLine(t *testing.T) {
	l := parseLogLine(`{"time":"2026-01-02T03:04:05.5Z","level":"WARN","msg":"activity attempt failed; will retry","service_name":"toygres","instance_id":"create-a-1","attempt":2,"error":"boom boom"}`)
	got := formatLogLine(l)
	for _, want := range []string{"WARN", "activity attempt failed; will retry", "attempt=2", `error="boom boom"`, "instance_id=create-a-1"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "service_name") {
		t.Errorf("%q shows service_name", got)
	}
	o := &logsOptions{orchestration: "create-a-1"}
	if !o.matches(l) {
		t.Error("-o create-a-1 does not match its record")
	}
	if (&logsOptions{orchestration: "create-a"}).matches(l) {
		t.Error("-o matches a prefix of the id")
	}
	if !(&logsOptions{grep: "will retry"}).matches(l) || (&logsOptions{grep: "nope"}).matches(l) {
		t.Error("--grep")
	}
	plain := parseLogLine("toygres: listen: address already in use")
	if formatLogLine(plain) != plain.raw || !(&logsOptions{grep: "listen"}).matches(plain) {
		t.Error("plain lines")
	}
}
