package main

// End-to-end tests of the toygres binary: real server processes started
// with `toygres server start`, real PostgreSQL instances run by the local
// data plane, and the CLI exactly as a person types it.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// e2e is one test's installation: the binary, a data dir, the environment.
type e2e struct {
	t       *testing.T
	bin     string
	dataDir string
	home    string
	port    int
}

// requirePostgres fails (not skips: the suite must run them) when the
// PostgreSQL server binaries the local data plane needs are missing.
func requirePostgres(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("initdb"); err == nil {
		return
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) > 0 {
		return
	}
	t.Fatal("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: apt-get install -y postgresql")
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	requirePostgres(t)
	if testing.Short() {
		t.Skip("end-to-end test (builds the binary, runs servers and PostgreSQL instances)")
	}
	binDir := t.TempDir()
	bin := filepath.Join(binDir, "toygres")
	// A test build: TOYGRES_TEST_FAULTS on `server start` injects data-plane
	// faults (faults_on.go); release builds cannot.
	build := exec.Command("go", "build", "-tags", "toygres_faults", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// As root, the local data plane runs instances as the postgres account,
	// which must reach the data dir: a 0755 directory under /tmp, not
	// t.TempDir() (0700).
	dataDir, err := os.MkdirTemp("/tmp", "toygres-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, bin: bin, dataDir: dataDir, home: t.TempDir()}
	t.Cleanup(e.cleanup)
	return e
}

// cleanup stops the server and every instance it left, even after a failure.
func (e *e2e) cleanup() {
	t := e.t
	if _, _, code := e.run("server", "stop"); code != 0 {
		t.Logf("cleanup: server stop exited %d", code)
	}
	if pid, _ := readPID(e.dataDir); pid > 0 && alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Stop PostgreSQL servers left behind (immediate shutdown of each postmaster).
	pids, _ := filepath.Glob(filepath.Join(e.dataDir, "instances", "*", "data", "postmaster.pid"))
	for _, p := range pids {
		if pid := postmasterPID(p); pid > 0 && alive(pid) {
			t.Logf("cleanup: stopping PostgreSQL server %d (%s)", pid, p)
			_ = syscall.Kill(pid, syscall.SIGQUIT)
			if !waitExit(pid, 10*time.Second) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if t.Failed() {
		if b, err := os.ReadFile(logPath(e.dataDir)); err == nil {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("last server log lines:\n%s", strings.Join(lines, "\n"))
		}
	}
	_ = os.RemoveAll(e.dataDir)
}

func postmasterPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// env is the CLI's environment: this data dir, a private HOME (so no saved
// login token of the machine's user is used), no stray Toygres settings.
func (e *e2e) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TOYGRES_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TOYGRES_HOME="+e.dataDir, "HOME="+e.home, "XDG_CONFIG_HOME="+filepath.Join(e.home, ".config"))
}

// run runs the CLI and returns its stdout, stderr and exit status.
func (e *e2e) run(args ...string) (string, string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = e.env()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run toygres %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), code
}

// ok runs the CLI and fails the test unless it exits 0.
func (e *e2e) ok(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("toygres %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startServer starts a background server on a fresh port.
func (e *e2e) startServer(extra ...string) {
	e.t.Helper()
	e.startServerWith(nil, extra...)
}

// startServerWith starts the server with extra environment variables, such
// as faultsEnv.
func (e *e2e) startServerWith(env []string, extra ...string) {
	e.t.Helper()
	e.port = freePort(e.t)
	args := append([]string{"server", "start", "--port", strconv.Itoa(e.port), "--actor-interval", "1s"}, extra...)
	out := e.okWith("", env, args...)
	for _, want := range []string{"Toygres server started (PID ", fmt.Sprintf("http://127.0.0.1:%d", e.port), logPath(e.dataDir)} {
		if !strings.Contains(out, want) {
			e.t.Fatalf("server start output lacks %q:\n%s", want, out)
		}
	}
}

// faultsEnv makes the server inject data-plane faults (internal/dataplane/
// faulty): "connection=N" refuses the first N connections to each instance,
// "deploy=N" fails its first N deploys (-1: all).
func faultsEnv(spec string) []string { return []string{"TOYGRES_TEST_FAULTS=" + spec} }

// instanceJSON is the part of `get -o json` the tests read.
type instanceJSON struct {
	Name             string `json:"name"`
	InternalName     string `json:"internal_name"`
	State            string `json:"state"`
	Health           string `json:"health"`
	Port             int    `json:"port"`
	Host             string `json:"host"`
	ConnectionString string `json:"connection_string"`
	FailureReason    string `json:"failure_reason"`
	Events           []struct {
		Type     string `json:"type"`
		NewState string `json:"new_state"`
		Message  string `json:"message"`
	} `json:"events"`
	HealthChecks []struct {
		Status string `json:"status"`
	} `json:"health_checks"`
}

func (e *e2e) get(name string) instanceJSON {
	e.t.Helper()
	out := e.ok("get", name, "-o", "json")
	var in instanceJSON
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		e.t.Fatalf("get %s -o json: %v\n%s", name, err, out)
	}
	return in
}

// eventually polls f until it returns true or the deadline passes.
func (e *e2e) eventually(what string, timeout time.Duration, f func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitState polls `get` until the instance reaches state (failing early on
// an unexpected terminal state) and returns the states seen on the way.
func (e *e2e) waitState(name, state string, timeout time.Duration) (instanceJSON, []string) {
	e.t.Helper()
	var seen []string
	var last instanceJSON
	e.eventually(fmt.Sprintf("instance %s to be %s", name, state), timeout, func() bool {
		last = e.get(name)
		if len(seen) == 0 || seen[len(seen)-1] != last.State {
			seen = append(seen, last.State)
		}
		if last.State != state && (last.State == "failed" || last.State == "deleted") {
			e.t.Fatalf("instance %s is %s, want %s (reason %q, events %+v)", name, last.State, state, last.FailureReason, last.Events)
		}
		return last.State == state
	})
	return last, seen
}

// api calls the REST API with the token from the server's credentials.json.
func (e *e2e) api(path string, out any) int {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dataDir, "credentials.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var creds struct {
		URL   string `json:"url"`
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &creds); err != nil {
		e.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, creds.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+creds.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			e.t.Fatalf("GET %s: %v\n%s", path, err, body)
		}
	}
	return resp.StatusCode
}

func listening(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// assertOneLineError checks a failed command's stderr: one "toygres: …"
// line, no usage dump, no stack trace.
func assertOneLineError(t *testing.T, what, stderr, want string) {
	t.Helper()
	s := strings.TrimRight(stderr, "\n")
	if strings.Contains(s, "\n") || !strings.HasPrefix(s, "toygres: ") {
		t.Errorf("%s: stderr is not one 'toygres: …' line:\n%s", what, stderr)
	}
	for _, bad := range []string{"Usage:", "goroutine ", "panic"} {
		if strings.Contains(s, bad) {
			t.Errorf("%s: stderr contains %q:\n%s", what, bad, stderr)
		}
	}
	if !strings.Contains(s, want) {
		t.Errorf("%s: stderr %q lacks %q", what, s, want)
	}
}

func TestEndToEnd(t *testing.T) {
	e := newE2E(t)

	// 1. Background start, status, credentials.
	e.startServer()
	if out := e.ok("server", "status"); !strings.Contains(out, "is running") || !strings.Contains(out, "healthy") {
		t.Fatalf("server status:\n%s", out)
	}
	st, err := os.Stat(filepath.Join(e.dataDir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("credentials.json has mode %v, want 0600", st.Mode().Perm())
	}

	// 2. The founding document's command, exactly as written, no login.
	begin := time.Now()
	out, errOut, code := e.run("create", "test-retry", "--password", "test123")
	if code != 0 {
		t.Fatalf("create test-retry: exit %d\n%s\n%s", code, out, errOut)
	}
	if took := time.Since(begin); took > 15*time.Second {
		t.Errorf("create took %v; it must return at once", took)
	}
	if !strings.Contains(out, "creating") || !strings.Contains(out, "create-test-retry-") {
		t.Errorf("create output lacks the state or the orchestration id:\n%s", out)
	}
	inst, seen := e.waitState("test-retry", "running", 3*time.Minute)
	if seen[0] != "creating" {
		t.Errorf("first state seen after create is %q, want creating (states %v)", seen[0], seen)
	}
	if inst.ConnectionString == "" || !strings.Contains(inst.ConnectionString, "test123") {
		t.Fatalf("running instance has no connection string with the password: %q", inst.ConnectionString)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	conn, err := pgx.Connect(ctx, inst.ConnectionString)
	if err != nil {
		cancel()
		t.Fatalf("connect to test-retry: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("SELECT 1 = %d, %v", one, err)
	}
	conn.Close(ctx)
	cancel()
	e.eventually("a healthy health check", time.Minute, func() bool {
		for _, hc := range e.get("test-retry").HealthChecks {
			if hc.Status == "healthy" {
				return true
			}
		}
		return false
	})
	if out := e.ok("list"); !strings.Contains(out, "test-retry") || !strings.Contains(out, "running") || !strings.Contains(out, "NAME") {
		t.Errorf("list:\n%s", out)
	}
	if out := e.ok("get", "test-retry"); !strings.Contains(out, "Connection string") || !strings.Contains(out, inst.InternalName) {
		t.Errorf("get (table):\n%s", out)
	}

	// 6. Bad input through the CLI: one line, non-zero, nothing created.
	var before struct {
		Count int `json:"count"`
	}
	if err := json.Unmarshal([]byte(e.ok("list", "-o", "json")), &before); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		args []string
		code int
		want string
	}{
		{"invalid name", []string{"create", "Bad_Name", "--password", "test123"}, 2, "invalid name"},
		{"short password", []string{"create", "short-pw", "--password", "abc"}, 2, "password"},
		{"missing password", []string{"create", "no-pw"}, 2, "--password"},
		{"missing name", []string{"create", "--password", "test123"}, 2, "NAME"},
		{"unknown flag", []string{"create", "x1", "--password", "test123", "--bogus"}, 2, "unknown flag"},
		{"duplicate name", []string{"create", "test-retry", "--password", "test123"}, 1, "test-retry"},
		{"unknown instance (get)", []string{"get", "no-such-instance"}, 1, `instance "no-such-instance" not found`},
		{"unknown instance (delete)", []string{"delete", "no-such-instance"}, 1, `instance "no-such-instance" not found`},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
	} {
		out, errOut, code := e.run(c.args...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", c.what, code, c.code, out, errOut)
		}
		assertOneLineError(t, c.what, errOut, c.want)
	}
	var after struct {
		Count int `json:"count"`
	}
	if err := json.Unmarshal([]byte(e.ok("list", "-o", "json")), &after); err != nil {
		t.Fatal(err)
	}
	if after.Count != before.Count {
		t.Errorf("bad input changed the instance count from %d to %d", before.Count, after.Count)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "instances")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(e.dataDir, "instances"))
		for _, en := range entries {
			if en.IsDir() && en.Name() != inst.InternalName {
				t.Errorf("bad input left an instance directory %s", en.Name())
			}
		}
	}

	// 3. Delete with --wait: process, port, data dir and health actor gone.
	instDir := filepath.Join(e.dataDir, "instances", inst.InternalName)
	pmPID := postmasterPID(filepath.Join(instDir, "data", "postmaster.pid"))
	if pmPID == 0 || !alive(pmPID) {
		t.Errorf("no live postmaster for %s before delete (pid %d)", inst.InternalName, pmPID)
	}
	if !listening(inst.Port) {
		t.Errorf("nothing listens on the instance's port %d before delete", inst.Port)
	}
	out = e.ok("delete", "test-retry", "--wait")
	if !strings.Contains(out, "deleted") {
		t.Errorf("delete --wait output:\n%s", out)
	}
	if pmPID > 0 && alive(pmPID) {
		t.Errorf("postmaster %d still runs after delete --wait", pmPID)
	}
	if listening(inst.Port) {
		t.Errorf("something still listens on port %d after delete --wait", inst.Port)
	}
	if _, err := os.Stat(instDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance directory %s still exists after delete --wait (%v)", instDir, err)
	}
	if got := e.get("test-retry"); got.State != "deleted" || got.ConnectionString != "" {
		t.Errorf("after delete: state %q, connection string %q", got.State, got.ConnectionString)
	}
	actorID := "actor-" + inst.InternalName
	e.eventually("the health actor to end", 30*time.Second, func() bool {
		var o struct {
			Status string `json:"status"`
		}
		code := e.api("/api/orchestrations/"+actorID, &o)
		if code != http.StatusOK {
			t.Fatalf("GET /api/orchestrations/%s: %d", actorID, code)
		}
		return o.Status != "Running"
	})
	if code := e.api("/api/orchestrations/"+actorID, nil); code != http.StatusOK {
		t.Errorf("GET orchestration with the credential token: %d", code)
	}

	// 7 (first half). Stop.
	if out := e.ok("server", "stop"); !strings.Contains(out, "stopped") {
		t.Errorf("server stop:\n%s", out)
	}
	out, _, code = e.run("server", "status")
	if code != exitNotRunning || !strings.Contains(out, "not running") {
		t.Errorf("server status after stop: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "credentials.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("credentials.json left after stop (%v)", err)
	}
	_, errOut, code = e.run("list")
	if code != 1 {
		t.Errorf("list without a server: exit %d", code)
	}
	assertOneLineError(t, "list without a server", errOut, "server start")

	// 4. Fault injection: test-connection fails twice, the retry policy
	// recovers. Attempt 1 fails (not a retry), attempt 2 fails
	// (status="failure" 1), attempt 3 succeeds (status="success" 1).
	e.startServerWith(faultsEnv("connection=2"))
	out = e.ok("create", "retry-demo", "--password", "test123", "--wait")
	if !strings.Contains(out, "is running") {
		t.Errorf("create --wait output:\n%s", out)
	}
	demo := e.get("retry-demo")
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.port))
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`duroxide_activity_retries_total{activity_name="test-connection",status="failure"} 1`,
		`duroxide_activity_retries_total{activity_name="test-connection",status="success"} 1`,
	} {
		if !hasLine(string(metrics), want) {
			t.Errorf("/metrics lacks %s; retry lines:\n%s", want, grepLines(string(metrics), "duroxide_activity_retries_total"))
		}
	}
	out = e.ok("server", "logs", "--grep", "retry")
	// Other orchestrations may retry meanwhile (a scheduled backup of an
	// instance being deleted): count the demo create's lines.
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "will retry") && strings.Contains(line, "create-"+demo.InternalName) {
			n++
		}
	}
	if n != 2 || !strings.Contains(out, "test-connection") {
		t.Errorf("server logs --grep retry: want 2 retry lines for create-%s, got:\n%s", demo.InternalName, out)
	}
	out = e.ok("server", "logs", "-o", "create-"+demo.InternalName, "-n", "1000", "--json")
	sc := bufio.NewScanner(strings.NewReader(out))
	lines := 0
	for sc.Scan() {
		lines++
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("log line is not JSON: %s", sc.Text())
			continue
		}
		id := "create-" + demo.InternalName
		if rec["service_name"] != "toygres" || (rec["instance_id"] != id && rec["orchestration_id"] != id) {
			t.Errorf("log record for -o create-%s: %v", demo.InternalName, rec)
		}
	}
	if lines == 0 {
		t.Errorf("server logs -o create-%s printed nothing", demo.InternalName)
	}
	if b, err := os.ReadFile(logPath(e.dataDir)); err == nil && strings.Contains(string(b), "test123") {
		t.Errorf("the server log contains an instance password")
	}
	e.ok("delete", "retry-demo", "--wait")
	e.ok("server", "stop")

	// 5. A create that fails: state failed, a reason, nothing left behind.
	e.startServerWith(faultsEnv("deploy=-1"))
	e.ok("create", "doomed", "--password", "test123")
	failed, _ := e.waitState("doomed", "failed", 2*time.Minute)
	if !strings.Contains(failed.FailureReason, "deploy") {
		t.Errorf("failure reason %q does not explain the deploy failure", failed.FailureReason)
	}
	e.eventually("the failed instance's clean-up event", time.Minute, func() bool {
		for _, ev := range e.get("doomed").Events {
			if strings.Contains(ev.Message, "removed") {
				return true
			}
		}
		return false
	})
	explained := false
	for _, ev := range e.get("doomed").Events {
		if ev.NewState == "failed" && strings.Contains(ev.Message, "deploy") {
			explained = true
		}
	}
	if !explained {
		t.Errorf("no event explains the failure: %+v", e.get("doomed").Events)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "instances", failed.InternalName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed instance left its directory (%v)", err)
	}
	// A failed instance can be deleted: it goes straight to deleted.
	e.ok("delete", "doomed", "--wait")
	e.eventually("the failed instance to be deleted", time.Minute, func() bool { return e.get("doomed").State == "deleted" })
	out, errOut, code = e.run("create", "doomed-wait", "--password", "test123", "--wait")
	if code != 1 {
		t.Errorf("create --wait of a failing instance: exit %d\n%s", code, out)
	}
	assertOneLineError(t, "create --wait of a failing instance", errOut, `instance "doomed-wait" failed: deploy failed`)

	// 7. Stop; status says not running.
	e.ok("server", "stop")
	out, _, code = e.run("server", "status")
	if code != exitNotRunning || !strings.Contains(out, "not running") {
		t.Errorf("server status after stop: exit %d\n%s", code, out)
	}
}

func hasLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
