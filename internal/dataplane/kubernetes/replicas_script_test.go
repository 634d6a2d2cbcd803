package kubernetes

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The replicated container's scripts cannot run under kwok. This test runs
// them for real on this machine, with PostgreSQL 15, as the postgres
// account: three "pods" (a directory standing for each one's volume, a file
// for each one's downward API labels) and a TCP forwarder standing for the
// primary's Service. It goes through a whole failover: a primary, two
// standbys cloned through the "Service" and streaming, fencing the primary
// (its watcher stops it; a restarted container waits), promoting a
// standby (its watcher promotes; the other standby follows it onto the new
// timeline), and rebuilding the old primary, which re-clones from the new
// one.

const pgBin = "/usr/lib/postgresql/15/bin"

// fakePod is one server run by the replicated start script.
type fakePod struct {
	t      *testing.T
	name   string
	mount  string // stands for dataMountPath
	info   string // stands for podInfoPath
	socket string
	port   int
	cred   *syscall.Credential
	env    []string
	cmd    *exec.Cmd
	done   chan error
	log    *os.File // the containers' output
}

func readLog(f *os.File) string {
	b, _ := os.ReadFile(f.Name())
	return string(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// forwarder stands for a Service: it forwards connections to the port in
// target.
type forwarder struct {
	port   int
	target atomic.Int64
}

func startForwarder(t *testing.T) *forwarder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f := &forwarder{port: l.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(f.target.Load())))
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return f
}

func (p *fakePod) chown(path string) {
	if err := os.Chown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		p.t.Fatal(err)
	}
}

func (p *fakePod) setRole(role string) {
	p.t.Helper()
	labels := fmt.Sprintf("%s=%q\n%s=%q\n", LabelRole, role, LabelServer, p.name)
	tmp := filepath.Join(p.info, ".labels.tmp")
	if err := os.WriteFile(tmp, []byte(labels), 0o644); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(p.info, "labels")); err != nil { // as the kubelet: atomically
		p.t.Fatal(err)
	}
}

func (p *fakePod) rewrite(s string) string {
	return strings.NewReplacer(dataMountPath, p.mount, podInfoPath, p.info).Replace(s)
}

// start runs the container's command: the start script with the
// server's arguments.
func (p *fakePod) start() {
	p.t.Helper()
	args := []string{"-c", p.rewrite(replStartScript), "toygres-start"}
	for _, a := range serverArgs(false) {
		args = append(args, p.rewrite(a))
	}
	args = append(args, "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+p.socket)
	p.cmd = exec.Command("/bin/sh", args...)
	p.cmd.Env = p.env
	p.cmd.Dir = p.mount
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	// A file, not a pipe: the container ends when its main process does,
	// whatever its background processes hold open.
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	done := make(chan error, 1)
	p.done = done
	cmd := p.cmd
	go func() { done <- cmd.Wait() }()
}

// stopped waits for the container's main process to exit, then ends the
// rest of the container (the watcher), as the container runtime does.
func (p *fakePod) stopped(timeout time.Duration) {
	p.t.Helper()
	select {
	case <-p.done:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	case <-time.After(timeout):
		p.t.Fatalf("pod %s still runs after %v", p.name, timeout)
	}
}

func (p *fakePod) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // its process group: postgres and the watcher
	}
	// postgres' own children are in its group; an orphaned postmaster
	// (exec'd by the script) is the group leader's process itself.
	pid := filepath.Join(p.mount, "pgdata", "postmaster.pid")
	if b, err := os.ReadFile(pid); err == nil {
		if n, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0]); err == nil {
			_ = syscall.Kill(n, syscall.SIGKILL)
		}
	}
}

// sql runs a query over the pod's Unix socket as the postgres account.
func (p *fakePod) sql(query string) (string, error) {
	c := exec.Command(filepath.Join(pgBin, "psql"), "-h", p.socket, "-p", strconv.Itoa(p.port), "-U", SuperUser,
		"-d", Database, "-AtqXc", query)
	c.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	out, err := c.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// ready runs the readiness script as the kubelet's probe would.
func (p *fakePod) ready() error {
	c := exec.Command("/bin/sh", "-c", p.rewrite(replReadyScript))
	c.Env = p.env
	c.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func (p *fakePod) await(what string, cond func() (bool, string)) {
	p.t.Helper()
	eventually(p.t, 60*time.Second, "pod "+p.name+": "+what, cond)
}

func (p *fakePod) awaitSQL(query, want string) {
	p.t.Helper()
	p.await(query+" = "+want, func() (bool, string) {
		got, err := p.sql(query)
		return err == nil && got == want, fmt.Sprintf("got %q (%v)", got, err)
	})
}

func (p *fakePod) state() string {
	b, _ := os.ReadFile(filepath.Join(p.mount, "toygres-role"))
	return strings.TrimSpace(string(b))
}

func TestReplicaScriptsFailover(t *testing.T) {
	if _, err := os.Stat(filepath.Join(pgBin, "pg_basebackup")); err != nil {
		t.Fatalf("PostgreSQL 15 binaries missing in %s (apt-get install postgresql-15): %v", pgBin, err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("the postgres account is missing (apt-get install postgresql-15 creates it): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}

	base, err := os.MkdirTemp("", "toygres-k8s-repl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// docker-entrypoint.sh of the official image, reduced to what the
	// script relies on: initdb for an empty PGDATA, then the server.
	stub := filepath.Join(base, "bin")
	if err := os.MkdirAll(stub, 0o755); err != nil {
		t.Fatal(err)
	}
	entry := `#!/bin/sh
set -e
shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp); printf '%s' "$POSTGRES_PASSWORD" >"$pw"
  initdb -D "$PGDATA" -U postgres --pwfile="$pw" -A scram-sha-256 >/dev/null
  rm -f "$pw"
fi
exec postgres "$@"
`
	if err := os.WriteFile(filepath.Join(stub, "docker-entrypoint.sh"), []byte(entry), 0o755); err != nil {
		t.Fatal(err)
	}
	svc := startForwarder(t)

	logs, err := os.Create(filepath.Join(base, "containers.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	pods := make([]*fakePod, 3)
	for i := range pods {
		dir := filepath.Join(base, "pod"+strconv.Itoa(i))
		p := &fakePod{t: t, name: strconv.Itoa(i), mount: filepath.Join(dir, "data"), info: filepath.Join(dir, "info"),
			socket: filepath.Join(dir, "sock"), port: freePort(t), cred: cred, log: logs}
		for _, d := range []string{dir, p.mount, p.info, p.socket} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			p.chown(d)
		}
		p.env = []string{
			"PATH=" + stub + ":" + pgBin + ":/usr/bin:/bin",
			"HOME=" + dir,
			"HOSTNAME=rep-" + p.name,
			"PGDATA=" + filepath.Join(p.mount, "pgdata"),
			"PGHOST=" + p.socket,
			"PGPORT=" + strconv.Itoa(p.port),
			"POSTGRES_USER=" + SuperUser,
			"POSTGRES_PASSWORD=" + testPassword,
			"REPLICATE_FROM_HOST=127.0.0.1",
			"REPLICATE_FROM_PORT=" + strconv.Itoa(svc.port),
		}
		pods[i] = p
		t.Cleanup(p.kill)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container output:\n%s", readLog(logs))
		}
	})
	p0, p1, p2 := pods[0], pods[1], pods[2]

	// Server 0, primary: initdb and start; the "Service" reaches it.
	p0.setRole("primary")
	p0.start()
	svc.target.Store(int64(p0.port))
	p0.awaitSQL("SELECT pg_is_in_recovery()", "f")
	if _, err := p0.sql("CREATE TABLE t (v int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}

	// Server 1 without a label waits; as a standby it clones through the
	// Service and streams.
	p1.start()
	p1.await("waiting without a role", func() (bool, string) {
		return strings.Contains(readLog(logs), "role 'none': not starting postgres"), ""
	})
	p1.setRole("standby")
	p1.awaitSQL("SELECT pg_is_in_recovery()", "t")
	p0.awaitSQL("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = 'rep-1'", "1")
	p1.awaitSQL("SELECT count(*) FROM t", "1")
	p2.setRole("standby")
	p2.start()
	p2.awaitSQL("SELECT count(*) FROM t", "1")
	for _, p := range pods {
		p.await("ready", func() (bool, string) { err := p.ready(); return err == nil, fmt.Sprint(err) })
	}
	if p1.state() != "standby" || p0.state() != "primary" {
		t.Errorf("recorded roles %q, %q; want primary, standby", p0.state(), p1.state())
	}

	// Fence 0: its watcher stops it; the restarted container waits.
	p0.setRole("fenced")
	p0.stopped(30 * time.Second)
	if err := p0.ready(); err == nil {
		t.Error("a fenced server is ready")
	}
	p0.start()
	p0.await("fenced state recorded", func() (bool, string) { return p0.state() == "fenced", p0.state() })
	if _, err := os.Stat(filepath.Join(p0.mount, "pgdata", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a fenced server's container started postgres: %v", err)
	}

	// Promote 1: the Service follows (the driver relabels), its watcher
	// promotes.
	svc.target.Store(int64(p1.port))
	p1.setRole("primary")
	p1.awaitSQL("SELECT pg_is_in_recovery()", "f")
	if _, err := p1.sql("INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	p1.await("ready as primary", func() (bool, string) { err := p1.ready(); return err == nil, fmt.Sprint(err) })
	// The other standby follows the new primary through the Service, onto
	// its timeline.
	p2.awaitSQL("SELECT count(*) FROM t", "2")
	p1.awaitSQL("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = 'rep-2'", "1")
	p2.awaitSQL("SELECT received_tli FROM pg_stat_wal_receiver", "2")

	// Rebuild 0: the waiting container re-clones from the new primary.
	p0.setRole("standby")
	p0.awaitSQL("SELECT count(*) FROM t", "2")
	p1.awaitSQL("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = 'rep-0'", "1")
	p0.await("ready as standby", func() (bool, string) { err := p0.ready(); return err == nil, fmt.Sprint(err) })
	if !strings.Contains(readLog(logs), "data was not a standby's (fenced): cloning again") {
		t.Error("the rebuilt server did not re-clone")
	}

	// Switch back to 0 without fencing 1 first, then label 1 standby while
	// it still runs as a primary (a demotion): its watcher stops it, and
	// the restarted container re-clones from the new primary.
	svc.target.Store(int64(p0.port))
	p0.setRole("primary")
	p0.awaitSQL("SELECT pg_is_in_recovery()", "f")
	if _, err := p0.sql("INSERT INTO t VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	p1.setRole("standby")
	p1.stopped(30 * time.Second)
	if p1.state() != "demoted" {
		t.Errorf("demoted server's recorded role %q, want demoted", p1.state())
	}
	p1.start()
	p1.awaitSQL("SELECT count(*) FROM t", "3")
	// (Server 2 is not checked here: 1's shutdown checkpoint, written after
	// 0 was promoted, reached it, so its history left 0's; this is why
	// Promote fences any other primary first.)
	p0.awaitSQL("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = 'rep-1'", "1")
	if !strings.Contains(readLog(logs), "data was not a standby's (demoted): cloning again") {
		t.Error("the demoted server did not re-clone")
	}
}
