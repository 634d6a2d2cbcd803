package postgres

import (
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// Opening a handle warms its connections with a start, an activity turn
// and a fetch from each queue, all rolled back: nothing of them may stay,
// and the queued work of other handles must come out of the warm-up exactly
// as it went in (not leased, attempt counts unchanged).
func TestWarmLeavesNothingBehind(t *testing.T) {
	ctx := testCtx(t)
	a := openStore(t)
	if err := a.EnqueueOrchestratorItem(ctx, start("queued"), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "queued", ExecutionID: 1, ID: 2, Name: "Act"}); err != nil {
		t.Fatal(err)
	}
	// Two more handles on the schema, each warming four connections.
	openSchema(t, a.Schema())
	openSchema(t, a.Schema())

	for _, table := range []string{"instances", "executions", "history", "worker_queue", "orchestrator_queue"} {
		var n int
		if err := a.pool.QueryRow(ctx, "SELECT count(*) FROM "+a.q+"."+table+" WHERE instance_id LIKE 'duroxide-warm-%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: %d rows of the warm-up stayed", table, n)
		}
	}
	var leased int
	if err := a.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+a.q+".worker_queue WHERE lock_token IS NOT NULL) + (SELECT count(*) FROM "+a.q+".instance_locks)").Scan(&leased); err != nil {
		t.Fatal(err)
	}
	if leased != 0 {
		t.Errorf("%d leases or instance locks left by the warm-up", leased)
	}
	if it := mustFetch(t, a, time.Minute); it.Instance != "queued" || it.AttemptCount != 1 {
		t.Errorf("orchestration item after the warm-ups: instance %q, attempt %d; want queued, 1", it.Instance, it.AttemptCount)
	}
	l, err := a.FetchWorkItem(ctx, time.Minute)
	if err != nil || l == nil {
		t.Fatalf("work item after the warm-ups: %v, %v", l, err)
	}
	if l.Item.Instance != "queued" || l.AttemptCount != 1 {
		t.Errorf("work item after the warm-ups: instance %q, attempt %d; want queued, 1", l.Item.Instance, l.AttemptCount)
	}
}
