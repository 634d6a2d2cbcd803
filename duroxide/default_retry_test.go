package duroxide_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// defaultRetryRegistry registers "Flaky" with a default retry policy; the
// activity fails until it has been called okAt times (never if okAt is 0).
// "Plain" calls it with CallActivityTyped, "Once" with NoRetry(), "Twice"
// with an explicit two-attempt policy.
func defaultRetryRegistry(t *testing.T, def duroxide.RetryPolicy, okAt int64, calls *atomic.Int64) *duroxide.Registry {
	t.Helper()
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(ctx context.Context, in string) (string, error) {
		n := calls.Add(1)
		if okAt > 0 && n >= okAt {
			return "ok " + in, nil
		}
		return "", errors.New("flaky failure")
	}, duroxide.WithDefaultRetry(def)))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Plain", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "Flaky", in)
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Once", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", in, duroxide.NoRetry())
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Twice", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", in, duroxide.NewRetryPolicy(2).WithBackoff(duroxide.NoBackoff{}))
	}))
	return reg
}

func schedules(h []duroxide.Event) []duroxide.Event {
	var out []duroxide.Event
	for _, ev := range h {
		if ev.Kind == duroxide.EventActivityScheduled {
			out = append(out, ev)
		}
	}
	return out
}

// TestRetryDefaultPolicyApplies: a plain call of an activity registered
// with a default policy retries under it, and the policy is recorded on
// the sequence's first schedule.
func TestRetryDefaultPolicyApplies(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		var calls atomic.Int64
		def := duroxide.NewRetryPolicy(4).WithBackoff(duroxide.Fixed{Delay: 5 * time.Millisecond}).WithName("flaky-default")
		e := newEnv(t, defaultRetryRegistry(t, def, 3, &calls), opts)
		var out string
		expectCompleted(t, e.run("plain", "Plain", "x"), &out)
		if out != "ok x" || calls.Load() != 3 {
			t.Fatalf("output %q after %d calls; want ok x after 3", out, calls.Load())
		}
		s := schedules(e.history("plain"))
		if len(s) != 3 {
			t.Fatalf("%d schedules, want 3", len(s))
		}
		for i, ev := range s {
			if ev.Attempt != i+1 || ev.MaxAttempts != 4 || !strings.HasPrefix(ev.Policy, "flaky-default: 4 attempts") {
				t.Errorf("schedule %d: attempt %d max %d policy %q", i, ev.Attempt, ev.MaxAttempts, ev.Policy)
			}
		}
		r := s[0].RetryPolicy
		if r == nil || r.Source != "default" || r.MaxAttempts != 4 || r.Backoff != "fixed" || r.Base != 5*time.Millisecond {
			t.Fatalf("recorded policy %+v", r)
		}
		if s[1].RetryPolicy != nil {
			t.Errorf("attempt 2 records the policy again: %+v", s[1].RetryPolicy)
		}
	})
}

// TestRetryCallOverridesDefault: an explicit policy wins over the default,
// NoRetry() included.
func TestRetryCallOverridesDefault(t *testing.T) {
	var calls atomic.Int64
	def := duroxide.NewRetryPolicy(5).WithBackoff(duroxide.NoBackoff{})
	e := newEnv(t, defaultRetryRegistry(t, def, 0, &calls), duroxide.Options{})
	st := e.run("once", "Once", "x")
	if st.Status != duroxide.StatusFailed || calls.Load() != 1 || !strings.Contains(st.Err().Error(), "after 1 attempt") {
		t.Fatalf("NoRetry: status %s, %d calls, error %v; want failed after 1 call", st.Status, calls.Load(), st.Err())
	}
	calls.Store(0)
	st = e.run("twice", "Twice", "x")
	if st.Status != duroxide.StatusFailed || calls.Load() != 2 || !strings.Contains(st.Err().Error(), "after 2 attempt") {
		t.Fatalf("explicit policy: status %s, %d calls, error %v; want failed after 2 calls", st.Status, calls.Load(), st.Err())
	}
	s := schedules(e.history("twice"))
	if s[0].RetryPolicy == nil || s[0].RetryPolicy.Source != "call" || s[0].MaxAttempts != 2 {
		t.Fatalf("explicit policy recorded as %+v (max %d)", s[0].RetryPolicy, s[0].MaxAttempts)
	}
	calls.Store(0)
	st = e.run("plain", "Plain", "x")
	if st.Status != duroxide.StatusFailed || calls.Load() != 5 {
		t.Fatalf("default: status %s after %d calls; want failed after 5", st.Status, calls.Load())
	}
}

// TestRetryDefaultChangedAcrossRestart: the default policy changes while
// a sequence waits in its backoff (the process stops, a new one starts with
// other configuration on the same store). The in-flight sequence keeps its
// recorded policy (attempts and backoff); a new sequence uses the new one.
func TestRetryDefaultChangedAcrossRestart(t *testing.T) {
	var calls atomic.Int64
	old := duroxide.NewRetryPolicy(2).WithBackoff(duroxide.Fixed{Delay: 300 * time.Millisecond}).WithName("old")
	e := newEnv(t, defaultRetryRegistry(t, old, 0, &calls), duroxide.Options{})
	e.startOrch("inflight", "Plain", "x")
	e.waitFor("the first backoff timer", func() bool {
		for _, ev := range e.history("inflight") {
			if ev.Kind == duroxide.EventTimerCreated && ev.Purpose == duroxide.TimerBackoff {
				return true
			}
		}
		return false
	})
	newer := duroxide.NewRetryPolicy(4).WithBackoff(duroxide.Fixed{Delay: time.Millisecond}).WithName("new")
	e.restart(defaultRetryRegistry(t, newer, 0, &calls))
	st := e.wait("inflight")
	if st.Status != duroxide.StatusFailed || !strings.Contains(st.Err().Error(), "after 2 attempt") {
		t.Fatalf("in-flight sequence: status %s, error %v; want failed after 2 attempts (recorded policy)", st.Status, st.Err())
	}
	h := e.history("inflight")
	for _, ev := range schedules(h) {
		if ev.MaxAttempts != 2 || !strings.HasPrefix(ev.Policy, "old:") {
			t.Errorf("in-flight %v: max attempts %d, policy %q; want the old policy", ev, ev.MaxAttempts, ev.Policy)
		}
	}
	for _, ev := range h {
		if ev.Kind == duroxide.EventTimerCreated && ev.Purpose == duroxide.TimerBackoff && ev.FireAtMs-ev.TimestampMs != 300 {
			t.Errorf("backoff %v waits %d ms; want 300", ev, ev.FireAtMs-ev.TimestampMs)
		}
	}
	// The backoff pending at the shutdown is not cut short by it: it fires
	// at its time (plus the queue's backstop), not when the new runtime starts.
	for _, ev := range h {
		if ev.Kind == duroxide.EventTimerFired && ev.TimestampMs < ev.FireAtMs {
			t.Errorf("%v fired at %d, before its time %d", ev, ev.TimestampMs, ev.FireAtMs)
		}
	}
	if err := duroxide.NewExecutor(e.reg, duroxide.ExecutorOptions{}).Replay("inflight", 1, h); err != nil {
		t.Fatalf("replay under the new default: %v", err)
	}

	calls.Store(0)
	st = e.run("fresh", "Plain", "x")
	if st.Status != duroxide.StatusFailed || calls.Load() != 4 {
		t.Fatalf("new sequence: status %s after %d calls; want failed after 4 (new policy)", st.Status, calls.Load())
	}
	if s := schedules(e.history("fresh")); !strings.HasPrefix(s[0].Policy, "new:") {
		t.Fatalf("new sequence policy %q", s[0].Policy)
	}
}

// TestRetryDefaultAddedOrRemovedAcrossReplay: a plain call recorded
// without a default stays a single attempt after a default is registered,
// and a sequence recorded under a default keeps retrying after the
// default is removed (Executor turns, as a runtime after a restart).
func TestRetryDefaultAddedOrRemovedAcrossReplay(t *testing.T) {
	orch := func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "A", in)
	}
	act := func(context.Context, string) (string, error) { return "", nil }
	without := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(without, "A", act))
	duroxide.Must(duroxide.RegisterOrchestration(without, "O", orch))
	with := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(with, "A", act, duroxide.WithDefaultRetry(duroxide.NewRetryPolicy(3).WithBackoff(duroxide.NoBackoff{}))))
	duroxide.Must(duroxide.RegisterOrchestration(with, "O", orch))

	fail := func(id int64) duroxide.WorkItem {
		return duroxide.WorkItem{Kind: duroxide.WorkActivityFailed, Instance: "i", ExecutionID: 1, ID: id,
			Error: &duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: "boom"}}
	}
	start := duroxide.WorkItem{Kind: duroxide.WorkStartOrchestration, Instance: "i", Name: "O", Input: `"x"`}
	turn := func(reg *duroxide.Registry, h []duroxide.Event, msgs ...duroxide.WorkItem) ([]duroxide.Event, *duroxide.TurnCommit) {
		t.Helper()
		c, err := duroxide.NewExecutor(reg, duroxide.ExecutorOptions{}).Turn("i", 1, h, msgs)
		if err != nil {
			t.Fatal(err)
		}
		return append(h, c.HistoryDelta...), c
	}

	// Recorded without a default, continued with one: one attempt.
	h, _ := turn(without, nil, start)
	h, c := turn(with, h, fail(2))
	if c.Status != duroxide.StatusFailed || len(c.WorkerItems) != 0 {
		t.Fatalf("plain call continued with a default: status %s, %d new activities; want failed, none", c.Status, len(c.WorkerItems))
	}

	// Recorded with a default, continued without: retried to its 3 attempts.
	h, _ = turn(with, nil, start)
	h, c = turn(without, h, fail(2))
	if len(c.WorkerItems) != 1 {
		t.Fatalf("sequence continued without a default scheduled %d activities; want attempt 2", len(c.WorkerItems))
	}
	h, c = turn(without, h, fail(c.WorkerItems[0].ID))
	h, c = turn(without, h, fail(c.WorkerItems[0].ID))
	if c.Status != duroxide.StatusFailed || !strings.Contains(c.Output, "after 3 attempt") {
		t.Fatalf("status %s output %s; want failed after 3 attempts", c.Status, c.Output)
	}
	if err := duroxide.NewExecutor(without, duroxide.ExecutorOptions{}).Replay("i", 1, h); err != nil {
		t.Fatal(err)
	}
}

// TestRetryDefaultRegistrationErrors: defaults are validated and only
// apply to activities.
func TestRetryDefaultRegistrationErrors(t *testing.T) {
	reg := duroxide.NewRegistry()
	act := func(context.Context, string) (string, error) { return "", nil }
	if err := duroxide.RegisterActivity(reg, "A", act, duroxide.WithDefaultRetry(duroxide.RetryPolicy{})); !errors.Is(err, duroxide.ErrInvalidPolicy) {
		t.Fatalf("invalid default: %v", err)
	}
	if err := duroxide.RegisterActivity(reg, "B", act, duroxide.WithVersion("1.0.0")); err == nil {
		t.Fatal("WithVersion on an activity accepted")
	}
	orch := func(ctx *duroxide.OrchestrationContext, in string) (string, error) { return in, nil }
	if err := duroxide.RegisterOrchestration(reg, "O", orch, duroxide.WithDefaultRetry(duroxide.NewRetryPolicy(2))); err == nil {
		t.Fatal("WithDefaultRetry on an orchestration accepted")
	}
	_, err := duroxide.Start(context.Background(), nil, reg, duroxide.Options{})
	if err == nil {
		t.Fatal("start without a store")
	}
}
