package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

type backupJSON struct {
	ID         string     `json:"id"`
	State      string     `json:"state"`
	Kind       string     `json:"kind"`
	StartWAL   string     `json:"start_wal"`
	FinishedAt *time.Time `json:"finished_at"`
	Error      string     `json:"error"`
}

func (e *e2e) sql(conn string, stmts ...string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			e.t.Fatalf("%s: %v", s, err)
		}
	}
}

// rows returns the values of table t, or an error (no such table).
func (e *e2e) rows(name string) ([]string, error) {
	e.t.Helper()
	conn := e.get(name).ConnectionString
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		e.t.Fatalf("connect to %s: %v", name, err)
	}
	defer c.Close(ctx)
	rs, err := c.Query(ctx, "SELECT v FROM t ORDER BY v")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rs, pgx.RowTo[string])
}

func (e *e2e) backups(name string) []backupJSON {
	e.t.Helper()
	var out struct {
		Backups []backupJSON `json:"backups"`
	}
	if err := json.Unmarshal([]byte(e.ok("backup", "list", name, "-o", "json")), &out); err != nil {
		e.t.Fatal(err)
	}
	return out.Backups
}

func (e *e2e) backupCreate(name string) backupJSON {
	e.t.Helper()
	var b backupJSON
	if err := json.Unmarshal([]byte(e.ok("backup", "create", name, "--wait", "-o", "json")), &b); err != nil {
		e.t.Fatal(err)
	}
	if b.State != "completed" {
		e.t.Fatalf("backup %+v not completed", b)
	}
	return b
}

// TestBackupAndPointInTimeRestoreEndToEnd: rows at T1, a backup, rows at
// T2, the table dropped at T3. Restored to between T2 and T3: T1 and T2
// rows and the table; from the backup alone: T1 only; after the source is
// deleted: still restorable.
func TestBackupAndPointInTimeRestoreEndToEnd(t *testing.T) {
	e := newE2E(t)
	e.startServer()
	e.ok("create", "src", "--password", "src-pw-123", "--wait")
	conn := e.get("src").ConnectionString
	e.sql(conn, "CREATE TABLE t (v text)", "INSERT INTO t VALUES ('t1')")
	b := e.backupCreate("src")
	e.sql(conn, "INSERT INTO t VALUES ('t2')")
	between := time.Now().UTC()
	e.sql(conn, "DROP TABLE t")

	e.ok("restore", "at-t2", "--from", "src", "--at", between.Format(time.RFC3339Nano), "--wait")
	if got, err := e.rows("at-t2"); err != nil || !slices.Equal(got, []string{"t1", "t2"}) {
		t.Fatalf("restored to between T2 and T3: %v, %v; want [t1 t2]", got, err)
	}
	e.ok("restore", "at-backup", "--from", "src", "--backup", b.ID, "--wait")
	if got, err := e.rows("at-backup"); err != nil || !slices.Equal(got, []string{"t1"}) {
		t.Fatalf("restored from the backup alone: %v, %v; want [t1]", got, err)
	}
	// Restored instances back themselves up.
	e.eventually("a scheduled backup of the restored instance", time.Minute, func() bool {
		for _, b := range e.backups("at-t2") {
			if b.Kind == "scheduled" && b.State == "completed" {
				return true
			}
		}
		return false
	})

	e.ok("delete", "src", "--wait")
	// Its password is forgotten with it: the restore names one.
	_, errOut, code := e.run("restore", "after", "--from", "src", "--at", between.Format(time.RFC3339Nano))
	if code == 0 || !strings.Contains(errOut, "password is required") {
		t.Fatalf("restore of a deleted instance without a password: exit %d, %s", code, errOut)
	}
	e.ok("restore", "after", "--from", "src", "--at", between.Format(time.RFC3339Nano), "--password", "after-pw-123", "--wait")
	if got, err := e.rows("after"); err != nil || !slices.Equal(got, []string{"t1", "t2"}) {
		t.Fatalf("restored from the deleted instance: %v, %v; want [t1 t2]", got, err)
	}
	list := e.ok("backup", "list", "src")
	if !strings.Contains(list, b.ID) || !strings.Contains(list, "completed") {
		t.Fatalf("backup list of the deleted instance lacks %s:\n%s", b.ID, list)
	}
	var metrics string
	e.eventually("backup metrics", 30*time.Second, func() bool {
		metrics = scrape(t, e.port)
		return strings.Contains(metrics, "toygres_backup_last_success_age_seconds{instance=\"at-t2\"}") &&
			strings.Contains(metrics, "toygres_wal_archive_pending_segments{instance=\"at-t2\"}")
	})
	for _, m := range []string{"toygres_backup_duration_seconds_bucket", "toygres_backup_size_bytes", "toygres_wal_archive_failures_total", "toygres_wal_archive_lag_seconds"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestBackupAndRestoreSurviveServerKill SIGKILLs the Toygres server while a
// backup copies and while a restore works; after a restart both finish,
// and the interrupted backup is never listed as completed before it is
// whole and verified.
func TestBackupAndRestoreSurviveServerKill(t *testing.T) {
	e := newE2E(t)
	e.startServer()
	e.ok("create", "big", "--password", "big-pw-123", "--wait")
	inst := e.get("big")
	e.sql(inst.ConnectionString, "CREATE TABLE t (v text)", "INSERT INTO t VALUES ('t1')",
		"CREATE TABLE filler AS SELECT g, repeat('x', 400) AS pad FROM generate_series(1, 400000) g")

	var b backupJSON
	if err := json.Unmarshal([]byte(e.ok("backup", "create", "big", "-o", "json")), &b); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(e.dataDir, "backups", inst.InternalName, "base", b.ID+".partial")
	e.eventually("the backup to start copying", time.Minute, func() bool { _, err := os.Stat(partial); return err == nil })
	e.killServer()
	if _, err := os.Stat(filepath.Join(e.dataDir, "backups", inst.InternalName, "base", b.ID)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the backup was complete before the kill (%v); the test needs more data to interrupt it", err)
	}
	e.startServer()
	for _, l := range e.backups("big") {
		if l.ID == b.ID && l.State == "completed" {
			if _, err := os.Stat(filepath.Join(e.dataDir, "backups", inst.InternalName, "base", b.ID, "toygres-backup.json")); err != nil {
				t.Fatalf("backup listed as completed while not whole: %v", err)
			}
		}
	}
	e.eventually("the interrupted backup to complete", 3*time.Minute, func() bool {
		for _, l := range e.backups("big") {
			if l.ID == b.ID {
				if l.State == "failed" {
					t.Fatalf("backup failed after the restart: %s", l.Error)
				}
				return l.State == "completed"
			}
		}
		return false
	})
	if _, err := os.Stat(partial); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("partial backup left: %v", err)
	}

	e.sql(inst.ConnectionString, "INSERT INTO t VALUES ('t2')", "UPDATE filler SET pad = repeat('y', 400)")
	var r instanceJSON
	if err := json.Unmarshal([]byte(e.ok("restore", "copy", "--from", "big", "-o", "json")), &r); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(e.dataDir, "instances", r.InternalName, "instance.json")
	e.eventually("the restore to start", time.Minute, func() bool { _, err := os.Stat(meta); return err == nil })
	e.killServer()
	if m, err := os.ReadFile(meta); err != nil || strings.Contains(string(m), `"promoted": true`) {
		t.Fatalf("the restore had finished before the kill (%v); the test needs more WAL to interrupt it:\n%s", err, m)
	}
	e.startServer()
	e.waitState("copy", "running", 5*time.Minute)
	if got, err := e.rows("copy"); err != nil || !slices.Equal(got, []string{"t1", "t2"}) {
		t.Fatalf("rows of the restore interrupted by a kill: %v, %v; want [t1 t2]", got, err)
	}
}

// killServer SIGKILLs the Toygres server and waits until it is gone.
func (e *e2e) killServer() {
	e.t.Helper()
	pid, err := readPID(e.dataDir)
	if err != nil || pid <= 0 {
		e.t.Fatalf("server pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	if !waitExit(pid, 10*time.Second) {
		e.t.Fatalf("server %d alive after SIGKILL", pid)
	}
}

// TestBackupRetention: with a short retention the janitor removes the
// expired backups and the WAL before the newest, keeps the newest while
// the instance lives, and removes everything once it is deleted.
func TestBackupRetention(t *testing.T) {
	e := newE2E(t)
	e.startServer("--retention-janitor-interval", "1s")
	e.ok("create", "ret", "--password", "ret-pw-123", "--wait")
	inst := e.get("ret")
	e.backupCreate("ret")
	e.sql(inst.ConnectionString, "CREATE TABLE t (v text)", "INSERT INTO t VALUES ('t1')")
	newest := e.backupCreate("ret")
	wal := filepath.Join(e.dataDir, "backups", inst.InternalName, "wal")
	before := 0
	entries, _ := os.ReadDir(wal)
	for _, en := range entries {
		if len(en.Name()) == 24 && en.Name()[8:] < newest.StartWAL[8:] {
			before++
		}
	}
	if before == 0 {
		t.Fatalf("no archived WAL before %s: %v", newest.StartWAL, entries)
	}
	e.ok("backup", "settings", "ret", "--retention", "2s")
	e.eventually("expired backups to go", time.Minute, func() bool {
		list := e.backups("ret")
		return len(list) == 1 && list[0].ID == newest.ID
	})
	e.eventually("expired WAL to go", 30*time.Second, func() bool {
		entries, _ := os.ReadDir(wal)
		for _, en := range entries {
			if len(en.Name()) == 24 && en.Name()[8:] < newest.StartWAL[8:] {
				return false
			}
		}
		return true
	})
	if _, err := os.Stat(filepath.Join(e.dataDir, "backups", inst.InternalName, "base", newest.ID, "toygres-backup.json")); err != nil {
		t.Fatalf("the newest backup was removed: %v", err)
	}
	if got := e.backups("ret"); len(got) != 1 || got[0].State != "completed" {
		t.Fatalf("backups kept: %+v", got)
	}
	e.ok("delete", "ret", "--wait")
	e.eventually("the deleted instance's backups to expire", time.Minute, func() bool {
		_, err := os.Stat(filepath.Join(e.dataDir, "backups", inst.InternalName))
		return errors.Is(err, fs.ErrNotExist) && len(e.backups("ret")) == 0
	})
}

// scrape reads /metrics (open to loopback clients).
func scrape(t *testing.T, port int) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
