package api

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServerLogs(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "server.log")
	var b strings.Builder
	for i := 1; i <= 5000; i++ {
		orch := "create-db-a"
		if i%2 == 0 {
			orch = "delete-db-b"
		}
		fmt.Fprintf(&b, `{"time":"2025-01-01T00:00:00Z","level":"INFO","msg":"line %d","orchestration_id":"%s"}`+"\n", i, orch)
	}
	if err := os.WriteFile(logPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Options{LogFile: logPath})
	tok := e.token()
	get := func(q string) ServerLogs {
		t.Helper()
		r := e.do("GET", "/api/server/logs"+q, nil, tok)
		expect(t, r, http.StatusOK)
		var l ServerLogs
		r.json(t, &l)
		if l.Count != len(l.Lines) {
			t.Fatalf("count %d, %d lines", l.Count, len(l.Lines))
		}
		return l
	}
	l := get("")
	if l.Count != 200 || !strings.Contains(l.Lines[199], `"line 5000"`) || !strings.Contains(l.Lines[0], `"line 4801"`) {
		t.Fatalf("default tail: %d lines, first %q", l.Count, l.Lines[0])
	}
	l = get("?limit=3&orchestration=create-db-a")
	if l.Count != 3 || !strings.Contains(l.Lines[2], `"line 4999"`) || !strings.Contains(l.Lines[0], `"line 4995"`) {
		t.Fatalf("orchestration filter: %v", l.Lines)
	}
	l = get("?limit=10000&grep=" + "line%2012")
	// "line 12", "line 120".."line 129", "line 1200".."line 1299".
	if l.Count != 1+10+100 {
		t.Fatalf("grep: %d lines", l.Count)
	}
	l = get("?grep=no-such-text")
	if l.Count != 0 || l.Lines == nil {
		t.Fatalf("no match: %+v", l)
	}
	expect(t, e.do("GET", "/api/server/logs?limit=0", nil, tok), http.StatusBadRequest)
	expect(t, e.do("GET", "/api/server/logs?limit=x", nil, tok), http.StatusBadRequest)

	// A missing file is an empty result.
	e2 := newEnv(t, Options{LogFile: filepath.Join(t.TempDir(), "absent.log")})
	r := e2.do("GET", "/api/server/logs", nil, e2.token())
	expect(t, r, http.StatusOK)
}

func TestTailMatchingChunkBoundaries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	long := strings.Repeat("x", 70<<10)                           // longer than a read chunk
	content := "first\n" + long + "\nmiddle\n" + long + "y\nlast" // no trailing newline
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := tailMatching(path, 10, maxLogScan, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first", long, "middle", long + "y", "last"}
	if len(got) != len(want) {
		t.Fatalf("got %d lines", len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("line %d: %.20q… (len %d), want len %d", i, got[i], len(got[i]), len(want[i]))
		}
	}
}

func TestServerStatsAndConfig(t *testing.T) {
	e := newEnv(t, Options{Version: "9.9.9", MetricsToken: "metrics-secret-xyz"})
	tok := e.token()
	fakeInstance(t, e, uniq("stats"), "", true)
	r := e.do("GET", "/api/server/stats", nil, tok)
	expect(t, r, http.StatusOK)
	var st ServerStats
	r.json(t, &st)
	if st.Instances.ByState["running"] < 1 || st.Instances.Total < 1 || st.GeneratedAt.IsZero() {
		t.Fatalf("instance stats: %+v", st.Instances)
	}
	if _, ok := st.Orchestrations.ByStatus["Running"]; !ok {
		t.Fatalf("orchestration stats: %+v", st.Orchestrations)
	}

	r = e.do("GET", "/api/server/config", nil, tok)
	expect(t, r, http.StatusOK)
	var c ServerConfig
	r.json(t, &c)
	if c.Version != "9.9.9" || c.AdminPassword != "***" || c.AdminUser != "admin" || !strings.HasPrefix(c.Database, "sqlite:") ||
		c.Dataplane != "local" || c.ActorInterval != "500ms" || c.SessionTTL != "12h0m0s" {
		t.Fatalf("config: %+v", c)
	}
	for _, secret := range []string{testAdminPassword, "metrics-secret-xyz"} {
		if strings.Contains(string(r.body), secret) {
			t.Fatalf("config shows a secret: %s", r.body)
		}
	}
}
