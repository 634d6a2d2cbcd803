// Package pgtest starts throwaway PostgreSQL clusters for tests.
//
// A test binary usually starts one cluster in TestMain and shares it:
//
//	var cluster *pgtest.Cluster
//
//	func TestMain(m *testing.M) { pgtest.Main(m, &cluster) }
//
//	func TestSomething(t *testing.T) {
//		url := cluster.NewDatabase(t) // fresh database, dropped at cleanup
//		...
//	}
//
// Start runs initdb in a temporary directory, picks a free port on 127.0.0.1
// and starts the server with pg_ctl, with trust authentication on loopback
// and durability switched off (fsync=off) for speed. The binaries are looked
// up on PATH and then under /usr/lib/postgresql/*/bin (highest version
// first). PostgreSQL refuses to run as root, so when the test runs as root
// the server runs as the unprivileged "postgres" account that the Debian
// package creates; install it with
//
//	apt-get install -y postgresql
//
// If the environment variable DUROXIDE_TEST_PG_URL (EnvURL) is set, no
// cluster is started: its value is used as the connection URL of an existing
// server, whose user must be allowed to create databases and schemas.
// Restart is not available then.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable that points tests at an existing
// PostgreSQL server instead of a throwaway cluster, for example
// DUROXIDE_TEST_PG_URL=postgres://user:pass@localhost:5432/postgres.
const EnvURL = "DUROXIDE_TEST_PG_URL"

// InstallHint is the command that installs the PostgreSQL server binaries on
// Debian and Ubuntu.
const InstallHint = "apt-get install -y postgresql"

// Cluster is a running PostgreSQL server used by tests.
type Cluster struct {
	// URL connects to the cluster's maintenance database ("postgres") as a
	// superuser (or, for an external server, as the user in EnvURL).
	URL string

	external bool
	binDir   string
	dir      string // temp dir holding data/ and the log
	dataDir  string
	logFile  string
	port     int
	cred     *syscall.Credential // non-nil when running the server as another user

	mu      sync.Mutex
	stopped bool
	seq     atomic.Int64
	prefix  string
}

// Start starts a throwaway cluster, or connects to the server named by
// EnvURL when it is set. The caller must Stop it.
func Start(ctx context.Context) (*Cluster, error) {
	prefix := fmt.Sprintf("dxt_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if u := os.Getenv(EnvURL); u != "" {
		c := &Cluster{URL: u, external: true, prefix: prefix}
		if err := c.ping(ctx); err != nil {
			return nil, fmt.Errorf("pgtest: server from %s: %w", EnvURL, err)
		}
		return c, nil
	}
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{binDir: bin, prefix: prefix}
	if os.Geteuid() == 0 {
		cred, err := postgresCredential()
		if err != nil {
			return nil, err
		}
		c.cred = cred
	}
	base := os.TempDir()
	if c.cred != nil && !reachableByOthers(base) {
		base = "/tmp" // the postgres account must be able to reach the data dir
	}
	reapStale(ctx, base, bin, c.cred)
	c.dir, err = os.MkdirTemp(base, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	// Record the owning process, so that a later Start can stop and remove
	// a cluster whose test binary died without calling Stop.
	if err := os.WriteFile(filepath.Join(c.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(c.dir)
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			os.RemoveAll(c.dir)
			return nil, fmt.Errorf("pgtest: chown temp dir: %w", err)
		}
	}
	c.dataDir = filepath.Join(c.dir, "data")
	c.logFile = filepath.Join(c.dir, "postgres.log")
	if err := c.initdb(ctx); err != nil {
		os.RemoveAll(c.dir)
		return nil, err
	}
	// A free port can be taken by someone else between probing and binding;
	// try a few.
	var startErr error
	for range 5 {
		c.port, err = freePort()
		if err != nil {
			os.RemoveAll(c.dir)
			return nil, err
		}
		if startErr = c.start(ctx); startErr == nil {
			break
		}
	}
	if startErr != nil {
		os.RemoveAll(c.dir)
		return nil, startErr
	}
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
	if err := c.ping(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Main is a TestMain helper: it starts a cluster, stores it in *c, runs the
// tests, stops the cluster and exits. A cluster that cannot be started fails
// the test binary with the reason (including how to install PostgreSQL).
func Main(m *testing.M, c **Cluster) {
	os.Exit(run(m, c))
}

func run(m *testing.M, c **Cluster) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cl, err := Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	*c = cl
	defer cl.Stop()
	return m.Run()
}

// External reports whether the cluster is an existing server named by EnvURL.
func (c *Cluster) External() bool { return c.external }

// Port is the TCP port of a throwaway cluster (0 for an external server).
func (c *Cluster) Port() int { return c.port }

// Stop stops a throwaway cluster and removes its files. For an external
// server it does nothing. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.external || c.stopped {
		return nil
	}
	c.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.pgctl(ctx, "stop", "-m", "immediate", "-w")
	if rmErr := os.RemoveAll(c.dir); err == nil && rmErr != nil {
		err = fmt.Errorf("pgtest: remove %s: %w", c.dir, rmErr)
	}
	return err
}

// Restart stops the server (fast shutdown, which terminates every open
// connection) and starts it again on the same data directory and port.
// It is not available for an external server.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.StopServer(ctx); err != nil {
		return err
	}
	return c.StartServer(ctx)
}

// StopServer stops the server process but keeps its data, so that
// StartServer can bring it back; tests use the gap to observe failures
// while the database is down.
func (c *Cluster) StopServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.external {
		return errors.New("pgtest: cannot stop an external server")
	}
	if c.stopped {
		return errors.New("pgtest: cluster removed")
	}
	return c.pgctl(ctx, "stop", "-m", "fast", "-w")
}

// StartServer starts a server stopped by StopServer.
func (c *Cluster) StartServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.external {
		return errors.New("pgtest: cannot start an external server")
	}
	if c.stopped {
		return errors.New("pgtest: cluster removed")
	}
	if err := c.start(ctx); err != nil {
		return err
	}
	return c.ping(ctx)
}

// NewDatabase creates an empty database and returns its connection URL. The
// database is dropped (with its connections terminated) when the test ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("%s_db%d", c.prefix, c.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := WithDatabase(c.URL, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// NewSchemaName returns a schema name that no other test of this process
// uses, of the form dxt_<pid>_<n>_sN (lower case, so it needs no quoting).
// The schema is not created; whatever the test creates in it is dropped
// (DROP SCHEMA … CASCADE) when the test ends.
func (c *Cluster) NewSchemaName(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("%s_s%d", c.prefix, c.seq.Add(1))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return name
}

// WithDatabase returns url with its database replaced by db. It accepts URLs
// (postgres://…) only.
func WithDatabase(rawURL, db string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("not a postgres:// URL: %q", rawURL)
	}
	u.Path = "/" + db
	u.RawPath = ""
	return u.String(), nil
}

// Log returns the server log of a throwaway cluster, for diagnosing failures.
func (c *Cluster) Log() string {
	if c.external {
		return ""
	}
	b, _ := os.ReadFile(c.logFile)
	return string(b)
}

func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// ping waits until the server accepts connections (at most 30 s).
func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for {
		conn, err := pgx.Connect(ctx, c.URL)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: server not reachable: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) initdb(ctx context.Context) error {
	out, err := c.run(ctx, filepath.Join(c.binDir, "initdb"),
		"-D", c.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	conf := strings.Join([]string{
		"",
		"# pgtest",
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = ''",
		"max_connections = 300",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"shared_buffers = 64MB",
		"log_min_messages = warning",
		"log_min_error_statement = panic",
		"",
	}, "\n")
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgtest: write postgresql.conf: %w", err)
	}
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	return c.pgctl(ctx, "start", "-w", "-t", "60", "-l", c.logFile,
		"-o", "-p "+strconv.Itoa(c.port))
}

func (c *Cluster) pgctl(ctx context.Context, args ...string) error {
	args = append([]string{"-D", c.dataDir}, args...)
	out, err := c.run(ctx, filepath.Join(c.binDir, "pg_ctl"), args...)
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl %s: %w\n%s\n%s", args[2], err, out, tail(c.Log(), 2000))
	}
	return nil
}

// run runs a PostgreSQL binary, as the postgres account when we are root.
func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	// pg_ctl start leaves the server running; it must not keep our pipes
	// open, which it does not, since it redirects the server to the log.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Env = append(cmd.Env, "HOME="+c.dir, "USER=postgres", "LOGNAME=postgres")
	}
	err := cmd.Run()
	return buf.Bytes(), err
}

const (
	dirPrefix = "duroxide-pgtest-"
	ownerFile = "owner.pid"
)

// reapStale stops and removes clusters left in base by test binaries that
// died without calling Stop (a test timeout, a kill).
func reapStale(ctx context.Context, base, binDir string, cred *syscall.Credential) {
	dirs, _ := filepath.Glob(filepath.Join(base, dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		stale := &Cluster{binDir: binDir, dir: dir, dataDir: filepath.Join(dir, "data"), logFile: filepath.Join(dir, "postgres.log"), cred: cred}
		if _, err := os.Stat(filepath.Join(stale.dataDir, "postmaster.pid")); err == nil {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_ = stale.pgctl(sctx, "stop", "-m", "immediate", "-w")
			cancel()
		}
		os.RemoveAll(dir)
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// reachableByOthers reports whether every directory on the way to dir can
// be traversed by other users.
func reachableByOthers(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root and there is no unprivileged %q account to run PostgreSQL as (%w); install the server with: %s", "postgres", err, InstallHint)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtest: bad uid/gid for postgres: %q/%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// findBinDir locates initdb and pg_ctl: on PATH, else the highest version
// under /usr/lib/postgresql/*/bin.
func findBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type cand struct {
		dir string
		ver float64
	}
	var cands []cand
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err != nil {
			continue
		}
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		cands = append(cands, cand{d, v})
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("pgtest: PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin; install them with: %s (or set %s to an existing server)", InstallHint, EnvURL)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ver > cands[j].ver })
	return cands[0].dir, nil
}
