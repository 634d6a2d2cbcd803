package duroxidetest_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
)

func registry(t *testing.T, name string, fn func(*duroxide.OrchestrationContext, string) (string, error)) *duroxide.Registry {
	t.Helper()
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, name, fn))
	return reg
}

func TestAttemptTimeoutAndPanic(t *testing.T) {
	reg := registry(t, "O", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		p := duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: 5 * time.Second}).WithTimeout(time.Minute)
		return duroxide.CallActivityWithRetryTyped[string](ctx, "A", in, p)
	})
	env := duroxidetest.New(reg)
	env.OnActivity("A").Hang().Panic("kaboom").Return("ok").After(30 * time.Second)
	res, err := env.Run("O", "x")
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := res.Decode(&out); err != nil || out != "ok" {
		t.Fatalf("out %q, err %v, result %+v", out, err, res)
	}
	calls := env.CallsTo("A")
	if len(calls) != 3 || !calls[0].Cancelled || calls[1].Err == nil || !strings.Contains(calls[1].Err.Error(), "activity panicked: kaboom") {
		t.Fatalf("calls: %+v %+v %+v", calls[0], calls[1], calls[2])
	}
	// 1m timeout + 5s backoff, panic at once + 5s backoff, 30s for the last attempt.
	if res.Elapsed != time.Minute+5*time.Second+5*time.Second+30*time.Second {
		t.Fatalf("elapsed %v", res.Elapsed)
	}
	if calls[2].At != 70*time.Second || calls[2].Attempt != 3 {
		t.Fatalf("third call at %v attempt %d", calls[2].At, calls[2].Attempt)
	}
}

func TestNonRetryableEndsSequence(t *testing.T) {
	reg := registry(t, "O", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return duroxide.CallActivityWithRetryTyped[string](ctx, "A", in, duroxide.NewRetryPolicy(5))
	})
	env := duroxidetest.New(reg)
	env.OnActivity("A").Fail(duroxide.NonRetryable(errors.New("bad input")))
	res, err := env.Run("O", "x")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != duroxide.StatusFailed || !strings.Contains(res.Err.Error(), "bad input") || len(env.Calls()) != 1 {
		t.Fatalf("status %s err %v calls %v", res.Status, res.Err, env.CallNames())
	}
}

func TestSubOrchestrationsMockedAndRegistered(t *testing.T) {
	reg := registry(t, "Parent", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		a, err := duroxide.Await[string](ctx.CallSubOrchestration("Mocked", in))
		if err != nil {
			return "", err
		}
		b, err := duroxide.Await[string](ctx.CallSubOrchestration("Child", in, duroxide.WithInstanceID("child-1")))
		if err != nil {
			return "", err
		}
		return a + "+" + b, ctx.StartOrchestration("Detached", "d-1", in)
	})
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Child", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		if err := ctx.Sleep(time.Hour); err != nil {
			return "", err
		}
		return duroxide.CallActivityTyped[string](ctx, "ChildWork", in)
	}))
	env := duroxidetest.New(reg)
	env.OnSubOrchestration("Mocked").Return("m").After(time.Minute)
	env.OnActivity("ChildWork").Return("c")
	res, err := env.Run("Parent", "x")
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Output) != `"m+c"` || res.Elapsed != time.Hour+time.Minute {
		t.Fatalf("output %s elapsed %v", res.Output, res.Elapsed)
	}
	if got := strings.Join(env.CallNames(), ","); got != "Mocked,Child,ChildWork" {
		t.Fatalf("calls %s", got)
	}
	if c := env.CallsTo("Child")[0]; !c.Done || string(c.Result) != `"c"` {
		t.Fatalf("child call %+v", c)
	}
	if d := env.Detached(); len(d) != 1 || d[0].Instance != "d-1" {
		t.Fatalf("detached %+v", d)
	}
}

func TestCancelAndContinueAsNew(t *testing.T) {
	reg := registry(t, "Loop", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		if _, err := duroxide.CallActivityTyped[string](ctx, "Tick", in); err != nil {
			return "", err
		}
		if err := ctx.Sleep(time.Minute); err != nil {
			return "", err
		}
		return "", ctx.ContinueAsNew(in + ".")
	})
	env := duroxidetest.New(reg, duroxidetest.WithMaxExecutions(3))
	env.OnActivity("Tick").Return("t")
	res, err := env.Run("Loop", "x")
	if err != nil {
		t.Fatal(err)
	}
	var next string
	if res.Status != duroxide.StatusContinuedAsNew || res.Decode(&next) != nil || next != "x..." || len(res.Executions) != 3 {
		t.Fatalf("status %s next %q executions %d", res.Status, next, len(res.Executions))
	}

	env = duroxidetest.New(reg)
	env.OnActivity("Tick").Return("t")
	env.CancelAt(30*time.Second, "stop")
	res, err = env.Run("Loop", "x")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != duroxide.StatusCancelled || !errors.Is(res.Err, duroxide.ErrCancelled) || res.Elapsed != 30*time.Second {
		t.Fatalf("status %s err %v elapsed %v", res.Status, res.Err, res.Elapsed)
	}
}

func TestTestProblemsAreErrors(t *testing.T) {
	reg := registry(t, "O", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		if _, err := duroxide.CallActivityTyped[string](ctx, "A", in); err != nil {
			return "", err
		}
		return duroxide.Await[string](ctx.WaitForEvent("Go"))
	})
	_, err := duroxidetest.New(reg).Run("O", "x")
	if err == nil || !strings.Contains(err.Error(), `activity "A", which is not mocked`) {
		t.Fatalf("unmocked: %v", err)
	}
	env := duroxidetest.New(reg)
	env.OnActivity("A").Return("a")
	_, err = env.Run("O", "x")
	if err == nil || !strings.Contains(err.Error(), "blocked") || !strings.Contains(err.Error(), "Go") {
		t.Fatalf("blocked: %v", err)
	}
	env = duroxidetest.New(reg)
	env.OnActivity("A").Return("a")
	env.RaiseEventAt(time.Hour, "Go", "went")
	res, err := env.Run("O", "x")
	if err != nil || string(res.Output) != `"went"` || res.Elapsed != time.Hour {
		t.Fatalf("event: %v %+v", err, res)
	}
}

// TestNondeterminismIsReported: code that decides from outside state (here
// a counter that changes between replays) is caught, because every turn
// replays the history from its start.
func TestNondeterminismIsReported(t *testing.T) {
	runs := 0
	reg := registry(t, "Bad", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		runs++
		name := "A"
		if runs > 1 {
			name = "B"
		}
		return duroxide.CallActivityTyped[string](ctx, name, in)
	})
	env := duroxidetest.New(reg)
	env.OnActivity("A").Return("a")
	env.OnActivity("B").Return("b")
	_, err := env.Run("Bad", "x")
	if !errors.Is(err, duroxide.ErrNondeterminism) {
		t.Fatalf("err = %v", err)
	}
}

// TestWithChangeVersion: a pinned change records the pinned version (capped
// at the code's maximum), whatever the order of the options; other runs
// record the maximum.
func TestWithChangeVersion(t *testing.T) {
	reg := registry(t, "O", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return fmt.Sprintf("v%d", ctx.GetVersion("c", duroxide.VersionBeforeChange, 2)), nil
	})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		opts []duroxidetest.Option
		want string
	}{
		{nil, "v2"},
		{[]duroxidetest.Option{duroxidetest.WithChangeVersion("c", 1), duroxidetest.WithLogger(quiet)}, "v1"},
		{[]duroxidetest.Option{duroxidetest.WithLogger(quiet), duroxidetest.WithChangeVersion("c", duroxide.VersionBeforeChange)}, "v0"},
		{[]duroxidetest.Option{duroxidetest.WithChangeVersion("c", 7)}, "v2"},
		{[]duroxidetest.Option{duroxidetest.WithChangeVersion("other", 0)}, "v2"},
	} {
		res, err := duroxidetest.New(reg, c.opts...).Run("O", "x")
		if err != nil {
			t.Fatal(err)
		}
		var out string
		if err := res.Decode(&out); err != nil || out != c.want {
			t.Fatalf("options %d: output %q (%v), want %q", len(c.opts), out, err, c.want)
		}
		if v := res.History[1]; v.Kind != duroxide.EventVersionMarker || "v"+v.Result != c.want {
			t.Fatalf("recorded %+v", v)
		}
	}
}
