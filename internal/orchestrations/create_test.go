package orchestrations_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/orchestrations"
)

const driverName = "test-driver"

func registry(t *testing.T) *duroxide.Registry {
	t.Helper()
	reg := duroxide.NewRegistry()
	if err := orchestrations.Register(reg, driverName); err != nil {
		t.Fatal(err)
	}
	// The activities are mocked, never run; they are registered for their
	// default retry policies, which the orchestrations' plain calls use.
	if err := activities.Register(reg, activities.Deps{}); err != nil {
		t.Fatal(err)
	}
	return reg
}

var errBoom = errors.New("boom")

// mocks scripts activities: each listed activity gets its script; every
// other activity named in defaults returns its default value.
type mocks map[string]func(*duroxidetest.Mock)

func (m mocks) apply(env *duroxidetest.Env, defaults map[string]any) {
	for name, v := range defaults {
		mock := env.OnActivity(name)
		if f, ok := m[name]; ok {
			f(mock)
		} else {
			mock.Return(v)
		}
	}
}

func fail(m *duroxidetest.Mock) { m.Fail(errBoom) }

var createInput = orchestrations.CreateInput{InternalName: "db-1a2b", Name: "db", PostgresVersion: "16", StorageGB: 2, ActorInterval: time.Minute}

var conn = activities.ConnectionOutput{Endpoint: dataplane.Endpoint{Host: "127.0.0.1", Port: 5433}, ConnectionString: "postgres://postgres@127.0.0.1:5433/postgres"}

func createDefaults() map[string]any {
	return map[string]any{
		activities.CreateRecord:         activities.InstanceView{Found: true, State: cms.StateCreating},
		activities.Deploy:               struct{}{},
		activities.WaitForReady:         activities.ReadyOutput{Phase: "ready", Ready: true, Connection: &conn},
		activities.GetConnectionStrings: conn,
		activities.TestConnection:       activities.TestConnectionOutput{Version: "PostgreSQL 16.4", LatencyMs: 3},
		activities.UpdateState:          cms.StateRunning,
		activities.SetActor:             struct{}{},
		activities.SetArchiving:         struct{}{},
		activities.RestorePostgres:      struct{}{},
	}
}

// deleteDefaults are the activities of delete-instance on an instance that
// exists (used when the cleanup sub-orchestration runs for real).
func deleteDefaults(state cms.State) map[string]any {
	return map[string]any{
		activities.GetInstance:        activities.InstanceView{Found: true, InternalName: "db-1a2b", State: state},
		activities.UpdateState:        state,
		activities.AwaitOrchestration: "Completed",
		activities.RaiseEvent:         struct{}{},
		activities.DeletePostgres:     struct{}{},
		activities.ForgetPassword:     struct{}{},
		activities.AddEvent:           struct{}{},
		activities.FlushArchive:       struct{}{},
		activities.PurgeBackups:       0,
	}
}

func newCreateEnv(t *testing.T, m mocks, opts ...duroxidetest.Option) *duroxidetest.Env {
	env := duroxidetest.New(registry(t), append([]duroxidetest.Option{duroxidetest.WithInstanceID(orchestrations.CreateID("db-1a2b"))}, opts...)...)
	m.apply(env, createDefaults())
	return env
}

func run(t *testing.T, env *duroxidetest.Env, name string, in any) *duroxidetest.Result {
	t.Helper()
	res, err := env.Run(name, in)
	if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return res
}

func wantCalls(t *testing.T, env *duroxidetest.Env, want ...string) {
	t.Helper()
	if got := strings.Join(env.CallNames(), " "); got != strings.Join(want, " ") {
		t.Fatalf("calls:\n got %s\nwant %s", got, strings.Join(want, " "))
	}
}

func wantFailed(t *testing.T, res *duroxidetest.Result, substr string) {
	t.Helper()
	if res.Status != duroxide.StatusFailed || res.Err == nil || !strings.Contains(res.Err.Error(), substr) {
		t.Fatalf("status %s, err %v; want failure containing %q", res.Status, res.Err, substr)
	}
}

func TestCreateSuccess(t *testing.T) {
	env := newCreateEnv(t, nil)
	res := run(t, env, orchestrations.CreateInstance, createInput)
	var out orchestrations.CreateOutput
	if err := res.Decode(&out); err != nil || res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	if out.ConnectionString != conn.ConnectionString || out.InternalName != "db-1a2b" {
		t.Fatalf("output %+v", out)
	}
	wantCalls(t, env, "deploy-postgres#1", "wait-for-ready#1",
		"test-connection#1", "cms-update-instance-state#1")
	var st activities.UpdateStateInput
	_ = env.CallsTo(activities.UpdateState)[0].DecodeInput(&st)
	if st.State != cms.StateRunning || st.Update.Port != 5433 || st.Update.Message != "ready: PostgreSQL 16.4" ||
		st.Update.ActorOrchestrationID != orchestrations.ActorID("db-1a2b") {
		t.Fatalf("mark running input %+v", st)
	}
	// The health actor and the backup schedule run on their own.
	d := env.Detached()
	if len(d) != 2 || d[0].Name != orchestrations.InstanceActor || d[0].Instance != "actor-db-1a2b" ||
		d[1].Name != orchestrations.BackupSchedule || d[1].Instance != orchestrations.ScheduleID("db-1a2b") {
		t.Fatalf("detached %+v", d)
	}
	if res.CustomStatus != "running" || res.Elapsed != 0 {
		t.Fatalf("custom status %q, elapsed %v", res.CustomStatus, res.Elapsed)
	}
}

// TestCreateSetActorFailureIsOnlyLogged: creates recorded before the lean
// change record the actor id in a step of its own, whose failure is only
// logged.
func TestCreateSetActorFailureIsOnlyLogged(t *testing.T) {
	env := newCreateEnv(t, mocks{activities.SetActor: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }},
		duroxidetest.WithChangeVersion(orchestrations.ChangeLeanCreate, duroxide.VersionBeforeChange))
	res := run(t, env, orchestrations.CreateInstance, createInput)
	if res.Status != duroxide.StatusCompleted || res.CustomStatus != "running" {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	if c := env.CallsTo(activities.SetActor); len(c) != 1 || c[0].Err == nil {
		t.Fatalf("calls %v", env.CallNames())
	}
}

// TestCreateRetriesTestConnection: two failed probes are retried after the
// policy's backoff (2s, then 4s).
func TestCreateRetriesTestConnection(t *testing.T) {
	env := newCreateEnv(t, mocks{activities.TestConnection: func(m *duroxidetest.Mock) {
		m.Fail(errBoom).Times(2).Return(activities.TestConnectionOutput{Version: "PostgreSQL 16.4"})
	}})
	res := run(t, env, orchestrations.CreateInstance, createInput)
	if res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	calls := env.CallsTo(activities.TestConnection)
	if len(calls) != 3 || calls[1].At != 2*time.Second || calls[2].At != 6*time.Second || calls[2].Attempt != 3 {
		t.Fatalf("probes: %v at %v %v %v", env.CallNames(), calls[0].At, calls[1].At, calls[2].At)
	}
	var backoffs []string
	for _, ev := range res.History {
		if ev.Kind == duroxide.EventTimerCreated && ev.Purpose == duroxide.TimerBackoff {
			backoffs = append(backoffs, time.Duration((ev.FireAtMs-ev.TimestampMs)*int64(time.Millisecond)).String())
		}
	}
	if strings.Join(backoffs, ",") != "2s,4s" {
		t.Fatalf("backoff timers %v", backoffs)
	}
}

// TestCreateStepFailuresCleanUp: a failure of each step
// marks the instance failed and runs the cleanup sub-orchestration.
func TestCreateStepFailuresCleanUp(t *testing.T) {
	steps := []struct {
		activity, reason string
		calls            []string
	}{
		{activities.Deploy, "deploy failed", []string{"deploy-postgres#1"}},
		{activities.WaitForReady, "wait for ready failed", []string{"deploy-postgres#1", "wait-for-ready#1"}},
		// Readiness reported by a worker of a release before the lean create
		// (no connection): the connection is read the old way.
		{activities.GetConnectionStrings, "get connection strings failed", []string{"deploy-postgres#1", "wait-for-ready#1", "get-connection-strings#1"}},
		{activities.TestConnection, "test connection failed", []string{"deploy-postgres#1", "wait-for-ready#1", "test-connection#1"}},
	}
	for _, s := range steps {
		t.Run(s.activity, func(t *testing.T) {
			m := mocks{s.activity: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }}
			if s.activity == activities.GetConnectionStrings {
				m[activities.WaitForReady] = func(m *duroxidetest.Mock) { m.Return(activities.ReadyOutput{Phase: "ready", Ready: true}) }
			}
			env := newCreateEnv(t, m)
			env.OnSubOrchestration(orchestrations.DeleteInstance).Return("cleaned up")
			res := run(t, env, orchestrations.CreateInstance, createInput)
			wantFailed(t, res, s.reason+": activity "+s.activity+" failed after 1 attempt(s): boom")
			if strings.Contains(res.Err.Error(), "cleanup also failed") {
				t.Fatalf("err %v", res.Err)
			}
			wantCalls(t, env, append(s.calls, "cms-update-instance-state#1", "delete-instance")...)
			var st activities.UpdateStateInput
			_ = env.CallsTo(activities.UpdateState)[0].DecodeInput(&st)
			var del orchestrations.DeleteInput
			_ = env.CallsTo(orchestrations.DeleteInstance)[0].DecodeInput(&del)
			if st.State != cms.StateFailed || !strings.HasPrefix(st.Update.FailureReason, s.reason) || !del.Cleanup || del.InternalName != "db-1a2b" {
				t.Fatalf("mark failed %+v, cleanup input %+v", st, del)
			}
			if res.CustomStatus != "cleaning up" {
				t.Fatalf("custom status %q", res.CustomStatus)
			}
		})
	}
}

func TestCreateMarkRunningFailureCleansUp(t *testing.T) {
	env := newCreateEnv(t, mocks{activities.UpdateState: func(m *duroxidetest.Mock) {
		m.Fail(duroxide.NonRetryable(errBoom)).Return(cms.StateFailed)
	}})
	env.OnSubOrchestration(orchestrations.DeleteInstance).Return("cleaned up")
	res := run(t, env, orchestrations.CreateInstance, createInput)
	wantFailed(t, res, "mark running failed")
	if len(env.Detached()) != 0 {
		t.Fatalf("actor started after a failed create: %+v", env.Detached())
	}
}

// TestCreateCleanupFailureIsReported: marking failed and the cleanup both
// fail; the error says so.
func TestCreateCleanupFailureIsReported(t *testing.T) {
	env := newCreateEnv(t, mocks{
		activities.Deploy:      func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) },
		activities.UpdateState: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errors.New("cms down"))) },
	})
	env.OnSubOrchestration(orchestrations.DeleteInstance).Fail(errors.New("cannot delete"))
	res := run(t, env, orchestrations.CreateInstance, createInput)
	wantFailed(t, res, "deploy failed")
	wantFailed(t, res, "(cleanup also failed: sub-orchestration delete-instance failed: cannot delete)")
}

// TestCreateCleanupRunsDeleteInstance: the cleanup is the real
// delete-instance in cleanup mode (a child with the cleanup id).
func TestCreateCleanupRunsDeleteInstance(t *testing.T) {
	env := duroxidetest.New(registry(t), duroxidetest.WithInstanceID(orchestrations.CreateID("db-1a2b")))
	defaults := createDefaults()
	for k, v := range deleteDefaults(cms.StateFailed) {
		if _, ok := defaults[k]; !ok {
			defaults[k] = v
		}
	}
	mocks{activities.WaitForReady: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }}.apply(env, defaults)
	res := run(t, env, orchestrations.CreateInstance, createInput)
	wantFailed(t, res, "wait for ready failed")
	wantCalls(t, env, "deploy-postgres#1", "wait-for-ready#1", "cms-update-instance-state#1", "delete-instance",
		"cms-get-instance#1", "raise-event#1", "raise-event#1", "flush-archive#1", "delete-postgres#1", "cms-forget-password#1", "cms-add-instance-event#1")
	if c := env.CallsTo(activities.GetInstance)[0]; c.Instance != orchestrations.CleanupID("db-1a2b") {
		t.Fatalf("cleanup ran as %s", c.Instance)
	}
}

// TestCreateWaitForReadyPollsUntilItsTotalTimeout: the wait-for-ready
// policy gives up after 10 minutes of virtual time.
func TestCreateWaitForReadyPollsUntilItsTotalTimeout(t *testing.T) {
	env := newCreateEnv(t, mocks{activities.WaitForReady: func(m *duroxidetest.Mock) { m.Fail(errors.New("starting")) }})
	env.OnSubOrchestration(orchestrations.DeleteInstance).Return("cleaned up")
	res := run(t, env, orchestrations.CreateInstance, createInput)
	wantFailed(t, res, "retry sequence exceeded its total timeout of 10m0s")
	if n := len(env.CallsTo(activities.WaitForReady)); n < 100 || n > 200 {
		t.Fatalf("%d polls", n)
	}
	if res.Elapsed != 10*time.Minute {
		t.Fatalf("elapsed %v", res.Elapsed)
	}
}

func TestCreateCancelled(t *testing.T) {
	env := newCreateEnv(t, mocks{activities.Deploy: func(m *duroxidetest.Mock) { m.Return(struct{}{}).After(time.Minute) }})
	env.CancelAt(30*time.Second, "instance deleted")
	res := run(t, env, orchestrations.CreateInstance, createInput)
	if res.Status != duroxide.StatusCancelled || !errors.Is(res.Err, duroxide.ErrCancelled) {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	if c := env.CallsTo(activities.Deploy)[0]; !c.Cancelled {
		t.Fatalf("deploy not withdrawn: %+v", c)
	}
}

// TestCreateNoBackups: an instance created without backups has archiving
// turned off and no backup schedule.
func TestCreateNoBackups(t *testing.T) {
	env := newCreateEnv(t, nil)
	in := createInput
	in.NoBackups = true
	if res := run(t, env, orchestrations.CreateInstance, in); res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	wantCalls(t, env, "deploy-postgres#1", "wait-for-ready#1",
		"test-connection#1", "cms-update-instance-state#1", "set-archiving#1")
	var sa activities.SetArchivingInput
	if err := env.CallsTo(activities.SetArchiving)[0].DecodeInput(&sa); err != nil || sa.On || sa.InternalName != "db-1a2b" {
		t.Fatalf("set-archiving %+v (%v)", sa, err)
	}
	if d := env.Detached(); len(d) != 1 || d[0].Name != orchestrations.InstanceActor {
		t.Fatalf("detached %+v", d)
	}
}

// TestCreateFromRestore: a create with a restore source restores instead
// of deploying, then goes on as any create.
func TestCreateFromRestore(t *testing.T) {
	env := newCreateEnv(t, nil)
	res := run(t, env, orchestrations.CreateInstance, restoreInput)
	if res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	wantCalls(t, env, "restore-postgres#1", "wait-for-ready#1",
		"test-connection#1", "cms-update-instance-state#1")
	var ri activities.RestoreInput
	if err := env.CallsTo(activities.RestorePostgres)[0].DecodeInput(&ri); err != nil || ri.From.Instance != "src-9f8e" || ri.From.BackupID != restoreInput.Restore.BackupID ||
		!ri.From.Target.Equal(restoreInput.Restore.Target) || ri.InternalName != "db-1a2b" {
		t.Fatalf("restore input %+v (%v)", ri, err)
	}
}

var restoreInput = func() orchestrations.CreateInput {
	in := createInput
	in.Restore = &dataplane.RestoreSource{Instance: "src-9f8e", BackupID: "s20250101t000000-1a2b3c4d", Target: time.Date(2025, 1, 1, 6, 0, 0, 0, time.UTC)}
	return in
}()
