package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestBackupEndpoints drives every backup endpoint against a real instance
// (through the OpenAPI validator, like every API test): the first backup
// taken on create, a manual backup, settings, a point-in-time restore into
// a new instance, deleting a backup, and deleting with purge_backups.
func TestBackupEndpoints(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	const pw = "BackupApiSecretPw42"
	name, copyName := uniq("bk"), uniq("bkc")
	waitRunning := func(n string) InstanceDetail {
		t.Helper()
		var d InstanceDetail
		eventually(t, 5*time.Minute, n+" running", func() (bool, string) {
			r := e.do("GET", "/api/instances/"+n, nil, tok)
			expect(t, r, http.StatusOK)
			d = InstanceDetail{}
			r.json(t, &d)
			if d.State == "failed" {
				t.Fatalf("%s failed: %s", n, d.FailureReason)
			}
			return d.State == "running", d.State
		})
		return d
	}
	waitBackup := func(id string) Backup {
		t.Helper()
		var b Backup
		eventually(t, 5*time.Minute, "backup "+id, func() (bool, string) {
			r := e.do("GET", "/api/backups/"+id, nil, tok)
			expect(t, r, http.StatusOK)
			b = Backup{}
			r.json(t, &b)
			return b.State != "running", b.State
		})
		if b.State != "completed" || b.SizeBytes <= 0 || b.FinishedAt == nil {
			t.Fatalf("backup %s: %+v", id, b)
		}
		return b
	}

	expect(t, e.do("POST", "/api/instances", CreateInstanceRequest{Name: name, Password: pw, StorageGB: 1}, tok), http.StatusAccepted)
	src := waitRunning(name)

	// The first backup is taken when the instance is created.
	var ib InstanceBackups
	eventually(t, 5*time.Minute, "the first backup of "+name, func() (bool, string) {
		r := e.do("GET", "/api/instances/"+name+"/backups", nil, tok)
		expect(t, r, http.StatusOK)
		ib = InstanceBackups{}
		r.json(t, &ib)
		return ib.Window.Backups > 0, r.String()
	})
	if ib.Instance != name || !ib.Settings.Enabled || ib.Window.Earliest == nil || ib.Window.Latest == nil {
		t.Fatalf("instance backups: %+v", ib)
	}

	// A manual backup: 202, running, then verified.
	r := e.do("POST", "/api/instances/"+name+"/backups", nil, tok)
	expect(t, r, http.StatusAccepted)
	var b Backup
	r.json(t, &b)
	if b.Instance != name || b.Kind != "manual" || r.header.Get("Location") != "/api/backups/"+b.ID {
		t.Fatalf("create backup: %s", r)
	}
	b = waitBackup(b.ID)
	r = e.do("GET", "/api/backups?instance="+name, nil, tok)
	expect(t, r, http.StatusOK)
	var bl BackupList
	r.json(t, &bl)
	if len(bl.Backups) < 2 || bl.Backups[0].ID != b.ID {
		t.Fatalf("list backups: %s", r)
	}
	expect(t, e.do("GET", "/api/backups", nil, tok), http.StatusOK)
	expect(t, e.do("GET", "/api/backups/no-such-backup", nil, tok), http.StatusNotFound)
	expect(t, e.do("POST", "/api/instances/no-such-instance/backups", nil, tok), http.StatusNotFound)
	expect(t, e.do("GET", "/api/instances/no-such-instance/backups", nil, tok), http.StatusNotFound)

	// Settings: a change, an invalid duration, an unknown instance.
	r = e.do("PUT", "/api/instances/"+name+"/backup-settings", BackupSettingsRequest{Interval: "6h", Retention: "72h"}, tok)
	expect(t, r, http.StatusOK)
	var set BackupSettings
	r.json(t, &set)
	if !set.Enabled || set.Interval != "6h0m0s" || set.Retention != "72h0m0s" {
		t.Fatalf("settings: %s", r)
	}
	expect(t, e.do("PUT", "/api/instances/"+name+"/backup-settings", BackupSettingsRequest{Interval: "often"}, tok), http.StatusBadRequest)
	expect(t, e.do("PUT", "/api/instances/no-such-instance/backup-settings", BackupSettingsRequest{Interval: "6h"}, tok), http.StatusNotFound)

	// Restore: refused outside the window and from an unknown source; a
	// restore as of now makes a running instance.
	before := b.CreatedAt.Add(-24 * time.Hour)
	r = e.do("POST", "/api/restore", RestoreRequest{Name: copyName, From: name, At: &before, Password: pw}, tok)
	expect(t, r, http.StatusBadRequest)
	var er ErrorResponse
	if r.json(t, &er); er.Field != "at" {
		t.Errorf("restore outside the window: field %q, want at", er.Field)
	}
	expect(t, e.do("POST", "/api/restore", RestoreRequest{Name: copyName, From: "no-such-instance", Password: pw}, tok), http.StatusNotFound)
	expect(t, e.do("POST", "/api/restore", RestoreRequest{Name: name, From: name, Password: pw}, tok), http.StatusConflict)
	// (Recovery to a moment stops at the first commit after it, so one
	// follows.)
	sql(t, src.ConnectionString, "CREATE TABLE t (v text)", "INSERT INTO t VALUES ('before')")
	at := time.Now().UTC()
	sql(t, src.ConnectionString, "INSERT INTO t VALUES ('after')")
	r = e.do("POST", "/api/restore", RestoreRequest{Name: copyName, From: name, At: &at, Password: pw, StorageGB: 1, NoBackups: true}, tok)
	expect(t, r, http.StatusAccepted)
	if strings.Contains(string(r.body), pw) || r.header.Get("Location") != "/api/instances/"+copyName {
		t.Fatalf("restore: %s", r)
	}
	d := waitRunning(copyName)
	if n := countRows(t, d.ConnectionString); n != 1 {
		t.Fatalf("restored to between the inserts: %d rows, want 1", n)
	}

	// Deleting a backup: 202, then gone from the list.
	r = e.do("DELETE", "/api/backups/"+b.ID, nil, tok)
	expect(t, r, http.StatusAccepted)
	eventually(t, 2*time.Minute, "backup "+b.ID+" deleted", func() (bool, string) {
		var got Backup
		r := e.do("GET", "/api/backups/"+b.ID, nil, tok)
		if r.status == http.StatusNotFound {
			return true, ""
		}
		r.json(t, &got)
		return got.State == "deleted", got.State
	})

	// The copy goes with its backups, the source keeps them.
	expect(t, e.do("DELETE", "/api/instances/"+copyName+"?purge_backups=true", nil, tok), http.StatusAccepted)
	expect(t, e.do("DELETE", "/api/instances/"+name+"?purge_backups=maybe", nil, tok), http.StatusBadRequest)
	expect(t, e.do("DELETE", "/api/instances/"+name, nil, tok), http.StatusAccepted)
	for _, n := range []string{copyName, name} {
		eventually(t, 3*time.Minute, n+" deleted", func() (bool, string) {
			var d InstanceDetail
			r := e.do("GET", "/api/instances/"+n, nil, tok)
			r.json(t, &d)
			return d.State == "deleted", d.State
		})
	}
	r = e.do("GET", "/api/backups?instance="+name, nil, tok)
	expect(t, r, http.StatusOK)
	bl = BackupList{}
	r.json(t, &bl)
	if len(bl.Backups) == 0 {
		t.Fatalf("the deleted source lost its backups: %s", r)
	}
}

func sql(t *testing.T, conn string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func countRows(t *testing.T, conn string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
