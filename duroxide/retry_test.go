package duroxide_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/toygres/toygres/duroxide"
)

func TestDelayForAttempt(t *testing.T) {
	s := time.Second
	ms := time.Millisecond
	cases := []struct {
		name string
		b    duroxide.Backoff
		want []time.Duration // attempts 1..n
	}{
		{"none", duroxide.NoBackoff{}, []time.Duration{0, 0, 0}},
		{"fixed 2s (seed)", duroxide.Fixed{Delay: 2 * s}, []time.Duration{2 * s, 2 * s, 2 * s, 2 * s}},
		{"linear 2s max 10s (seed)", duroxide.Linear{Base: 2 * s, Max: 10 * s}, []time.Duration{2 * s, 4 * s, 6 * s, 8 * s, 10 * s, 10 * s}},
		{"linear 100ms uncapped", duroxide.Linear{Base: 100 * ms}, []time.Duration{100 * ms, 200 * ms, 300 * ms}},
		{"exponential 2s x2 max 10s (seed)", duroxide.Exponential{Base: 2 * s, Multiplier: 2, Max: 10 * s}, []time.Duration{2 * s, 4 * s, 8 * s, 10 * s}},
		{"exponential 2s x2 max 30s (seed)", duroxide.Exponential{Base: 2 * s, Multiplier: 2, Max: 30 * s}, []time.Duration{2 * s, 4 * s, 8 * s, 16 * s, 30 * s}},
		{"exponential 1s x2 max 10s (seed)", duroxide.Exponential{Base: s, Multiplier: 2, Max: 10 * s}, []time.Duration{s, 2 * s, 4 * s, 8 * s, 10 * s}},
		{"exponential x3", duroxide.Exponential{Base: 100 * ms, Multiplier: 3}, []time.Duration{100 * ms, 300 * ms, 900 * ms}},
		{"exponential x1 is constant", duroxide.Exponential{Base: 100 * ms, Multiplier: 1}, []time.Duration{100 * ms, 100 * ms, 100 * ms}},
		{"exponential base 0", duroxide.Exponential{Base: 0, Multiplier: 2}, []time.Duration{0, 0}},
	}
	for _, c := range cases {
		p := duroxide.NewRetryPolicy(10).WithBackoff(c.b)
		for i, want := range c.want {
			if got := p.DelayForAttempt(i + 1); got != want {
				t.Errorf("%s: attempt %d: got %v, want %v", c.name, i+1, got, want)
			}
		}
	}
	// Defaults: exponential 100ms ×2 max 30s, no timeout.
	d := duroxide.NewRetryPolicy(3)
	if d.MaxAttempts != 3 || d.Timeout != 0 || d.DelayForAttempt(1) != 100*ms || d.DelayForAttempt(2) != 200*ms || d.DelayForAttempt(20) != 30*s {
		t.Errorf("defaults: %+v, delays %v %v %v", d, d.DelayForAttempt(1), d.DelayForAttempt(2), d.DelayForAttempt(20))
	}
	// Huge attempt numbers saturate instead of overflowing.
	huge := []duroxide.RetryPolicy{
		duroxide.NewRetryPolicy(1).WithBackoff(duroxide.Exponential{Base: s, Multiplier: 2}),
		duroxide.NewRetryPolicy(1).WithBackoff(duroxide.Linear{Base: s}),
	}
	for _, p := range huge {
		for _, k := range []int{64, 1000, math.MaxInt32, math.MaxInt} {
			if got := p.DelayForAttempt(k); got <= 0 {
				t.Errorf("%T attempt %d: got %v, want a large positive delay", p.Backoff, k, got)
			}
		}
	}
	capped := duroxide.NewRetryPolicy(1).WithBackoff(duroxide.Exponential{Base: s, Multiplier: 2, Max: 10 * s})
	if got := capped.DelayForAttempt(math.MaxInt); got != 10*s {
		t.Errorf("capped huge attempt = %v", got)
	}
}

// TestRetryPolicySummary: the text recorded in history (Event.Policy) and
// in RetryStats for every kind of policy.
func TestRetryPolicySummary(t *testing.T) {
	for _, c := range []struct {
		p    duroxide.RetryPolicy
		want string
	}{
		{duroxide.NewRetryPolicy(3), "3 attempts, exponential 100ms×2 max 30s"},
		{duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: 10 * time.Millisecond}), "3 attempts, fixed 10ms"},
		{duroxide.RetryPolicy{Name: "cms", MaxAttempts: 5, Backoff: duroxide.Exponential{Base: 500 * time.Millisecond, Multiplier: 1.5, Max: 5 * time.Second},
			Jitter: 0.1, Timeout: 30 * time.Second, TotalTimeout: time.Minute},
			"cms: 5 attempts, exponential 500ms×1.5 max 5s ±10%, 30s per attempt, 1m0s in total"},
		{duroxide.RetryPolicy{MaxAttempts: 2, Backoff: duroxide.Linear{Base: time.Second, Max: 3 * time.Second}}, "2 attempts, linear 1s max 3s"},
		{duroxide.RetryPolicy{MaxAttempts: 2, Backoff: duroxide.Linear{Base: time.Second}, Jitter: 0.125}, "2 attempts, linear 1s ±12.5%"},
		{duroxide.RetryPolicy{MaxAttempts: 1, Backoff: duroxide.NoBackoff{}}, "1 attempts, no backoff"},
		{duroxide.RetryPolicy{MaxAttempts: 1}, "1 attempts, no backoff"},
	} {
		if got := c.p.Summary(); got != c.want {
			t.Errorf("Summary() = %q, want %q", got, c.want)
		}
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	bad := map[string]duroxide.RetryPolicy{
		"zero attempts":       duroxide.NewRetryPolicy(0),
		"negative attempts":   duroxide.NewRetryPolicy(-1),
		"negative timeout":    duroxide.NewRetryPolicy(3).WithTimeout(-time.Second),
		"negative total":      duroxide.NewRetryPolicy(3).WithTotalTimeout(-time.Second),
		"negative fixed":      duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: -1}),
		"negative linear":     duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Linear{Base: -1}),
		"multiplier below 1":  duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Exponential{Base: time.Second, Multiplier: 0.5}),
		"multiplier NaN":      duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Exponential{Base: time.Second, Multiplier: math.NaN()}),
		"multiplier infinite": duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Exponential{Base: time.Second, Multiplier: math.Inf(1)}),
		"jitter NaN":          duroxide.NewRetryPolicy(3).WithJitter(math.NaN()),
		"jitter above 1":      duroxide.NewRetryPolicy(3).WithJitter(1.5),
	}
	for name, p := range bad {
		if err := p.Validate(); !errors.Is(err, duroxide.ErrInvalidPolicy) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidPolicy", name, err)
		}
	}
	good := duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Exponential{Base: 2 * time.Second, Multiplier: 2.0, Max: 10 * time.Second}).WithTimeout(15 * time.Second)
	if err := good.Validate(); err != nil {
		t.Errorf("seed policy invalid: %v", err)
	}
}

// flaky is an activity that fails its first n calls per key.
type flaky struct {
	mu    sync.Mutex
	calls map[string]int
}

func newFlaky() *flaky { return &flaky{calls: map[string]int{}} }

func (f *flaky) call(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[key]++
	return f.calls[key]
}

func (f *flaky) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[key]
}

// flakyInput tells the test orchestration what to do.
type flakyInput struct {
	Key      string
	FailN    int           // attempts that fail
	SlowN    int           // attempts that hang until cancelled
	Attempts int           // policy attempts
	Fixed    time.Duration // backoff
	Timeout  time.Duration // per attempt
	EndsSeq  bool
	Total    time.Duration
	Jitter   float64
	NonRetry bool
}

type codedError struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

func (e *codedError) Error() string { return fmt.Sprintf("code %d: %s", e.Code, e.Reason) }

func retryRegistry(f *flaky) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(ctx context.Context, in flakyInput) (string, error) {
		n := f.call(in.Key)
		if n <= in.SlowN {
			<-ctx.Done()
			return "", ctx.Err()
		}
		if n <= in.SlowN+in.FailN {
			if in.NonRetry {
				return "", duroxide.NonRetryable(&codedError{Code: 42, Reason: "bad request"})
			}
			return "", fmt.Errorf("transient failure %d", n)
		}
		return fmt.Sprintf("ok after %d", n), nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Retry", func(ctx *duroxide.OrchestrationContext, in flakyInput) (string, error) {
		p := duroxide.NewRetryPolicy(in.Attempts).WithBackoff(duroxide.Fixed{Delay: in.Fixed}).WithTimeout(in.Timeout).WithTotalTimeout(in.Total).WithJitter(in.Jitter)
		if in.EndsSeq {
			p = p.WithTimeoutEndsSequence()
		}
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", in, p)
	}))
	return reg
}

func TestRetryFailFailSucceedHistory(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		f := newFlaky()
		e := newEnv(t, retryRegistry(f), opts)
		var out string
		expectCompleted(t, e.run("ffs", "Retry", flakyInput{Key: "ffs", FailN: 2, Attempts: 5, Fixed: 10 * time.Millisecond}), &out)
		if out != "ok after 3" {
			t.Fatalf("out = %q", out)
		}
		h := e.history("ffs")
		var shape []string
		for _, ev := range h {
			shape = append(shape, string(ev.Kind))
		}
		want := []string{"OrchestrationStarted",
			"ActivityScheduled", "ActivityFailed", "TimerCreated", "TimerFired",
			"ActivityScheduled", "ActivityFailed", "TimerCreated", "TimerFired",
			"ActivityScheduled", "ActivityCompleted", "OrchestrationCompleted"}
		if strings.Join(shape, ",") != strings.Join(want, ",") {
			t.Fatalf("history:\n got %v\nwant %v", shape, want)
		}
		// Every attempt is its own schedule with the same name and input.
		var sched []duroxide.Event
		for _, ev := range h {
			if ev.Kind == duroxide.EventActivityScheduled {
				sched = append(sched, ev)
			}
		}
		if sched[0].Input != sched[2].Input || sched[0].EventID == sched[1].EventID {
			t.Fatalf("attempt schedules: %v", sched)
		}
		for _, ev := range h {
			if ev.Kind == duroxide.EventTimerCreated && ev.FireAtMs-ev.TimestampMs != 10 {
				t.Fatalf("backoff timer %v waits %d ms, want 10", ev, ev.FireAtMs-ev.TimestampMs)
			}
		}
	})
}

func TestRetryExhaustedReturnsLastError(t *testing.T) {
	f := newFlaky()
	e := newEnv(t, retryRegistry(f), duroxide.Options{})
	st := e.run("exhaust", "Retry", flakyInput{Key: "exhaust", FailN: 10, Attempts: 3, Fixed: time.Millisecond})
	if st.Status != duroxide.StatusFailed {
		t.Fatalf("status = %s", st.Status)
	}
	msg := st.Error.Message
	if !strings.Contains(msg, "activity Flaky failed after 3 attempt(s)") || !strings.Contains(msg, "transient failure 3") {
		t.Fatalf("error = %q; want last attempt's error wrapped with name and count", msg)
	}
	if f.count("exhaust") != 3 {
		t.Fatalf("calls = %d", f.count("exhaust"))
	}
}

func TestRetryTimeoutIsRetried(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		f := newFlaky()
		e := newEnv(t, retryRegistry(f), opts)
		var out string
		key := "to-" + t.Name()
		expectCompleted(t, e.run("timeout-retried", "Retry", flakyInput{Key: key, SlowN: 1, Attempts: 3, Fixed: time.Millisecond, Timeout: 100 * time.Millisecond}), &out)
		if out != "ok after 2" {
			t.Fatalf("out = %q", out)
		}
		h := e.history("timeout-retried")
		if n := countKind(h, duroxide.EventActivityScheduled); n != 2 {
			t.Fatalf("attempts = %d", n)
		}
		if n := countKind(h, duroxide.EventActivityCancelRequested); n != 1 {
			t.Fatalf("timed-out attempt not cancelled: %d cancel events", n)
		}
	})
}

func TestRetryTimeoutEndsSequenceOption(t *testing.T) {
	f := newFlaky()
	e := newEnv(t, retryRegistry(f), duroxide.Options{})
	st := e.run("timeout-final", "Retry", flakyInput{Key: "tf", SlowN: 1, Attempts: 3, Fixed: time.Millisecond, Timeout: 50 * time.Millisecond, EndsSeq: true})
	if st.Status != duroxide.StatusFailed || !errors.Is(st.Err(), duroxide.ErrTimeout) {
		t.Fatalf("status = %s err = %v", st.Status, st.Err())
	}
	if n := countKind(e.history("timeout-final"), duroxide.EventActivityScheduled); n != 1 {
		t.Fatalf("attempts = %d, want 1", n)
	}
}

func TestRetryAllAttemptsTimeOut(t *testing.T) {
	f := newFlaky()
	e := newEnv(t, retryRegistry(f), duroxide.Options{})
	st := e.run("timeout-all", "Retry", flakyInput{Key: "ta", SlowN: 10, Attempts: 2, Fixed: time.Millisecond, Timeout: 50 * time.Millisecond})
	if st.Status != duroxide.StatusFailed || !errors.Is(st.Err(), duroxide.ErrTimeout) {
		t.Fatalf("status = %s err = %v", st.Status, st.Err())
	}
	if !strings.Contains(st.Error.Message, "after 2 attempt(s)") {
		t.Fatalf("error = %q", st.Error.Message)
	}
}

func TestRetryNonRetryableStopsAndKeepsType(t *testing.T) {
	f := newFlaky()
	reg := retryRegistry(f)
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Inspect", func(ctx *duroxide.OrchestrationContext, in flakyInput) (string, error) {
		_, err := duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", in, duroxide.NewRetryPolicy(5).WithBackoff(duroxide.Fixed{Delay: time.Millisecond}))
		var ce *codedError
		if !errors.As(err, &ce) {
			return "", fmt.Errorf("errors.As failed for %v", err)
		}
		return fmt.Sprintf("code=%d reason=%s nonretryable=%v", ce.Code, ce.Reason, duroxide.IsNonRetryable(err)), nil
	}))
	e := newEnv(t, reg, duroxide.Options{})
	var out string
	expectCompleted(t, e.run("nonretry", "Inspect", flakyInput{Key: "nr", FailN: 5, NonRetry: true}), &out)
	if out != "code=42 reason=bad request nonretryable=true" {
		t.Fatalf("out = %q", out)
	}
	if f.count("nr") != 1 {
		t.Fatalf("non-retryable error was retried: %d calls", f.count("nr"))
	}
}

func TestRetryPredicate(t *testing.T) {
	f := newFlaky()
	reg := retryRegistry(f)
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Pred", func(ctx *duroxide.OrchestrationContext, in flakyInput) (string, error) {
		p := duroxide.NewRetryPolicy(5).WithBackoff(duroxide.NoBackoff{}).WithRetryIf(func(err error) bool {
			return !strings.Contains(err.Error(), "transient failure 2")
		})
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", in, p)
	}))
	e := newEnv(t, reg, duroxide.Options{})
	st := e.run("pred", "Pred", flakyInput{Key: "pred", FailN: 4})
	if st.Status != duroxide.StatusFailed || !strings.Contains(st.Error.Message, "transient failure 2") {
		t.Fatalf("status = %s err = %v", st.Status, st.Err())
	}
	if f.count("pred") != 2 {
		t.Fatalf("calls = %d, want 2 (predicate stops at the second failure)", f.count("pred"))
	}
	if n := countKind(e.history("pred"), duroxide.EventTimerCreated); n != 0 {
		t.Fatalf("NoBackoff created %d timers", n)
	}
}

func TestRetryJitterDeterministic(t *testing.T) {
	f := newFlaky()
	// Replay mode: every turn re-runs the whole history, so a jitter that
	// differed on replay would be a nondeterminism failure.
	e := newEnv(t, retryRegistry(f), duroxide.Options{CacheSize: -1})
	delays := map[int64]bool{}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("jitter-%d", i)
		expectCompleted(t, e.run(id, "Retry", flakyInput{Key: id, FailN: 2, Attempts: 3, Fixed: 200 * time.Millisecond, Jitter: 0.5}), nil)
		for _, ev := range e.history(id) {
			if ev.Kind == duroxide.EventTimerCreated {
				d := ev.FireAtMs - ev.TimestampMs
				if d < 100 || d > 300 {
					t.Fatalf("jittered delay %d ms outside 200±50%%", d)
				}
				delays[d] = true
			}
		}
	}
	if len(delays) < 2 {
		t.Fatalf("jitter produced no spread: %v", delays)
	}
}

func TestRetryTotalTimeout(t *testing.T) {
	f := newFlaky()
	e := newEnv(t, retryRegistry(f), duroxide.Options{})
	begin := time.Now()
	st := e.run("total", "Retry", flakyInput{Key: "total", FailN: 1000, Attempts: 1000, Fixed: 20 * time.Millisecond, Total: 300 * time.Millisecond})
	if st.Status != duroxide.StatusFailed || !errors.Is(st.Err(), duroxide.ErrTimeout) || !strings.Contains(st.Error.Message, "total timeout") {
		t.Fatalf("status = %s err = %v", st.Status, st.Err())
	}
	if el := time.Since(begin); el < 300*time.Millisecond {
		t.Fatalf("finished after %v, before the total timeout", el)
	}
	if n := f.count("total"); n < 2 || n > 20 {
		t.Fatalf("attempts within 300ms = %d", n)
	}
}

func TestInvalidPolicyFailsOrchestration(t *testing.T) {
	f := newFlaky()
	e := newEnv(t, retryRegistry(f), duroxide.Options{})
	for name, in := range map[string]flakyInput{
		"zero-attempts": {Key: "z", Attempts: 0},
		"neg-timeout":   {Key: "n", Attempts: 2, Timeout: -time.Second},
		"bad-jitter":    {Key: "j", Attempts: 2, Jitter: 3},
	} {
		st := e.run("invalid-"+name, "Retry", in)
		if st.Status != duroxide.StatusFailed || !strings.Contains(st.Error.Message, "invalid retry policy") {
			t.Fatalf("%s: status = %s err = %v", name, st.Status, st.Err())
		}
	}
	if f.count("z")+f.count("n")+f.count("j") != 0 {
		t.Fatal("an invalid policy ran the activity")
	}
}

func TestRetryRacedInSelect(t *testing.T) {
	f := newFlaky()
	reg := retryRegistry(f)
	duroxide.Must(duroxide.RegisterOrchestration(reg, "RaceRetry", func(ctx *duroxide.OrchestrationContext, in flakyInput) (string, error) {
		task := ctx.CallActivityWithRetry("Flaky", in, duroxide.NewRetryPolicy(100).WithBackoff(duroxide.Fixed{Delay: time.Hour}))
		if ctx.Select(task, ctx.CreateTimer(100*time.Millisecond)) == 1 {
			return "timer won", nil
		}
		return "retry won", nil
	}))
	e := newEnv(t, reg, duroxide.Options{})
	var out string
	expectCompleted(t, e.run("race-retry", "RaceRetry", flakyInput{Key: "rr", FailN: 5}), &out)
	if out != "timer won" || f.count("rr") != 1 {
		t.Fatalf("out = %q calls = %d", out, f.count("rr"))
	}
}

func TestSubOrchestrationRetry(t *testing.T) {
	var mu sync.Mutex
	runs := 0
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Attempt", func(context.Context, string) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		runs++
		return runs, nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Child", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		n, err := duroxide.CallActivityTyped[int](ctx, "Attempt", "")
		if err != nil {
			return "", err
		}
		if n < 3 {
			return "", fmt.Errorf("child attempt %d failed", n)
		}
		return fmt.Sprintf("child ok on %d", n), nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Parent", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		return duroxide.Await[string](ctx.CallSubOrchestrationWithRetry("Child", "", duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: 5 * time.Millisecond}), duroxide.WithInstanceID("retry-child")))
	}))
	e := newEnv(t, reg, duroxide.Options{})
	var out string
	expectCompleted(t, e.run("sub-retry", "Parent", ""), &out)
	if out != "child ok on 3" {
		t.Fatalf("out = %q", out)
	}
	for _, id := range []string{"retry-child", "retry-child::attempt-2", "retry-child::attempt-3"} {
		if _, err := e.c.GetStatus(context.Background(), id); err != nil {
			t.Fatalf("child %s: %v", id, err)
		}
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matchLabels(m, labels) {
				if mf.GetType() == dto.MetricType_HISTOGRAM {
					return float64(m.GetHistogram().GetSampleCount())
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func matchLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestRetryMetricsExact(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		f := newFlaky()
		promReg := prometheus.NewRegistry()
		opts.Metrics = promReg
		e := newEnv(t, retryRegistry(f), opts)
		// fail, fail, succeed: attempt 2 fails, attempt 3 succeeds.
		expectCompleted(t, e.run("m1", "Retry", flakyInput{Key: "m1", FailN: 2, Attempts: 5, Fixed: time.Millisecond}), nil)
		// fail ×3 with 3 attempts: exhausted.
		e.run("m2", "Retry", flakyInput{Key: "m2", FailN: 9, Attempts: 3, Fixed: time.Millisecond})
		// timeout then success.
		expectCompleted(t, e.run("m3", "Retry", flakyInput{Key: "m3", SlowN: 2, Attempts: 3, Fixed: time.Millisecond, Timeout: 50 * time.Millisecond}), nil)

		check := func(name string, labels map[string]string, want float64) {
			t.Helper()
			if got := counterValue(t, promReg, name, labels); got != want {
				t.Errorf("%s%v = %v, want %v", name, labels, got, want)
			}
		}
		// Metrics are recorded after a turn commits, so a waiter may see the
		// completion a moment before them: wait for the last completion's.
		e.waitFor("the last turn's metrics", func() bool {
			return counterValue(t, promReg, "duroxide_orchestration_completions_total", map[string]string{"orchestration_name": "Retry", "status": "success"}) == 2 &&
				counterValue(t, promReg, "duroxide_activity_retries_total", map[string]string{"activity_name": "Flaky", "status": "success"}) == 2
		})
		// m1: attempt2 failure, attempt3 success. m2: attempts 2,3 failure.
		// m3: attempt 2 timeout, attempt 3 success.
		check("duroxide_activity_retries_total", map[string]string{"activity_name": "Flaky", "status": "failure"}, 3)
		check("duroxide_activity_retries_total", map[string]string{"activity_name": "Flaky", "status": "success"}, 2)
		check("duroxide_activity_retries_total", map[string]string{"activity_name": "Flaky", "status": "timeout"}, 1)
		check("duroxide_activity_retry_exhausted_total", map[string]string{"activity_name": "Flaky"}, 1)
		// Every attempt ran once on a worker and was observed: 3 + 3 + 3
		// (timed-out attempts are observed as cancelled).
		total := counterValue(t, promReg, "duroxide_activity_duration_seconds", map[string]string{"activity_name": "Flaky", "outcome": "success"}) +
			counterValue(t, promReg, "duroxide_activity_duration_seconds", map[string]string{"activity_name": "Flaky", "outcome": "failure"})
		e.waitFor("cancelled attempts observed", func() bool {
			return counterValue(t, promReg, "duroxide_activity_duration_seconds", map[string]string{"activity_name": "Flaky", "outcome": "cancelled"}) == 2
		})
		if total != 7 {
			t.Errorf("success+failure observations = %v, want 7", total)
		}
		check("duroxide_orchestration_starts_total", map[string]string{"orchestration_name": "Retry"}, 3)
		check("duroxide_orchestration_completions_total", map[string]string{"orchestration_name": "Retry", "status": "success"}, 2)
		check("duroxide_orchestration_completions_total", map[string]string{"orchestration_name": "Retry", "status": "failed"}, 1)
	})
}

// TestRetryMetricsAcrossRestart stops the runtime during a backoff and
// starts a new one (new registry): the sums over both must be exact.
func TestRetryMetricsAcrossRestart(t *testing.T) {
	f := newFlaky()
	reg1 := prometheus.NewRegistry()
	e := newEnv(t, retryRegistry(f), duroxide.Options{Metrics: reg1})
	e.startOrch("mr", "Retry", flakyInput{Key: "mr", FailN: 2, Attempts: 5, Fixed: 300 * time.Millisecond})
	e.waitFor("second attempt failed", func() bool {
		return countKind(e.history("mr"), duroxide.EventActivityFailed) == 2
	})
	e.stop()
	reg2 := prometheus.NewRegistry()
	e.opts.Metrics = reg2
	e.opts.CacheSize = -1
	e.start()
	expectCompleted(t, e.wait("mr"), nil)
	sum := func(status string) float64 {
		l := map[string]string{"activity_name": "Flaky", "status": status}
		return counterValue(t, reg1, "duroxide_activity_retries_total", l) + counterValue(t, reg2, "duroxide_activity_retries_total", l)
	}
	if sum("failure") != 1 || sum("success") != 1 {
		t.Fatalf("retries across restart: failure=%v success=%v, want 1 and 1", sum("failure"), sum("success"))
	}
	if got := counterValue(t, reg1, "duroxide_orchestration_starts_total", nil) + counterValue(t, reg2, "duroxide_orchestration_starts_total", nil); got != 1 {
		t.Fatalf("starts = %v, want 1", got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestRetryLogRecords(t *testing.T) {
	f := newFlaky()
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	e := newEnv(t, retryRegistry(f), duroxide.Options{Logger: logger, CacheSize: -1})
	expectCompleted(t, e.run("logged", "Retry", flakyInput{Key: "logged", FailN: 2, Attempts: 4, Fixed: 15 * time.Millisecond}), nil)
	var retries []map[string]any
	for _, line := range strings.Split(buf.String(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("bad log line %q", line)
		}
		if strings.Contains(rec["msg"].(string), "retry") {
			retries = append(retries, rec)
		}
	}
	if len(retries) != 2 {
		t.Fatalf("retry log records = %d, want 2 (once per retry, never on replay): %v", len(retries), retries)
	}
	for i, r := range retries {
		if r["instance_id"] != "logged" || r["activity_name"] != "Flaky" || r["attempt"] != float64(i+1) ||
			r["max_attempts"] != float64(4) || r["retry_delay"] != "15ms" || !strings.Contains(r["error"].(string), "transient failure") {
			t.Fatalf("record %d = %v", i, r)
		}
	}
}
