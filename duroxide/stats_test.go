package duroxide_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
)

// TestRetryStatsAndSuggest: a workload with known failures shows the right
// distribution, metrics and advice. "Half" fails the first attempt of even
// inputs and never a second one; "Stuck" hangs on every attempt for
// inputs divisible by 3 (its 50 ms per-attempt timeout ends them) and
// answers at once otherwise.
func TestRetryStatsAndSuggest(t *testing.T) {
	reg := duroxide.NewRegistry()
	var mu sync.Mutex
	seen := map[int]bool{}
	duroxide.Must(duroxide.RegisterActivity(reg, "Half", func(ctx context.Context, n int) (int, error) {
		mu.Lock()
		first := !seen[n]
		seen[n] = true
		mu.Unlock()
		if first && n%2 == 0 {
			return 0, errors.New("first attempt of an even input")
		}
		return n, nil
	}, duroxide.WithDefaultRetry(duroxide.NewRetryPolicy(5).WithBackoff(duroxide.Fixed{Delay: time.Millisecond}))))
	duroxide.Must(duroxide.RegisterActivity(reg, "Stuck", func(ctx context.Context, n int) (int, error) {
		if n%3 == 0 {
			// Hang until the attempt timeout cancels it. (An attempt left
			// running would hold a worker for 10 s and stall the workload.)
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(10 * time.Second):
				return 0, errors.New("not cancelled")
			}
		}
		return n, nil
	}, duroxide.WithDefaultRetry(duroxide.NewRetryPolicy(2).WithBackoff(duroxide.NoBackoff{}).WithTimeout(50*time.Millisecond))))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Work", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		if _, err := duroxide.CallActivityTyped[int](ctx, "Half", n); err != nil {
			return 0, err
		}
		return duroxide.CallActivityTyped[int](ctx, "Stuck", n)
	}))
	promReg := prometheus.NewRegistry()
	e := newEnv(t, reg, duroxide.Options{Metrics: promReg, CancellationGracePeriod: time.Second})
	const n = 60
	for i := 0; i < n; i++ {
		e.run("w-"+itoa(i), "Work", i)
	}

	// Statistics are recorded once a turn's commit returns, which may be
	// just after a waiter saw the instance complete.
	stats := map[string]duroxide.ActivityRetryStats{}
	e.waitFor("the statistics of every sequence", func() bool {
		for _, s := range e.rt.RetryStats() {
			stats[s.Activity] = s
		}
		return stats["Half"].Sequences == n && stats["Stuck"].Sequences == n
	})
	half := stats["Half"]
	if half.Sequences != n || half.Succeeded != n || half.Exhausted != 0 || half.Attempts != n+n/2 || half.Failures != n/2 || half.Timeouts != 0 {
		t.Fatalf("Half stats %+v", half)
	}
	if len(half.SuccessByAttempt) != 3 || half.SuccessByAttempt[1] != n/2 || half.SuccessByAttempt[2] != n/2 {
		t.Fatalf("Half succeeded by attempt %v; want [_ %d %d]", half.SuccessByAttempt, n/2, n/2)
	}
	if half.DefaultPolicy == nil || half.DefaultPolicy.MaxAttempts != 5 || half.MaxAttempts != 5 || half.TimeToSuccess.Count != n {
		t.Fatalf("Half policy %+v, max attempts %d, time to success %+v", half.DefaultPolicy, half.MaxAttempts, half.TimeToSuccess)
	}
	adv := strings.Join(duroxide.Suggest(half), "\n")
	if !strings.Contains(adv, "100 % of successful sequences succeed by attempt 2") || !strings.Contains(adv, "attempts 3–5 never needed: consider MaxAttempts 3") ||
		strings.Contains(adv, "exhausted") || strings.Contains(adv, "timeouts") {
		t.Fatalf("advice for Half:\n%s", adv)
	}

	stuck := stats["Stuck"]
	// Inputs 0, 3, ... 57 hang: 20 sequences of 2 timed-out attempts.
	if stuck.Sequences != n || stuck.Exhausted != n/3 || stuck.Succeeded != n-n/3 || stuck.Timeouts != 2*n/3 || stuck.Attempts != n+n/3 {
		t.Fatalf("Stuck stats %+v", stuck)
	}
	adv = strings.Join(duroxide.Suggest(stuck), "\n")
	if !strings.Contains(adv, "33 % of sequences exhausted their 2 attempts") || !strings.Contains(adv, "timeouts on 50 % of attempts: the per-attempt timeout may be too short") {
		t.Fatalf("advice for Stuck:\n%s", adv)
	}

	if got := counterValue(t, promReg, "duroxide_activity_success_attempt", map[string]string{"activity_name": "Half"}); got != n {
		t.Fatalf("success_attempt observations %v, want %d", got, n)
	}
	if got := counterValue(t, promReg, "duroxide_activity_sequence_duration_seconds", map[string]string{"activity_name": "Stuck", "outcome": "exhausted"}); got != n/3 {
		t.Fatalf("exhausted sequence durations %v, want %d", got, n/3)
	}
	if got := counterValue(t, promReg, "duroxide_activity_retry_exhausted_total", map[string]string{"activity_name": "Stuck"}); got != n/3 {
		t.Fatalf("retry_exhausted_total %v, want %d", got, n/3)
	}
}

func TestSuggestWantsEnoughData(t *testing.T) {
	s := duroxide.ActivityRetryStats{Activity: "A", Sequences: 3, Succeeded: 3, SuccessByAttempt: []int{0, 3}, MaxAttempts: 5}
	if got := duroxide.Suggest(s); len(got) != 1 || !strings.Contains(got[0], "too few") {
		t.Fatalf("Suggest = %q", got)
	}
	if got := duroxide.Suggest(duroxide.ActivityRetryStats{Activity: "A"}); got != nil {
		t.Fatalf("Suggest without data = %q", got)
	}
}

// TestRetryLastTimedOutAttemptCancelled: when the timeout of a sequence's
// last attempt ends the execution in the same turn, the attempt is still
// cancelled (its context is done), not left running.
func TestRetryLastTimedOutAttemptCancelled(t *testing.T) {
	reg := duroxide.NewRegistry()
	var cancelled atomic.Int64
	duroxide.Must(duroxide.RegisterActivity(reg, "Hang", func(ctx context.Context, _ string) (string, error) {
		select {
		case <-ctx.Done():
			cancelled.Add(1)
			return "", ctx.Err()
		case <-time.After(time.Minute):
			return "", errors.New("not cancelled")
		}
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "O", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Hang", in, duroxide.NewRetryPolicy(2).WithBackoff(duroxide.NoBackoff{}).WithTimeout(20*time.Millisecond))
	}))
	e := newEnv(t, reg, duroxide.Options{})
	if st := e.run("hang", "O", "x"); !errors.Is(st.Err(), duroxide.ErrTimeout) {
		t.Fatalf("status %s, error %v; want a timeout", st.Status, st.Err())
	}
	e.waitFor("both attempts cancelled", func() bool { return cancelled.Load() == 2 })
}
