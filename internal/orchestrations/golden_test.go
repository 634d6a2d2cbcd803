package orchestrations_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/orchestrations"
)

// Golden histories are histories recorded by released code. Every release
// must replay them all: an in-flight instance of any of these shapes has to
// survive an upgrade. They are written once, never regenerated: when an
// orchestration changes, its change goes behind ctx.GetVersion and new
// goldens are added next to the old ones (delete a file on purpose to
// rewrite it).
var updateGolden = flag.Bool("update-golden", false, "write golden histories that do not exist yet")

const goldenDir = "testdata/golden"

type goldenScenario struct {
	file, note, orchestration string
	input                     any
	env                       func(t *testing.T) *duroxidetest.Env
	// strip removes the fields recorded since attempt numbers, policies and
	// timer purposes exist: the history as the code before them wrote it.
	strip bool
}

func goldenScenarios() []goldenScenario {
	probeRetries := mocks{activities.TestConnection: func(m *duroxidetest.Mock) {
		m.Fail(errBoom).Times(2).Return(activities.TestConnectionOutput{Version: "PostgreSQL 16.4"})
	}}
	deployFails := mocks{activities.Deploy: fail}
	return []goldenScenario{
		{file: "create-success.json", note: "create-instance: every step succeeds", orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, nil) }},
		{file: "create-success-v0.json", note: "create-instance success as recorded before attempt/policy/timer-purpose fields", strip: true,
			orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, nil) }},
		{file: "create-retries.json", note: "create-instance: test-connection fails twice, then succeeds", orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, probeRetries) }},
		{file: "create-retries-v0.json", note: "create-instance retries as recorded before attempt/policy/timer-purpose fields", strip: true,
			orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, probeRetries) }},
		{file: "create-success-lean.json", note: "create-instance since the lean create: no record, connection with readiness, actor id with the running state",
			orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, nil) }},
		{file: "create-retries-lean.json", note: "create-instance since the lean create: test-connection fails twice, then succeeds",
			orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, probeRetries) }},
		{file: "create-deploy-failure.json", note: "create-instance: deploy fails 3 times; marked failed, cleaned up", orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env {
				env := newCreateEnv(t, deployFails)
				env.OnSubOrchestration(orchestrations.DeleteInstance).Return("cleaned up")
				return env
			}},
		{file: "create-cancel.json", note: "create-instance: cancelled while deploying", orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env {
				env := newCreateEnv(t, mocks{activities.Deploy: func(m *duroxidetest.Mock) { m.Hang() }})
				env.CancelAt(30*time.Second, "instance deleted")
				return env
			}},
		{file: "delete-success.json", note: "delete-instance of a running instance", orchestration: orchestrations.DeleteInstance, input: deleteInput(false),
			env: func(t *testing.T) *duroxidetest.Env { return newDeleteEnv(t, running, nil) }},
		{file: "delete-failure.json", note: "delete-instance: delete-postgres fails 3 times", orchestration: orchestrations.DeleteInstance, input: deleteInput(false),
			env: func(t *testing.T) *duroxidetest.Env {
				return newDeleteEnv(t, running, mocks{activities.DeletePostgres: fail})
			}},
		{file: "actor-healthy.json", note: "instance-actor: a healthy check, then continue-as-new", orchestration: orchestrations.InstanceActor, input: actorInput,
			env: func(t *testing.T) *duroxidetest.Env { return newActorEnv(t, nil) }},
		{file: "actor-healthy-one-write.json", note: "instance-actor since the single health write: the check sets the health", orchestration: orchestrations.InstanceActor, input: actorInput,
			env: func(t *testing.T) *duroxidetest.Env { return newActorEnv(t, nil) }},
		{file: "actor-stopped.json", note: "instance-actor: InstanceDeleted while waiting", orchestration: orchestrations.InstanceActor, input: actorInput,
			env: func(t *testing.T) *duroxidetest.Env {
				env := newActorEnv(t, nil)
				env.RaiseEventAt(20*time.Second, orchestrations.EventInstanceDeleted, nil)
				return env
			}},
		{file: "janitor-run.json", note: "janitor: one sweep with a failing step, new settings, continue-as-new", orchestration: orchestrations.Janitor, input: janitorInput,
			env: func(t *testing.T) *duroxidetest.Env {
				env := newJanitorEnv(t, mocks{activities.PruneHealthChecks: fail})
				env.RaiseEventAt(10*time.Minute, orchestrations.EventJanitorSettings, orchestrations.JanitorInput{Interval: time.Minute})
				return env
			}},

		// Backups (change "backups", version 1).
		{file: "create-success-backups.json", note: "create-instance with backups: every step succeeds, the backup schedule starts", orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, nil) }},
		{file: "create-no-backups.json", note: "create-instance with no_backups: archiving turned off, no schedule", orchestration: orchestrations.CreateInstance, input: noBackupsInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, nil) }},
		{file: "create-restore.json", note: "create-instance restoring another instance's backup", orchestration: orchestrations.CreateInstance, input: restoreInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, nil) }},
		{file: "delete-success-backups.json", note: "delete-instance with backups: schedule stopped, archive flushed, backups purged", orchestration: orchestrations.DeleteInstance, input: purgeInput,
			env: func(t *testing.T) *duroxidetest.Env { return newDeleteEnv(t, running, nil) }},
		{file: "janitor-run-backups.json", note: "janitor with backups: one sweep with backup retention, continue-as-new", orchestration: orchestrations.Janitor, input: janitorInput,
			env: func(t *testing.T) *duroxidetest.Env { return newJanitorEnv(t, nil) }},
		{file: "backup-instance-success.json", note: "backup-instance: recorded, taken, completed", orchestration: orchestrations.BackupInstance, input: backupInput,
			env: func(t *testing.T) *duroxidetest.Env { return newBackupEnv(t, orchestrations.BackupID(backupID), nil) }},
		{file: "backup-instance-failure.json", note: "backup-instance: take-base-backup fails 3 times; recorded failed", orchestration: orchestrations.BackupInstance, input: backupInput,
			env: func(t *testing.T) *duroxidetest.Env {
				return newBackupEnv(t, orchestrations.BackupID(backupID), mocks{activities.TakeBaseBackup: fail})
			}},
		{file: "backup-schedule-run.json", note: "backup-schedule: a scheduled backup, the interval, continue-as-new", orchestration: orchestrations.BackupSchedule,
			input: orchestrations.ScheduleInput{InternalName: "db-1a2b"},
			env: func(t *testing.T) *duroxidetest.Env {
				env := newBackupEnv(t, orchestrations.ScheduleID("db-1a2b"), nil)
				env.OnSubOrchestration(orchestrations.BackupInstance).Return(orchestrations.BackupOutput{BackupID: "s1", SizeBytes: 1})
				return env
			}},
		// Default retry policies (change "default-retry-policies", version 1):
		// plain calls, the policy recorded on each sequence's first schedule.
		{file: "create-retries-defaults.json", note: "create-instance under default policies: test-connection fails twice, then succeeds", orchestration: orchestrations.CreateInstance, input: createInput,
			env: func(t *testing.T) *duroxidetest.Env { return newCreateEnv(t, probeRetries) }},
		{file: "delete-failure-defaults.json", note: "delete-instance under default policies: delete-postgres fails 3 times", orchestration: orchestrations.DeleteInstance, input: deleteInput(false),
			env: func(t *testing.T) *duroxidetest.Env {
				return newDeleteEnv(t, running, mocks{activities.DeletePostgres: fail})
			}},
		{file: "actor-healthy-defaults.json", note: "instance-actor under default policies: a healthy check, then continue-as-new", orchestration: orchestrations.InstanceActor, input: actorInput,
			env: func(t *testing.T) *duroxidetest.Env { return newActorEnv(t, nil) }},
		{file: "janitor-run-defaults.json", note: "janitor under default policies: one sweep with a failing step", orchestration: orchestrations.Janitor, input: janitorInput,
			env: func(t *testing.T) *duroxidetest.Env {
				return newJanitorEnv(t, mocks{activities.PruneHealthChecks: fail})
			}},
		{file: "backup-instance-failure-defaults.json", note: "backup-instance under default policies: take-base-backup fails 3 times", orchestration: orchestrations.BackupInstance, input: backupInput,
			env: func(t *testing.T) *duroxidetest.Env {
				return newBackupEnv(t, orchestrations.BackupID(backupID), mocks{activities.TakeBaseBackup: fail})
			}},
		// Replicas (change "replicas", version 1) and the replica orchestrations.
		{file: "create-replicas.json", note: "create-instance with one synchronous standby", orchestration: orchestrations.CreateInstance, input: replicaCreateInput,
			env: func(t *testing.T) *duroxidetest.Env { return newReplicaCreateEnv(t, nil) }},
		{file: "actor-replicated-failover.json", note: "instance-actor of an instance with standbys: a failed check reaching the threshold starts a failover", orchestration: orchestrations.InstanceActor,
			input: orchestrations.ActorInput{InternalName: "db-1a2b", Interval: time.Minute, FailedChecks: 2},
			env: func(t *testing.T) *duroxidetest.Env {
				return newReplicatedActorEnv(t, mocks{activities.TestConnection: fail})
			}},
		{file: "create-replicas-lean.json", note: "create-instance with one synchronous standby, since the lean create", orchestration: orchestrations.CreateInstance, input: replicaCreateInput,
			env: func(t *testing.T) *duroxidetest.Env { return newReplicaCreateEnv(t, nil) }},
		{file: "actor-replicated-failover-one-write.json", note: "instance-actor with standbys starting a failover, since the single health write", orchestration: orchestrations.InstanceActor,
			input: orchestrations.ActorInput{InternalName: "db-1a2b", Interval: time.Minute, FailedChecks: 2},
			env: func(t *testing.T) *duroxidetest.Env {
				return newReplicatedActorEnv(t, mocks{activities.TestConnection: fail})
			}},
		{file: "scale-success.json", note: "scale-instance: one synchronous standby added", orchestration: orchestrations.ScaleInstance, input: scaleInput,
			env: func(t *testing.T) *duroxidetest.Env {
				return newReplicaEnv(t, orchestrations.ScaleID("db-1a2b", "1"), nil)
			}},
		{file: "failover-success.json", note: "failover-instance: fence, promote the sync standby, record, rebuild", orchestration: orchestrations.FailoverInstance, input: failoverInput,
			env: func(t *testing.T) *duroxidetest.Env {
				return newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), nil)
			}},
		{file: "failover-fence-failure.json", note: "failover-instance: fencing fails 5 times; nothing promoted", orchestration: orchestrations.FailoverInstance, input: failoverInput,
			env: func(t *testing.T) *duroxidetest.Env {
				return newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), mocks{activities.FenceServer: fail})
			}},
		{file: "switchover-success.json", note: "switchover-instance: clean stop, promote, rebuild", orchestration: orchestrations.SwitchoverInstance,
			input: orchestrations.FailoverInput{InternalName: "db-1a2b"},
			env: func(t *testing.T) *duroxidetest.Env {
				return newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), mocks{activities.ListServers: func(m *duroxidetest.Mock) { m.Return(servers(primary0, standby1, syncSb2)) }})
			}},
		{file: "delete-backup.json", note: "delete-backup: the files go", orchestration: orchestrations.DeleteBackupOrch,
			input: orchestrations.DeleteBackupInput{InternalName: "db-1a2b", BackupID: backupID},
			env: func(t *testing.T) *duroxidetest.Env {
				return newBackupEnv(t, orchestrations.DeleteBackupID(backupID), nil)
			}},
	}
}

var noBackupsInput = func() orchestrations.CreateInput {
	in := createInput
	in.NoBackups = true
	return in
}()

var purgeInput = orchestrations.DeleteInput{InternalName: "db-1a2b", PurgeBackups: true}

func stripDetail(h []duroxide.Event) []duroxide.Event {
	out := make([]duroxide.Event, len(h))
	for i, ev := range h {
		ev.Attempt, ev.MaxAttempts, ev.Policy, ev.Purpose = 0, 0, "", ""
		out[i] = ev
	}
	return out
}

// TestGoldenHistoriesReplay replays every recorded history through today's
// orchestrations.
func TestGoldenHistoriesReplay(t *testing.T) {
	for _, s := range goldenScenarios() {
		path := filepath.Join(goldenDir, s.file)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && *updateGolden {
			res := run(t, s.env(t), s.orchestration, s.input)
			h := res.History
			if s.strip {
				h = stripDetail(h)
			}
			if err := duroxidetest.WriteGolden(path, duroxidetest.Golden{Instance: instanceOf(s), Note: s.note, History: h}); err != nil {
				t.Fatal(err)
			}
		}
		if err := duroxidetest.ReplayFile(registry(t), path); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%v (run go test ./internal/orchestrations -run Golden -update-golden once to record it)", err)
			}
			t.Errorf("golden history no longer replays: %v", err)
		}
	}
}

func instanceOf(s goldenScenario) string {
	switch s.orchestration {
	case orchestrations.CreateInstance:
		return orchestrations.CreateID("db-1a2b")
	case orchestrations.DeleteInstance:
		return orchestrations.DeleteID("db-1a2b")
	case orchestrations.InstanceActor:
		return orchestrations.ActorID("db-1a2b")
	case orchestrations.BackupInstance:
		return orchestrations.BackupID(backupID)
	case orchestrations.BackupSchedule:
		return orchestrations.ScheduleID("db-1a2b")
	case orchestrations.DeleteBackupOrch:
		return orchestrations.DeleteBackupID(backupID)
	case orchestrations.ScaleInstance:
		return orchestrations.ScaleID("db-1a2b", "1")
	case orchestrations.FailoverInstance, orchestrations.SwitchoverInstance:
		return orchestrations.FailoverID("db-1a2b", 1)
	}
	return orchestrations.JanitorID
}

// TestGoldenHistoriesCoverOutcomes: the goldens hold a success, retries, a
// failure and a cancellation, and the v0 ones have none of the new fields.
func TestGoldenHistoriesCoverOutcomes(t *testing.T) {
	ends := map[string]bool{}
	for _, s := range goldenScenarios() {
		g, err := duroxidetest.ReadGolden(filepath.Join(goldenDir, s.file))
		if err != nil {
			t.Fatal(err)
		}
		last := g.History[len(g.History)-1]
		end := string(last.Kind)
		if last.Error != nil && last.Error.Category == duroxide.CategoryCancelled {
			end = "Cancelled"
		}
		ends[end] = true
		retried := false
		for _, ev := range g.History {
			if s.strip && (ev.Attempt != 0 || ev.Policy != "" || ev.Purpose != "") {
				t.Fatalf("%s: %v has detail fields", s.file, ev)
			}
			if ev.Kind == duroxide.EventActivityFailed {
				retried = true
			}
		}
		if strings.Contains(s.file, "retries") && !retried {
			t.Fatalf("%s has no failed attempt", s.file)
		}
	}
	for _, want := range []string{"OrchestrationCompleted", "OrchestrationFailed", "Cancelled", "OrchestrationContinuedAsNew"} {
		if !ends[want] {
			t.Errorf("no golden history ends with %s", want)
		}
	}
}

// TestReplayerCatchesChangedOrchestration: a create-instance whose steps
// changed (here: the connection is tested before the connection string is
// read) registered under the same name no longer replays the recorded
// histories, and the replayer says where.
func TestReplayerCatchesChangedOrchestration(t *testing.T) {
	changed := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(changed, orchestrations.CreateInstance, func(ctx *duroxide.OrchestrationContext, in orchestrations.CreateInput) (orchestrations.CreateOutput, error) {
		ctx.SetCustomStatus("recording")
		if _, err := duroxide.CallActivityWithRetryTyped[activities.InstanceView](ctx, activities.CreateRecord, activities.CreateRecordInput{
			Name: in.Name, InternalName: in.InternalName, Driver: driverName, PostgresVersion: in.PostgresVersion,
			StorageGB: in.StorageGB, CreateOrchestrationID: ctx.InstanceID(),
		}, activities.PolicyCMS); err != nil {
			return orchestrations.CreateOutput{}, err
		}
		ctx.SetCustomStatus("deploying")
		if _, err := duroxide.CallActivityWithRetryTyped[struct{}](ctx, activities.Deploy, activities.DeployInput{InternalName: in.InternalName,
			PostgresVersion: in.PostgresVersion, StorageGB: in.StorageGB}, activities.PolicyDeploy); err != nil {
			return orchestrations.CreateOutput{}, err
		}
		// Changed: wait-for-ready dropped without a GetVersion guard.
		ctx.SetCustomStatus("getting connection strings")
		conn, err := duroxide.CallActivityWithRetryTyped[activities.ConnectionOutput](ctx, activities.GetConnectionStrings,
			activities.InstanceRef{InternalName: in.InternalName}, activities.PolicyGetConnectionStrings)
		if err != nil {
			return orchestrations.CreateOutput{}, err
		}
		_, err = duroxide.CallActivityWithRetryTyped[cms.State](ctx, activities.UpdateState, activities.UpdateStateInput{InternalName: in.InternalName, State: cms.StateRunning}, activities.PolicyCMS)
		return orchestrations.CreateOutput{InternalName: in.InternalName, ConnectionString: conn.ConnectionString}, err
	}))
	for _, file := range []string{"create-success.json", "create-success-v0.json", "create-retries.json"} {
		err := duroxidetest.ReplayFile(changed, filepath.Join(goldenDir, file))
		// Event 11 is wait-for-ready's total-timeout timer, where the
		// changed code schedules get-connection-strings instead.
		if !errors.Is(err, duroxide.ErrNondeterminism) || !strings.Contains(err.Error(), `at event 11, but the code scheduled activity "get-connection-strings"`) {
			t.Errorf("%s: the changed create-instance replayed (err %v); the replayer must reject it", file, err)
		}
	}
	// The same check with today's code passes (see TestGoldenHistoriesReplay).
	if err := duroxidetest.ReplayFile(registry(t), filepath.Join(goldenDir, "create-success.json")); err != nil {
		t.Fatal(err)
	}
}
