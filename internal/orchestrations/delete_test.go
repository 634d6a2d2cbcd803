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

func newDeleteEnv(t *testing.T, view activities.InstanceView, m mocks) *duroxidetest.Env {
	env := duroxidetest.New(registry(t), duroxidetest.WithInstanceID(orchestrations.DeleteID("db-1a2b")))
	d := deleteDefaults(view.State)
	d[activities.GetInstance] = view
	m.apply(env, d)
	return env
}

var running = activities.InstanceView{Found: true, InternalName: "db-1a2b", State: cms.StateRunning, ActorOrchestrationID: "actor-db-1a2b"}

func deleteInput(cleanup bool) orchestrations.DeleteInput {
	return orchestrations.DeleteInput{InternalName: "db-1a2b", Cleanup: cleanup}
}

func wantOutput(t *testing.T, res *duroxidetest.Result, want string) {
	t.Helper()
	var out string
	if res.Status != duroxide.StatusCompleted || res.Decode(&out) != nil || out != want {
		t.Fatalf("status %s, output %s, err %v; want %q", res.Status, res.Output, res.Err, want)
	}
}

func TestDeleteRunningInstance(t *testing.T) {
	env := newDeleteEnv(t, running, nil)
	res := run(t, env, orchestrations.DeleteInstance, deleteInput(false))
	wantOutput(t, res, "deleted")
	wantCalls(t, env, "cms-get-instance#1", "cms-update-instance-state#1", "raise-event#1", "raise-event#1", "flush-archive#1", "delete-postgres#1",
		"cms-forget-password#1", "cms-update-instance-state#1")
	states := env.CallsTo(activities.UpdateState)
	var first, last activities.UpdateStateInput
	_ = states[0].DecodeInput(&first)
	_ = states[1].DecodeInput(&last)
	if first.State != cms.StateDeleting || first.Update.DeleteOrchestrationID != "delete-db-1a2b" || last.State != cms.StateDeleted {
		t.Fatalf("states %+v then %+v", first, last)
	}
	var raise activities.RaiseEventInput
	_ = env.CallsTo(activities.RaiseEvent)[0].DecodeInput(&raise)
	if raise.Instance != "actor-db-1a2b" || raise.Event != orchestrations.EventInstanceDeleted {
		t.Fatalf("raise %+v", raise)
	}
	// The backup schedule stops too; the backups stay.
	_ = env.CallsTo(activities.RaiseEvent)[1].DecodeInput(&raise)
	if raise.Instance != orchestrations.ScheduleID("db-1a2b") || raise.Event != orchestrations.EventInstanceDeleted {
		t.Fatalf("raise %+v", raise)
	}
}

// TestDeletePurgeBackups: with purge_backups the backups go after the
// instance is marked deleted; a failed purge fails the delete (the
// instance is deleted, its backups are not).
func TestDeletePurgeBackups(t *testing.T) {
	in := deleteInput(false)
	in.PurgeBackups = true
	env := newDeleteEnv(t, running, nil)
	wantOutput(t, run(t, env, orchestrations.DeleteInstance, in), "deleted")
	wantCalls(t, env, "cms-get-instance#1", "cms-update-instance-state#1", "raise-event#1", "raise-event#1", "flush-archive#1", "delete-postgres#1",
		"cms-forget-password#1", "cms-update-instance-state#1", "purge-backups#1")

	env = newDeleteEnv(t, running, mocks{activities.PurgeBackups: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }})
	wantFailed(t, run(t, env, orchestrations.DeleteInstance, in), "purge backups:")
}

func TestDeleteLookupFailure(t *testing.T) {
	env := newDeleteEnv(t, running, mocks{activities.GetInstance: fail})
	res := run(t, env, orchestrations.DeleteInstance, deleteInput(false))
	wantFailed(t, res, "look up instance: activity cms-get-instance failed after 3 attempt(s): boom")
	// 3 attempts with the lookup policy's fixed 2s waits.
	if calls := env.CallsTo(activities.GetInstance); len(calls) != 3 || calls[2].At != 4*time.Second {
		t.Fatalf("lookups %v", env.CallNames())
	}
}

func TestDeleteNotFound(t *testing.T) {
	env := newDeleteEnv(t, activities.InstanceView{}, nil)
	wantOutput(t, run(t, env, orchestrations.DeleteInstance, deleteInput(false)), "not found")
	wantCalls(t, env, "cms-get-instance#1")
}

func TestDeleteMarkDeletingFailure(t *testing.T) {
	env := newDeleteEnv(t, running, mocks{activities.UpdateState: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }})
	wantFailed(t, run(t, env, orchestrations.DeleteInstance, deleteInput(false)), "mark deleting:")
}

// TestDeleteWaitsForCreate: a create still in flight is awaited first; if it
// does not end, the delete goes on.
func TestDeleteWaitsForCreate(t *testing.T) {
	view := running
	view.CreateOrchestration, view.ActorOrchestrationID = "create-db-1a2b", ""
	for _, awaitFails := range []bool{false, true} {
		m := mocks{}
		if awaitFails {
			m[activities.AwaitOrchestration] = func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }
		}
		env := newDeleteEnv(t, view, m)
		wantOutput(t, run(t, env, orchestrations.DeleteInstance, deleteInput(false)), "deleted")
		wantCalls(t, env, "cms-get-instance#1", "cms-update-instance-state#1", "await-orchestration-finished#1", "raise-event#1",
			"raise-event#1", "flush-archive#1", "delete-postgres#1", "cms-forget-password#1", "cms-update-instance-state#1")
		var raise activities.RaiseEventInput
		_ = env.CallsTo(activities.RaiseEvent)[0].DecodeInput(&raise)
		if raise.Instance != orchestrations.ActorID("db-1a2b") {
			t.Fatalf("actor id not derived: %+v", raise)
		}
	}
}

// TestDeleteFailedInstance: a failed instance was cleaned up already; it is
// not marked deleting and no create is awaited.
func TestDeleteFailedInstance(t *testing.T) {
	view := activities.InstanceView{Found: true, State: cms.StateFailed, CreateOrchestration: "create-db-1a2b"}
	env := newDeleteEnv(t, view, nil)
	wantOutput(t, run(t, env, orchestrations.DeleteInstance, deleteInput(false)), "deleted")
	wantCalls(t, env, "cms-get-instance#1", "raise-event#1", "raise-event#1", "flush-archive#1", "delete-postgres#1", "cms-forget-password#1", "cms-update-instance-state#1")
}

// TestDeleteBestEffortSteps: failures of signalling the actor and the
// backup schedule, of flushing the WAL archive and of forgetting the
// password do not stop the delete.
func TestDeleteBestEffortSteps(t *testing.T) {
	env := newDeleteEnv(t, running, mocks{
		activities.RaiseEvent:     func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) },
		activities.FlushArchive:   func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) },
		activities.ForgetPassword: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) },
	})
	wantOutput(t, run(t, env, orchestrations.DeleteInstance, deleteInput(false)), "deleted")
}

func TestDeletePostgresFailure(t *testing.T) {
	for _, cleanup := range []bool{false, true} {
		env := newDeleteEnv(t, running, mocks{activities.DeletePostgres: fail})
		res := run(t, env, orchestrations.DeleteInstance, deleteInput(cleanup))
		wantFailed(t, res, "delete resources: activity delete-postgres failed after 3 attempt(s): boom")
		events := env.CallsTo(activities.AddEvent)
		if cleanup != (len(events) == 0) {
			t.Fatalf("cleanup=%v: %d events recorded", cleanup, len(events))
		}
		if !cleanup {
			var ev activities.AddEventInput
			_ = events[0].DecodeInput(&ev)
			if !strings.HasPrefix(ev.Message, "delete failed: ") {
				t.Fatalf("event %+v", ev)
			}
		}
		// delete-postgres backs off 1s then 2s.
		if calls := env.CallsTo(activities.DeletePostgres); len(calls) != 3 || calls[1].At-calls[0].At != time.Second || calls[2].At-calls[1].At != 2*time.Second {
			t.Fatalf("delete attempts %v", env.CallNames())
		}
	}
}

func TestDeleteCleanup(t *testing.T) {
	env := newDeleteEnv(t, activities.InstanceView{Found: true, State: cms.StateCreating}, nil)
	wantOutput(t, run(t, env, orchestrations.DeleteInstance, deleteInput(true)), "cleaned up")
	wantCalls(t, env, "cms-get-instance#1", "raise-event#1", "raise-event#1", "flush-archive#1", "delete-postgres#1", "cms-forget-password#1", "cms-add-instance-event#1")

	env = newDeleteEnv(t, activities.InstanceView{Found: true, State: cms.StateCreating}, mocks{
		activities.AddEvent: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }})
	wantFailed(t, run(t, env, orchestrations.DeleteInstance, deleteInput(true)), "record cleanup:")
}

func TestDeleteMarkDeletedFailure(t *testing.T) {
	env := newDeleteEnv(t, running, mocks{activities.UpdateState: func(m *duroxidetest.Mock) {
		m.Return(cms.StateDeleting).Fail(duroxide.NonRetryable(errBoom))
	}})
	wantFailed(t, run(t, env, orchestrations.DeleteInstance, deleteInput(false)), "mark deleted:")
}
