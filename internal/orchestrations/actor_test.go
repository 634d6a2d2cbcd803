package orchestrations_test

import (
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/orchestrations"
)

var actorInput = orchestrations.ActorInput{InternalName: "db-1a2b", Interval: time.Minute, Checks: 4, Restarts: 1}

func actorDefaults() map[string]any {
	return map[string]any{
		activities.GetInstanceConnection: activities.InstanceView{Found: true, State: cms.StateRunning, ConnectionString: conn.ConnectionString},
		activities.TestConnection:        activities.TestConnectionOutput{Version: "PostgreSQL 16.4", LatencyMs: 7, Restarts: 2},
		activities.RecordHealthCheck:     struct{}{},
		activities.UpdateHealth:          struct{}{},
	}
}

func newActorEnv(t *testing.T, m mocks, opts ...duroxidetest.Option) *duroxidetest.Env {
	env := duroxidetest.New(registry(t), append([]duroxidetest.Option{duroxidetest.WithInstanceID(orchestrations.ActorID("db-1a2b"))}, opts...)...)
	m.apply(env, actorDefaults())
	return env
}

func nextActorInput(t *testing.T, res *duroxidetest.Result) orchestrations.ActorInput {
	t.Helper()
	var next orchestrations.ActorInput
	if res.Status != duroxide.StatusContinuedAsNew || res.Decode(&next) != nil {
		t.Fatalf("status %s err %v; want continue-as-new", res.Status, res.Err)
	}
	return next
}

func TestActorHealthyCheck(t *testing.T) {
	env := newActorEnv(t, nil)
	res := run(t, env, orchestrations.InstanceActor, actorInput)
	next := nextActorInput(t, res)
	if next.Checks != 5 || next.Restarts != 2 || next.Interval != time.Minute {
		t.Fatalf("next input %+v", next)
	}
	if res.Elapsed != time.Minute {
		t.Fatalf("waited %v, want the interval", res.Elapsed)
	}
	// Recording the check sets the health too (one CMS write per check).
	wantCalls(t, env, "cms-get-instance-connection#1", "test-connection#1", "cms-record-health-check#1")
	var probe activities.TestConnectionInput
	_ = env.CallsTo(activities.TestConnection)[0].DecodeInput(&probe)
	var hc activities.HealthCheckInput
	_ = env.CallsTo(activities.RecordHealthCheck)[0].DecodeInput(&hc)
	if probe.KnownRestarts != 1 || hc.Status != cms.HealthHealthy || hc.ResponseTimeMs != 7 || hc.CheckedAtMs != duroxidetest.DefaultStart.UnixMilli() {
		t.Fatalf("probe %+v, health check %+v", probe, hc)
	}
}

func TestActorUnhealthyCheck(t *testing.T) {
	env := newActorEnv(t, mocks{
		activities.TestConnection:    fail,
		activities.RecordHealthCheck: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) },
		activities.UpdateHealth:      func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) },
	})
	next := nextActorInput(t, run(t, env, orchestrations.InstanceActor, actorInput))
	if next.Checks != 5 || next.Restarts != 1 {
		t.Fatalf("next input %+v", next)
	}
	var hc activities.HealthCheckInput
	_ = env.CallsTo(activities.RecordHealthCheck)[0].DecodeInput(&hc)
	if hc.Status != cms.HealthUnhealthy || hc.Error == "" || len(env.CallsTo(activities.TestConnection)) != 3 || len(env.CallsTo(activities.UpdateHealth)) != 0 {
		t.Fatalf("health check %+v, calls %v", hc, env.CallNames())
	}
}

// TestActorLookupFailureTriesAgain: a failed read is not a check; the
// actor waits and continues.
func TestActorLookupFailureTriesAgain(t *testing.T) {
	env := newActorEnv(t, mocks{activities.GetInstanceConnection: fail})
	next := nextActorInput(t, run(t, env, orchestrations.InstanceActor, actorInput))
	if next.Checks != 4 {
		t.Fatalf("next input %+v", next)
	}
	wantCalls(t, env, "cms-get-instance-connection#1", "cms-get-instance-connection#2", "cms-get-instance-connection#3")
}

func TestActorNoConnectionStringYet(t *testing.T) {
	env := newActorEnv(t, mocks{activities.GetInstanceConnection: func(m *duroxidetest.Mock) {
		m.Return(activities.InstanceView{Found: true, State: cms.StateCreating})
	}})
	next := nextActorInput(t, run(t, env, orchestrations.InstanceActor, actorInput))
	if next.Checks != 4 {
		t.Fatalf("next input %+v", next)
	}
	wantCalls(t, env, "cms-get-instance-connection#1")
}

func TestActorStopsWhenInstanceIsGone(t *testing.T) {
	cases := []struct {
		view activities.InstanceView
		want string
	}{
		{activities.InstanceView{}, "instance gone"},
		{activities.InstanceView{Found: true, State: cms.StateDeleted}, "instance gone"},
		{activities.InstanceView{Found: true, State: cms.StateFailed}, "instance gone"},
		{activities.InstanceView{Found: true, State: cms.StateDeleting}, "instance deleting"},
	}
	for _, c := range cases {
		env := newActorEnv(t, mocks{activities.GetInstanceConnection: func(m *duroxidetest.Mock) { m.Return(c.view) }})
		wantOutput(t, run(t, env, orchestrations.InstanceActor, actorInput), c.want)
	}
}

func TestActorStopsOnDeletedEvent(t *testing.T) {
	// Raised while the actor waits for its next check.
	env := newActorEnv(t, nil)
	env.RaiseEventAt(20*time.Second, orchestrations.EventInstanceDeleted, nil)
	res := run(t, env, orchestrations.InstanceActor, actorInput)
	wantOutput(t, res, "stopped")
	if res.Elapsed != 20*time.Second {
		t.Fatalf("stopped after %v", res.Elapsed)
	}
	// Raised as the interval ends: the timer wins, the event is carried to
	// the next execution, which stops before checking.
	env = newActorEnv(t, nil, duroxidetest.WithMaxExecutions(2))
	env.RaiseEventAt(time.Minute, orchestrations.EventInstanceDeleted, nil)
	res = run(t, env, orchestrations.InstanceActor, actorInput)
	wantOutput(t, res, "stopped")
	if len(res.Executions) != 2 || len(res.History) != 3 || res.History[0].CarryForward[0].Name != orchestrations.EventInstanceDeleted {
		t.Fatalf("second execution: %v", res.History)
	}
	// Recording the check sets the health too (one CMS write per check).
	wantCalls(t, env, "cms-get-instance-connection#1", "test-connection#1", "cms-record-health-check#1")
}

// TestActorDefaultInterval: without an interval the actor checks every 30s,
// across executions.
func TestActorDefaultInterval(t *testing.T) {
	env := newActorEnv(t, nil, duroxidetest.WithMaxExecutions(3))
	res := run(t, env, orchestrations.InstanceActor, orchestrations.ActorInput{InternalName: "db-1a2b"})
	next := nextActorInput(t, res)
	if next.Checks != 3 || res.Elapsed != 3*orchestrations.DefaultActorInterval || len(res.Executions) != 3 {
		t.Fatalf("next %+v elapsed %v executions %d", next, res.Elapsed, len(res.Executions))
	}
}
