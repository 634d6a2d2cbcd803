package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// run runs a PostgreSQL program in dir, as acct (nil: as we run), in a
// session of its own, and returns its combined output.
func (d *Driver) run(ctx context.Context, acct *account, dir, name string, args ...string) (string, error) {
	return d.runInput(ctx, acct, dir, "", name, args...)
}

// runInput is run with input on the program's standard input.
func (d *Driver) runInput(ctx context.Context, acct *account, dir, input, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = d.env(dir, acct)
	if input != "" {
		cmd.Stdin = strings.NewReader(input)
	}
	// acct's credential lists no supplementary group: the program keeps none.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: acct.credential()}
	// On cancellation kill the program's whole session (initdb's bootstrap
	// backend, say). A server started by pg_ctl has a session of its own
	// and lives on.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// pg_ctl start sends the server's output to the log file, so nothing
	// should hold our pipe open after it exits; do not hang if something does.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// env is the environment of PostgreSQL programs: ours without libpq's PG*
// variables and locale settings, in the C locale.
func (d *Driver) env(dir string, acct *account) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "LANGUAGE" ||
			(acct != nil && (k == "HOME" || k == "USER" || k == "LOGNAME")) {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LC_ALL=C", "LANG=C")
	if acct != nil {
		env = append(env, "HOME="+dir, "USER="+acct.name, "LOGNAME="+acct.name)
	}
	return env
}

// Stop timeouts of pg_ctl (seconds) per shutdown mode.
var stopModes = []struct{ mode, timeout string }{{"fast", "30"}, {"immediate", "15"}}

// stop stops the server of an instance if it runs: pg_ctl stop -m fast,
// then -m immediate, then SIGKILL to its process group. binDir may be ""
// (binaries unknown): then it kills at once. Processes a killed postmaster
// left behind in the data directory are killed too.
func (d *Driver) stop(ctx context.Context, p paths, binDir string) error {
	pm := readPostmaster(p.data)
	if !pm.running {
		return d.killOrphans(ctx, p)
	}
	if binDir != "" {
		for _, s := range stopModes {
			// As the account owning the data directory, whoever made it.
			out, err := d.run(ctx, d.ownerAccount(p.data), p.dir, filepath.Join(binDir, "pg_ctl"), "stop", "-D", p.data, "-m", s.mode, "-w", "-t", s.timeout)
			// The postmaster removes its pid file just before it exits.
			if !readPostmaster(p.data).running &&
				waitFor(ctx, 10*time.Second, func() bool { return !processAlive(pm.pid) }) == nil {
				d.log.Info("server stopped", "instance", p.name, "mode", s.mode)
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("stop server: %w", ctx.Err())
			}
			d.log.Warn("pg_ctl stop did not stop the server", "instance", p.name, "mode", s.mode, "err", err, "output", out)
		}
	}
	// The postmaster leads its own process group (pg_ctl starts it with
	// setsid): kill it with its children.
	d.log.Warn("killing server", "instance", p.name, "pid", pm.pid)
	_ = syscall.Kill(-pm.pid, syscall.SIGKILL)
	_ = syscall.Kill(pm.pid, syscall.SIGKILL)
	if err := waitFor(ctx, 10*time.Second, func() bool { return !processAlive(pm.pid) }); err != nil {
		return fmt.Errorf("stop server: process %d still alive after SIGKILL: %w", pm.pid, err)
	}
	return d.killOrphans(ctx, p)
}

// killOrphans kills the processes still working in the instance directory
// once its postmaster is gone: backends of a killed server (in the data
// directory), and initdb, its bootstrap backend or pg_ctl of a Toygres
// process that died while running them (they run in a session of their own
// and outlive it).
func (d *Driver) killOrphans(ctx context.Context, p paths) error {
	pids := d.orphansOf(p)
	if len(pids) == 0 {
		return nil
	}
	d.log.Warn("killing processes left in the instance directory", "instance", p.name, "pids", pids)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := waitFor(ctx, 10*time.Second, func() bool { return len(d.orphansOf(p)) == 0 }); err != nil {
		return fmt.Errorf("stop server: processes %v still alive after SIGKILL: %w", d.orphansOf(p), err)
	}
	return nil
}

// orphansOf lists the processes working in the directory of server p,
// leaving out those of the instance's other servers (in server-* below the
// instance directory, which is server "0"'s).
func (d *Driver) orphansOf(p paths) []int {
	pids := processesUnder(p.dir)
	if p.dir != p.inst {
		return pids
	}
	others := realPath(filepath.Join(p.inst, "server-"))
	var out []int
	for _, pid := range pids {
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
		if err == nil && strings.HasPrefix(strings.TrimSuffix(cwd, " (deleted)"), others) {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// processesIn lists the live processes whose working directory is dir: a
// postmaster and its children work in their data directory. Processes we
// may not inspect are not seen.
func processesIn(dir string) []int { return processesWhere(dir, false) }

// processesUnder lists the live processes whose working directory is dir or
// below it, even if that directory has been removed meanwhile.
func processesUnder(dir string) []int { return processesWhere(dir, true) }

func processesWhere(dir string, below bool) []int {
	want := realPath(dir)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err != nil {
			continue
		}
		// The kernel marks a removed working directory so.
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if (cwd == want || below && strings.HasPrefix(cwd, want+"/")) && processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// realPath resolves the symbolic links of path, or of its nearest existing
// ancestor when path is gone.
func realPath(path string) string {
	path = filepath.Clean(path)
	var rest []string
	for p := path; ; p = filepath.Dir(p) {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(append([]string{r}, rest...)...)
		}
		if filepath.Dir(p) == p {
			return path
		}
		rest = append([]string{filepath.Base(p)}, rest...)
	}
}

// waitFor polls cond until it holds, for at most limit.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// processAlive reports whether pid is a live process (a zombie, dead but
// not reaped, is not).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no /proc: trust kill
	}
	// pid (comm) state ...; comm may contain anything, so look after the last ')'.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		if s := b[i+2]; s == 'Z' || s == 'X' {
			return false
		}
	}
	return true
}

// ping reports whether the server at host:port accepts connections, the way
// pg_isready does: it sends a startup packet and reads the first answer. An
// authentication request, or any error but "cannot connect now" (57P03:
// starting up, shutting down, in recovery), means the server accepts
// connections. It hangs up before authenticating, which the server does not
// log.
func ping(ctx context.Context, host string, port int) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false, "not accepting connections: " + err.Error()
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": User, "database": Database, "application_name": "toygres-ping"},
	})
	if err := fe.Flush(); err != nil {
		return false, "not accepting connections: " + err.Error()
	}
	msg, err := fe.Receive()
	if err != nil {
		return false, "no answer from server: " + err.Error()
	}
	if e, ok := msg.(*pgproto3.ErrorResponse); ok && (e.Code == "57P03" || len(e.Code) != 5) {
		return false, e.Message
	}
	return true, "accepting connections on " + addr
}

// install is one installed PostgreSQL major version.
type install struct {
	version string // major version: "16", "9.6"
	binDir  string
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?`)

// installs lists the installed versions, newest first; for a version
// installed twice the directory found first wins.
func (d *Driver) installs(ctx context.Context) ([]install, error) {
	var cands []string
	if len(d.binDirs) > 0 {
		cands = d.binDirs
	} else {
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil {
				cands = append(cands, filepath.Dir(real))
			}
			cands = append(cands, filepath.Dir(p))
		}
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Strings(dirs)
		cands = append(cands, dirs...)
	}
	seenDir := map[string]bool{}
	seenVersion := map[string]bool{}
	var ins []install
	for _, dir := range cands {
		dir, err := filepath.Abs(dir)
		if err != nil || seenDir[dir] || !hasServerBinaries(dir) {
			continue
		}
		seenDir[dir] = true
		v, err := d.majorVersion(ctx, dir)
		if err != nil {
			d.log.Warn("ignoring PostgreSQL binaries", "dir", dir, "err", err)
			continue
		}
		if !seenVersion[v] {
			seenVersion[v] = true
			ins = append(ins, install{version: v, binDir: dir})
		}
	}
	if len(ins) == 0 {
		where := "on PATH or under /usr/lib/postgresql/*/bin"
		if len(d.binDirs) > 0 {
			where = "in " + strings.Join(d.binDirs, ", ")
		}
		return nil, fmt.Errorf("%w (initdb, pg_ctl, postgres) %s; install them with: %s", ErrNoPostgres, where, InstallHint)
	}
	sort.SliceStable(ins, func(i, j int) bool { return versionLess(ins[j].version, ins[i].version) })
	return ins, nil
}

// install returns the binaries of a major version ("" = newest).
func (d *Driver) install(ctx context.Context, version string) (install, error) {
	ins, err := d.installs(ctx)
	if err != nil {
		return install{}, err
	}
	if version == "" {
		return ins[0], nil
	}
	var have []string
	for _, in := range ins {
		if in.version == version {
			return in, nil
		}
		have = append(have, in.version)
	}
	return install{}, fmt.Errorf("%w: %q (installed: %s); install it with: apt-get install -y postgresql-%s",
		ErrVersionNotInstalled, version, strings.Join(have, ", "), version)
}

func hasServerBinaries(dir string) bool {
	for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// majorVersion asks pg_ctl --version (cached per directory).
func (d *Driver) majorVersion(ctx context.Context, dir string) (string, error) {
	d.versionsMu.Lock()
	v, ok := d.versionOf[dir]
	d.versionsMu.Unlock()
	if ok {
		return v, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "pg_ctl"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("pg_ctl --version: %w", err)
	}
	mm := versionRE.FindStringSubmatch(string(out))
	if mm == nil {
		return "", fmt.Errorf("pg_ctl --version: unexpected output %q", strings.TrimSpace(string(out)))
	}
	v = mm[1]
	if major, _ := strconv.Atoi(mm[1]); major < 10 && mm[2] != "" {
		v = mm[1] + "." + mm[2] // before 10 the major version has two parts
	}
	d.versionsMu.Lock()
	d.versionOf[dir] = v
	d.versionsMu.Unlock()
	return v, nil
}

// versionLess compares major versions numerically ("9.6" < "10").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}
