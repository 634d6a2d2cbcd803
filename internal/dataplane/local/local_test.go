package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/toygres/toygres/internal/datadir"
	"github.com/toygres/toygres/internal/dataplane"
)

const (
	testPassword  = "s3cret 'with' spaces"
	testDirPrefix = "toygres-local-test-"
	ownerFile     = "owner.pid"
	readyTimeout  = 90 * time.Second
)

func TestMain(m *testing.M) {
	reapStaleTestDirs()
	os.Exit(m.Run())
}

// testBase is where test directories go: the temp dir, or /tmp when running
// as root and the instances' accounts cannot traverse the temp dir.
func testBase() string {
	base := os.TempDir()
	if os.Geteuid() == 0 && checkTraversable(base) != nil {
		base = "/tmp"
	}
	return base
}

// reapStaleTestDirs deletes the instances left behind by test binaries that
// died without cleaning up (killed by a timeout, say): they are detached
// servers that would otherwise run forever.
func reapStaleTestDirs() {
	dirs, _ := filepath.Glob(filepath.Join(testBase(), testDirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		d, err := New(Options{Dir: filepath.Join(dir, "instances"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			continue
		}
		entries, _ := os.ReadDir(d.Dir())
		clean := true
		for _, e := range entries {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := d.Delete(ctx, e.Name()); err != nil {
				clean = false
			}
			cancel()
		}
		if clean {
			os.RemoveAll(dir)
		}
	}
}

// testDir returns a fresh instance directory, removed at the end of the test
// (after the servers are deleted: cleanups run last-in first-out).
func testDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(testBase(), testDirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The postgres account must be able to enter it when we are root.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "instances")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newDriver(t *testing.T, dir string) *Driver {
	t.Helper()
	return newDriverWith(t, Options{Dir: dir})
}

// newDriverWith makes a driver logging to the test, closed when the test ends.
func newDriverWith(t *testing.T, opts Options) *Driver {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	d, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// Registered before the instances' cleanups, so it runs after them.
	t.Cleanup(func() { d.Close() })
	requirePostgres(t, d)
	return d
}

// requirePostgres fails the test when the server binaries are missing.
func requirePostgres(t *testing.T, d *Driver) []string {
	t.Helper()
	vs, err := d.Versions(context.Background())
	if err != nil {
		t.Fatalf("the local data plane tests run real PostgreSQL servers: %v\ninstall the server binaries with: apt-get install -y postgresql", err)
	}
	return vs
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// deploy deploys an instance and makes sure it is deleted when the test
// ends, even if the test fails half way.
func deploy(t *testing.T, d *Driver, spec dataplane.Spec) {
	t.Helper()
	cleanupInstance(t, d, spec.Name)
	if err := d.Deploy(testCtx(t), spec, testPassword); err != nil {
		t.Fatalf("Deploy %s: %v", spec.Name, err)
	}
}

func cleanupInstance(t *testing.T, d *Driver, name string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := d.Delete(ctx, name); err != nil {
			t.Errorf("cleanup: Delete %s: %v", name, err)
			if pm := readPostmaster(d.paths(name).data); pm.running {
				_ = syscall.Kill(-pm.pid, syscall.SIGKILL)
				_ = syscall.Kill(pm.pid, syscall.SIGKILL)
			}
		}
	})
}

// waitReady polls Status until the instance is ready.
func waitReady(t *testing.T, d *Driver, name string) {
	t.Helper()
	ctx := testCtx(t)
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last dataplane.Status
	for {
		st, err := d.Status(ctx, name)
		if err != nil {
			t.Fatalf("Status %s: %v", name, err)
		}
		if st.Ready {
			if st.Phase != PhaseReady {
				t.Fatalf("Status %s: ready in phase %q", name, st.Phase)
			}
			return
		}
		last = st
		if time.Now().After(deadline) {
			logs, _ := d.Logs(ctx, name, 30)
			t.Fatalf("%s not ready after %v: %+v\nserver log:\n%s", name, readyTimeout, last, strings.Join(logs, "\n"))
		}
		<-tick.C
	}
}

func connect(ctx context.Context, d *Driver, name, password string) (*pgx.Conn, error) {
	ep, err := d.Endpoint(ctx, name)
	if err != nil {
		return nil, err
	}
	return pgx.Connect(ctx, ep.URL(password))
}

func queryVersion(t *testing.T, d *Driver, name string) string {
	t.Helper()
	ctx := testCtx(t)
	conn, err := connect(ctx, d, name, testPassword)
	if err != nil {
		t.Fatalf("connect to %s: %v", name, err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		t.Fatalf("SELECT version() on %s: %v", name, err)
	}
	return v
}

func pidOf(t *testing.T, d *Driver, name string) int {
	t.Helper()
	pm := readPostmaster(d.paths(name).data)
	if !pm.running {
		t.Fatalf("%s: no running server", name)
	}
	return pm.pid
}

func listening(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestDeployConnectDelete(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	versions := requirePostgres(t, d)
	const name = "lifecycle"

	deploy(t, d, dataplane.Spec{Name: name, StorageGB: 1})
	waitReady(t, d, name)

	ep, err := d.Endpoint(ctx, name)
	if err != nil {
		t.Fatalf("Endpoint: %v", err)
	}
	if ep.Host != "127.0.0.1" || ep.User != "postgres" || ep.Database != "postgres" || ep.Port < DefaultMinPort || ep.Port > DefaultMaxPort {
		t.Fatalf("Endpoint = %+v", ep)
	}
	if u := ep.URL(""); strings.Contains(u, testPassword) {
		t.Fatalf("URL without password leaks it: %s", u)
	}

	if v := queryVersion(t, d, name); !strings.HasPrefix(v, "PostgreSQL "+versions[0]) {
		t.Fatalf("SELECT version() = %q, want PostgreSQL %s", v, versions[0])
	}

	// Readiness checks hang up before authenticating, which the server
	// does not log as an error.
	if logs, err := d.Logs(ctx, name, -1); err != nil {
		t.Fatalf("Logs: %v", err)
	} else if i := slices.IndexFunc(logs, func(l string) bool { return strings.Contains(l, "FATAL") || strings.Contains(l, "ERROR") }); i >= 0 {
		t.Fatalf("server log has errors: %q", logs[i])
	}

	// The wrong password is rejected.
	if conn, err := connect(ctx, d, name, "wrong password"); err == nil {
		conn.Close(ctx)
		t.Fatal("connected with a wrong password")
	} else if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password: got %v, want SQLSTATE 28P01", err)
	}

	p := d.paths(name)
	if _, err := os.Stat(p.pwfile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("password file left behind: %v", err)
	}
	m, err := readMeta(p.meta)
	if err != nil || !m.Initialized || !m.Started || m.Port != ep.Port || m.Version != versions[0] {
		t.Fatalf("metadata = %+v, %v", m, err)
	}
	pid := pidOf(t, d, name)
	if os.Geteuid() == 0 {
		// The server runs as the instance's own account, which owns its data.
		acct, err := lookupInstanceAccount(AccountName(p.dir))
		if err != nil {
			t.Fatalf("instance account: %v", err)
		}
		cred := acct.cred
		fi, err := os.Stat(p.data)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != cred.Uid {
			t.Fatalf("data directory owned by uid %d, want %d", st.Uid, cred.Uid)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(status), fmt.Sprintf("\nUid:\t%d\t", cred.Uid)) {
			t.Fatalf("server does not run as uid %d:\n%s", cred.Uid, status)
		}
	}

	// Deploying again changes nothing.
	if err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword); err != nil {
		t.Fatalf("second Deploy: %v", err)
	}
	if got := pidOf(t, d, name); got != pid {
		t.Fatalf("second Deploy restarted the server: pid %d → %d", pid, got)
	}
	if ep2, _ := d.Endpoint(ctx, name); !reflect.DeepEqual(ep2, ep) {
		t.Fatalf("second Deploy changed the endpoint: %+v → %+v", ep, ep2)
	}
	if err := d.Deploy(ctx, dataplane.Spec{Name: name, PostgresVersion: "1"}, testPassword); err == nil {
		t.Fatal("Deploy with another version succeeded")
	}

	logs, err := d.Logs(ctx, name, 3)
	if err != nil || len(logs) == 0 || len(logs) > 3 {
		t.Fatalf("Logs(3) = %q, %v", logs, err)
	}
	all, err := d.Logs(ctx, name, -1)
	if err != nil || !slices.ContainsFunc(all, func(l string) bool { return strings.Contains(l, "ready to accept connections") }) {
		t.Fatalf("Logs(-1) = %q, %v", all, err)
	}
	if !slices.Equal(all[len(all)-len(logs):], logs) {
		t.Fatalf("Logs(3) = %q is not the end of %q", logs, all)
	}

	if err := d.Delete(ctx, name); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := d.Status(ctx, name); !errors.Is(err, dataplane.ErrNotFound) {
		t.Fatalf("Status after Delete: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(p.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("instance directory after Delete: %v", err)
	}
	if processAlive(pid) {
		t.Fatalf("server process %d still alive after Delete", pid)
	}
	if listening(ep.Port) {
		t.Fatalf("something still listens on port %d after Delete", ep.Port)
	}
	if err := d.Delete(ctx, name); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestSecondInstanceGetsAnotherPort(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	deploy(t, d, dataplane.Spec{Name: "first", Internal: true})
	deploy(t, d, dataplane.Spec{Name: "second"})
	waitReady(t, d, "first")
	waitReady(t, d, "second")
	ep1, err1 := d.Endpoint(ctx, "first")
	ep2, err2 := d.Endpoint(ctx, "second")
	if err1 != nil || err2 != nil {
		t.Fatalf("Endpoint: %v, %v", err1, err2)
	}
	if ep1.Port == ep2.Port {
		t.Fatalf("both instances got port %d", ep1.Port)
	}
	queryVersion(t, d, "first")
	queryVersion(t, d, "second")
}

func TestAdoptAfterRestart(t *testing.T) {
	dir := testDir(t)
	d := newDriver(t, dir)
	ctx := testCtx(t)
	deploy(t, d, dataplane.Spec{Name: "keep"})
	deploy(t, d, dataplane.Spec{Name: "revive"})
	deploy(t, d, dataplane.Spec{Name: "crashed"})
	waitReady(t, d, "keep")
	waitReady(t, d, "revive")
	waitReady(t, d, "crashed")
	keepPID := pidOf(t, d, "keep")
	// Toygres goes down: nothing supervises the servers any more.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// Crash one server: its pid file stays behind, naming a dead (or
	// zombie) process.
	if err := syscall.Kill(pidOf(t, d, "crashed"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, readyTimeout, func() bool {
		st, err := d.Status(ctx, "crashed")
		return err == nil && st.Phase == PhaseStopped
	}); err != nil {
		t.Fatalf("crashed server not reported stopped: %v", err)
	}

	// Stop one server behind the driver's back, as a reboot would.
	m, err := readMeta(d.paths("revive").meta)
	if err != nil {
		t.Fatal(err)
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		t.Fatal(err)
	}
	p := d.paths("revive")
	if out, err := d.run(ctx, d.ownerAccount(p.data), p.dir, filepath.Join(in.binDir, "pg_ctl"), "stop", "-D", p.data, "-m", "fast", "-w"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
	if st, err := d.Status(ctx, "revive"); err != nil || st.Phase != PhaseStopped || st.Ready {
		t.Fatalf("Status of stopped server = %+v, %v", st, err)
	}

	// A new driver on the same directory, as after a Toygres restart.
	d2 := newDriver(t, dir)
	r, err := d2.Adopt(ctx)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if !slices.Equal(r.Adopted, []string{"keep"}) || !slices.Equal(r.Restarted, []string{"crashed", "revive"}) || len(r.Problems)+len(r.Pending)+len(r.Deleted) != 0 {
		t.Fatalf("Adopt = %+v; want adopted [keep], restarted [crashed revive]", r)
	}
	waitReady(t, d2, "crashed")
	queryVersion(t, d2, "crashed")
	waitReady(t, d2, "revive")
	waitReady(t, d2, "keep")
	if got := pidOf(t, d2, "keep"); got != keepPID {
		t.Fatalf("Adopt restarted a running server: pid %d → %d", keepPID, got)
	}
	queryVersion(t, d2, "revive")

	r, err = d2.Adopt(ctx)
	if err != nil || !slices.Equal(r.Adopted, []string{"crashed", "keep", "revive"}) || len(r.Restarted)+len(r.Problems) != 0 {
		t.Fatalf("second Adopt = %+v, %v", r, err)
	}
}

func TestDeployConvergesAfterCrash(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)

	// Crash after the metadata was written, half way through initdb, with
	// the password file still on disk.
	const half = "half-made"
	cleanupInstance(t, d, half)
	p := d.paths(half)
	if _, err := d.create(ctx, dataplane.Spec{Name: half}, p); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(p.data, "base"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.data, "PG_VERSION"), []byte("junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.pwfile, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := d.Status(ctx, half); err != nil || st.Phase != PhasePending {
		t.Fatalf("Status of half-made instance = %+v, %v", st, err)
	}
	if err := d.Deploy(ctx, dataplane.Spec{Name: half}, testPassword); err != nil {
		t.Fatalf("Deploy over a half-made instance: %v", err)
	}
	if _, err := os.Stat(p.pwfile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("password file left behind: %v", err)
	}

	// A directory without metadata (a crash inside Delete, say).
	const orphan = "orphan"
	cleanupInstance(t, d, orphan)
	po := d.paths(orphan)
	if err := os.MkdirAll(filepath.Join(po.data, "base"), 0o700); err != nil {
		t.Fatal(err)
	}
	if st, err := d.Status(ctx, orphan); err != nil || st.Phase != PhasePending {
		t.Fatalf("Status of orphan directory = %+v, %v", st, err)
	}
	if err := d.Deploy(ctx, dataplane.Spec{Name: orphan}, testPassword); err != nil {
		t.Fatalf("Deploy over an orphan directory: %v", err)
	}

	waitReady(t, d, half)
	waitReady(t, d, orphan)
	queryVersion(t, d, half)
	queryVersion(t, d, orphan)
}

func TestUnknownInstance(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	if err := d.Delete(ctx, "ghost"); err != nil {
		t.Fatalf("Delete of an unknown instance: %v", err)
	}
	if _, err := d.Status(ctx, "ghost"); !errors.Is(err, dataplane.ErrNotFound) {
		t.Fatalf("Status: %v, want ErrNotFound", err)
	}
	if _, err := d.Endpoint(ctx, "ghost"); !errors.Is(err, dataplane.ErrNotFound) {
		t.Fatalf("Endpoint: %v, want ErrNotFound", err)
	}
	if _, err := d.Logs(ctx, "ghost", 10); !errors.Is(err, dataplane.ErrNotFound) {
		t.Fatalf("Logs: %v, want ErrNotFound", err)
	}
	if _, err := d.Status(ctx, "../etc"); !errors.Is(err, dataplane.ErrNotFound) {
		t.Fatalf("Status of an invalid name: %v, want ErrNotFound", err)
	}
}

func TestMissingVersion(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	versions := requirePostgres(t, d)
	cleanupInstance(t, d, "old")
	err := d.Deploy(ctx, dataplane.Spec{Name: "old", PostgresVersion: "7"}, testPassword)
	if !errors.Is(err, ErrVersionNotInstalled) {
		t.Fatalf("Deploy of PostgreSQL 7: %v, want ErrVersionNotInstalled", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"7"`) || !strings.Contains(msg, versions[0]) {
		t.Fatalf("error does not say what is missing and what is installed: %v", err)
	}
	t.Log(err)
	if _, err := d.Status(ctx, "old"); !errors.Is(err, dataplane.ErrNotFound) {
		t.Fatalf("failed Deploy left resources: Status = %v", err)
	}
}

func TestVersions(t *testing.T) {
	d := newDriver(t, testDir(t))
	vs := requirePostgres(t, d)
	if !slices.IsSortedFunc(vs, func(a, b string) int {
		switch {
		case versionLess(b, a):
			return -1
		case versionLess(a, b):
			return 1
		}
		return 0
	}) {
		t.Fatalf("Versions = %q, not newest first", vs)
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		out, err := exec.Command(p, "--version").Output()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(vs, func(v string) bool { return strings.Contains(string(out), ") "+v+".") }) {
			t.Fatalf("Versions = %q misses the pg_ctl on PATH: %s", vs, out)
		}
	}

	none, err := New(Options{Dir: testDir(t), BinDirs: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := none.Versions(context.Background()); !errors.Is(err, ErrNoPostgres) || !strings.Contains(err.Error(), InstallHint) {
		t.Fatalf("Versions without binaries: %v, want ErrNoPostgres with %q", err, InstallHint)
	}
}

func TestBadInput(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	for _, name := range []string{"", "Upper", "1abc", "a_b", "../x", strings.Repeat("a", 64)} {
		if err := d.Deploy(ctx, dataplane.Spec{Name: name}, testPassword); err == nil {
			t.Errorf("Deploy(%q) succeeded", name)
		}
	}
	if err := d.Deploy(ctx, dataplane.Spec{Name: "nopass"}, ""); err == nil {
		t.Error("Deploy with an empty password succeeded")
	}
	if err := d.Deploy(ctx, dataplane.Spec{Name: "newline"}, "a\nb"); err == nil {
		t.Error("Deploy with a multi-line password succeeded")
	}
	if _, err := New(Options{Dir: testDir(t), MinPort: 10, MaxPort: 5}); err == nil {
		t.Error("New with an empty port range succeeded")
	}
}

func TestRootNeedsReachableDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only when running as root")
	}
	locked := filepath.Join(filepath.Dir(testDir(t)), "locked")
	if err := os.Mkdir(locked, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{Dir: filepath.Join(locked, "instances")})
	if err == nil || !strings.Contains(err.Error(), RootDataDir) || !strings.Contains(err.Error(), locked) {
		t.Fatalf("New under a 0700 root directory: %v, want an error naming %s and %s", err, locked, RootDataDir)
	}
	t.Log(err)
	if _, err := os.Stat(filepath.Join(locked, "instances")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed New created the directory: %v", err)
	}
	if got := DefaultDir(); os.Getenv(datadir.Env) == "" && got != filepath.Join(RootDataDir, "instances") {
		t.Fatalf("DefaultDir() as root = %q, want %q", got, filepath.Join(RootDataDir, "instances"))
	}
}

func TestTailLines(t *testing.T) {
	tmp := t.TempDir()
	path := filepath.Join(tmp, "log")
	var b strings.Builder
	for i := 1; i <= 50000; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 3, 20000} {
		got, err := tailLines(tmp, "log", n)
		if err != nil || len(got) != n || got[n-1] != "line 50000" || got[0] != fmt.Sprintf("line %d", 50001-n) {
			t.Fatalf("tailLines(%d) = %d lines (first %q), %v", n, len(got), got[:min(1, len(got))], err)
		}
	}
	if got, _ := tailLines(tmp, "log", 0); len(got) != 0 {
		t.Fatalf("tailLines(0) = %d lines", len(got))
	}
	if got, _ := tailLines(tmp, "log", -1); len(got) != 50000 {
		t.Fatalf("tailLines(-1) = %d lines", len(got))
	}
	os.WriteFile(filepath.Join(tmp, "empty"), nil, 0o644)
	if got, err := tailLines(tmp, "empty", 5); err != nil || len(got) != 0 {
		t.Fatalf("tailLines(empty) = %q, %v", got, err)
	}
}

// childDirEnv tells TestChildDeploy, run in a child process, where to deploy.
const childDirEnv = "TOYGRES_LOCAL_TEST_CHILD_DIR"

// TestChildDeploy is not a test on its own: TestServerOutlivesDriverProcess
// runs it in a child process, which deploys an instance and then dies.
func TestChildDeploy(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("helper of TestServerOutlivesDriverProcess")
	}
	d, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Deploy(context.Background(), dataplane.Spec{Name: "outlive"}, testPassword); err != nil {
		t.Fatal(err)
	}
	// Crash: no cleanup, no orderly exit.
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

func TestServerOutlivesDriverProcess(t *testing.T) {
	dir := testDir(t)
	d := newDriver(t, dir)
	ctx := testCtx(t)
	cleanupInstance(t, d, "outlive")

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestChildDeploy$", "-test.count=1")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed after deploying\n%s", err, out)
	}

	r, err := d.Adopt(ctx)
	if err != nil || !slices.Equal(r.Adopted, []string{"outlive"}) || len(r.Restarted)+len(r.Problems) != 0 {
		t.Fatalf("Adopt after the deploying process died = %+v, %v; want the server still running", r, err)
	}
	waitReady(t, d, "outlive")
	queryVersion(t, d, "outlive")
}
