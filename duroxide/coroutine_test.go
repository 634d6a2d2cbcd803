package duroxide_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// Orchestration code runs as a coroutine of the goroutine that drives its
// engine. These tests check what a goroutine of its own gave for free:
// runtime.Goexit in the code ends only the orchestration, and code blocked
// when its engine is closed unwinds (deferred functions run) even if it
// recovers panics.

func TestOrchestrationGoexitFailsOnlyTheOrchestration(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Goexit", func(ctx *duroxide.OrchestrationContext, _ int) (int, error) {
		runtime.Goexit()
		return 1, nil
	}))
	duroxide.Must(duroxide.RegisterActivity(reg, "Echo", func(_ context.Context, i int) (int, error) { return i, nil }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Echo", func(ctx *duroxide.OrchestrationContext, i int) (int, error) {
		return duroxide.CallActivityTyped[int](ctx, "Echo", i)
	}))
	modes(t, func(t *testing.T, opts duroxide.Options) {
		e := newEnv(t, reg, opts)
		st := e.run("g", "Goexit", 0)
		if st.Status != duroxide.StatusFailed || !strings.Contains(st.Err().Error(), "runtime.Goexit") {
			t.Fatalf("status %s, error %v; want Failed naming runtime.Goexit", st.Status, st.Err())
		}
		// The runtime's goroutines are intact: more work gets done.
		for _, id := range []string{"e1", "e2", "e3"} {
			var out int
			expectCompleted(t, e.run(id, "Echo", 7), &out)
			if out != 7 {
				t.Fatalf("%s: output %d, want 7", id, out)
			}
		}
	})
}

func TestClosedEngineUnwindsCodeThatRecovers(t *testing.T) {
	var deferred, recovered atomic.Int32
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Waits", func(ctx *duroxide.OrchestrationContext, _ int) (out int, err error) {
		defer deferred.Add(1)
		defer func() {
			if r := recover(); r != nil {
				recovered.Add(1)
				out, err = -1, nil
			}
		}()
		if err := ctx.WaitForEvent("never").Await(nil); err != nil {
			return 0, err
		}
		return 1, nil
	}))
	e := newEnv(t, reg, duroxide.Options{})
	e.startOrch("w", "Waits", 0)
	e.waitForEvent("w", duroxide.EventExternalSubscribed, "never")
	// Shutdown closes the cached engine, whose code is blocked in Await.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.rt.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	e.rt = nil
	if deferred.Load() == 0 {
		t.Fatal("the blocked code's deferred functions did not run when its engine was closed")
	}
	if recovered.Load() == 0 {
		t.Fatal("the code's recover did not see the unwinding")
	}
	st, err := e.c.GetStatus(context.Background(), "w")
	if err != nil || st.Status != duroxide.StatusRunning {
		t.Fatalf("status %v, %v; want Running (closing an engine writes nothing)", st, err)
	}
}
