package orchestrations_test

import (
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/orchestrations"
)

const backupID = "m20250101t000000-1a2b3c4d"

var backupInput = orchestrations.BackupInput{InternalName: "db-1a2b", BackupID: backupID, Kind: cms.BackupManual}

var backupInfo = dataplane.BackupInfo{ID: backupID, Instance: "db-1a2b", SizeBytes: 4 << 20, StartWAL: "000000010000000000000003", Timeline: 1,
	PostgresVersion: "16", StartedAt: duroxidetest.DefaultStart, FinishedAt: duroxidetest.DefaultStart.Add(time.Minute)}

func backupDefaults() map[string]any {
	return map[string]any{
		activities.CreateBackupRecord: backupID,
		activities.TakeBaseBackup:     backupInfo,
		activities.CompleteBackup:     struct{}{},
		activities.FailBackup:         struct{}{},
		activities.DeleteBackup:       struct{}{},
		activities.GetInstance:        running,
		activities.GetBackupSettings:  activities.SettingsOutput{Enabled: true, Interval: 24 * time.Hour, Retention: 7 * 24 * time.Hour},
	}
}

func newBackupEnv(t *testing.T, id string, m mocks) *duroxidetest.Env {
	env := duroxidetest.New(registry(t), duroxidetest.WithInstanceID(id))
	m.apply(env, backupDefaults())
	return env
}

// TestBackupInstance: recorded, taken, then recorded completed with what
// the data plane reported.
func TestBackupInstance(t *testing.T) {
	env := newBackupEnv(t, orchestrations.BackupID(backupID), nil)
	res := run(t, env, orchestrations.BackupInstance, backupInput)
	var out orchestrations.BackupOutput
	if res.Status != duroxide.StatusCompleted || res.Decode(&out) != nil || out.BackupID != backupID || out.SizeBytes != backupInfo.SizeBytes {
		t.Fatalf("status %s, output %s, err %v", res.Status, res.Output, res.Err)
	}
	wantCalls(t, env, "cms-create-backup-record#1", "take-base-backup#1", "cms-complete-backup#1")
	var rec activities.BackupRecordInput
	_ = env.CallsTo(activities.CreateBackupRecord)[0].DecodeInput(&rec)
	if rec.OrchestrationID != orchestrations.BackupID(backupID) || rec.Kind != cms.BackupManual {
		t.Fatalf("record %+v", rec)
	}
	var done activities.CompleteBackupInput
	_ = env.CallsTo(activities.CompleteBackup)[0].DecodeInput(&done)
	if done.ID != backupID || done.Info.SizeBytes != backupInfo.SizeBytes || done.Info.StartWAL != backupInfo.StartWAL {
		t.Fatalf("complete %+v", done)
	}
	if res.CustomStatus != "completed" {
		t.Fatalf("custom status %q", res.CustomStatus)
	}
}

// TestBackupInstanceFailure: a backup that fails every attempt is
// recorded as failed (never completed) and the orchestration fails.
func TestBackupInstanceFailure(t *testing.T) {
	env := newBackupEnv(t, orchestrations.BackupID(backupID), mocks{activities.TakeBaseBackup: fail})
	res := run(t, env, orchestrations.BackupInstance, backupInput)
	wantFailed(t, res, "backup "+backupID+": activity take-base-backup failed after 3 attempt(s): boom")
	if len(env.CallsTo(activities.TakeBaseBackup)) != 3 || len(env.CallsTo(activities.CompleteBackup)) != 0 || len(env.CallsTo(activities.FailBackup)) != 1 {
		t.Fatalf("calls %v", env.CallNames())
	}
}

// TestBackupSchedule: the first run backs up at once, then waits the
// interval and continues as new with the next due time.
func TestBackupSchedule(t *testing.T) {
	env := newBackupEnv(t, orchestrations.ScheduleID("db-1a2b"), nil)
	env.OnSubOrchestration(orchestrations.BackupInstance).Return(orchestrations.BackupOutput{BackupID: "x", SizeBytes: 1})
	res := run(t, env, orchestrations.BackupSchedule, orchestrations.ScheduleInput{InternalName: "db-1a2b"})
	var next orchestrations.ScheduleInput
	if res.Status != duroxide.StatusContinuedAsNew || res.Decode(&next) != nil {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	if next.Runs != 1 || next.NextDueMs != duroxidetest.DefaultStart.Add(24*time.Hour).UnixMilli() || res.Elapsed != 24*time.Hour {
		t.Fatalf("next %+v elapsed %v", next, res.Elapsed)
	}
	wantCalls(t, env, "cms-get-instance#1", "cms-get-backup-settings#1", orchestrations.BackupInstance)
	var bi orchestrations.BackupInput
	_ = env.CallsTo(orchestrations.BackupInstance)[0].DecodeInput(&bi)
	if bi.Kind != cms.BackupScheduled || bi.InternalName != "db-1a2b" {
		t.Fatalf("backup input %+v", bi)
	}
}

// TestBackupScheduleStops: the schedule ends when the instance is deleted
// (the event) or gone (the record), and a disabled schedule takes no
// backup.
func TestBackupScheduleStops(t *testing.T) {
	env := newBackupEnv(t, orchestrations.ScheduleID("db-1a2b"), nil)
	env.OnSubOrchestration(orchestrations.BackupInstance).Return(orchestrations.BackupOutput{})
	env.RaiseEventAt(time.Hour, orchestrations.EventInstanceDeleted, nil)
	wantOutput(t, run(t, env, orchestrations.BackupSchedule, orchestrations.ScheduleInput{InternalName: "db-1a2b"}), "stopped")

	env = newBackupEnv(t, orchestrations.ScheduleID("db-1a2b"), mocks{activities.GetInstance: func(m *duroxidetest.Mock) {
		m.Return(activities.InstanceView{Found: true, State: cms.StateDeleted})
	}})
	wantOutput(t, run(t, env, orchestrations.BackupSchedule, orchestrations.ScheduleInput{InternalName: "db-1a2b"}), "instance gone")

	env = newBackupEnv(t, orchestrations.ScheduleID("db-1a2b"), mocks{activities.GetBackupSettings: func(m *duroxidetest.Mock) {
		m.Return(activities.SettingsOutput{Enabled: false, Interval: time.Hour})
	}})
	res := run(t, env, orchestrations.BackupSchedule, orchestrations.ScheduleInput{InternalName: "db-1a2b"})
	if res.Status != duroxide.StatusContinuedAsNew || len(env.CallsTo(orchestrations.BackupInstance)) != 0 || res.CustomStatus != "disabled" {
		t.Fatalf("disabled: status %s, calls %v, custom status %q", res.Status, env.CallNames(), res.CustomStatus)
	}
}

func TestDeleteBackup(t *testing.T) {
	env := newBackupEnv(t, orchestrations.DeleteBackupID(backupID), nil)
	wantOutput(t, run(t, env, orchestrations.DeleteBackupOrch, orchestrations.DeleteBackupInput{InternalName: "db-1a2b", BackupID: backupID}), "deleted")
	wantCalls(t, env, "delete-backup#1")
}
