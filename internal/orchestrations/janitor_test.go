package orchestrations_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/orchestrations"
)

var janitorInput = orchestrations.JanitorInput{
	Interval:                time.Hour,
	OrchestrationRetention:  7 * 24 * time.Hour,
	HealthCheckRetention:    24 * time.Hour,
	HealthChecksPerInstance: 100,
	KeepExecutions:          3,
	Runs:                    2,
}

func janitorDefaults() map[string]any {
	return map[string]any{
		activities.PurgeOrchestrations: activities.PurgeOrchestrationsOutput{InstancesDeleted: 2, EventsDeleted: 40},
		activities.PruneHealthChecks:   int64(12),
		activities.PruneExecutions:     activities.PruneExecutionsOutput{Instances: 3, ExecutionsDeleted: 5},
		activities.BackupRetention:     activities.BackupRetentionOutput{Backups: 1, WALSegments: 4},
	}
}

func newJanitorEnv(t *testing.T, m mocks) *duroxidetest.Env {
	env := duroxidetest.New(registry(t), duroxidetest.WithInstanceID(orchestrations.JanitorID))
	m.apply(env, janitorDefaults())
	return env
}

func nextJanitorInput(t *testing.T, res *duroxidetest.Result) orchestrations.JanitorInput {
	t.Helper()
	var next orchestrations.JanitorInput
	if res.Status != duroxide.StatusContinuedAsNew || res.Decode(&next) != nil {
		t.Fatalf("status %s err %v; want continue-as-new", res.Status, res.Err)
	}
	return next
}

func TestJanitorSweep(t *testing.T) {
	env := newJanitorEnv(t, nil)
	res := run(t, env, orchestrations.Janitor, janitorInput)
	next := nextJanitorInput(t, res)
	want := janitorInput
	want.Runs = 3
	if next != want || res.Elapsed != time.Hour {
		t.Fatalf("next %+v elapsed %v", next, res.Elapsed)
	}
	wantCalls(t, env, "janitor-purge-orchestrations#1", "janitor-prune-health-checks#1", "janitor-prune-executions#1", "janitor-backup-retention#1")
	now := duroxidetest.DefaultStart
	var purge activities.PurgeOrchestrationsInput
	_ = env.CallsTo(activities.PurgeOrchestrations)[0].DecodeInput(&purge)
	var hc activities.PruneHealthChecksInput
	_ = env.CallsTo(activities.PruneHealthChecks)[0].DecodeInput(&hc)
	var ex activities.PruneExecutionsInput
	_ = env.CallsTo(activities.PruneExecutions)[0].DecodeInput(&ex)
	var br activities.BackupRetentionInput
	_ = env.CallsTo(activities.BackupRetention)[0].DecodeInput(&br)
	if purge.CompletedBeforeMs != now.Add(-7*24*time.Hour).UnixMilli() || len(purge.Names) != 6 || len(ex.Names) != 3 || br.NowMs != now.UnixMilli() ||
		hc.OlderThanMs != now.Add(-24*time.Hour).UnixMilli() || hc.KeepPerInstance != 100 || ex.KeepLast != 3 {
		t.Fatalf("purge %+v, health checks %+v, executions %+v", purge, hc, ex)
	}
	if res.CustomStatus != "runs=3 last=2025-01-01T00:00:00Z" {
		t.Fatalf("custom status %q", res.CustomStatus)
	}
}

// TestJanitorStepFailuresAreSkipped: every step fails all its attempts; the
// janitor still finishes its run and continues.
func TestJanitorStepFailuresAreSkipped(t *testing.T) {
	env := newJanitorEnv(t, mocks{activities.PurgeOrchestrations: fail, activities.PruneHealthChecks: fail, activities.PruneExecutions: fail,
		activities.BackupRetention: fail})
	next := nextJanitorInput(t, run(t, env, orchestrations.Janitor, janitorInput))
	if next.Runs != 3 || len(env.Calls()) != 12 {
		t.Fatalf("next %+v calls %v", next, env.CallNames())
	}
}

// TestJanitorDisabledSteps: zero settings run only the backup retention
// sweep (which follows per-instance settings) and wait the default
// interval; SkipBackups turns that off too; health checks are pruned by
// count alone when no age is set.
func TestJanitorDisabledSteps(t *testing.T) {
	env := newJanitorEnv(t, nil)
	res := run(t, env, orchestrations.Janitor, orchestrations.JanitorInput{})
	if next := nextJanitorInput(t, res); next.Runs != 1 || res.Elapsed != orchestrations.DefaultJanitorInterval {
		t.Fatalf("next %+v elapsed %v", next, res.Elapsed)
	}
	wantCalls(t, env, "janitor-backup-retention#1")
	env = newJanitorEnv(t, nil)
	nextJanitorInput(t, run(t, env, orchestrations.Janitor, orchestrations.JanitorInput{SkipBackups: true}))
	wantCalls(t, env)

	env = newJanitorEnv(t, nil)
	nextJanitorInput(t, run(t, env, orchestrations.Janitor, orchestrations.JanitorInput{HealthChecksPerInstance: 5}))
	var hc activities.PruneHealthChecksInput
	_ = env.CallsTo(activities.PruneHealthChecks)[0].DecodeInput(&hc)
	if hc.OlderThanMs != 0 || hc.KeepPerInstance != 5 {
		t.Fatalf("health checks %+v", hc)
	}
}

func TestJanitorSettingsEvent(t *testing.T) {
	env := newJanitorEnv(t, nil)
	env.RaiseEventAt(10*time.Minute, orchestrations.EventJanitorSettings, orchestrations.JanitorInput{Interval: time.Minute, KeepExecutions: 1})
	res := run(t, env, orchestrations.Janitor, janitorInput)
	next := nextJanitorInput(t, res)
	if next != (orchestrations.JanitorInput{Interval: time.Minute, KeepExecutions: 1, Runs: 3}) || res.Elapsed != 10*time.Minute {
		t.Fatalf("next %+v elapsed %v", next, res.Elapsed)
	}

	// Unreadable settings are ignored: the janitor keeps its input.
	env = newJanitorEnv(t, nil)
	env.RaiseEventAt(10*time.Minute, orchestrations.EventJanitorSettings, json.RawMessage(`"not settings"`))
	next = nextJanitorInput(t, run(t, env, orchestrations.Janitor, janitorInput))
	if want := janitorInput; next != (func() orchestrations.JanitorInput { want.Runs = 3; return want })() {
		t.Fatalf("next %+v", next)
	}
}
