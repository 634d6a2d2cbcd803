package duroxide_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// Activities run on their worker's goroutine. These tests check what a
// goroutine per attempt used to give: a worker gives up on an activity
// that ignores its cancellation after the grace period (the only worker,
// here, so nothing else could run otherwise), an activity that calls
// runtime.Goexit is tried again, and a long activity keeps its lease.

func TestActivityIgnoringCancellationIsGivenUp(t *testing.T) {
	release := make(chan struct{})
	var deafReturned atomic.Bool
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Deaf", func(context.Context, int) (int, error) {
		<-release // ignores its context
		deafReturned.Store(true)
		return 1, nil
	}))
	duroxide.Must(duroxide.RegisterActivity(reg, "Echo", func(_ context.Context, i int) (int, error) { return i, nil }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Race", func(ctx *duroxide.OrchestrationContext, _ int) (int, error) {
		deaf, timer := ctx.CallActivity("Deaf", 0), ctx.CreateTimer(50*time.Millisecond)
		if ctx.Select(deaf, timer) != 1 {
			return 0, nil
		}
		// Deaf lost the select and is cancelled; with one worker, Echo
		// runs only once that worker has given Deaf up.
		return duroxide.CallActivityTyped[int](ctx, "Echo", 7)
	}))
	e := newEnv(t, reg, duroxide.Options{ActivityConcurrency: 1, CancellationGracePeriod: 200 * time.Millisecond})
	defer close(release)
	var out int
	expectCompleted(t, e.run("r", "Race", 0), &out)
	if out != 7 {
		t.Fatalf("output %d, want 7 (the timer's branch)", out)
	}
	if deafReturned.Load() {
		t.Fatal("Deaf returned: the test did not exercise the grace period")
	}
	if n := e.rt.RunningActivities(); n != 0 {
		t.Fatalf("RunningActivities = %d after the give-up, want 0", n)
	}
	if n := countKind(e.history("r"), duroxide.EventActivityCompleted); n != 1 {
		t.Fatalf("%d ActivityCompleted events, want 1 (Echo's; Deaf's result is dropped)", n)
	}
	// The worker's place was taken: more work runs.
	expectCompleted(t, e.run("r2", "Race", 0), &out)
}

func TestActivityGoexitIsTriedAgain(t *testing.T) {
	var calls atomic.Int32
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Quits", func(_ context.Context, i int) (int, error) {
		if calls.Add(1) == 1 {
			runtime.Goexit()
		}
		return i, nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Once", func(ctx *duroxide.OrchestrationContext, i int) (int, error) {
		return duroxide.CallActivityTyped[int](ctx, "Quits", i)
	}))
	e := newEnv(t, reg, duroxide.Options{ActivityConcurrency: 1})
	var out int
	expectCompleted(t, e.run("q", "Once", 5), &out)
	if out != 5 || calls.Load() != 2 {
		t.Fatalf("output %d after %d calls; want 5 after 2 (the first ended its goroutine)", out, calls.Load())
	}
}

func TestLongActivityKeepsItsLease(t *testing.T) {
	var calls atomic.Int32
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Slow", func(ctx context.Context, i int) (int, error) {
		calls.Add(1)
		select {
		case <-time.After(700 * time.Millisecond): // more than twice the lock timeout
			return i, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Slow", func(ctx *duroxide.OrchestrationContext, i int) (int, error) {
		return duroxide.CallActivityTyped[int](ctx, "Slow", i)
	}))
	e := newEnv(t, reg, duroxide.Options{ActivityLockTimeout: 300 * time.Millisecond})
	var out int
	expectCompleted(t, e.run("s", "Slow", 3), &out)
	if out != 3 || calls.Load() != 1 {
		t.Fatalf("output %d after %d calls; want 3 after 1 (renewals kept the lease)", out, calls.Load())
	}
}
