package local

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Tenant isolation.
//
// Three layers keep the owner of one instance away from the others and from
// the machine (see doc.go, "Tenant isolation"):
//
//  1. Roles: the user's role (User) is no superuser. The superuser
//     (AdminUser) has no password and logs in only over the instance's
//     private Unix socket, by peer authentication, mapped from the account
//     Toygres runs as.
//  2. Accounts: every instance's server runs under an account of its own
//     (accountPrefix + a hash), with no supplementary groups, in directories
//     only that account may enter.
//  3. Files: Toygres (root) reads nothing in an instance directory through
//     a link the instance controls (openBeneath).

// accountPrefix starts the name of every per-instance OS account.
const accountPrefix = "tg-"

// account is the OS account a server runs as. A nil *account is the
// account Toygres runs as (not root).
type account struct {
	name string
	cred *syscall.Credential
}

func (a *account) credential() *syscall.Credential {
	if a == nil {
		return nil
	}
	return a.cred
}

// AccountName is the OS account the server of the instance in instanceDir
// (<Options.Dir>/<name>, absolute) runs as when the driver runs as root:
// "tg-" and 12 hex digits of a hash of the directory, so that two Toygres
// data directories on one machine (or two tests) never share an account.
// It is derived, never read from a file an instance could change.
func AccountName(instanceDir string) string {
	sum := sha256.Sum256([]byte(instanceDir))
	return accountPrefix + hex.EncodeToString(sum[:6])
}

// accountsMu serializes this process's changes of /etc/passwd (useradd and
// userdel lock it and fail rather than wait when it is taken).
var accountsMu sync.Mutex

// lookupInstanceAccount returns the credential of an existing per-instance
// account, with no supplementary groups, or fs.ErrNotExist.
func lookupInstanceAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fs.ErrNotExist
		}
		return nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("account %s: bad uid/gid %q/%q", name, u.Uid, u.Gid)
	}
	if uid == 0 || gid == 0 {
		return nil, fmt.Errorf("account %s has uid %d, gid %d; refusing to run a server as root or in root's group", name, uid, gid)
	}
	// Groups set to an empty list (not nil, NoSetGroups false): the server
	// keeps no supplementary group, such as ssl-cert.
	return &account{name: name, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}, nil
}

// ensureAccount returns the instance's account, creating it (with a group
// of its own, no home, no login shell) if it does not exist yet.
func (d *Driver) ensureAccount(ctx context.Context, p paths) (*account, error) {
	if d.cred == nil {
		return nil, nil // not root
	}
	if d.shared != nil {
		return d.shared, nil
	}
	name := AccountName(p.inst)
	if a, err := lookupInstanceAccount(name); err == nil {
		return a, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	args := []string{"--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
		"--comment", "Toygres instance " + p.name}
	if _, err := user.LookupGroup(name); err == nil {
		args = append(args, "--gid", name) // left by an interrupted userdel
	} else {
		args = append(args, "--user-group")
	}
	args = append(args, name)
	// 9: the name is taken (another process made it meanwhile).
	if err := d.accountTool(ctx, "useradd", args, 9); err != nil {
		return nil, fmt.Errorf("create account %s for instance %s: %w", name, p.name, err)
	}
	a, err := lookupInstanceAccount(name)
	if err != nil {
		return nil, fmt.Errorf("create account %s: %w", name, err)
	}
	d.log.Info("created instance account", "instance", p.name, "account", name, "uid", a.cred.Uid)
	return a, nil
}

// removeAccount kills every process of the instance's account (nothing
// else runs as it) and removes the account and its group. Accounts Toygres
// did not create for the instance are left alone.
func (d *Driver) removeAccount(ctx context.Context, p paths) error {
	if d.cred == nil || d.shared != nil {
		return nil
	}
	name := AccountName(p.inst)
	a, err := lookupInstanceAccount(name)
	if errors.Is(err, fs.ErrNotExist) {
		if _, gerr := user.LookupGroup(name); gerr == nil {
			return d.accountTool(ctx, "groupdel", []string{name}, 6)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if err := killUID(ctx, a.cred.Uid); err != nil {
		return err
	}
	// 6: no such user. The user's own group goes with it (USERGROUPS_ENAB).
	if err := d.accountTool(ctx, "userdel", []string{name}, 6); err != nil {
		return fmt.Errorf("remove account %s of instance %s: %w", name, p.name, err)
	}
	if _, err := user.LookupGroup(name); err == nil {
		if err := d.accountTool(ctx, "groupdel", []string{name}, 6); err != nil {
			return fmt.Errorf("remove group %s of instance %s: %w", name, p.name, err)
		}
	}
	d.log.Info("removed instance account", "instance", p.name, "account", name)
	return nil
}

// accountTool runs useradd, userdel or groupdel, retrying while another
// process holds the lock of /etc/passwd (exit status 1 or 10); exit status
// ok counts as success.
func (d *Driver) accountTool(ctx context.Context, tool string, args []string, ok int) error {
	accountsMu.Lock()
	defer accountsMu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
		var ee *exec.ExitError
		if err == nil || errors.As(err, &ee) && ee.ExitCode() == ok {
			return nil
		}
		if errors.As(err, &ee) && (ee.ExitCode() == 1 || ee.ExitCode() == 10) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(delay):
			}
			continue
		}
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("%s: %w (install it with: apt-get install -y passwd)", tool, err)
		}
		return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// killUID SIGKILLs every process whose real or effective uid is uid and
// waits for them to go. Only for per-instance accounts: nothing else runs
// as them.
func killUID(ctx context.Context, uid uint32) error {
	pids := processesOf(uid)
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := waitFor(ctx, 10*time.Second, func() bool { return len(processesOf(uid)) == 0 }); err != nil {
		return fmt.Errorf("processes %v of uid %d alive after SIGKILL: %w", processesOf(uid), uid, err)
	}
	return nil
}

// processesOf lists the live processes whose real or effective uid is uid.
func processesOf(uid uint32) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := strconv.FormatUint(uint64(uid), 10)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
				fields := strings.Fields(rest)
				if len(fields) >= 2 && (fields[0] == want || fields[1] == want) && processAlive(pid) {
					pids = append(pids, pid)
				}
				break
			}
		}
		f.Close()
	}
	return pids
}

// ownerAccount is the account owning path (a data directory): pg_ctl stop
// runs as it, whoever created the instance. It returns nil when not root or
// when root owns path.
func (d *Driver) ownerAccount(path string) *account {
	if d.cred == nil {
		return nil
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	name := "uid-" + strconv.FormatUint(uint64(st.Uid), 10)
	if u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10)); err == nil {
		name = u.Username
	}
	return &account{name: name, cred: &syscall.Credential{Uid: st.Uid, Gid: st.Gid, Groups: []uint32{}}}
}

// ensureLayout makes the instance directory what this driver expects
// before a server starts, whatever an interrupted step or an older Toygres
// left (an instance made before per-instance accounts is migrated here):
//
//	<dir>/            root, 0711: the account may pass, not change or list it
//	<dir>/data/       the account, 0700 (chowned recursively if another owns it)
//	<dir>/run/        the account, 0700: the private Unix socket directory
//	<dir>/postgres.log  the account, 0600, a regular file
//
// Not running as root, everything is the current user's. Every step checks
// the state and is safe to repeat. The server must not be running.
func (d *Driver) ensureLayout(ctx context.Context, p paths) (*account, error) {
	acct, err := d.ensureAccount(ctx, p)
	if err != nil {
		return nil, err
	}
	dirMode := os.FileMode(0o700)
	if d.cred != nil {
		dirMode = 0o711
		if err := os.Lchown(p.dir, 0, 0); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(p.dir, dirMode); err != nil {
		return nil, err
	}
	if err := ensureOwnedDir(p.run, acct); err != nil {
		return nil, err
	}
	if err := ensureOwnedFile(p.log, acct); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(p.data); err == nil && acct != nil {
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s is not a directory", p.data)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != acct.cred.Uid || st.Gid != acct.cred.Gid {
			d.log.Warn("giving the data directory to the instance's own account", "instance", p.name, "account", acct.name, "old_uid", st.Uid)
			if err := chownTree(p.data, int(acct.cred.Uid), int(acct.cred.Gid)); err != nil {
				return nil, fmt.Errorf("chown %s to %s: %w", p.data, acct.name, err)
			}
		}
	}
	return acct, nil
}

// needsMigration reports whether a server must be stopped so that
// ensureLayout can give its files to the instance's own account.
func (d *Driver) needsMigration(p paths) bool {
	if d.cred == nil || d.shared != nil {
		return false
	}
	fi, err := os.Lstat(p.data)
	if err != nil {
		return false
	}
	a, err := lookupInstanceAccount(AccountName(p.inst))
	return err != nil || fi.Sys().(*syscall.Stat_t).Uid != a.cred.Uid
}

// ensureOwnedDir makes path a real directory of acct with mode 0700,
// replacing whatever else is there (a symbolic link, a file).
func ensureOwnedDir(path string, acct *account) error {
	fi, err := os.Lstat(path)
	if err == nil && !fi.IsDir() {
		if err := os.Remove(path); err != nil {
			return err
		}
		err = fs.ErrNotExist
	}
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(path, 0o700); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if acct != nil {
		if err := os.Lchown(path, int(acct.cred.Uid), int(acct.cred.Gid)); err != nil {
			return err
		}
	}
	return os.Chmod(path, 0o700)
}

// ensureOwnedFile makes path a regular file of acct with mode 0600 (created
// empty if missing), replacing a link or anything else.
func ensureOwnedFile(path string, acct *account) error {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		if err := os.RemoveAll(path); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if acct != nil {
		if err := f.Chown(int(acct.cred.Uid), int(acct.cred.Gid)); err != nil {
			return err
		}
	}
	return f.Chmod(0o600)
}

// chownTree gives a directory tree to uid:gid without following any
// symbolic link, even one swapped in while it works (every directory is
// opened relative to its parent with O_NOFOLLOW). The top directory is
// changed last, so an interrupted run is redone by the next.
func chownTree(root string, uid, gid int) error {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", root, err)
	}
	if err := chownBelow(fd, root, uid, gid); err != nil {
		unix.Close(fd)
		return err
	}
	err = unix.Fchown(fd, uid, gid)
	unix.Close(fd)
	return err
}

func chownBelow(dirfd int, path string, uid, gid int) error {
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return err
	}
	dir := os.NewFile(uintptr(dup), path)
	entries, err := dir.ReadDir(-1)
	dir.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			fd, err := unix.Openat(dirfd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == nil {
				err = chownBelow(fd, filepath.Join(path, e.Name()), uid, gid)
				unix.Close(fd)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
				return err
			}
		}
		if err := unix.Fchownat(dirfd, e.Name(), uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("chown %s: %w", filepath.Join(path, e.Name()), err)
		}
	}
	return nil
}

// ErrLink is returned (wrapped) when a file Toygres reads in an instance
// directory is, or is reached through, a symbolic link.
var ErrLink = errors.New("symbolic link in an instance directory")

// openBeneath opens the file rel (a relative path) of the instance
// directory dir for reading without following any symbolic link, "..",
// or mount crossing (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), and
// only if it is a regular file: Toygres runs as root and an instance's
// account can put links (or a FIFO) in the directories it owns.
func openBeneath(dir, rel string) (*os.File, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, linkErr(&fs.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(dfd)
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := unix.Openat2(dfd, rel, &how)
	if errors.Is(err, unix.ENOSYS) {
		fd, err = openNoFollow(dfd, rel) // kernels before 5.6
	}
	path := filepath.Join(dir, rel)
	if err != nil {
		return nil, linkErr(&fs.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: not a regular file (%v)", path, fi.Mode().Type())
	}
	return f, nil
}

// openNoFollow opens rel below dfd one component at a time, each with
// O_NOFOLLOW.
func openNoFollow(dfd int, rel string) (int, error) {
	parts := strings.Split(filepath.Clean(rel), "/")
	cur := dfd
	for i, part := range parts {
		if part == ".." || part == "" || part == "." {
			return -1, unix.EXDEV
		}
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i < len(parts)-1 {
			flags |= unix.O_DIRECTORY
		} else {
			flags |= unix.O_NONBLOCK
		}
		fd, err := unix.Openat(cur, part, flags, 0)
		if cur != dfd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

// linkErr marks the errors of a link met on the way (ELOOP: the last
// component is a link and O_NOFOLLOW; EXDEV: openat2 refused to resolve
// one; ENOTDIR: a link to a file in the middle) as ErrLink.
func linkErr(err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%w: %w", ErrLink, err)
	}
	return err
}

// readBeneath reads the file rel of dir as openBeneath opens it.
func readBeneath(dir, rel string, limit int64) ([]byte, error) {
	f, err := openBeneath(dir, rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", f.Name(), fi.Size(), limit)
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if err != nil && n < len(b) {
		return nil, err
	}
	return b[:n], nil
}

// checkTraversable fails when a per-instance account (no group in common
// with anything) cannot search every directory on the way to dir, judging
// by the "other" search bit. Missing directories pass: New creates them
// traversable (0711).
func checkTraversable(dir string) error {
	var chain []string
	for p := dir; ; p = filepath.Dir(p) {
		chain = append(chain, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		p := chain[i]
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("local: instance directory %s: %w", dir, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("local: running as root, so every instance's server runs as an unprivileged account of its own, which cannot enter %s (mode %v) on the way to the instance directory %s; use a directory others may traverse (mode 0711 is enough), such as %s/instances (the default for root)",
				p, fi.Mode().Perm(), dir, RootDataDir)
		}
	}
	return nil
}

// scramVerifier returns the SCRAM-SHA-256 secret PostgreSQL stores for
// password (as its CREATE ROLE … PASSWORD accepts it pre-hashed), so that
// the plain password never reaches the server. PostgreSQL SASLprep-
// normalizes passwords; for ASCII passwords that changes nothing, so
// callers use this for ASCII passwords only.
func scramVerifier(password string) (string, error) {
	const iterations = 4096
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(server)), nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// sqlString quotes s as an SQL string literal (standard_conforming_strings).
func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// roleSetup is the SQL that makes the user's role in a fresh cluster whose
// bootstrap superuser is AdminUser: a powerful role that is no superuser
// (the way RDS's rds_superuser is): it owns the maintenance database, may
// create databases and roles, sees the statistics (pg_monitor) and may
// cancel or end other non-superuser sessions (pg_signal_backend). It is in
// none of the roles that reach the server's files or run programs
// (pg_read_server_files, pg_write_server_files, pg_execute_server_program).
// secret is the password, or its SCRAM verifier.
func roleSetup(secret string) string {
	stmts := []string{
		"CREATE ROLE " + User + " LOGIN CREATEDB CREATEROLE PASSWORD " + sqlString(secret),
		"GRANT pg_monitor, pg_signal_backend TO " + User,
		"ALTER DATABASE " + Database + " OWNER TO " + User,
		"COMMENT ON ROLE " + AdminUser + " IS " + sqlString("Toygres' own superuser: no password, private Unix socket only"),
	}
	// postgres --single -j: a statement ends with a semicolon and an empty line.
	return strings.Join(stmts, ";\n\n") + ";\n\n"
}

// setupRoles runs roleSetup in single-user mode on the fresh cluster in
// data (no server runs on it, nothing listens), as the instance's account.
// exit_on_error makes any failing statement fail the run. The output is
// never shown with the password in it.
func (d *Driver) setupRoles(ctx context.Context, acct *account, p paths, in install, data, password string) error {
	secret := password
	if isASCII(password) {
		v, err := scramVerifier(password)
		if err != nil {
			return err
		}
		secret = v
	}
	out, err := d.runInput(ctx, acct, p.dir, roleSetup(secret), filepath.Join(in.binDir, "postgres"),
		"--single", "-j", "-D", data, "-c", "exit_on_error=on", "-c", "log_min_messages=warning", Database)
	if err != nil {
		out = strings.ReplaceAll(out, sqlString(secret), "'***'")
		out = strings.ReplaceAll(out, secret, "***")
		return fmt.Errorf("set up roles: %w\n%s", err, out)
	}
	return nil
}

// hbaFor is pg_hba.conf of an instance: the admin only over the private
// Unix socket by peer authentication (mapped from Toygres' own account by
// pg_ident.conf), never over TCP; ReplicationUser likewise (mapped from the
// instance's own account, which runs its standbys); every other role by
// SCRAM password.
func hbaFor() string {
	return `# Generated by Toygres; do not edit.
# TYPE  DATABASE     USER           ADDRESS     METHOD
local   all          ` + AdminUser + `                  peer map=toygres
host    all          ` + AdminUser + `  all         reject
local   replication  ` + AdminUser + `                  peer map=toygres
host    replication  ` + AdminUser + `  all         reject
local   all          ` + ReplicationUser + `            peer map=toygres
host    all          ` + ReplicationUser + `  all       reject
local   replication  ` + ReplicationUser + `            peer map=toygres
host    replication  ` + ReplicationUser + `  all       reject
local   all          all                        scram-sha-256
host    all          all            0.0.0.0/0   scram-sha-256
host    all          all            ::/0        scram-sha-256
local   replication  all                        scram-sha-256
host    replication  all            0.0.0.0/0   scram-sha-256
host    replication  all            ::/0        scram-sha-256
`
}

// identFor is pg_ident.conf: the OS account Toygres runs as may log in as
// the admin, and the instance's account (acct, nil when not root: then
// Toygres' own) as ReplicationUser, over the private socket only (see
// hbaFor).
func identFor(acct *account) string {
	self := "root"
	if u, err := user.Current(); err == nil {
		self = u.Username
	}
	repl := self
	if acct != nil {
		repl = acct.name
	}
	return "# Generated by Toygres; do not edit.\n# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\ntoygres    " + self + "  " + AdminUser + "\ntoygres    " + repl + "  " + ReplicationUser + "\n"
}
