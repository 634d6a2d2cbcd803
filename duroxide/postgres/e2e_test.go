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
