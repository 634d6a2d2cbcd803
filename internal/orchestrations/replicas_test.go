package orchestrations_test

import (
	"encoding/json"
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

var (
	primary0 = dataplane.ServerState{ID: "0", Role: dataplane.RolePrimary, Ready: true, Timeline: 1}
	deadPrim = dataplane.ServerState{ID: "0", Role: dataplane.RolePrimary, Timeline: 1, Message: "not running"}
	standby1 = dataplane.ServerState{ID: "1", Role: dataplane.RoleStandby, Ready: true, Streaming: true, Timeline: 1}
	syncSb2  = dataplane.ServerState{ID: "2", Role: dataplane.RoleStandby, Ready: true, Streaming: true, Sync: true, Timeline: 1, LagBytes: 100}
)

func servers(s ...dataplane.ServerState) activities.ServersOutput {
	return activities.ServersOutput{Servers: s}
}

var replicaConn = activities.RecordEndpointOutput{
	ConnectionString:         "postgresql://postgres@127.0.0.1:5433,127.0.0.1:5434/postgres?target_session_attrs=read-write",
	ReadOnlyConnectionString: "postgresql://postgres@127.0.0.1:5434,127.0.0.1:5433/postgres?target_session_attrs=prefer-standby",
}

func replicaDefaults() map[string]any {
	return map[string]any{
		activities.SetReplicas:           struct{}{},
		activities.WaitForStandbys:       servers(primary0, standby1),
		activities.ListServers:           servers(deadPrim, standby1, syncSb2),
		activities.FenceServer:           struct{}{},
		activities.PromoteServer:         struct{}{},
		activities.RebuildServer:         struct{}{},
		activities.RecordReplicaEndpoint: replicaConn,
		activities.RecordFailover:        struct{}{},
		activities.AddEvent:              struct{}{},
	}
}

func newReplicaEnv(t *testing.T, id string, m mocks) *duroxidetest.Env {
	env := duroxidetest.New(registry(t), duroxidetest.WithInstanceID(id))
	m.apply(env, replicaDefaults())
	return env
}

var scaleInput = orchestrations.ScaleInput{InternalName: "db-1a2b", Replicas: 1, Sync: true}

func TestScaleSuccess(t *testing.T) {
	env := newReplicaEnv(t, orchestrations.ScaleID("db-1a2b", "1"), nil)
	res := run(t, env, orchestrations.ScaleInstance, scaleInput)
	var out orchestrations.ScaleOutput
	if err := res.Decode(&out); err != nil || res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	if out.Replicas != 1 || out.ReadOnlyConnectionString != replicaConn.ReadOnlyConnectionString {
		t.Fatalf("output %+v", out)
	}
	wantCalls(t, env, "set-replicas#1", "wait-for-standbys#1", "cms-record-replica-endpoint#1", "cms-add-instance-event#1")
	var set activities.SetReplicasInput
	_ = env.CallsTo(activities.SetReplicas)[0].DecodeInput(&set)
	var rec activities.RecordEndpointInput
	_ = env.CallsTo(activities.RecordReplicaEndpoint)[0].DecodeInput(&rec)
	var ev activities.AddEventInput
	_ = env.CallsTo(activities.AddEvent)[0].DecodeInput(&ev)
	if set.Replicas != 1 || !set.Sync || rec.Primary != "0" || ev.Message != "scaled to 1 standbys, one synchronous" {
		t.Fatalf("set %+v, record %+v, event %q", set, rec, ev.Message)
	}
}

func TestScaleFailures(t *testing.T) {
	for _, c := range []struct {
		activity, step string
		calls          []string
	}{
		{activities.SetReplicas, "set replicas", []string{"set-replicas#1", "cms-add-instance-event#1"}},
		{activities.WaitForStandbys, "wait for standbys", []string{"set-replicas#1", "wait-for-standbys#1", "cms-add-instance-event#1"}},
		{activities.RecordReplicaEndpoint, "record connection strings", []string{"set-replicas#1", "wait-for-standbys#1", "cms-record-replica-endpoint#1", "cms-add-instance-event#1"}},
	} {
		t.Run(c.activity, func(t *testing.T) {
			env := newReplicaEnv(t, orchestrations.ScaleID("db-1a2b", "1"), mocks{c.activity: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }})
			res := run(t, env, orchestrations.ScaleInstance, scaleInput)
			wantFailed(t, res, "scale to 1 standbys failed: "+c.step)
			wantCalls(t, env, c.calls...)
			var ev activities.AddEventInput
			_ = env.CallsTo(activities.AddEvent)[0].DecodeInput(&ev)
			if !strings.Contains(ev.Message, "failed: "+c.step) {
				t.Fatalf("event %q", ev.Message)
			}
		})
	}
}

var failoverInput = orchestrations.FailoverInput{InternalName: "db-1a2b", Automatic: true, Reason: "3 consecutive failed health checks"}

func decodeFailover(t *testing.T, res *duroxidetest.Result) orchestrations.FailoverOutput {
	t.Helper()
	var out orchestrations.FailoverOutput
	if err := res.Decode(&out); err != nil || res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	return out
}

func serverArg(t *testing.T, env *duroxidetest.Env, activity string) string {
	t.Helper()
	calls := env.CallsTo(activity)
	if len(calls) == 0 {
		t.Fatalf("%s not called: %v", activity, env.CallNames())
	}
	var ref activities.ServerRef
	_ = calls[0].DecodeInput(&ref)
	return ref.ServerID
}

// TestFailoverPromotesSyncStandby: the synchronous standby is chosen over a
// less lagging asynchronous one; the old primary is fenced before the
// promotion, then rebuilt.
func TestFailoverPromotesSyncStandby(t *testing.T) {
	env := newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), nil)
	out := decodeFailover(t, run(t, env, orchestrations.FailoverInstance, failoverInput))
	if out.From != "0" || out.To != "2" || out.Kind != orchestrations.KindFailover || out.Skipped != "" {
		t.Fatalf("output %+v", out)
	}
	wantCalls(t, env, "list-servers#1", "cms-add-instance-event#1", "fence-server#1", "promote-server#1",
		"cms-record-replica-endpoint#1", "cms-record-failover#1", "rebuild-server#1", "wait-for-standbys#1", "cms-add-instance-event#1")
	if serverArg(t, env, activities.FenceServer) != "0" || serverArg(t, env, activities.PromoteServer) != "2" || serverArg(t, env, activities.RebuildServer) != "0" {
		t.Fatal("wrong servers fenced, promoted or rebuilt")
	}
	var rec activities.RecordFailoverInput
	_ = env.CallsTo(activities.RecordFailover)[0].DecodeInput(&rec)
	var wait activities.WaitForStandbysInput
	_ = env.CallsTo(activities.WaitForStandbys)[0].DecodeInput(&wait)
	if rec.Kind != "failover" || rec.From != "0" || rec.To != "2" || wait.Replicas != 2 {
		t.Fatalf("record %+v, wait %+v", rec, wait)
	}
}

// TestFailoverChoosesMostAdvanced: without a synchronous standby, the
// newest timeline wins, then the least lag; standbys not ready never win.
func TestFailoverChoosesMostAdvanced(t *testing.T) {
	cases := []struct {
		list []dataplane.ServerState
		want string
	}{
		{[]dataplane.ServerState{deadPrim, {ID: "1", Role: dataplane.RoleStandby, Ready: true, Timeline: 1, LagBytes: 10},
			{ID: "2", Role: dataplane.RoleStandby, Ready: true, Timeline: 1, LagBytes: 5}}, "2"},
		{[]dataplane.ServerState{deadPrim, {ID: "1", Role: dataplane.RoleStandby, Ready: true, Timeline: 2, LagBytes: 10},
			{ID: "2", Role: dataplane.RoleStandby, Ready: true, Timeline: 1}}, "1"},
		{[]dataplane.ServerState{deadPrim, {ID: "1", Role: dataplane.RoleStandby, Ready: true},
			{ID: "2", Role: dataplane.RoleStandby, Ready: false, Sync: true}}, "1"},
		{[]dataplane.ServerState{deadPrim, {ID: "2", Role: dataplane.RoleStandby, Ready: true},
			{ID: "1", Role: dataplane.RoleStandby, Ready: true}}, "1"},
	}
	for i, c := range cases {
		env := newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), mocks{activities.ListServers: func(m *duroxidetest.Mock) { m.Return(servers(c.list...)) }})
		if out := decodeFailover(t, run(t, env, orchestrations.FailoverInstance, failoverInput)); out.To != c.want {
			t.Errorf("case %d: promoted %s, want %s", i, out.To, c.want)
		}
	}
}

func TestFailoverAutomaticSkipsLivePrimary(t *testing.T) {
	env := newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), mocks{activities.ListServers: func(m *duroxidetest.Mock) { m.Return(servers(primary0, standby1)) }})
	out := decodeFailover(t, run(t, env, orchestrations.FailoverInstance, failoverInput))
	if out.Skipped == "" || out.To != "" {
		t.Fatalf("output %+v", out)
	}
	wantCalls(t, env, "list-servers#1", "cms-add-instance-event#1")
	// A manual failover promotes even so.
	env = newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), mocks{activities.ListServers: func(m *duroxidetest.Mock) { m.Return(servers(primary0, standby1)) }})
	if out := decodeFailover(t, run(t, env, orchestrations.FailoverInstance, orchestrations.FailoverInput{InternalName: "db-1a2b"})); out.To != "1" {
		t.Fatalf("manual failover: %+v", out)
	}
}

// TestFailoverResumesFromFencedPrimary: after a failover that fenced the
// primary and then stopped, the next one carries on from the fenced server.
func TestFailoverResumesFromFencedPrimary(t *testing.T) {
	fenced := dataplane.ServerState{ID: "0", Role: dataplane.RoleFenced}
	env := newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 2), mocks{activities.ListServers: func(m *duroxidetest.Mock) { m.Return(servers(fenced, standby1)) }})
	out := decodeFailover(t, run(t, env, orchestrations.FailoverInstance, failoverInput))
	if out.From != "0" || out.To != "1" {
		t.Fatalf("output %+v", out)
	}
}

func TestFailoverStops(t *testing.T) {
	boom := func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }
	cases := []struct {
		name  string
		m     mocks
		input orchestrations.FailoverInput
		orch  string
		want  string
		calls []string
	}{
		{"list fails", mocks{activities.ListServers: boom}, failoverInput, orchestrations.FailoverInstance,
			"failover stopped: listing the servers failed", []string{"list-servers#1", "cms-add-instance-event#1"}},
		{"no primary", mocks{activities.ListServers: func(m *duroxidetest.Mock) { m.Return(servers(standby1)) }}, failoverInput, orchestrations.FailoverInstance,
			"the instance has no primary", []string{"list-servers#1", "cms-add-instance-event#1"}},
		{"no standby", mocks{activities.ListServers: func(m *duroxidetest.Mock) {
			m.Return(servers(deadPrim, dataplane.ServerState{ID: "1", Role: dataplane.RoleBuilding}))
		}}, failoverInput, orchestrations.FailoverInstance,
			"no ready standby to promote", []string{"list-servers#1", "cms-add-instance-event#1"}},
		// Never two primaries: nothing is promoted unless fencing succeeded.
		{"fence fails", mocks{activities.FenceServer: boom}, failoverInput, orchestrations.FailoverInstance,
			"fencing server 0 failed, nothing promoted", []string{"list-servers#1", "cms-add-instance-event#1", "fence-server#1", "cms-add-instance-event#1"}},
		{"promote fails", mocks{activities.PromoteServer: boom}, failoverInput, orchestrations.FailoverInstance,
			"promoting server 2 failed (server 0 is fenced)", []string{"list-servers#1", "cms-add-instance-event#1", "fence-server#1", "promote-server#1", "cms-add-instance-event#1"}},
		{"rebuild fails", mocks{activities.RebuildServer: boom}, failoverInput, orchestrations.FailoverInstance,
			"server 2 is the primary, but rebuilding server 0 as a standby failed", []string{"list-servers#1", "cms-add-instance-event#1", "fence-server#1", "promote-server#1",
				"cms-record-replica-endpoint#1", "cms-record-failover#1", "rebuild-server#1", "cms-add-instance-event#1"}},
		{"rebuilt does not stream", mocks{activities.WaitForStandbys: boom}, failoverInput, orchestrations.FailoverInstance,
			"server 0 does not stream", []string{"list-servers#1", "cms-add-instance-event#1", "fence-server#1", "promote-server#1",
				"cms-record-replica-endpoint#1", "cms-record-failover#1", "rebuild-server#1", "wait-for-standbys#1", "cms-add-instance-event#1"}},
		{"switchover of a dead primary", nil, orchestrations.FailoverInput{InternalName: "db-1a2b"}, orchestrations.SwitchoverInstance,
			"switchover stopped: primary 0 is not ready", []string{"list-servers#1", "cms-add-instance-event#1"}},
		{"switchover without a streaming standby", mocks{activities.ListServers: func(m *duroxidetest.Mock) {
			m.Return(servers(primary0, dataplane.ServerState{ID: "1", Role: dataplane.RoleStandby, Ready: true}))
		}}, orchestrations.FailoverInput{InternalName: "db-1a2b"}, orchestrations.SwitchoverInstance,
			"no ready standby", []string{"list-servers#1", "cms-add-instance-event#1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), c.m)
			res := run(t, env, c.orch, c.input)
			wantFailed(t, res, c.want)
			wantCalls(t, env, c.calls...)
		})
	}
}

// TestFailoverRecordingFailuresAreOnlyLogged: the promotion happened; a
// failed CMS record does not stop the rebuild.
func TestFailoverRecordingFailuresAreOnlyLogged(t *testing.T) {
	boom := func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }
	env := newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), mocks{activities.RecordReplicaEndpoint: boom, activities.RecordFailover: boom, activities.AddEvent: boom})
	if out := decodeFailover(t, run(t, env, orchestrations.FailoverInstance, failoverInput)); out.To != "2" {
		t.Fatalf("output %+v", out)
	}
	if len(env.CallsTo(activities.RebuildServer)) != 1 {
		t.Fatalf("calls %v", env.CallNames())
	}
}

func TestSwitchoverSuccess(t *testing.T) {
	env := newReplicaEnv(t, orchestrations.FailoverID("db-1a2b", 1), mocks{activities.ListServers: func(m *duroxidetest.Mock) { m.Return(servers(primary0, standby1, syncSb2)) }})
	out := decodeFailover(t, run(t, env, orchestrations.SwitchoverInstance, orchestrations.FailoverInput{InternalName: "db-1a2b"}))
	if out.From != "0" || out.To != "2" || out.Kind != orchestrations.KindSwitchover {
		t.Fatalf("output %+v", out)
	}
	wantCalls(t, env, "list-servers#1", "cms-add-instance-event#1", "fence-server#1", "promote-server#1",
		"cms-record-replica-endpoint#1", "cms-record-failover#1", "rebuild-server#1", "wait-for-standbys#1", "cms-add-instance-event#1")
	var rec activities.RecordFailoverInput
	_ = env.CallsTo(activities.RecordFailover)[0].DecodeInput(&rec)
	if rec.Kind != "switchover" {
		t.Fatalf("record %+v", rec)
	}
}

var replicaCreateInput = func() orchestrations.CreateInput {
	in := createInput
	in.Replicas, in.SyncReplica = 1, true
	return in
}()

func newReplicaCreateEnv(t *testing.T, m mocks) *duroxidetest.Env {
	env := newCreateEnv(t, m)
	defaults := replicaDefaults()
	for _, name := range []string{activities.SetReplicas, activities.WaitForStandbys, activities.RecordReplicaEndpoint} {
		mock := env.OnActivity(name)
		if f, ok := m[name]; ok {
			f(mock)
		} else {
			mock.Return(defaults[name])
		}
	}
	return env
}

func TestCreateWithReplicas(t *testing.T) {
	env := newReplicaCreateEnv(t, nil)
	res := run(t, env, orchestrations.CreateInstance, replicaCreateInput)
	if res.Status != duroxide.StatusCompleted {
		t.Fatalf("status %s err %v", res.Status, res.Err)
	}
	wantCalls(t, env, "deploy-postgres#1", "wait-for-ready#1",
		"test-connection#1", "set-replicas#1", "wait-for-standbys#1", "get-connection-strings#1", "cms-update-instance-state#1",
		"cms-record-replica-endpoint#1")
	var set activities.SetReplicasInput
	_ = env.CallsTo(activities.SetReplicas)[0].DecodeInput(&set)
	if set.Replicas != 1 || !set.Sync {
		t.Fatalf("set replicas %+v", set)
	}
}

func TestCreateReplicaFailureCleansUp(t *testing.T) {
	env := newReplicaCreateEnv(t, mocks{activities.SetReplicas: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }})
	env.OnSubOrchestration(orchestrations.DeleteInstance).Return("cleaned up")
	res := run(t, env, orchestrations.CreateInstance, replicaCreateInput)
	wantFailed(t, res, "add standbys failed")
}

// The health actor of an instance with standbys.

var replicatedActorInput = orchestrations.ActorInput{InternalName: "db-1a2b", Interval: time.Minute, FailoverThreshold: 3}

func newReplicatedActorEnv(t *testing.T, m mocks, opts ...duroxidetest.Option) *duroxidetest.Env {
	if m == nil {
		m = mocks{}
	}
	if _, ok := m[activities.GetInstanceConnection]; !ok {
		m[activities.GetInstanceConnection] = func(mk *duroxidetest.Mock) {
			mk.Return(activities.InstanceView{Found: true, State: cms.StateRunning, ConnectionString: replicaConn.ConnectionString, Replicas: 1})
		}
	}
	env := newActorEnv(t, m, opts...)
	for name, v := range map[string]any{
		activities.ListServers:   servers(primary0, standby1),
		activities.StartFailover: activities.StartFailoverOutput{OrchestrationID: orchestrations.FailoverID("db-1a2b", 1), Started: true},
	} {
		mock := env.OnActivity(name)
		if f, ok := m[name]; ok {
			f(mock)
		} else {
			mock.Return(v)
		}
	}
	return env
}

func TestActorReplicatedHealthyCheck(t *testing.T) {
	in := replicatedActorInput
	in.FailedChecks = 2
	env := newReplicatedActorEnv(t, nil)
	res := run(t, env, orchestrations.InstanceActor, in)
	next := nextActorInput(t, res)
	if next.FailedChecks != 0 || next.Checks != 1 || res.Elapsed != orchestrations.DefaultFailoverCheckInterval {
		t.Fatalf("next %+v after %v", next, res.Elapsed)
	}
	wantCalls(t, env, "cms-get-instance-connection#1", "test-connection#1", "cms-record-health-check#1", "list-servers#1")
	policy := ""
	for _, ev := range res.History {
		if ev.Kind == duroxide.EventActivityScheduled && ev.Name == activities.TestConnection {
			policy = ev.Policy
		}
	}
	if !strings.HasPrefix(policy, "failover-probe:") {
		t.Fatalf("probe policy %q", policy)
	}
}

// TestActorStartsFailover: failed checks count up, one attempt each, every
// FailoverInterval; the third starts a failover and the count restarts.
func TestActorStartsFailover(t *testing.T) {
	in := replicatedActorInput
	in.FailoverInterval = time.Second
	env := newReplicatedActorEnv(t, mocks{activities.TestConnection: fail, activities.ListServers: fail}, duroxidetest.WithMaxExecutions(3))
	res := run(t, env, orchestrations.InstanceActor, in)
	next := nextActorInput(t, res)
	if next.FailedChecks != 0 || next.Checks != 3 || res.Elapsed > 3*time.Second+30*time.Second {
		t.Fatalf("next %+v after %v", next, res.Elapsed)
	}
	if n := len(env.CallsTo(activities.TestConnection)); n != 3 {
		t.Fatalf("%d probes: %v", n, env.CallNames())
	}
	calls := env.CallsTo(activities.StartFailover)
	if len(calls) != 1 {
		t.Fatalf("calls %v", env.CallNames())
	}
	var sf activities.StartFailoverInput
	_ = calls[0].DecodeInput(&sf)
	var fi orchestrations.FailoverInput
	if err := json.Unmarshal(sf.Input, &fi); err != nil || sf.Orchestration != orchestrations.FailoverInstance || !fi.Automatic || !strings.Contains(fi.Reason, "3 consecutive failed") {
		t.Fatalf("start failover %+v (%v)", sf, err)
	}
}

// TestActorFailoverRunning: while a failover runs the count stays, so the
// next check asks again (and is told it runs).
func TestActorFailoverRunning(t *testing.T) {
	in := replicatedActorInput
	in.FailedChecks = 5
	env := newReplicatedActorEnv(t, mocks{activities.TestConnection: fail, activities.StartFailover: func(m *duroxidetest.Mock) {
		m.Return(activities.StartFailoverOutput{OrchestrationID: orchestrations.FailoverID("db-1a2b", 1)})
	}})
	if next := nextActorInput(t, run(t, env, orchestrations.InstanceActor, in)); next.FailedChecks != 6 {
		t.Fatalf("next %+v", next)
	}
	// A failed start is only logged, and the count stays too.
	env = newReplicatedActorEnv(t, mocks{activities.TestConnection: fail, activities.StartFailover: func(m *duroxidetest.Mock) { m.Fail(duroxide.NonRetryable(errBoom)) }})
	if next := nextActorInput(t, run(t, env, orchestrations.InstanceActor, in)); next.FailedChecks != 6 {
		t.Fatalf("next %+v", next)
	}
}
