package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toygres/toygres/internal/dataplane"
)

// rowsOf returns the values of table t of an instance, or nil and an error.
func rowsOf(t *testing.T, d *Driver, name string) ([]string, error) {
	t.Helper()
	ctx := testCtx(t)
	conn, err := connect(ctx, d, name, testPassword)
	if err != nil {
		t.Fatalf("connect to %s: %v", name, err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT v FROM t ORDER BY v")
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func restore(t *testing.T, d *Driver, name string, from dataplane.RestoreSource) {
	t.Helper()
	cleanupInstance(t, d, name)
	if err := d.Restore(testCtx(t), dataplane.Spec{Name: name}, testPassword, from); err != nil {
		t.Fatalf("Restore %s: %v", name, err)
	}
	waitReady(t, d, name)
}

// TestBackupAndPointInTimeRestore: rows at T1, a base backup, rows at T2,
// the table dropped at T3; a restore to a moment between T2 and T3 has
// the T1 and T2 rows, one from the backup alone T1 only; the source
// deleted, its backups and archive still restore it.
func TestBackupAndPointInTimeRestore(t *testing.T) {
	d := newDriver(t, testDir(t))
	deploy(t, d, dataplane.Spec{Name: "src"})
	waitReady(t, d, "src")
	conn := userConn(t, d, "src")
	mustExec(t, conn, "CREATE TABLE t (v text)")
	mustExec(t, conn, "INSERT INTO t VALUES ('t1')")

	info, err := d.Backup(testCtx(t), "src", "b1")
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if info.SizeBytes <= 0 || info.StartWAL == "" || info.Timeline != 1 || !info.FinishedAt.After(info.StartedAt) {
		t.Fatalf("backup info %+v", info)
	}
	again, err := d.Backup(testCtx(t), "src", "b1")
	if err != nil || again != info {
		t.Fatalf("Backup again: %+v, %v; want the same backup %+v", again, err, info)
	}
	mustExec(t, conn, "INSERT INTO t VALUES ('t2')")
	between := time.Now()
	mustExec(t, conn, "DROP TABLE t")

	// The archive is the instance's account's alone; the backups root's.
	p := d.paths("src")
	if os.Geteuid() == 0 {
		acct, err := lookupInstanceAccount(AccountName(p.dir))
		if err != nil {
			t.Fatal(err)
		}
		assertOwner(t, p.wal(), acct.cred.Uid, 0o700)
		assertOwner(t, p.base(), 0, 0o700)
		assertOwner(t, p.backup, 0, 0o711)
	}

	restore(t, d, "at-t2", dataplane.RestoreSource{Instance: "src", BackupID: "b1", Target: between})
	if got, err := rowsOf(t, d, "at-t2"); err != nil || !slices.Equal(got, []string{"t1", "t2"}) {
		t.Fatalf("restored to between T2 and T3: rows %v, %v; want [t1 t2]", got, err)
	}
	restore(t, d, "at-b1", dataplane.RestoreSource{Instance: "src", BackupID: "b1", Immediate: true})
	if got, err := rowsOf(t, d, "at-b1"); err != nil || !slices.Equal(got, []string{"t1"}) {
		t.Fatalf("restored from the backup alone: rows %v, %v; want [t1]", got, err)
	}
	// The restored instance runs as its own account and archives on its own.
	if os.Geteuid() == 0 {
		acct, err := lookupInstanceAccount(AccountName(d.paths("at-t2").dir))
		if err != nil {
			t.Fatal(err)
		}
		assertOwner(t, d.paths("at-t2").data, acct.cred.Uid, 0o700)
	}
	if err := d.FlushArchive(testCtx(t), "at-t2"); err != nil {
		t.Fatalf("FlushArchive of the restored instance: %v", err)
	}
	st, err := d.ArchiveStatus(testCtx(t), "at-t2")
	if err != nil || st.ArchivedCount == 0 || st.FailedCount != 0 {
		t.Fatalf("archive status of the restored instance: %+v, %v", st, err)
	}

	// Restored to "now" on an idle source: the archive holds no commit
	// after the target, so recovery runs to its end (PostgreSQL alone
	// would stop with "recovery ended before configured recovery target
	// was reached"): the table is dropped, as it is now.
	if err := d.FlushArchive(testCtx(t), "src"); err != nil {
		t.Fatalf("FlushArchive: %v", err)
	}
	restore(t, d, "to-now", dataplane.RestoreSource{Instance: "src", BackupID: "b1", Target: time.Now()})
	if got, err := rowsOf(t, d, "to-now"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("restored to now: rows %v, %v; want the table dropped", got, err)
	}

	if err := d.Delete(testCtx(t), "src"); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		assertOwner(t, p.wal(), 0, 0o700)
	}
	restore(t, d, "after-delete", dataplane.RestoreSource{Instance: "src", BackupID: "b1", Target: between})
	if got, err := rowsOf(t, d, "after-delete"); err != nil || !slices.Equal(got, []string{"t1", "t2"}) {
		t.Fatalf("restored from a deleted instance: rows %v, %v; want [t1 t2]", got, err)
	}

	// A target before the backup finished is refused.
	err = d.Restore(testCtx(t), dataplane.Spec{Name: "too-early"}, testPassword,
		dataplane.RestoreSource{Instance: "src", BackupID: "b1", Target: info.StartedAt})
	if !errors.Is(err, dataplane.ErrRestoreTarget) {
		t.Fatalf("restore to before the backup: %v, want ErrRestoreTarget", err)
	}

	list, err := d.ListBackups(testCtx(t), "src")
	if err != nil || len(list) != 1 || list[0].ID != "b1" {
		t.Fatalf("ListBackups: %+v, %v", list, err)
	}
	// Pruning keeps the segments from the backup's start on.
	entries, _ := os.ReadDir(p.wal())
	if _, err := d.PruneWAL(testCtx(t), "src", info.StartWAL); err != nil {
		t.Fatal(err)
	}
	left, _ := os.ReadDir(p.wal())
	for _, e := range left {
		if k, ok := walKey(e.Name()); ok && k < info.StartWAL[8:] {
			t.Errorf("segment %s before %s kept", e.Name(), info.StartWAL)
		}
	}
	t.Logf("archive: %d files, %d after pruning", len(entries), len(left))
	if err := d.DeleteBackup(testCtx(t), "src", "b1"); err != nil {
		t.Fatal(err)
	}
	if list, _ := d.ListBackups(testCtx(t), "src"); len(list) != 0 {
		t.Fatalf("backup listed after DeleteBackup: %+v", list)
	}
	if err := d.DeleteBackups(testCtx(t), "src"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p.backup); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backup directory left after DeleteBackups: %v", err)
	}
}

func assertOwner(t *testing.T, path string, uid uint32, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || fi.Mode().Perm() != mode {
		t.Fatalf("%s: uid %d mode %v, want uid %d mode %v", filepath.Base(path), st.Uid, fi.Mode().Perm(), uid, mode)
	}
}
