package duroxide_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
)

// fakeClock is a breaker clock the test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// target is an activity whose health the test switches; it counts calls.
type target struct {
	healthy atomic.Bool
	calls   atomic.Int64
}

func (tg *target) call(ctx context.Context, in map[string]string) (string, error) {
	tg.calls.Add(1)
	if !tg.healthy.Load() {
		return "", errors.New("target down")
	}
	return "ok", nil
}

func breakerRegistry(tg *target, cfg duroxide.CircuitBreakerConfig, policy *duroxide.RetryPolicy) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Target", tg.call, duroxide.WithCircuitBreaker(cfg)))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Call", func(ctx *duroxide.OrchestrationContext, in map[string]string) (string, error) {
		if policy != nil {
			return duroxide.CallActivityWithRetryTyped[string](ctx, "Target", in, *policy)
		}
		return duroxide.CallActivityTyped[string](ctx, "Target", in)
	}))
	return reg
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if matchLabels(m, labels) {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

// TestCircuitBreakerLifecycle: failures open the breaker; while open,
// attempts fail fast with ErrCircuitOpen without calling the function; after
// the cool-down a successful probe closes it; each transition and each
// refusal is counted.
func TestCircuitBreakerLifecycle(t *testing.T) {
	clock := newFakeClock()
	tg := &target{}
	promReg := prometheus.NewRegistry()
	cfg := duroxide.CircuitBreakerConfig{Window: time.Minute, MinCalls: 4, FailureRatio: 0.5, CoolDown: 10 * time.Second, Now: clock.Now}
	e := newEnv(t, breakerRegistry(tg, cfg, nil), duroxide.Options{Metrics: promReg})
	lbl := map[string]string{"activity_name": "Target", "key": ""}
	to := func(s string) float64 {
		return counterValue(t, promReg, "duroxide_circuit_transitions_total", map[string]string{"activity_name": "Target", "key": "", "to": s})
	}
	in := map[string]string{"target": "a"}

	for i := 0; i < 4; i++ {
		st := e.run("fail-"+itoa(i), "Call", in)
		if st.Status != duroxide.StatusFailed || errors.Is(st.Err(), duroxide.ErrCircuitOpen) {
			t.Fatalf("call %d: %s %v; want the target's own failure", i, st.Status, st.Err())
		}
	}
	if tg.calls.Load() != 4 || to("open") != 1 || gaugeValue(t, promReg, "duroxide_circuit_state", lbl) != 1 {
		t.Fatalf("after 4 failures: %d calls, %v opens, state %v; want 4, 1, 1 (open)", tg.calls.Load(), to("open"),
			gaugeValue(t, promReg, "duroxide_circuit_state", lbl))
	}

	tg.healthy.Store(true) // recovered, but the breaker does not know yet
	for i := 0; i < 3; i++ {
		st := e.run("fast-"+itoa(i), "Call", in)
		if !errors.Is(st.Err(), duroxide.ErrCircuitOpen) {
			t.Fatalf("call while open: %s %v; want ErrCircuitOpen", st.Status, st.Err())
		}
		var coe *duroxide.CircuitOpenError
		if !errors.As(st.Err(), &coe) || !coe.HalfOpenAt.Equal(clock.Now().Add(10*time.Second)) || coe.Activity != "Target" {
			t.Fatalf("circuit error %+v; want half-open at %v", coe, clock.Now().Add(10*time.Second))
		}
		if !strings.Contains(st.Err().Error(), "is open") || !strings.Contains(st.Err().Error(), "half-opens at") {
			t.Fatalf("error text %q", st.Err())
		}
	}
	if tg.calls.Load() != 4 {
		t.Fatalf("the function ran %d times; an open breaker must not call it", tg.calls.Load())
	}
	if got := counterValue(t, promReg, "duroxide_circuit_rejected_total", lbl); got != 3 {
		t.Fatalf("rejected_total = %v, want 3", got)
	}
	if bs := e.rt.CircuitBreakers(); len(bs) != 1 || bs[0].State != duroxide.CircuitOpen {
		t.Fatalf("CircuitBreakers() = %+v", bs)
	}

	clock.Advance(10 * time.Second)
	var out string
	expectCompleted(t, e.run("probe", "Call", in), &out)
	if tg.calls.Load() != 5 || to("half_open") != 1 || to("closed") != 1 || gaugeValue(t, promReg, "duroxide_circuit_state", lbl) != 0 {
		t.Fatalf("after the probe: %d calls, half_open %v, closed %v, state %v; want 5, 1, 1, 0", tg.calls.Load(), to("half_open"), to("closed"),
			gaugeValue(t, promReg, "duroxide_circuit_state", lbl))
	}

	// A failed probe opens it again.
	tg.healthy.Store(false)
	for i := 0; i < 4; i++ {
		e.run("fail-again-"+itoa(i), "Call", in)
	}
	clock.Advance(10 * time.Second)
	if st := e.run("bad-probe", "Call", in); errors.Is(st.Err(), duroxide.ErrCircuitOpen) || st.Status != duroxide.StatusFailed {
		t.Fatalf("probe: %s %v; want the target's failure", st.Status, st.Err())
	}
	if st := e.run("after-bad-probe", "Call", in); !errors.Is(st.Err(), duroxide.ErrCircuitOpen) {
		t.Fatalf("after a failed probe: %v; want ErrCircuitOpen", st.Err())
	}
	if to("open") != 3 || to("half_open") != 2 {
		t.Fatalf("opens %v, half-opens %v; want 3, 2", to("open"), to("half_open"))
	}
}

// TestCircuitBreakerPerKey: with a key from the input, one failing target
// opens its own breaker only.
func TestCircuitBreakerPerKey(t *testing.T) {
	clock := newFakeClock()
	reg := duroxide.NewRegistry()
	var callsA, callsB atomic.Int64
	duroxide.Must(duroxide.RegisterActivity(reg, "Target", func(ctx context.Context, in map[string]string) (string, error) {
		if in["target"] == "a" {
			callsA.Add(1)
			return "", errors.New("a is down")
		}
		callsB.Add(1)
		return "ok", nil
	}, duroxide.WithCircuitBreaker(duroxide.CircuitBreakerConfig{MinCalls: 2, CoolDown: time.Hour, Key: duroxide.KeyFromField("target"), Now: clock.Now})))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Call", func(ctx *duroxide.OrchestrationContext, in map[string]string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "Target", in)
	}))
	e := newEnv(t, reg, duroxide.Options{})
	for i := 0; i < 4; i++ {
		e.run("a-"+itoa(i), "Call", map[string]string{"target": "a"})
		expectCompleted(t, e.run("b-"+itoa(i), "Call", map[string]string{"target": "b"}), nil)
	}
	if callsA.Load() != 2 || callsB.Load() != 4 {
		t.Fatalf("calls a %d, b %d; want 2 (then open), 4", callsA.Load(), callsB.Load())
	}
	bs := e.rt.CircuitBreakers()
	if len(bs) != 2 || bs[0].Key != "a" || bs[0].State != duroxide.CircuitOpen || bs[1].Key != "b" || bs[1].State != duroxide.CircuitClosed {
		t.Fatalf("breakers %+v", bs)
	}
}

// TestCircuitBreakerRetriesAndReplay: a retry sequence meets an open
// breaker: its fast-failed attempts are ordinary failed attempts in
// history, it backs off and retries, and succeeds on the probe after the
// cool-down. The recorded history replays deterministically.
func TestCircuitBreakerRetriesAndReplay(t *testing.T) {
	clock := newFakeClock()
	tg := &target{}
	policy := duroxide.NewRetryPolicy(1000).WithBackoff(duroxide.Fixed{Delay: 2 * time.Millisecond})
	cfg := duroxide.CircuitBreakerConfig{MinCalls: 2, FailureRatio: 1, CoolDown: time.Minute, Now: clock.Now}
	reg := breakerRegistry(tg, cfg, &policy)
	e := newEnv(t, reg, duroxide.Options{})
	e.startOrch("seq", "Call", map[string]string{})
	rejected := func() int {
		n := 0
		for _, ev := range e.history("seq") {
			if ev.Kind == duroxide.EventActivityFailed && ev.Error != nil && strings.Contains(ev.Error.Message, "circuit breaker") {
				n++
			}
		}
		return n
	}
	e.waitFor("three fast-failed attempts", func() bool { return rejected() >= 3 })
	tg.healthy.Store(true)
	clock.Advance(time.Minute)
	var out string
	expectCompleted(t, e.wait("seq"), &out)
	if tg.calls.Load() != 3 {
		t.Fatalf("the function ran %d times; want 2 failures and the probe", tg.calls.Load())
	}
	h := e.history("seq")
	for _, ev := range h {
		if ev.Kind == duroxide.EventActivityFailed && ev.Error != nil && strings.Contains(ev.Error.Message, "circuit breaker") {
			te := &duroxide.TaskError{Details: *ev.Error}
			var coe *duroxide.CircuitOpenError
			if !errors.Is(te, duroxide.ErrCircuitOpen) || !errors.As(te, &coe) {
				t.Fatalf("recorded fast failure %+v does not match ErrCircuitOpen", ev.Error)
			}
		}
	}
	if err := duroxidetest.Replay(reg, "seq", h); err != nil {
		t.Fatalf("replay: %v", err)
	}
	// Replay never consults the breaker: with it open again, the history
	// still replays.
	if err := duroxide.NewExecutor(breakerRegistry(&target{}, cfg, &policy), duroxide.ExecutorOptions{}).Replay("seq", 1, h); err != nil {
		t.Fatalf("replay with a fresh breaker: %v", err)
	}
}

func TestCircuitBreakerConfigErrors(t *testing.T) {
	reg := duroxide.NewRegistry()
	act := func(context.Context, string) (string, error) { return "", nil }
	if err := duroxide.RegisterActivity(reg, "A", act, duroxide.WithCircuitBreaker(duroxide.CircuitBreakerConfig{FailureRatio: 2})); err == nil {
		t.Fatal("failure ratio 2 accepted")
	}
}
