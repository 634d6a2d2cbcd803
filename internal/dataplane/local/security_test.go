package local

// Tenant isolation on the local data plane (see isolation.go): the owner of
// instance A, who has A's password, can neither read, change nor stop
// instance B, nor reach the machine's secrets. Every attack is first shown
// to reach its target without the defence (as A's superuser over A's
// private socket, which tenants cannot reach, or as the account that ran
// every server before), so that no test passes because the attack itself
// is broken.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/toygres/toygres/internal/dataplane"
)

const snakeoilKey = "/etc/ssl/private/ssl-cert-snakeoil.key"

// tenants deploys instances "tenant-a" and "tenant-b" and waits until they
// are ready.
func tenants(t *testing.T) (*Driver, paths, paths) {
	t.Helper()
	d := newDriver(t, testDir(t))
	deploy(t, d, dataplane.Spec{Name: "tenant-a"})
	deploy(t, d, dataplane.Spec{Name: "tenant-b"})
	waitReady(t, d, "tenant-a")
	waitReady(t, d, "tenant-b")
	return d, d.paths("tenant-a"), d.paths("tenant-b")
}

// userConn connects to an instance as its user, with its password, the way
// the connection string does.
func userConn(t *testing.T, d *Driver, name string) *pgx.Conn {
	t.Helper()
	ctx := testCtx(t)
	conn, err := connect(ctx, d, name, testPassword)
	if err != nil {
		t.Fatalf("connect to %s as %s: %v", name, User, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// adminConn connects as Toygres' superuser over the instance's private
// socket (peer authentication as the account running the test).
func adminConn(t *testing.T, d *Driver, name string) *pgx.Conn {
	t.Helper()
	ctx := testCtx(t)
	p := d.paths(name)
	m, err := readMeta(p.meta)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s", p.run, m.Port, AdminUser, Database))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to %s as %s over the private socket: %v", name, AdminUser, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// wantDenied checks that err is PostgreSQL's insufficient_privilege (42501).
func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("%s as the user: %v, want permission denied (SQLSTATE 42501)", what, err)
	}
	t.Logf("%s refused: %s", what, pgErr.Message)
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(testCtx(t), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func major(t *testing.T, d *Driver, name string) int {
	t.Helper()
	m, err := readMeta(d.paths(name).meta)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(m.Version)
	if err != nil {
		t.Fatalf("version %q", m.Version)
	}
	return v
}

func TestSecurityUserRoleLayout(t *testing.T) {
	d, _, _ := tenants(t)
	ctx := testCtx(t)
	user := userConn(t, d, "tenant-a")
	var super, createdb, createrole bool
	if err := user.QueryRow(ctx, "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user").Scan(&super, &createdb, &createrole); err != nil {
		t.Fatal(err)
	}
	if super || !createdb || !createrole {
		t.Fatalf("user role: superuser=%t createdb=%t createrole=%t; want false, true, true", super, createdb, createrole)
	}
	for role, want := range map[string]bool{"pg_monitor": true, "pg_signal_backend": true,
		"pg_execute_server_program": false, "pg_read_server_files": false, "pg_write_server_files": false} {
		var member bool
		if err := user.QueryRow(ctx, "SELECT pg_has_role(current_user, $1, 'MEMBER')", role).Scan(&member); err != nil {
			t.Fatal(err)
		}
		if member != want {
			t.Fatalf("user role member of %s = %t, want %t", role, member, want)
		}
	}
	var owner string
	if err := user.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()").Scan(&owner); err != nil || owner != User {
		t.Fatalf("owner of %s = %q, %v; want %s", Database, owner, err, User)
	}
	admin := adminConn(t, d, "tenant-a")
	if err := admin.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil || !super {
		t.Fatalf("admin superuser = %t, %v", super, err)
	}
	// The admin has no password and never logs in over TCP.
	ep, err := d.Endpoint(ctx, "tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	ep.User = AdminUser
	if c, err := pgx.Connect(ctx, ep.URL(testPassword)); err == nil {
		c.Close(ctx)
		t.Fatal("the admin logged in over TCP")
	} else {
		t.Logf("admin over TCP refused: %v", err)
	}
}

// TestSecuritySeedCommandPath is what `toygres create test-retry --password
// test123` and psql into the instance need: the user creates a table, a
// database and a role.
func TestSecuritySeedCommandPath(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	deploy(t, d, dataplane.Spec{Name: "test-retry"})
	waitReady(t, d, "test-retry")
	ep, err := d.Endpoint(ctx, "test-retry")
	if err != nil {
		t.Fatal(err)
	}
	psql := "psql"
	if m, err := readMeta(d.paths("test-retry").meta); err == nil {
		if in, err := d.install(ctx, m.Version); err == nil {
			if _, err := os.Stat(filepath.Join(in.binDir, "psql")); err == nil {
				psql = filepath.Join(in.binDir, "psql")
			}
		}
	}
	args := []string{ep.URL(testPassword), "-v", "ON_ERROR_STOP=1", "-XAtq"}
	for _, sql := range []string{"CREATE TABLE t (id int)", "INSERT INTO t VALUES (1)", "CREATE DATABASE appdb",
		"CREATE ROLE app LOGIN PASSWORD 'x'", "GRANT SELECT ON t TO app", "SELECT current_user, count(*) FROM t"} {
		args = append(args, "-c", sql)
	}
	cmd := exec.CommandContext(ctx, psql, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql with the connection string: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != User+"|1" {
		t.Fatalf("psql said %q, want %q", got, User+"|1")
	}
	// The new database belongs to the user, who can work in it.
	cfg, err := pgx.ParseConfig(ep.URL(testPassword))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = "appdb"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to the new database: %v", err)
	}
	defer conn.Close(ctx)
	mustExec(t, conn, "CREATE TABLE x (id int)")

	// A password outside ASCII works too (the server hashes it itself).
	deploy2 := "unicode-pw"
	cleanupInstance(t, d, deploy2)
	const pw = "pässwörd ü"
	if err := d.Deploy(ctx, dataplane.Spec{Name: deploy2}, pw); err != nil {
		t.Fatal(err)
	}
	waitReady(t, d, deploy2)
	c2, err := connect(ctx, d, deploy2, pw)
	if err != nil {
		t.Fatalf("connect with a non-ASCII password: %v", err)
	}
	c2.Close(ctx)
}

func TestSecurityNoServerProgramsOrFiles(t *testing.T) {
	d, _, pb := tenants(t)
	ctx := testCtx(t)
	admin := adminConn(t, d, "tenant-a")
	user := userConn(t, d, "tenant-a")
	bFile := filepath.Join(pb.data, "PG_VERSION")
	copyTarget := fmt.Sprintf("/tmp/toygres-security-test-%d", os.Getpid())

	attacks := []struct{ name, sql string }{
		{"COPY TO PROGRAM", "COPY (SELECT 1) TO PROGRAM 'cat > /dev/null'"},
		{"COPY FROM PROGRAM", "COPY tmp_lines FROM PROGRAM 'id'"},
		{"pg_read_file", "SELECT pg_read_file('/etc/passwd')"},
		{"pg_read_binary_file", "SELECT pg_read_binary_file('/etc/passwd')"},
		{"pg_stat_file", "SELECT pg_stat_file('/etc/passwd')"},
		{"lo_import", "SELECT lo_unlink(lo_import('/etc/passwd'))"},
		{"COPY FROM a file", "COPY tmp_lines FROM '/etc/passwd'"},
		{"COPY TO a file", "COPY (SELECT 1) TO " + sqlString(copyTarget)},
		{"ALTER SYSTEM", "ALTER SYSTEM SET work_mem = '5MB'"},
		{"pg_ls_dir", "SELECT count(*) FROM pg_ls_dir('/')"},
	}
	os.Remove(copyTarget)
	defer os.Remove(copyTarget)
	for _, c := range []*pgx.Conn{admin, user} {
		mustExec(t, c, "CREATE TEMP TABLE tmp_lines (line text)")
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			// The attack works for a superuser.
			if _, err := admin.Exec(ctx, a.sql); err != nil {
				t.Fatalf("%s as the superuser: %v; the attack is broken, not refused", a.name, err)
			}
			_, err := user.Exec(ctx, a.sql)
			wantDenied(t, a.name, err)
		})
	}
	mustExec(t, admin, "ALTER SYSTEM RESET work_mem")
	// Even A's superuser cannot read B's files: A's server runs as A's account.
	if _, err := admin.Exec(ctx, "SELECT pg_read_binary_file($1)", bFile); err == nil {
		t.Fatalf("A's superuser read B's %s", bFile)
	} else {
		t.Logf("A's superuser reading B's file: %v", err)
	}
}

func TestSecurityNoSignalToSuperuser(t *testing.T) {
	d, _, _ := tenants(t)
	ctx := testCtx(t)
	admin := adminConn(t, d, "tenant-a")
	user := userConn(t, d, "tenant-a")
	other := userConn(t, d, "tenant-a")
	var adminPID, otherPID uint32
	adminPID = admin.PgConn().PID()
	otherPID = other.PgConn().PID()
	// The user may end another non-superuser session (pg_signal_backend)...
	var ok bool
	if err := user.QueryRow(ctx, "SELECT pg_terminate_backend($1)", otherPID).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminating another user session: %t, %v; the attack is broken", ok, err)
	}
	// ...not a superuser's.
	_, err := user.Exec(ctx, "SELECT pg_terminate_backend($1)", adminPID)
	wantDenied(t, "pg_terminate_backend of a superuser session", err)
	_, err = user.Exec(ctx, "SELECT pg_cancel_backend($1)", adminPID)
	wantDenied(t, "pg_cancel_backend of a superuser session", err)
	if err := admin.Ping(ctx); err != nil {
		t.Fatalf("superuser session gone: %v", err)
	}
}

// TestSecurityCreateRoleEscalation: CREATEROLE lets a role grant itself
// the predefined roles that run programs before PostgreSQL 16, which fixed
// it. There, the escape lands in the instance's own account, which reaches
// nothing of the others (TestSecurityAccounts).
func TestSecurityCreateRoleEscalation(t *testing.T) {
	d, pa, pb := tenants(t)
	ctx := testCtx(t)
	user := userConn(t, d, "tenant-a")
	_, err := user.Exec(ctx, "GRANT pg_execute_server_program TO "+User)
	if major(t, d, "tenant-a") >= 16 {
		wantDenied(t, "GRANT pg_execute_server_program", err)
		return
	}
	if err != nil {
		t.Fatalf("PostgreSQL < 16 lets CREATEROLE grant pg_execute_server_program; got %v", err)
	}
	t.Log("PostgreSQL < 16: the user granted itself pg_execute_server_program (CREATEROLE); checking the escape is contained")
	if os.Geteuid() != 0 {
		t.Skip("containment by per-instance accounts needs Toygres to run as root")
	}
	acctA, err := lookupInstanceAccount(AccountName(pa.dir))
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, user, "CREATE TEMP TABLE out (line text)")
	pmB := pidOf(t, d, "tenant-b")
	script := fmt.Sprintf(`(id -u; grep ^Groups: /proc/self/status; cat %s/PG_VERSION; echo trust >> %s/pg_hba.conf; kill -HUP %d; head -c 10 %s; ls %s) 2>&1 | tr '\t\\' '  '`,
		pb.data, pb.data, pmB, snakeoilKey, filepath.Dir(pb.dir))
	mustExec(t, user, "COPY out FROM PROGRAM "+sqlString(script))
	rows, err := user.Query(ctx, "SELECT line FROM out")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Join(lines, "\n")
	t.Logf("the escaped shell says:\n%s", out)
	if lines[0] != strconv.Itoa(int(acctA.cred.Uid)) {
		t.Fatalf("the shell runs as uid %s, want A's %d", lines[0], acctA.cred.Uid)
	}
	if strings.TrimSpace(strings.TrimPrefix(lines[1], "Groups:")) != "" {
		t.Fatalf("the shell has supplementary groups: %q", lines[1])
	}
	if strings.Count(out, "Permission denied") < 4 || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("the escaped shell reached B or the machine's secrets:\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(pb.data, "pg_hba.conf")); bytes.Contains(b, []byte("trust")) {
		t.Fatal("B's pg_hba.conf was changed")
	}
}

// asAccount runs a shell command with acct's credential (no groups) and
// returns its output and error.
func asAccount(t *testing.T, cred *syscall.Credential, script string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(testCtx(t), "/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestSecurityAccounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("per-instance accounts exist only when Toygres runs as root")
	}
	d, pa, pb := tenants(t)
	a, errA := lookupInstanceAccount(AccountName(pa.dir))
	b, errB := lookupInstanceAccount(AccountName(pb.dir))
	if errA != nil || errB != nil {
		t.Fatalf("instance accounts: %v, %v", errA, errB)
	}
	if a.cred.Uid == b.cred.Uid || a.cred.Gid == b.cred.Gid {
		t.Fatalf("A and B share uid or gid: %+v %+v", a.cred, b.cred)
	}
	bFile := filepath.Join(pb.data, "PG_VERSION")
	pmB := pidOf(t, d, "tenant-b")

	// B's own account reaches B's files and server: the targets are real.
	if out, err := asAccount(t, b.cred, "cat "+bFile+" && kill -0 "+strconv.Itoa(pmB)); err != nil {
		t.Fatalf("B's account cannot read its own files or signal its server: %v\n%s", err, out)
	}
	// A's account reaches neither.
	for _, script := range []string{
		"cat " + bFile,
		"ls " + pb.data,
		"ls " + pb.run,
		"echo x >> " + filepath.Join(pb.data, "pg_hba.conf"),
		"kill -0 " + strconv.Itoa(pmB),
		"ls " + d.Dir(),
		"ln -sf /etc/shadow " + pa.log, // its own log: the directory is Toygres'
		"cat " + pa.meta,
	} {
		if out, err := asAccount(t, a.cred, script); err == nil {
			t.Fatalf("A's account ran %q: %s", script, out)
		} else {
			t.Logf("as A: %s: %s", script, out)
		}
	}

	// No supplementary groups: the account that ran every server before
	// has ssl-cert, which reads the machine's TLS key.
	legacy, err := user.Lookup(DefaultRunAs)
	if err != nil {
		t.Fatalf("the %s account (apt-get install -y postgresql): %v", DefaultRunAs, err)
	}
	if _, err := os.Stat(snakeoilKey); err != nil {
		t.Fatalf("%v (apt-get install -y ssl-cert)", err)
	}
	lc, err := lookupAccount(legacy.Username)
	if err != nil {
		t.Fatal(err)
	}
	gids, _ := legacy.GroupIds()
	for _, g := range gids {
		if n, _ := strconv.ParseUint(g, 10, 32); n != uint64(lc.cred.Gid) {
			lc.cred.Groups = append(lc.cred.Groups, uint32(n))
		}
	}
	if out, err := asAccount(t, lc.cred, "head -c 10 "+snakeoilKey); err != nil {
		t.Fatalf("the %s account with its groups cannot read %s (%v: %s); the attack is broken", DefaultRunAs, snakeoilKey, err, out)
	}
	if out, err := asAccount(t, a.cred, "head -c 10 "+snakeoilKey); err == nil {
		t.Fatalf("A's account read %s: %s", snakeoilKey, out)
	}
	for _, name := range []string{"tenant-a", "tenant-b"} {
		pid := pidOf(t, d, name)
		pids := append([]int{pid}, processesIn(d.paths(name).data)...)
		for _, pid := range pids {
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				continue // a backend gone meanwhile
			}
			for _, line := range strings.Split(string(status), "\n") {
				if g, ok := strings.CutPrefix(line, "Groups:"); ok && strings.TrimSpace(g) != "" {
					t.Fatalf("%s: process %d has supplementary groups %q", name, pid, g)
				}
			}
		}
	}
}

func TestSecurityFileModes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owners and modes for per-instance accounts apply when Toygres runs as root")
	}
	d, pa, _ := tenants(t)
	a, err := lookupInstanceAccount(AccountName(pa.dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		uid  uint32
		mode os.FileMode
	}{
		{d.Dir(), 0, 0o711},
		{pa.dir, 0, 0o711},
		{pa.meta, 0, 0o600},
		{pa.data, a.cred.Uid, 0o700},
		{pa.run, a.cred.Uid, 0o700},
		{pa.log, a.cred.Uid, 0o600},
		{filepath.Join(pa.data, "pg_hba.conf"), a.cred.Uid, 0o600},
	} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != c.uid || fi.Mode().Perm() != c.mode || fi.Mode()&os.ModeSymlink != 0 {
			t.Errorf("%s: uid %d mode %v, want uid %d mode %v", c.path, st.Uid, fi.Mode(), c.uid, c.mode)
		}
	}
}

// TestSecurityLogSymlink: an instance's account owns its log; a link there
// must not make Toygres (root) read another file.
func TestSecurityLogSymlink(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	const name = "linker"
	deploy(t, d, dataplane.Spec{Name: name})
	waitReady(t, d, name)
	p := d.paths(name)

	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "root-only")
	const content = "TOP-SECRET-ROOT-ONLY-CONTENT"
	if err := os.WriteFile(secret, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, link := range []struct{ at, to string }{
		{p.log, secret},                      // the log itself
		{p.log, filepath.Join(p.run, "log")}, // through a directory the account owns
	} {
		if err := os.Remove(link.at); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.Symlink(link.to, link.at); err != nil {
			t.Fatal(err)
		}
		if link.to != secret {
			if err := os.Symlink(secret, link.to); err != nil {
				t.Fatal(err)
			}
		}
		// A plain read follows the link: the trick works without the defence.
		if b, err := os.ReadFile(link.at); err != nil || !strings.Contains(string(b), content) {
			t.Fatalf("os.ReadFile through the link: %q, %v; the attack is broken", b, err)
		}
		lines, err := d.Logs(ctx, name, -1)
		if !errors.Is(err, ErrLink) {
			t.Fatalf("Logs through a link: %q, %v; want ErrLink", lines, err)
		}
		if strings.Contains(strings.Join(lines, "\n")+err.Error(), content) {
			t.Fatalf("Logs returned the foreign file: %q, %v", lines, err)
		}
		t.Logf("Logs: %v", err)
		st, err := d.Status(ctx, name)
		if err != nil || strings.Contains(st.Message, content) {
			t.Fatalf("Status = %+v, %v", st, err)
		}
		os.Remove(link.at)
		if link.to != secret {
			os.Remove(link.to)
		}
	}
	// A FIFO does not hang Logs.
	if err := syscall.Mkfifo(p.log, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Logs(ctx, name, 10); err == nil {
		t.Fatal("Logs of a FIFO succeeded")
	}
	os.Remove(p.log)

	// The next start puts a regular log back.
	killServer(t, d, name)
	if err := waitFor(ctx, readyTimeout, func() bool { st, _ := d.Status(ctx, name); return st.Ready }); err != nil {
		t.Fatal("not restarted")
	}
	if fi, err := os.Lstat(p.log); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("log after restart: %v, %v", fi, err)
	}
	if lines, err := d.Logs(ctx, name, 5); err != nil || len(lines) == 0 {
		t.Fatalf("Logs after restart = %q, %v", lines, err)
	}
}

// TestSecurityMigratesSharedAccountInstance: an instance made by a Toygres
// that ran every server as the postgres account is restarted by Adopt under
// its own account.
func TestSecurityMigratesSharedAccountInstance(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("accounts exist only when Toygres runs as root")
	}
	dir := testDir(t)
	d := newDriver(t, dir)
	ctx := testCtx(t)
	const name = "oldie"
	deploy(t, d, dataplane.Spec{Name: name})
	waitReady(t, d, name)
	p := d.paths(name)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := readMeta(p.meta)
	if err != nil {
		t.Fatal(err)
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := d.run(ctx, d.ownerAccount(p.data), p.dir, filepath.Join(in.binDir, "pg_ctl"), "stop", "-D", p.data, "-m", "fast", "-w"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
	// The old layout: everything the postgres account's, which runs the server.
	legacy, err := lookupAccount(DefaultRunAs)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := int(legacy.cred.Uid), int(legacy.cred.Gid)
	for _, f := range []string{p.dir, p.log, p.run} {
		if err := os.Lchown(f, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := chownTree(p.data, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := d.removeAccount(ctx, p); err != nil {
		t.Fatal(err)
	}
	if out, err := d.run(ctx, legacy, p.dir, filepath.Join(in.binDir, "pg_ctl"), "start", "-D", p.data, "-l", p.log, "-w"); err != nil {
		t.Fatalf("pg_ctl start as %s: %v\n%s", DefaultRunAs, err, out)
	}
	if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pidOf(t, d, name))); !strings.Contains(string(st), fmt.Sprintf("Uid:\t%d\t", uid)) {
		t.Fatalf("the old server does not run as %s", DefaultRunAs)
	}

	d2 := newDriver(t, dir)
	r, err := d2.Adopt(ctx)
	if err != nil || len(r.Problems) != 0 || len(r.Restarted) != 1 {
		t.Fatalf("Adopt = %+v, %v; want %s restarted", r, err, name)
	}
	waitReady(t, d2, name)
	if err := selectOne(ctx, d2, name); err != nil {
		t.Fatal(err)
	}
	a, err := lookupInstanceAccount(AccountName(p.dir))
	if err != nil {
		t.Fatal(err)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pidOf(t, d2, name)))
	if !strings.Contains(string(status), fmt.Sprintf("Uid:\t%d\t", a.cred.Uid)) {
		t.Fatalf("server after migration does not run as %s:\n%s", a.name, status)
	}
	var stray []string
	_ = filepath.WalkDir(p.dir, func(path string, e os.DirEntry, err error) error {
		if err == nil {
			if fi, err := e.Info(); err == nil && fi.Sys().(*syscall.Stat_t).Uid == uint32(uid) {
				stray = append(stray, path)
			}
		}
		return nil
	})
	if len(stray) > 0 {
		t.Fatalf("still owned by %s after migration: %v", DefaultRunAs, stray)
	}
}
