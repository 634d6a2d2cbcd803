package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

	"github.com/toygres/toygres/internal/dataplane"
)

// Backups.
//
// Every instance archives its write-ahead log continuously (archive_mode on,
// archive_command copying each finished segment) and can be backed up with
// pg_basebackup; a restore makes a new instance from a base backup and the
// archive (restore_command, recovery_target_time) and promotes it. All of
// it lives under Options.BackupDir, apart from the instances, so that
// deleting an instance keeps its backups:
//
//	<BackupDir>/                     root, 0711
//	<BackupDir>/<name>/              root, 0711: the account may pass
//	<BackupDir>/<name>/wal/          the instance's account, 0700: its archive,
//	                                 written by its own server only; given to
//	                                 root when the instance is deleted (its uid
//	                                 may be reused)
//	<BackupDir>/<name>/base/         root, 0700
//	<BackupDir>/<name>/base/<id>/    a verified base backup (plain format,
//	                                 backup_manifest, toygres-backup.json)
//	<BackupDir>/<name>/base/<id>.partial/   a backup being taken
//
// So an instance's account writes its own archive and nothing else: it
// cannot read or change another instance's archive or any base backup.
// Base backups are taken by Toygres itself (root): pg_basebackup connects
// as AdminUser over the instance's private socket (a replication
// connection, allowed by pg_hba.conf for peer authentication only) and
// writes into root's directory; pg_verifybackup then checks every file and
// the WAL inside against the backup manifest before the partial directory
// is renamed into place. A restore copies what it needs (the base backup
// and the source's archived WAL) into the new instance's directory as root,
// reading nothing through links, and gives the copies to the new
// instance's account: the new server never reads the source's archive.

const (
	backupInfoFile = "toygres-backup.json"
	manifestFile   = "backup_manifest"
	restoreWALDir  = "restore-wal"
	// archiveTimeout bounds how long a finished transaction may wait in an
	// unfinished WAL segment before the segment is switched and archived.
	archiveTimeout = 60
)

// restoreRecord is the metadata of an instance made by Restore.
type restoreRecord struct {
	From      string    `json:"from"`
	BackupID  string    `json:"backup_id"`
	Target    time.Time `json:"target,omitempty"`
	Immediate bool      `json:"immediate,omitempty"`
	// ToEnd is set when the archive holds no commit after Target (an idle
	// instance restored to "now"): recovery then runs to the end of the
	// archive, which is the data as of Target.
	ToEnd bool `json:"to_end,omitempty"`
	// Promoted is set once recovery ended and the server was promoted.
	Promoted bool `json:"promoted,omitempty"`
}

var backupIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func validBackupID(id string) error {
	if !backupIDRE.MatchString(id) {
		return fmt.Errorf("local: invalid backup id %q: want lower-case letters, digits and hyphens, at most 63 bytes", id)
	}
	return nil
}

var _ dataplane.Backuper = (*Driver)(nil)

// BackupDir returns the directory holding the archives and base backups.
func (d *Driver) BackupDir() string { return d.backupDir }

func (d *Driver) initBackupDir() error {
	if err := os.MkdirAll(d.backupDir, 0o711); err != nil {
		return fmt.Errorf("local: create backup directory: %w", err)
	}
	if d.cred != nil {
		if err := os.Chmod(d.backupDir, 0o711); err != nil {
			return fmt.Errorf("local: backup directory: %w", err)
		}
		if err := checkTraversable(d.backupDir); err != nil {
			return err
		}
	}
	return nil
}

func (p paths) wal() string  { return filepath.Join(p.backup, "wal") }
func (p paths) base() string { return filepath.Join(p.backup, "base") }

// ensureRootDir makes path a real directory of root (of us, not root)
// with mode.
func (d *Driver) ensureRootDir(path string, mode os.FileMode) error {
	fi, err := os.Lstat(path)
	if err == nil && !fi.IsDir() {
		if err := os.Remove(path); err != nil {
			return err
		}
		err = fs.ErrNotExist
	}
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(path, mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	} else if err != nil {
		return err
	}
	if d.cred != nil {
		if err := os.Lchown(path, 0, 0); err != nil {
			return err
		}
	} else {
		mode = 0o700
	}
	return os.Chmod(path, mode)
}

// ensureArchive makes the instance's backup directory and its archive,
// owned by acct (the server's account), before the server starts.
func (d *Driver) ensureArchive(p paths, acct *account) error {
	if err := d.ensureRootDir(p.backup, 0o711); err != nil {
		return fmt.Errorf("backup directory: %w", err)
	}
	if err := ensureOwnedDir(p.wal(), acct); err != nil {
		return fmt.Errorf("WAL archive: %w", err)
	}
	if err := d.ensureRootDir(p.base(), 0o700); err != nil {
		return fmt.Errorf("base backup directory: %w", err)
	}
	return nil
}

// sealArchive gives a deleted instance's archive to root: its account is
// removed and its uid may go to another instance's account later.
func (d *Driver) sealArchive(p paths) error {
	if d.cred == nil {
		return nil
	}
	fi, err := os.Lstat(p.wal())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return os.Remove(p.wal())
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
		if err := chownTree(p.wal(), 0, 0); err != nil {
			return fmt.Errorf("give the WAL archive to root: %w", err)
		}
	}
	return os.Chmod(p.wal(), 0o700)
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// archiveConfig is the archiving (and, while a restore recovers, the
// recovery) part of toygres.conf. A segment is copied under a temporary
// name, compared with the original, synced and renamed, so the archive
// only ever holds whole segments; a segment already archived is accepted
// again only if identical (a server may retry one whose archiving it did
// not see succeed).
func archiveConfig(m *metadata, p paths) string {
	var b strings.Builder
	b.WriteString("archive_mode = on\n")
	if m.NoArchive {
		// Archiving off: segments are released at once. archive_mode
		// stays on so that turning archiving back on needs no restart.
		b.WriteString("archive_command = ':'\n")
	} else {
		w := shellQuote(p.wal())
		cmd := `f=` + w + `/%f; if test -f "$f"; then cmp -s %p "$f"; else cp %p "$f.tmp" && cmp -s %p "$f.tmp" && sync "$f.tmp" && mv "$f.tmp" "$f" && sync ` + w + `; fi`
		fmt.Fprintf(&b, "archive_command = %s\n", confQuote(cmd))
		fmt.Fprintf(&b, "archive_timeout = %d\n", archiveTimeout)
	}
	if r := m.Restore; r != nil && !r.Promoted {
		src := shellQuote(filepath.Join(p.dir, restoreWALDir))
		fmt.Fprintf(&b, "restore_command = %s\n", confQuote(`cp `+src+`/%f %p`))
		switch {
		case r.ToEnd:
		case r.Immediate:
			b.WriteString("recovery_target = 'immediate'\n")
		case !r.Target.IsZero():
			fmt.Fprintf(&b, "recovery_target_time = %s\n", confQuote(r.Target.UTC().Format("2006-01-02 15:04:05.999999+00")))
		}
		b.WriteString("recovery_target_action = 'promote'\n")
	}
	return b.String()
}

// adminConn connects as AdminUser over the private socket of the
// instance's primary.
func (d *Driver) adminConn(ctx context.Context, p paths, m *metadata) (*pgx.Conn, error) {
	pp, prim := d.primaryPaths(p.name, m)
	return d.adminConnTo(ctx, pp, prim.Port)
}

// SetArchiving turns WAL archiving of an instance on or off; a running
// server reloads its configuration.
func (d *Driver) SetArchiving(ctx context.Context, name string, on bool) error {
	p, m, unlock, err := d.lockedMeta(name)
	if err != nil {
		return err
	}
	defer unlock()
	if m.NoArchive == !on {
		return nil
	}
	m.NoArchive = !on
	if err := writeMeta(p.meta, m); err != nil {
		return err
	}
	if !m.Initialized {
		return nil
	}
	return d.reconfigure(ctx, p, m)
}

// reconfigure rewrites toygres.conf and pg_hba.conf of an initialized
// instance and makes a running server reload them.
func (d *Driver) reconfigure(ctx context.Context, p paths, m *metadata) error {
	for _, s := range m.servers() {
		if s.ID == "0" {
			continue
		}
		if err := d.reloadServer(ctx, m, d.serverPaths(p.name, s.ID)); err != nil {
			return fmt.Errorf("local: reload %s: %w", p.name, err)
		}
	}
	p = d.serverPaths(p.name, "0")
	if _, err := os.Lstat(p.data); err != nil {
		return nil // server "0" was removed
	}
	acct := d.ownerAccount(p.data)
	if err := d.writeServerConfig(m, p, p.data, acct); err != nil {
		return err
	}
	if have, err := readBeneath(p.data, "pg_hba.conf", 1<<20); err != nil || string(have) != hbaFor() {
		if err := writeFile(filepath.Join(p.data, "pg_hba.conf"), []byte(hbaFor()), 0o600, chowner(acct)); err != nil {
			return fmt.Errorf("configure: %w", err)
		}
	}
	if !readPostmaster(p.data).running {
		return nil
	}
	if err := d.execOn(ctx, p, m.server("0").Port, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("local: reload %s: %w", p.name, err)
	}
	return nil
}

// Backup takes a base backup of a running instance into
// <BackupDir>/<name>/base/<id>: pg_basebackup (plain format, WAL streamed
// into the backup, fast checkpoint) into <id>.partial, pg_verifybackup,
// the description file, then the rename that makes it count.
func (d *Driver) Backup(ctx context.Context, name, id string) (dataplane.BackupInfo, error) {
	if err := validBackupID(id); err != nil {
		return dataplane.BackupInfo{}, err
	}
	p, err := d.existing(name)
	if err != nil {
		return dataplane.BackupInfo{}, err
	}
	// Backups of one instance one at a time; never under the instance
	// lock, which Deploy and Delete need meanwhile.
	unlock := d.lock("backup/" + name)
	defer unlock()
	done := filepath.Join(p.base(), id)
	if info, err := readBackupInfo(done); err == nil {
		return info, nil
	}
	m, err := readMeta(p.meta)
	if err != nil {
		return dataplane.BackupInfo{}, err
	}
	pp, prim := d.primaryPaths(name, m)
	if !readPostmaster(pp.data).running {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: the server is not running", name)
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: %w", name, err)
	}
	// An instance made by an older Toygres may lack the replication line.
	if err := d.reconfigure(ctx, p, m); err != nil {
		return dataplane.BackupInfo{}, err
	}
	if err := d.ensureRootDir(p.backup, 0o711); err != nil {
		return dataplane.BackupInfo{}, err
	}
	if err := d.ensureRootDir(p.base(), 0o700); err != nil {
		return dataplane.BackupInfo{}, err
	}
	// pg_basebackup or pg_verifybackup of a Toygres process that died
	// meanwhile (they work in the base directory, in a session of their
	// own) must not write on.
	if pids := processesUnder(p.base()); len(pids) > 0 {
		d.log.Warn("killing backup processes left by an interrupted backup", "instance", name, "pids", pids)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := waitFor(ctx, 10*time.Second, func() bool { return len(processesUnder(p.base())) == 0 }); err != nil {
			return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: processes %v still alive: %w", name, processesUnder(p.base()), err)
		}
	}
	// A directory without its description (a crash before or after the
	// rename) or a partial one is redone.
	partial := done + ".partial"
	for _, dir := range []string{partial, done} {
		if err := os.RemoveAll(dir); err != nil {
			return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: clear %s: %w", name, dir, err)
		}
	}
	d.step("backup:cleared")
	started := time.Now().UTC()
	out, err := d.run(ctx, nil, p.base(), filepath.Join(in.binDir, "pg_basebackup"),
		"-h", pp.run, "-p", strconv.Itoa(prim.Port), "-U", AdminUser, "--no-password",
		"-D", partial, "-Fp", "-X", "stream", "-c", "fast", "-l", "toygres "+id)
	if err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: pg_basebackup: %w\n%s", name, err, out)
	}
	finished := time.Now().UTC()
	d.step("backup:copied")
	if out, err := d.run(ctx, nil, p.base(), filepath.Join(in.binDir, "pg_verifybackup"), "-q", partial); err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: pg_verifybackup: %w\n%s", name, err, out)
	}
	label, err := os.ReadFile(filepath.Join(partial, "backup_label"))
	if err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: %w", name, err)
	}
	startWAL, tli, err := parseBackupLabel(label)
	if err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: %w", name, err)
	}
	size, err := treeSize(partial)
	if err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: %w", name, err)
	}
	info := dataplane.BackupInfo{ID: id, Instance: name, StartedAt: started, FinishedAt: finished,
		SizeBytes: size, StartWAL: startWAL, Timeline: tli, PostgresVersion: in.version}
	b, _ := json.MarshalIndent(info, "", "  ")
	if err := writeFile(filepath.Join(partial, backupInfoFile), append(b, '\n'), 0o600, nil); err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: %w", name, err)
	}
	if err := syncTree(partial); err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: %w", name, err)
	}
	d.step("backup:verified")
	if err := os.Rename(partial, done); err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: %w", name, err)
	}
	if err := syncDir(p.base()); err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("local: backup %s: %w", name, err)
	}
	d.log.Info("base backup taken", "instance", name, "backup", id, "size", size, "elapsed", finished.Sub(started))
	return info, nil
}

var (
	labelWALRE = regexp.MustCompile(`START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)`)
	labelTLIRE = regexp.MustCompile(`START TIMELINE: (\d+)`)
)

// parseBackupLabel returns the first WAL segment and the timeline of a base
// backup from its backup_label.
func parseBackupLabel(label []byte) (string, int, error) {
	mw := labelWALRE.FindSubmatch(label)
	mt := labelTLIRE.FindSubmatch(label)
	if mw == nil || mt == nil {
		return "", 0, fmt.Errorf("unexpected backup_label: %q", label)
	}
	tli, _ := strconv.Atoi(string(mt[1]))
	return string(mw[1]), tli, nil
}

func readBackupInfo(dir string) (dataplane.BackupInfo, error) {
	var info dataplane.BackupInfo
	b, err := readBeneath(dir, backupInfoFile, 1<<20)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("%s: %w", filepath.Join(dir, backupInfoFile), err)
	}
	return info, nil
}

// treeSize is the size of the regular files under dir.
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// syncTree makes the files under dir durable (syncfs of its file system).
func syncTree(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// ListBackups lists the complete backups of an instance, oldest first.
func (d *Driver) ListBackups(ctx context.Context, name string) ([]dataplane.BackupInfo, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	p := d.paths(name)
	entries, err := os.ReadDir(p.base())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("local: list backups of %s: %w", name, err)
	}
	var out []dataplane.BackupInfo
	for _, e := range entries {
		if !e.IsDir() || validBackupID(e.Name()) != nil {
			continue
		}
		info, err := readBackupInfo(filepath.Join(p.base(), e.Name()))
		if err != nil {
			continue // half made: not a backup
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FinishedAt.Before(out[j].FinishedAt) })
	return out, nil
}

// DeleteBackup removes a base backup: it is renamed away first, so a crash
// never leaves a half-removed backup that looks complete.
func (d *Driver) DeleteBackup(ctx context.Context, name, id string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := validBackupID(id); err != nil {
		return err
	}
	unlock := d.lock("backup/" + name)
	defer unlock()
	p := d.paths(name)
	dir := filepath.Join(p.base(), id)
	gone := dir + ".deleting"
	if err := os.Rename(dir, gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: delete backup %s of %s: %w", id, name, err)
	}
	for _, x := range []string{gone, dir + ".partial"} {
		if err := os.RemoveAll(x); err != nil {
			return fmt.Errorf("local: delete backup %s of %s: %w", id, name, err)
		}
	}
	return nil
}

// walKey is the position part (log and segment) of a WAL file name, which
// orders segments across timelines; ok is false for other files.
func walKey(file string) (string, bool) {
	if len(file) < 24 {
		return "", false
	}
	for _, c := range file[:24] {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return "", false
		}
	}
	rest := file[24:]
	if rest != "" && rest != ".partial" && !strings.HasPrefix(rest, ".") {
		return "", false
	}
	if strings.HasSuffix(file, ".history") {
		return "", false
	}
	return file[8:24], true
}

// PruneWAL removes archived segments before keepFrom; timeline history
// files stay.
func (d *Driver) PruneWAL(ctx context.Context, name, keepFrom string) (int, error) {
	if err := validName(name); err != nil {
		return 0, err
	}
	keep, ok := walKey(keepFrom)
	if !ok {
		return 0, fmt.Errorf("local: prune WAL of %s: bad segment name %q", name, keepFrom)
	}
	p := d.paths(name)
	entries, err := os.ReadDir(p.wal())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("local: prune WAL of %s: %w", name, err)
	}
	n := 0
	for _, e := range entries {
		k, ok := walKey(e.Name())
		if !ok || k >= keep {
			continue
		}
		if err := os.Remove(filepath.Join(p.wal(), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("local: prune WAL of %s: %w", name, err)
		}
		n++
	}
	if n > 0 {
		d.log.Info("pruned archived WAL", "instance", name, "segments", n, "kept_from", keepFrom)
	}
	return n, nil
}

// DeleteBackups removes an instance's whole backup directory (renamed away
// first, then removed).
func (d *Driver) DeleteBackups(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	unlock := d.lock("backup/" + name)
	defer unlock()
	p := d.paths(name)
	gone := filepath.Join(d.backupDir, "."+name+".deleting")
	if err := os.Rename(p.backup, gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: delete backups of %s: %w", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("local: delete backups of %s: %w", name, err)
	}
	return syncDir(d.backupDir)
}

// FlushArchive switches the server to a new WAL segment and waits until
// the finished one is in the archive.
func (d *Driver) FlushArchive(ctx context.Context, name string) error {
	p, err := d.existing(name)
	if err != nil {
		return err
	}
	m, err := readMeta(p.meta)
	if err != nil {
		return err
	}
	if pp, _ := d.primaryPaths(name, m); m.NoArchive || !readPostmaster(pp.data).running {
		return nil
	}
	conn, err := d.adminConn(ctx, p, m)
	if err != nil {
		return fmt.Errorf("local: flush archive of %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var mode, seg string
	if err := conn.QueryRow(ctx, "SHOW archive_mode").Scan(&mode); err != nil {
		return fmt.Errorf("local: flush archive of %s: %w", name, err)
	}
	if mode == "off" {
		return nil // an instance made before archiving, not restarted since
	}
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg); err != nil {
		return fmt.Errorf("local: flush archive of %s: %w", name, err)
	}
	target := filepath.Join(p.wal(), seg)
	if err := waitFor(ctx, time.Minute, func() bool { _, err := os.Lstat(target); return err == nil }); err != nil {
		st, _ := d.archiveStatus(ctx, conn, m)
		return fmt.Errorf("local: flush archive of %s: segment %s not archived (failures %d, last failed %s): %w", name, seg, st.FailedCount, st.LastFailedWAL, err)
	}
	return nil
}

// ArchiveStatus reads pg_stat_archiver and counts the segments waiting.
func (d *Driver) ArchiveStatus(ctx context.Context, name string) (dataplane.ArchiveStatus, error) {
	p, err := d.existing(name)
	if err != nil {
		return dataplane.ArchiveStatus{}, err
	}
	m, err := readMeta(p.meta)
	if err != nil {
		return dataplane.ArchiveStatus{}, err
	}
	conn, err := d.adminConn(ctx, p, m)
	if err != nil {
		return dataplane.ArchiveStatus{}, fmt.Errorf("local: archive status of %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return d.archiveStatus(ctx, conn, m)
}

func (d *Driver) archiveStatus(ctx context.Context, conn *pgx.Conn, m *metadata) (dataplane.ArchiveStatus, error) {
	st := dataplane.ArchiveStatus{Enabled: !m.NoArchive}
	var lastWAL, failedWAL *string
	var lastAt, failedAt *time.Time
	err := conn.QueryRow(ctx, `SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time,
		(SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')
		FROM pg_stat_archiver`).Scan(&st.ArchivedCount, &lastWAL, &lastAt, &st.FailedCount, &failedWAL, &failedAt, &st.Pending)
	if err != nil {
		return st, fmt.Errorf("local: archive status of %s: %w", m.Name, err)
	}
	if lastWAL != nil {
		st.LastArchivedWAL = *lastWAL
	}
	if lastAt != nil {
		st.LastArchivedTime = lastAt.UTC()
	}
	if failedWAL != nil {
		st.LastFailedWAL = *failedWAL
	}
	if failedAt != nil {
		st.LastFailedTime = failedAt.UTC()
	}
	return st, nil
}

// Restore makes a new instance from a base backup of from.Instance and its
// archive: the backup is verified against its manifest, copied (as a whole
// cluster) into the scratch data directory with recovery.signal and the
// recovery settings, and the archived segments it needs are copied into
// the instance's directory; all of it is given to the new instance's
// account. Then the server starts, recovers to the target, and promotes;
// the user's password is set, the recovery settings dropped, and the
// server put under supervision. Each phase is recorded (Initialized, then
// Restore.Promoted), so an interrupted restore resumes where it was.
func (d *Driver) Restore(ctx context.Context, spec dataplane.Spec, password string, from dataplane.RestoreSource) error {
	if err := validName(spec.Name); err != nil {
		return err
	}
	if err := validName(from.Instance); err != nil {
		return err
	}
	if err := validBackupID(from.BackupID); err != nil {
		return err
	}
	if password == "" || strings.ContainsAny(password, "\r\n\x00") {
		return fmt.Errorf("local: restore %s: the password must be set, without line breaks or NUL", spec.Name)
	}
	src := d.paths(from.Instance)
	bdir := filepath.Join(src.base(), from.BackupID)
	info, err := readBackupInfo(bdir)
	if err != nil {
		return fmt.Errorf("local: restore %s: backup %s of %s: %w (%w)", spec.Name, from.BackupID, from.Instance, dataplane.ErrBackupNotFound, err)
	}
	if !from.Target.IsZero() && from.Target.Before(info.FinishedAt) {
		return fmt.Errorf("local: restore %s: target %s is before backup %s finished (%s): %w", spec.Name,
			from.Target.UTC().Format(time.RFC3339Nano), from.BackupID, info.FinishedAt.Format(time.RFC3339Nano), dataplane.ErrRestoreTarget)
	}
	// The source's latest WAL into the archive, if it still runs.
	if err := d.FlushArchive(ctx, from.Instance); err != nil && !errors.Is(err, dataplane.ErrNotFound) {
		d.log.Warn("could not flush the source's WAL archive; restoring from what is archived", "instance", spec.Name, "from", from.Instance, "err", err)
	}

	unlock := d.lock(spec.Name)
	defer unlock()
	p := d.paths(spec.Name)
	if deleting(p) {
		if err := d.deleteLocked(ctx, p); err != nil {
			return fmt.Errorf("local: restore %s: finish interrupted deletion: %w", spec.Name, err)
		}
	}
	rec := &restoreRecord{From: from.Instance, BackupID: from.BackupID, Target: from.Target.UTC(), Immediate: from.Immediate}
	if from.Target.IsZero() {
		rec.Target = time.Time{}
	}
	m, err := readMeta(p.meta)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		spec.PostgresVersion = info.PostgresVersion
		if m, err = d.create(ctx, spec, p); err != nil {
			return err
		}
		fallthrough
	case err == nil && m.Restore == nil && !m.Initialized:
		m.Restore = rec
		if err := writeMeta(p.meta, m); err != nil {
			return fmt.Errorf("local: restore %s: %w", spec.Name, err)
		}
	case err != nil:
		return err
	case m.Restore == nil || m.Restore.From != rec.From || m.Restore.BackupID != rec.BackupID:
		return fmt.Errorf("local: restore %s: an instance of that name exists and is not this restore", spec.Name)
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		return fmt.Errorf("local: restore %s: %w", spec.Name, err)
	}
	if !m.Initialized {
		if err := d.prepareRestore(ctx, m, p, in, src, bdir, info); err != nil {
			return fmt.Errorf("local: restore %s: %w", spec.Name, err)
		}
	}
	if !m.Restore.Promoted {
		if err := d.recover(ctx, m, p, in); err != nil {
			return fmt.Errorf("local: restore %s: %w", spec.Name, err)
		}
		if err := d.setPassword(ctx, m, p, password); err != nil {
			return fmt.Errorf("local: restore %s: %w", spec.Name, err)
		}
		m.Restore.Promoted = true
		if err := writeMeta(p.meta, m); err != nil {
			return fmt.Errorf("local: restore %s: %w", spec.Name, err)
		}
		d.step("restore:promoted")
		if err := d.reconfigure(ctx, p, m); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(filepath.Join(p.dir, restoreWALDir)); err != nil {
		return fmt.Errorf("local: restore %s: %w", spec.Name, err)
	}
	if _, err := d.start(ctx, m, p, in); err != nil {
		return err
	}
	d.supervise(p)
	d.log.Info("instance restored", "instance", spec.Name, "from", from.Instance, "backup", from.BackupID, "target", from.Target)
	return nil
}

// prepareRestore makes the data directory of a restore: it verifies the
// backup, copies it and the WAL it needs, configures recovery, and marks
// the instance initialized. It starts from scratch each time.
func (d *Driver) prepareRestore(ctx context.Context, m *metadata, p paths, in install, src paths, bdir string, info dataplane.BackupInfo) error {
	if err := d.stop(ctx, p, in.binDir); err != nil {
		return err
	}
	staging := filepath.Join(p.dir, restoreWALDir)
	for _, dir := range []string{p.data, p.initdata, staging} {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	// The manifest first: a damaged backup is refused before it is used.
	if out, err := d.run(ctx, nil, p.dir, filepath.Join(in.binDir, "pg_verifybackup"), "-q", "-i", backupInfoFile, bdir); err != nil {
		return fmt.Errorf("backup %s fails verification: %w\n%s", info.ID, err, out)
	}
	acct, err := d.ensureLayout(ctx, p)
	if err != nil {
		return err
	}
	if err := copyTree(bdir, p.initdata, map[string]bool{backupInfoFile: true, manifestFile: true}); err != nil {
		return fmt.Errorf("copy backup %s: %w", info.ID, err)
	}
	d.step("restore:copied")
	if err := os.Mkdir(staging, 0o700); err != nil {
		return err
	}
	n, err := copyWAL(src.wal(), staging, info.StartWAL)
	if err != nil {
		return fmt.Errorf("copy archived WAL of %s: %w", src.name, err)
	}
	_ = os.Remove(filepath.Join(p.initdata, "standby.signal"))
	if err := os.WriteFile(filepath.Join(p.initdata, "recovery.signal"), nil, 0o600); err != nil {
		return err
	}
	if acct != nil {
		for _, dir := range []string{p.initdata, staging} {
			if err := chownTree(dir, int(acct.cred.Uid), int(acct.cred.Gid)); err != nil {
				return err
			}
		}
	}
	if err := os.Chmod(p.initdata, 0o700); err != nil {
		return err
	}
	if err := d.writeConfig(m, p, p.initdata, acct); err != nil {
		return err
	}
	if err := syncTree(p.initdata); err != nil {
		return err
	}
	d.step("restore:prepared")
	if err := os.Rename(p.initdata, p.data); err != nil {
		return err
	}
	if err := syncDir(p.dir); err != nil {
		return err
	}
	m.Initialized = true
	if err := writeMeta(p.meta, m); err != nil {
		return err
	}
	d.log.Info("restore prepared", "instance", m.Name, "from", src.name, "backup", info.ID, "wal_segments", n)
	return nil
}

// copyTree copies the backup tree src (root's, trusted) to dst, keeping
// modes and links; top-level files named in skip are left out.
func copyTree(src, dst string, skip map[string]bool) error {
	return filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if skip[rel] {
			return nil
		}
		to := filepath.Join(dst, rel)
		fi, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			if err := os.Mkdir(to, 0o700); err != nil && !(rel == "." && errors.Is(err, fs.ErrExist)) {
				return err
			}
			return os.Chmod(to, fi.Mode().Perm())
		case e.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case e.Type().IsRegular():
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			return copyFileFrom(f, to, fi.Mode().Perm())
		}
		return nil
	})
}

func copyFileFrom(r io.Reader, to string, perm os.FileMode) error {
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, bufio.NewReaderSize(r, 1<<20))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyWAL copies the archived segments from startWAL on, and every timeline
// history file, from an archive (which its instance's account may have
// filled with anything) into dst: regular files only, read without
// following links.
func copyWAL(archive, dst, startWAL string) (int, error) {
	entries, err := os.ReadDir(archive)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	start, _ := walKey(startWAL)
	n := 0
	for _, e := range entries {
		name := e.Name()
		k, isSeg := walKey(name)
		history := strings.HasSuffix(name, ".history") && len(name) == 16
		if !(isSeg && len(name) == 24 && k >= start) && !history {
			continue
		}
		f, err := openBeneath(archive, name)
		if err != nil {
			return n, err
		}
		err = copyFileFrom(f, filepath.Join(dst, name), 0o600)
		f.Close()
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// recover starts the restored server and waits until it has recovered to
// its target and promoted. When the archive holds no commit after the
// target time (PostgreSQL stops at the first commit after it, and there is
// none: an idle instance restored to "now"), the end of the archive is the
// data as of the target: recovery runs again to the end of the archive.
func (d *Driver) recover(ctx context.Context, m *metadata, p paths, in install) error {
	for {
		_, err := d.start(ctx, m, p, in)
		if err == nil {
			d.step("restore:started")
			err = d.awaitPromotion(ctx, m, p)
		}
		if err == nil {
			return nil
		}
		if m.Restore.ToEnd || m.Restore.Target.IsZero() || !endedBeforeTarget(p) {
			if target := restoreTargetError(p); target != nil {
				return target
			}
			return err
		}
		d.log.Info("no commit after the restore target in the archive; recovering to the end of the archive",
			"instance", m.Name, "target", m.Restore.Target)
		m.Restore.ToEnd = true
		if err := writeMeta(p.meta, m); err != nil {
			return err
		}
	}
}

// endedBeforeTarget reports whether the server log says recovery used up
// the archive before reaching its target time.
func endedBeforeTarget(p paths) bool {
	for _, line := range tailLinesQuiet(p, 40) {
		if strings.Contains(line, "recovery ended before configured recovery target was reached") {
			return true
		}
	}
	return false
}

// awaitPromotion waits until the recovering server has promoted (or died:
// then the server log says why).
func (d *Driver) awaitPromotion(ctx context.Context, m *metadata, p paths) error {
	var last error
	err := waitFor(ctx, 30*time.Minute, func() bool {
		if !readPostmaster(p.data).running {
			last = errors.New("the server stopped during recovery")
			return true
		}
		conn, err := d.adminConn(ctx, p, m)
		if err != nil {
			last = err
			return false
		}
		defer conn.Close(context.WithoutCancel(ctx))
		var inRecovery bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			last = err
			return false
		}
		last = nil
		if inRecovery {
			last = errors.New("still in recovery")
		}
		return !inRecovery
	})
	if err == nil && last == nil {
		return nil
	}
	if target := restoreTargetError(p); target != nil {
		return target
	}
	if err == nil {
		err = last
	}
	return fmt.Errorf("await promotion: %w (last: %v); server log:\n%s", err, last, strings.Join(tailLinesQuiet(p, 15), "\n"))
}

// restoreTargetError returns ErrRestoreTarget, with the server's words,
// when the server log says recovery cannot reach its target.
func restoreTargetError(p paths) error {
	for _, line := range tailLinesQuiet(p, 40) {
		for _, s := range []string{"recovery ended before configured recovery target was reached", "before consistent recovery point"} {
			if strings.Contains(line, s) {
				return fmt.Errorf("%w: %s", dataplane.ErrRestoreTarget, line)
			}
		}
	}
	return nil
}

// setPassword sets the user's password on a promoted restore.
func (d *Driver) setPassword(ctx context.Context, m *metadata, p paths, password string) error {
	secret := password
	if isASCII(password) {
		v, err := scramVerifier(password)
		if err != nil {
			return err
		}
		secret = v
	}
	conn, err := d.adminConn(ctx, p, m)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "ALTER ROLE "+User+" PASSWORD "+sqlString(secret), pgx.QueryExecModeSimpleProtocol); err != nil {
		var buf bytes.Buffer
		buf.WriteString(strings.ReplaceAll(err.Error(), secret, "***"))
		return fmt.Errorf("set password: %s", buf.String())
	}
	return nil
}
