package cms

import (
	"errors"
	"testing"
	"time"
)

func testBackups(t *testing.T, newDB factory) {
	s := newStore(t, newDB)
	ctx := ctxT(t)
	if _, err := s.GetBackup(ctx, "nope"); !errors.Is(err, ErrBackupNotFound) {
		t.Fatalf("unknown backup: %v", err)
	}
	b, err := s.CreateBackup(ctx, Backup{ID: "b1", InternalName: "db-1", InstanceName: "db", Kind: BackupScheduled, OrchestrationID: "o1"})
	if err != nil || b.State != BackupRunning || b.Kind != BackupScheduled || b.CreatedAt.IsZero() {
		t.Fatalf("CreateBackup = %+v, %v", b, err)
	}
	if again, err := s.CreateBackup(ctx, Backup{ID: "b1", InternalName: "db-1", InstanceName: "db"}); err != nil || again.Kind != BackupScheduled {
		t.Fatalf("CreateBackup again = %+v, %v; want the stored record", again, err)
	}
	start := time.Now().UTC().Truncate(time.Millisecond)
	r := BackupResult{StartedAt: start, FinishedAt: start.Add(1500 * time.Millisecond), SizeBytes: 42, StartWAL: "000000010000000000000002", Timeline: 1, PostgresVersion: "15"}
	done, err := s.CompleteBackup(ctx, "b1", r)
	if err != nil || done.State != BackupCompleted || done.Duration != 1500*time.Millisecond || done.SizeBytes != 42 || !done.FinishedAt.Equal(r.FinishedAt) || done.StartWAL != r.StartWAL {
		t.Fatalf("CompleteBackup = %+v, %v", done, err)
	}
	if _, err := s.CompleteBackup(ctx, "b1", r); err != nil {
		t.Fatalf("CompleteBackup again: %v", err)
	}
	// A completed backup is never failed.
	if err := s.FailBackup(ctx, "b1", "late"); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.GetBackup(ctx, "b1"); b.State != BackupCompleted {
		t.Fatalf("a completed backup was failed: %+v", b)
	}
	if _, err := s.CreateBackup(ctx, Backup{ID: "b2", InternalName: "db-1", InstanceName: "db"}); err != nil {
		t.Fatal(err)
	}
	if err := s.FailBackup(ctx, "b2", "disk full"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CompleteBackup(ctx, "b2", r); err == nil {
		t.Fatal("a failed backup was completed")
	}
	if _, err := s.CreateBackup(ctx, Backup{ID: "c1", InternalName: "other-1", InstanceName: "other"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListBackups(ctx, BackupFilter{InstanceName: "db"})
	if err != nil || len(list) != 2 || list[0].ID != "b2" || list[1].ID != "b1" {
		t.Fatalf("ListBackups = %+v, %v", list, err)
	}
	list, err = s.ListBackups(ctx, BackupFilter{InternalName: "db-1", States: []BackupState{BackupCompleted}})
	if err != nil || len(list) != 1 || list[0].ID != "b1" {
		t.Fatalf("ListBackups completed = %+v, %v", list, err)
	}
	if err := s.MarkBackupDeleted(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.ListBackups(ctx, BackupFilter{InternalName: "db-1"}); len(list) != 1 {
		t.Fatalf("deleted backup listed: %+v", list)
	}
	if b, _ := s.GetBackup(ctx, "b1"); b.State != BackupDeleted || b.DeletedAt.IsZero() {
		t.Fatalf("deleted backup: %+v", b)
	}

	if bs, err := s.BackupSettings(ctx, "db-1"); err != nil || bs != DefaultBackupSettings {
		t.Fatalf("default settings = %+v, %v", bs, err)
	}
	want := BackupSettings{Enabled: false, Interval: time.Hour, Retention: 2 * time.Hour}
	if err := s.SetBackupSettings(ctx, "db-1", want); err != nil {
		t.Fatal(err)
	}
	if bs, err := s.BackupSettings(ctx, "db-1"); err != nil || bs != want {
		t.Fatalf("settings = %+v, %v; want %+v", bs, err, want)
	}
	if err := s.SetBackupSettings(ctx, "db-1", BackupSettings{}); err == nil {
		t.Fatal("zero settings accepted")
	}
}
