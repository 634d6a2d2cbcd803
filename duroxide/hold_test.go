package duroxide_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// heldRetryRegistry registers "Flaky", which fails its first fails executions
// (counted in runs), and "Retry", which calls it with policy.
func heldRetryRegistry(runs *atomic.Int64, fails int64, policy duroxide.RetryPolicy) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(_ context.Context, s string) (string, error) {
		if n := runs.Add(1); n <= fails {
			return "", fmt.Errorf("transient failure %d", n)
		}
		return s + " ok", nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Retry", func(ctx *duroxide.OrchestrationContext, s string) (string, error) {
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", s, policy)
	}))
	return reg
}

func eventKinds(h []duroxide.Event) []duroxide.EventKind {
	ks := make([]duroxide.EventKind, len(h))
	for i, ev := range h {
		ks[i] = ev.Kind
	}
	return ks
}

// TestHeldFailuresCommitWithTheRetry checks that a short retry chain runs
// in memory and commits once: two failures, their backoffs and the
// success cost one inline commit instead of five, and the history is event
// for event the one the queues write.
func TestHeldFailuresCommitWithTheRetry(t *testing.T) {
	policy := duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: 20 * time.Millisecond})
	var kinds [2][]duroxide.EventKind
	var failures int
	for i, local := range []bool{true, false} {
		store := &queueCounter{Store: tempSQLite(t)}
		var runs atomic.Int64
		status, c := runOnStore(t, store, heldRetryRegistry(&runs, 2, policy), local, "r", "Retry", "x")
		var out string
		expectCompleted(t, status, &out)
		if out != "x ok" || runs.Load() != 3 {
			t.Fatalf("output %q after %d runs, want \"x ok\" after 3", out, runs.Load())
		}
		h, err := c.ReadHistory(context.Background(), "r", 0)
		if err != nil {
			t.Fatal(err)
		}
		kinds[i] = eventKinds(h)
		if local {
			failures = countKind(h, duroxide.EventActivityFailed)
			if n := store.turns.Load(); n != 1 {
				t.Errorf("%d inline commits, want 1 (the failures, backoffs and retries with the success)", n)
			}
			// Every attempt and backoff is in history, in order.
			for j, ev := range h {
				if ev.Kind == duroxide.EventTimerFired && (j+1 == len(h) || h[j+1].Kind != duroxide.EventActivityScheduled) {
					t.Errorf("TimerFired at %d is not followed by the retry's ActivityScheduled: %v", j, kinds[i])
				}
			}
		}
	}
	if !slices.Equal(kinds[0], kinds[1]) {
		t.Errorf("history with held failures %v\ndiffers from the queues' %v", kinds[0], kinds[1])
	}
	if failures != 2 {
		t.Errorf("%d ActivityFailed events, want 2: %v", failures, kinds[0])
	}
}

// TestHeldFailureMeetsOtherWork holds a failure and meets other work of
// the instance, while the chain waits for its backoff ("wait") or while the
// retry runs in memory ("attempt"): another activity's completion in this
// process is committed with the chain; a raised event, whose turn runs on
// the stored history, makes the chain give its failure to the queue (an
// attempt that ran in memory is then run again). Every event is in history
// once and the retry happens.
func TestHeldFailureMeetsOtherWork(t *testing.T) {
	for _, tc := range []struct {
		mode, other string
		flakyRuns   int64
	}{
		{"wait", "completion", 2},
		{"wait", "event", 2},
		{"attempt", "completion", 2},
		{"attempt", "event", 3}, // the attempt run in memory is forgotten
	} {
		t.Run(tc.mode+"/"+tc.other, func(t *testing.T) {
			var runs atomic.Int64
			failed, retrying := make(chan struct{}), make(chan struct{})
			reg := duroxide.NewRegistry()
			duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(_ context.Context, s string) (string, error) {
				switch runs.Add(1) {
				case 1:
					defer close(failed)
					return "", errors.New("transient")
				case 2:
					if tc.mode == "attempt" {
						close(retrying)
						// Let the other work arrive while this attempt runs
						// (the checks below hold wherever it lands).
						time.Sleep(200 * time.Millisecond)
					}
				}
				return s + " ok", nil
			}))
			duroxide.Must(duroxide.RegisterActivity(reg, "Other", func(ctx context.Context, _ int) (int, error) {
				arrive := failed
				if tc.mode == "attempt" {
					arrive = retrying
				}
				select {
				case <-arrive:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
				if tc.mode == "wait" {
					time.Sleep(100 * time.Millisecond) // inside the 500 ms backoff
				}
				return 7, nil
			}))
			backoff := map[string]time.Duration{"wait": 500 * time.Millisecond, "attempt": 50 * time.Millisecond}[tc.mode]
			policy := duroxide.NewRetryPolicy(2).WithBackoff(duroxide.Fixed{Delay: backoff})
			duroxide.Must(duroxide.RegisterOrchestration(reg, "Both", func(ctx *duroxide.OrchestrationContext, other string) (string, error) {
				retry := ctx.CallActivityWithRetry("Flaky", "x", policy)
				var second *duroxide.Task
				if other == "completion" {
					second = ctx.CallActivity("Other", 0)
				} else {
					second = ctx.WaitForEvent("go")
				}
				if err := ctx.Join(retry, second); err != nil {
					return "", err
				}
				var s string
				if err := retry.Await(&s); err != nil {
					return "", err
				}
				return s, nil
			}))
			e := newEnv(t, reg, duroxide.Options{})
			c := e.rt.Client()
			if err := c.StartOrchestration(context.Background(), "both", "Both", tc.other); err != nil {
				t.Fatal(err)
			}
			if tc.other == "event" {
				if tc.mode == "wait" {
					<-failed
				} else {
					<-retrying
				}
				if err := c.RaiseEvent(context.Background(), "both", "go", "now"); err != nil {
					t.Fatal(err)
				}
			}
			var out string
			expectCompleted(t, e.wait("both"), &out)
			if out != "x ok" || runs.Load() != tc.flakyRuns {
				t.Fatalf("output %q after %d Flaky runs, want \"x ok\" after %d", out, runs.Load(), tc.flakyRuns)
			}
			h := e.history("both")
			completion := tc.other == "completion"
			for kind, want := range map[duroxide.EventKind]int{
				duroxide.EventActivityScheduled: map[bool]int{true: 3, false: 2}[completion],
				duroxide.EventActivityFailed:    1,
				duroxide.EventTimerCreated:      1,
				duroxide.EventTimerFired:        1,
				duroxide.EventActivityCompleted: map[bool]int{true: 2, false: 1}[completion],
				duroxide.EventExternalEvent:     map[bool]int{true: 0, false: 1}[completion],
			} {
				if n := countKind(h, kind); n != want {
					t.Errorf("%d %s events, want %d: %v", n, kind, want, eventKinds(h))
				}
			}
			var created, fired duroxide.Event
			for _, ev := range h {
				switch ev.Kind {
				case duroxide.EventTimerCreated:
					created = ev
				case duroxide.EventTimerFired:
					fired = ev
				}
			}
			if fired.SourceEventID != created.EventID || fired.TimestampMs < created.FireAtMs {
				t.Errorf("timer %+v fired as %+v (early, or another timer)", created, fired)
			}
		})
	}
}

// TestShutdownReleasesHeldFailure stops the runtime while a failure is held
// for its backoff: the failure goes to the queue, so the next runtime
// retries at once without running the failed attempt again.
func TestShutdownReleasesHeldFailure(t *testing.T) {
	var runs atomic.Int64
	policy := duroxide.NewRetryPolicy(2).WithBackoff(duroxide.Fixed{Delay: 900 * time.Millisecond})
	reg := heldRetryRegistry(&runs, 1, policy)
	e := newEnv(t, reg, duroxide.Options{})
	if err := e.rt.Client().StartOrchestration(context.Background(), "r", "Retry", "x"); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the first attempt", func() bool { return runs.Load() == 1 })
	// Stop well inside the backoff: the held failure goes to the queue, so
	// history does not show it yet (a failure committed at once would).
	time.Sleep(100 * time.Millisecond)
	e.stop()
	if h := e.history("r"); countKind(h, duroxide.EventActivityFailed) != 0 {
		t.Fatalf("the failure was committed before its backoff ended: %v", eventKinds(h))
	}
	e.start()
	var out string
	expectCompleted(t, e.wait("r"), &out)
	if out != "x ok" || runs.Load() != 2 {
		t.Fatalf("output %q after %d runs, want \"x ok\" after 2 (the failed attempt must not run again)", out, runs.Load())
	}
	h := e.history("r")
	if countKind(h, duroxide.EventActivityFailed) != 1 || countKind(h, duroxide.EventTimerFired) != 1 {
		t.Errorf("history %v, want one failure and one backoff", eventKinds(h))
	}
}

// TestHeldChainsUnderInterference runs many short retry chains while
// events arrive for their instances at arbitrary moments (giving chains up
// half-way) and other activities of the same instances complete: every
// instance completes, and every history is well formed (each schedule has
// one outcome, each timer fires at most once and never early).
func TestHeldChainsUnderInterference(t *testing.T) {
	const n = 40
	var mu sync.Mutex
	calls := map[string]int{}
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(ctx context.Context, s string) (string, error) {
		ai, _ := duroxide.ActivityInfoFromContext(ctx)
		mu.Lock()
		calls[ai.Instance]++
		c := calls[ai.Instance]
		mu.Unlock()
		if c%3 != 0 {
			return "", fmt.Errorf("transient %d", c)
		}
		return s + " ok", nil
	}))
	duroxide.Must(duroxide.RegisterActivity(reg, "Other", func(_ context.Context, d int) (int, error) {
		time.Sleep(time.Duration(d) * time.Millisecond)
		return d, nil
	}))
	policy := duroxide.NewRetryPolicy(10).WithBackoff(duroxide.Fixed{Delay: 7 * time.Millisecond})
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Mixed", func(ctx *duroxide.OrchestrationContext, i int) (string, error) {
		retry := ctx.CallActivityWithRetry("Flaky", "x", policy)
		other := ctx.CallActivity("Other", i%25)
		ev := ctx.WaitForEvent("go")
		if err := ctx.Join(retry, other, ev); err != nil {
			return "", err
		}
		var s string
		err := retry.Await(&s)
		return s, err
	}))
	e := newEnv(t, reg, duroxide.Options{})
	c := e.rt.Client()
	for i := range n {
		if err := c.StartOrchestration(context.Background(), fmt.Sprintf("m-%02d", i), "Mixed", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		time.Sleep(time.Duration(i%7) * time.Millisecond) // spread the events over the chains' lives
		if err := c.RaiseEvent(context.Background(), fmt.Sprintf("m-%02d", i), "go", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("m-%02d", i)
		var out string
		expectCompleted(t, e.wait(id), &out)
		if out != "x ok" {
			t.Errorf("%s: output %q", id, out)
		}
		h := e.history(id)
		outcomes := map[int64]int{}
		timers := map[int64]duroxide.Event{}
		for _, ev := range h {
			switch ev.Kind {
			case duroxide.EventActivityCompleted, duroxide.EventActivityFailed:
				outcomes[ev.SourceEventID]++
			case duroxide.EventTimerCreated:
				timers[ev.EventID] = ev
			case duroxide.EventTimerFired:
				tc, ok := timers[ev.SourceEventID]
				if !ok || ev.TimestampMs < tc.FireAtMs {
					t.Errorf("%s: TimerFired %+v without its TimerCreated, or early", id, ev)
				}
				delete(timers, ev.SourceEventID)
			}
		}
		for _, ev := range h {
			if ev.Kind == duroxide.EventActivityScheduled && outcomes[ev.EventID] != 1 {
				t.Errorf("%s: activity %d has %d outcomes: %v", id, ev.EventID, outcomes[ev.EventID], eventKinds(h))
			}
		}
	}
}
