package postgres

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// End-to-end: the duroxide runtime on the PostgreSQL store.

func e2eRegistry(t *testing.T, activityRuns *sync.Map) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Square", func(_ context.Context, n int) (int, error) {
		if activityRuns != nil {
			c, _ := activityRuns.LoadOrStore(n, new(int64))
			atomic.AddInt64(c.(*int64), 1)
		}
		return n * n, nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Fan", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		tasks := make([]*duroxide.Task, n)
		for i := range tasks {
			tasks[i] = ctx.CallActivity("Square", i)
		}
		if err := ctx.Join(tasks...); err != nil {
			return 0, err
		}
		sum := 0
		for _, task := range tasks {
			v, err := duroxide.Await[int](task)
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Wait", func(ctx *duroxide.OrchestrationContext, timeoutMs int) (string, error) {
		ev := ctx.WaitForEvent("Go")
		timer := ctx.CreateTimer(time.Duration(timeoutMs) * time.Millisecond)
		if ctx.Select(ev, timer) == 0 {
			var who string
			if err := ev.Await(&who); err != nil {
				return "", err
			}
			return "event from " + who, nil
		}
		return "timer", nil
	}))
	return reg
}

func startRuntime(t *testing.T, st *Store, reg *duroxide.Registry, opts duroxide.Options) *duroxide.Runtime {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	rt, err := duroxide.Start(context.Background(), st, reg, opts)
	if err != nil {
		t.Fatalf("start runtime: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rt.Shutdown(ctx)
	})
	return rt
}

func waitDone(t *testing.T, c *duroxide.Client, id string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := c.WaitForCompletion(ctx, id)
	if err != nil {
		t.Fatalf("wait for %s: %v", id, err)
	}
	if st.Status != duroxide.StatusCompleted {
		t.Fatalf("%s: status %s, error %v", id, st.Status, st.Err())
	}
	if err := st.Decode(out); err != nil {
		t.Fatal(err)
	}
}

func TestE2ERuntime(t *testing.T) {
	st := openStore(t, WithPoolSize(10))
	// A long poll interval: progress must come from notifications and
	// NextVisibleAt, not from polling.
	startRuntime(t, st, e2eRegistry(t, nil), duroxide.Options{PollInterval: time.Minute})
	c := duroxide.NewClient(st)
	ctx := testCtx(t)

	t0 := time.Now()
	if err := c.StartOrchestration(ctx, "fan-1", "Fan", 1); err != nil {
		t.Fatal(err)
	}
	var sum int
	waitDone(t, c, "fan-1", &sum)
	t.Logf("one-activity orchestration: %v", time.Since(t0))
	if time.Since(t0) > 5*time.Second {
		t.Errorf("one-activity orchestration took %v", time.Since(t0))
	}

	// Warm: the latency is a few round trips plus notification delivery.
	var worst time.Duration
	for i := range 5 {
		t0 = time.Now()
		if err := c.StartOrchestration(ctx, fmt.Sprintf("warm-%d", i), "Fan", 1); err != nil {
			t.Fatal(err)
		}
		waitDone(t, c, fmt.Sprintf("warm-%d", i), &sum)
		worst = max(worst, time.Since(t0))
	}
	t.Logf("one-activity orchestration, warm, worst of 5: %v", worst)

	if err := c.StartOrchestration(ctx, "fan-200", "Fan", 200); err != nil {
		t.Fatal(err)
	}
	waitDone(t, c, "fan-200", &sum)
	want := 0
	for i := range 200 {
		want += i * i
	}
	if sum != want {
		t.Fatalf("sum = %d, want %d", sum, want)
	}

	var out string
	t0 = time.Now()
	if err := c.StartOrchestration(ctx, "timer", "Wait", 300); err != nil {
		t.Fatal(err)
	}
	waitDone(t, c, "timer", &out)
	if out != "timer" || time.Since(t0) < 300*time.Millisecond || time.Since(t0) > 5*time.Second {
		t.Fatalf("timer orchestration: %q after %v", out, time.Since(t0))
	}

	if err := c.StartOrchestration(ctx, "event", "Wait", 60_000); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := c.RaiseEvent(ctx, "event", "Go", "alice"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, c, "event", &out)
	if out != "event from alice" {
		t.Fatalf("event orchestration: %q", out)
	}
}

// Two runtimes (two processes, as far as the database can tell) share one
// schema; a client on a third handle starts the work.
func TestE2ETwoRuntimes(t *testing.T) {
	schema := cluster.NewSchemaName(t)
	var runs sync.Map
	reg := e2eRegistry(t, &runs)
	for range 2 {
		startRuntime(t, openSchema(t, schema, WithPoolSize(8)), reg, duroxide.Options{PollInterval: time.Minute})
	}
	c := duroxide.NewClient(openSchema(t, schema))
	ctx := testCtx(t)
	const n = 20
	for i := range n {
		if err := c.StartOrchestration(ctx, fmt.Sprintf("two-%d", i), "Fan", 10); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		var sum int
		waitDone(t, c, fmt.Sprintf("two-%d", i), &sum)
		if sum != 285 {
			t.Fatalf("two-%d: sum %d", i, sum)
		}
	}
	runs.Range(func(k, v any) bool {
		if got := atomic.LoadInt64(v.(*int64)); got != n {
			t.Errorf("activity Square(%v) ran %d times, want %d", k, got, n)
		}
		return true
	})
}

// activityTurns is a PostgreSQL store that counts the inline commits of
// activity completions.
type activityTurns struct {
	*Store
	n atomic.Int64
}

func (s *activityTurns) CommitActivityTurn(ctx context.Context, p duroxide.ActivityTurnParams) ([]duroxide.WorkItemLease, error) {
	s.n.Add(1)
	return s.Store.CommitActivityTurn(ctx, p)
}

// TestE2ERetryChains runs short retry chains on PostgreSQL: each instance's
// two failures, backoffs and retries run in memory and commit once with the
// success (one CommitActivityTurn per instance), every attempt and backoff
// is in history, and no queue message is left behind (the chains' timers
// were never written).
func TestE2ERetryChains(t *testing.T) {
	st := openStore(t, WithPoolSize(10))
	store := &activityTurns{Store: st}
	var mu sync.Mutex
	runs := map[string]int{}
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(ctx context.Context, s string) (string, error) {
		ai, _ := duroxide.ActivityInfoFromContext(ctx)
		mu.Lock()
		runs[ai.Instance]++
		n := runs[ai.Instance]
		mu.Unlock()
		if n <= 2 {
			return "", fmt.Errorf("transient failure %d", n)
		}
		return s + " ok", nil
	}))
	policy := duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: 20 * time.Millisecond})
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Retry", func(ctx *duroxide.OrchestrationContext, s string) (string, error) {
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", s, policy)
	}))
	rt, err := duroxide.Start(context.Background(), store, reg, duroxide.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	c := rt.Client()
	ctx := testCtx(t)
	const n = 20
	for i := range n {
		if err := c.StartOrchestration(ctx, fmt.Sprintf("r-%02d", i), "Retry", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("r-%02d", i)
		var out string
		waitDone(t, c, id, &out)
		if want := fmt.Sprint(i) + " ok"; out != want {
			t.Errorf("%s: output %q, want %q", id, out, want)
		}
		h, err := c.ReadHistory(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		count := map[duroxide.EventKind]int{}
		for _, ev := range h {
			count[ev.Kind]++
		}
		for kind, want := range map[duroxide.EventKind]int{
			duroxide.EventActivityScheduled: 3, duroxide.EventActivityFailed: 2, duroxide.EventTimerCreated: 2,
			duroxide.EventTimerFired: 2, duroxide.EventActivityCompleted: 1, duroxide.EventOrchestrationCompleted: 1,
		} {
			if count[kind] != want {
				t.Errorf("%s: %d %s events, want %d", id, count[kind], kind, want)
			}
		}
	}
	if got := store.n.Load(); got != n {
		t.Errorf("%d inline activity commits for %d instances, want one each", got, n)
	}
	var orch, work int
	if err := st.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM `+st.q+`.orchestrator_queue), (SELECT count(*) FROM `+st.q+`.worker_queue)`).Scan(&orch, &work); err != nil {
		t.Fatal(err)
	}
	if orch != 0 || work != 0 {
		t.Errorf("queues hold %d orchestrator and %d worker messages after the runs, want none", orch, work)
	}
}
