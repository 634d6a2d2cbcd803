package duroxide_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// registerLooper registers an orchestration that runs n executions of one
// activity and a short durable timer each, chained by continue-as-new.
func registerLooper(reg *duroxide.Registry, name string, opts ...duroxide.RegisterOption) {
	duroxide.Must(duroxide.RegisterOrchestration(reg, name, func(ctx *duroxide.OrchestrationContext, left int) (int, error) {
		if err := ctx.CallActivity("Echo", left).Await(nil); err != nil {
			return 0, err
		}
		if err := ctx.CreateTimer(time.Millisecond).Await(nil); err != nil {
			return 0, err
		}
		if left <= 1 {
			return 0, nil
		}
		return 0, ctx.ContinueAsNew(left - 1)
	}, opts...))
}

func storedRows(t *testing.T, c *duroxide.Client, id string) (execs, events int) {
	t.Helper()
	ex, err := c.ListExecutions(context.Background(), id)
	if errors.Is(err, duroxide.ErrNotFound) {
		return 0, 0 // first turn not committed yet
	}
	if err != nil {
		t.Fatalf("list executions of %s: %v", id, err)
	}
	for _, x := range ex {
		events += x.EventCount
	}
	return len(ex), events
}

// TestKeepExecutionsBoundsLongChain runs a 300-execution continue-as-new
// chain with Options.KeepExecutions 3 and checks, while it runs and at the
// end, that the store never holds more than 3 executions of it and a bounded
// number of history rows, and that pruned executions are gone from
// ListExecutions and ReadHistory.
func TestKeepExecutionsBoundsLongChain(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Echo", func(ctx context.Context, n int) (int, error) { return n, nil }))
	registerLooper(reg, "Loop")
	e := newEnv(t, reg, duroxide.Options{KeepExecutions: 3})
	const n = 300
	e.startOrch("loop", "Loop", n)

	maxExecs, maxEvents, samples := 0, 0, 0
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		st, err := e.c.GetStatus(ctx, "loop")
		if err != nil && ctx.Err() != nil {
			t.Fatalf("loop did not finish: %v", err)
		}
		execs, events := storedRows(t, e.c, "loop")
		samples++
		maxExecs, maxEvents = max(maxExecs, execs), max(maxEvents, events)
		if err == nil && st.Status.IsTerminal() && st.Status != duroxide.StatusContinuedAsNew {
			expectCompleted(t, st, nil)
			if st.ExecutionID != n {
				t.Fatalf("final execution %d, want %d", st.ExecutionID, n)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d samples: at most %d executions and %d history rows stored", samples, maxExecs, maxEvents)
	// Each execution has at most 7 events (started, scheduled, completed,
	// timer created, fired, continued-as-new or completed, plus slack).
	if maxExecs > 3 || maxEvents > 3*7 {
		t.Fatalf("store held up to %d executions and %d history rows; want at most 3 and %d", maxExecs, maxEvents, 3*7)
	}
	ex, err := e.c.ListExecutions(context.Background(), "loop")
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 3 || ex[0].ExecutionID != n-2 || ex[2].ExecutionID != n {
		t.Fatalf("executions %+v, want %d..%d", ex, n-2, n)
	}
	if h, err := e.c.ReadHistory(context.Background(), "loop", 1); err != nil || len(h) != 0 {
		t.Fatalf("history of pruned execution 1 = %d events, %v; want none", len(h), err)
	}
	if h, err := e.c.ReadHistory(context.Background(), "loop", n-1); err != nil || len(h) == 0 {
		t.Fatalf("history of kept execution %d = %d events, %v", n-1, len(h), err)
	}
}

// TestKeepExecutionsPerOrchestration checks that WithKeepExecutions
// overrides the runtime option both ways.
func TestKeepExecutionsPerOrchestration(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Echo", func(ctx context.Context, n int) (int, error) { return n, nil }))
	registerLooper(reg, "Default")
	registerLooper(reg, "KeepAll", duroxide.WithKeepExecutions(0))
	registerLooper(reg, "KeepOne", duroxide.WithKeepExecutions(1))
	e := newEnv(t, reg, duroxide.Options{KeepExecutions: 2})
	for _, name := range []string{"Default", "KeepAll", "KeepOne"} {
		e.startOrch(name, name, 10)
	}
	for name, want := range map[string]int{"Default": 2, "KeepAll": 10, "KeepOne": 1} {
		expectCompleted(t, e.wait(name), nil)
		if execs, _ := storedRows(t, e.c, name); execs != want {
			t.Errorf("%s: %d executions stored, want %d", name, execs, want)
		}
	}
}
