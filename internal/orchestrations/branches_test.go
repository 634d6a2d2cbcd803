package orchestrations_test

import (
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/orchestrations"
)

// The failure and old-version branches of the orchestrations that the
// scenario tests of each orchestration leave out.

func failOnce(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }

// beforeChange runs the code path of instances recorded before a change.
func beforeChange(id string) duroxidetest.Option {
	return duroxidetest.WithChangeVersion(id, duroxide.VersionBeforeChange)
}

// TestRegisterTwiceFails: every orchestration name is taken the second time.
func TestRegisterTwiceFails(t *testing.T) {
	reg := duroxide.NewRegistry()
	if err := orchestrations.Register(reg, driverName); err != nil {
		t.Fatal(err)
	}
	err := orchestrations.Register(reg, driverName)
	if err == nil || !strings.HasPrefix(err.Error(), "register orchestrations: ") || !strings.Contains(err.Error(), orchestrations.CreateInstance) {
		t.Fatalf("second Register: %v", err)
	}
}

// TestCreateBeforeLeanChange: a create recorded before the lean change
// writes the record, reads the connection strings and records the actor id
// as separate steps.
func TestCreateBeforeLeanChange(t *testing.T) {
	env := newCreateEnv(t, nil, beforeChange(orchestrations.ChangeLeanCreate))
	res := run(t, env, orchestrations.CreateInstance, createInput)
	if res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	wantCalls(t, env, "cms-create-instance-record#1", "deploy-postgres#1", "wait-for-ready#1", "get-connection-strings#1",
		"test-connection#1", "cms-update-instance-state#1", "cms-record-instance-actor#1")
	var rec activities.CreateRecordInput
	_ = env.CallsTo(activities.CreateRecord)[0].DecodeInput(&rec)
	var st activities.UpdateStateInput
	_ = env.CallsTo(activities.UpdateState)[0].DecodeInput(&st)
	if rec.Driver != driverName || rec.CreateOrchestrationID != orchestrations.CreateID("db-1a2b") || st.Update.ActorOrchestrationID != "" {
		t.Fatalf("record %+v, mark running %+v", rec, st)
	}
}

// TestCreateBeforeLeanChangeRecordFailure: nothing was created, so a failed
// record fails the create without cleanup.
func TestCreateBeforeLeanChangeRecordFailure(t *testing.T) {
	env := newCreateEnv(t, mocks{activities.CreateRecord: failOnce}, beforeChange(orchestrations.ChangeLeanCreate))
	res := run(t, env, orchestrations.CreateInstance, createInput)
	wantFailed(t, res, "record instance: activity "+activities.CreateRecord+" failed after 1 attempt(s): boom")
	wantCalls(t, env, "cms-create-instance-record#1")
}

// TestCreateNoBackupsArchivingFailureIsOnlyLogged: the instance runs even
// when archiving could not be turned off.
func TestCreateNoBackupsArchivingFailureIsOnlyLogged(t *testing.T) {
	env := newCreateEnv(t, mocks{activities.SetArchiving: failOnce})
	in := createInput
	in.NoBackups = true
	res := run(t, env, orchestrations.CreateInstance, in)
	if res.Status != duroxide.StatusCompleted || res.CustomStatus != "running" {
		t.Fatalf("status %s (%q) err %v", res.Status, res.CustomStatus, res.Err)
	}
	wantCalls(t, env, "deploy-postgres#1", "wait-for-ready#1", "test-connection#1", "cms-update-instance-state#1", "set-archiving#1")
}

// TestCreateWithReplicasLateFailuresCleanUp: the steps after the standbys
// exist fail the create and clean up like the others.
func TestCreateWithReplicasLateFailuresCleanUp(t *testing.T) {
	for _, c := range []struct {
		activity, reason string
		calls            []string
	}{
		{activities.GetConnectionStrings, "get connection strings failed", []string{"get-connection-strings#1"}},
		{activities.RecordReplicaEndpoint, "record read-only connection string failed",
			[]string{"get-connection-strings#1", "cms-update-instance-state#1", "cms-record-replica-endpoint#1"}},
	} {
		t.Run(c.activity, func(t *testing.T) {
			env := newReplicaCreateEnv(t, mocks{c.activity: failOnce})
			env.OnSubOrchestration(orchestrations.DeleteInstance).Return("cleaned up")
			res := run(t, env, orchestrations.CreateInstance, replicaCreateInput)
			wantFailed(t, res, c.reason+": activity "+c.activity+" failed after 1 attempt(s): boom")
			want := append([]string{"deploy-postgres#1", "wait-for-ready#1", "test-connection#1", "set-replicas#1", "wait-for-standbys#1"}, c.calls...)
			wantCalls(t, env, append(want, "cms-update-instance-state#1", "delete-instance")...)
			if len(env.Detached()) != 0 {
				t.Fatalf("detached %+v", env.Detached())
			}
		})
	}
}

// TestActorBeforeOneHealthWrite: an actor execution recorded before the
// one-health-write change also sets the health with a second write, whose
// failure is only logged.
func TestActorBeforeOneHealthWrite(t *testing.T) {
	env := newActorEnv(t, nil, beforeChange(orchestrations.ChangeOneHealthWrite))
	next := nextActorInput(t, run(t, env, orchestrations.InstanceActor, actorInput))
	wantCalls(t, env, "cms-get-instance-connection#1", "test-connection#1", "cms-record-health-check#1", "cms-update-instance-health#1")
	var uh activities.UpdateHealthInput
	_ = env.CallsTo(activities.UpdateHealth)[0].DecodeInput(&uh)
	if uh.Health != cms.HealthHealthy || uh.InternalName != "db-1a2b" || next.Checks != 5 {
		t.Fatalf("update health %+v, next %+v", uh, next)
	}

	env = newActorEnv(t, mocks{activities.UpdateHealth: failOnce}, beforeChange(orchestrations.ChangeOneHealthWrite))
	if next := nextActorInput(t, run(t, env, orchestrations.InstanceActor, actorInput)); next.Checks != 5 {
		t.Fatalf("next %+v", next)
	}
	wantCalls(t, env, "cms-get-instance-connection#1", "test-connection#1", "cms-record-health-check#1", "cms-update-instance-health#1")
}

// TestActorReplicatedRecordingFailuresAreOnlyLogged: with standbys, failed
// health writes (both, before the one-health-write change) do not stop the
// check: the servers are still listed and the count goes on.
func TestActorReplicatedRecordingFailuresAreOnlyLogged(t *testing.T) {
	in := replicatedActorInput
	in.FailedChecks = 1
	env := newReplicatedActorEnv(t, mocks{activities.TestConnection: fail, activities.RecordHealthCheck: failOnce, activities.UpdateHealth: failOnce},
		beforeChange(orchestrations.ChangeOneHealthWrite))
	next := nextActorInput(t, run(t, env, orchestrations.InstanceActor, in))
	if next.FailedChecks != 2 || next.Checks != 1 {
		t.Fatalf("next %+v", next)
	}
	wantCalls(t, env, "cms-get-instance-connection#1", "test-connection#1", "cms-record-health-check#1", "cms-update-instance-health#1", "list-servers#1")
	var uh activities.UpdateHealthInput
	_ = env.CallsTo(activities.UpdateHealth)[0].DecodeInput(&uh)
	if uh.Health != cms.HealthUnhealthy {
		t.Fatalf("update health %+v", uh)
	}
}

// TestScaleWithoutPrimary: standbys reported without a primary are
// recorded with no primary (the data plane is mid-failover).
func TestScaleWithoutPrimary(t *testing.T) {
	env := newReplicaEnv(t, orchestrations.ScaleID("db-1a2b", "1"), mocks{activities.WaitForStandbys: func(m *duroxidetest.Mock) { m.Return(servers(standby1)) }})
	if res := run(t, env, orchestrations.ScaleInstance, scaleInput); res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	var rec activities.RecordEndpointInput
	if err := env.CallsTo(activities.RecordReplicaEndpoint)[0].DecodeInput(&rec); err != nil || rec.Primary != "" {
		t.Fatalf("record %+v (%v)", rec, err)
	}
}

// TestFailoverPrefersSyncStandbyListedFirst: the synchronous standby wins
// wherever it is listed.
func TestFailoverPrefersSyncStandbyListedFirst(t *testing.T) {
	env := newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), mocks{activities.ListServers: func(m *duroxidetest.Mock) { m.Return(servers(deadPrim, syncSb2, standby1)) }})
	if out := decodeFailover(t, run(t, env, orchestrations.FailoverInstance, orchestrations.FailoverInput{InternalName: "db-1a2b"})); out.To != "2" || out.From != "0" {
		t.Fatalf("output %+v", out)
	}
}

// TestBackupInstanceRecordingFailures: a backup whose record cannot be
// written is not taken; failures to record the outcome fail the backup
// (a failed backup's record failure is only logged: the backup failed anyway).
func TestBackupInstanceRecordingFailures(t *testing.T) {
	for _, c := range []struct {
		m     mocks
		err   string
		calls []string
	}{
		{mocks{activities.CreateBackupRecord: failOnce}, "record backup: activity " + activities.CreateBackupRecord + " failed after 1 attempt(s): boom",
			[]string{"cms-create-backup-record#1"}},
		{mocks{activities.TakeBaseBackup: failOnce, activities.FailBackup: failOnce}, "backup " + backupID + ": activity take-base-backup failed after 1 attempt(s): boom",
			[]string{"cms-create-backup-record#1", "take-base-backup#1", "cms-fail-backup#1"}},
		{mocks{activities.CompleteBackup: failOnce}, "record completed backup: activity " + activities.CompleteBackup + " failed after 1 attempt(s): boom",
			[]string{"cms-create-backup-record#1", "take-base-backup#1", "cms-complete-backup#1"}},
	} {
		env := newBackupEnv(t, orchestrations.BackupID(backupID), c.m)
		wantFailed(t, run(t, env, orchestrations.BackupInstance, backupInput), c.err)
		wantCalls(t, env, c.calls...)
	}
}

// TestBackupScheduleDeletedBeforeStart: a deletion that arrives as the
// wait ends is carried into the next execution, which stops before it
// reads anything.
func TestBackupScheduleDeletedBeforeStart(t *testing.T) {
	env := duroxidetest.New(registry(t), duroxidetest.WithInstanceID(orchestrations.ScheduleID("db-1a2b")), duroxidetest.WithMaxExecutions(2))
	mocks{}.apply(env, backupDefaults())
	env.OnSubOrchestration(orchestrations.BackupInstance).Return(orchestrations.BackupOutput{})
	env.RaiseEventAt(24*time.Hour, orchestrations.EventInstanceDeleted, nil)
	res := run(t, env, orchestrations.BackupSchedule, orchestrations.ScheduleInput{InternalName: "db-1a2b"})
	wantOutput(t, res, "stopped")
	if len(res.Executions) != 2 || len(res.History) != 4 || res.History[0].CarryForward[0].Name != orchestrations.EventInstanceDeleted {
		t.Fatalf("second execution: %v", res.History)
	}
	wantCalls(t, env, "cms-get-instance#1", "cms-get-backup-settings#1", orchestrations.BackupInstance)
}

// TestBackupScheduleFailuresAreOnlyLogged: unreadable settings fall back to
// the defaults, and a failed backup is retried at the next due time.
func TestBackupScheduleFailuresAreOnlyLogged(t *testing.T) {
	env := newBackupEnv(t, orchestrations.ScheduleID("db-1a2b"), mocks{activities.GetBackupSettings: failOnce})
	env.OnSubOrchestration(orchestrations.BackupInstance).Fail(errBoom)
	res := run(t, env, orchestrations.BackupSchedule, orchestrations.ScheduleInput{InternalName: "db-1a2b"})
	var next orchestrations.ScheduleInput
	if res.Status != duroxide.StatusContinuedAsNew || res.Decode(&next) != nil {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	if next.Runs != 1 || next.NextDueMs != duroxidetest.DefaultStart.Add(cms.DefaultBackupInterval).UnixMilli() || res.Elapsed != cms.DefaultBackupInterval {
		t.Fatalf("next %+v after %v", next, res.Elapsed)
	}
	if c := env.CallsTo(orchestrations.BackupInstance); len(c) != 1 || c[0].Err == nil {
		t.Fatalf("backup calls %v", env.CallNames())
	}
}

func TestDeleteBackupFailure(t *testing.T) {
	env := newBackupEnv(t, orchestrations.DeleteBackupID(backupID), mocks{activities.DeleteBackup: failOnce})
	res := run(t, env, orchestrations.DeleteBackupOrch, orchestrations.DeleteBackupInput{InternalName: "db-1a2b", BackupID: backupID})
	wantFailed(t, res, "delete backup "+backupID+": activity "+activities.DeleteBackup+" failed after 1 attempt(s): boom")
}
