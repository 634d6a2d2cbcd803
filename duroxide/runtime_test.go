package duroxide_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func greet(_ context.Context, name string) (string, error) { return "Hello, " + name + "!", nil }

func TestHelloWorld(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterActivity(reg, "Greet", greet))
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Hello", func(ctx *duroxide.OrchestrationContext, name string) (string, error) {
			return duroxide.CallActivityTyped[string](ctx, "Greet", name)
		}))
		e := newEnv(t, reg, opts)
		var out string
		expectCompleted(t, e.run("hello-1", "Hello", "Rust"), &out)
		if out != "Hello, Rust!" {
			t.Fatalf("output = %q", out)
		}
		h := e.history("hello-1")
		kinds := []duroxide.EventKind{}
		for _, ev := range h {
			kinds = append(kinds, ev.Kind)
		}
		want := []duroxide.EventKind{duroxide.EventOrchestrationStarted, duroxide.EventActivityScheduled, duroxide.EventActivityCompleted, duroxide.EventOrchestrationCompleted}
		if fmt.Sprint(kinds) != fmt.Sprint(want) {
			t.Fatalf("history = %v, want %v", kinds, want)
		}
		for i, ev := range h {
			if ev.EventID != int64(i+1) {
				t.Fatalf("event %d has id %d", i, ev.EventID)
			}
		}
	})
}

func TestFunctionChaining(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterActivity(reg, "Add", func(_ context.Context, in [2]int) (int, error) { return in[0] + in[1], nil }))
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Chain", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
			sum := 0
			for i := 1; i <= n; i++ {
				v, err := duroxide.CallActivityTyped[int](ctx, "Add", [2]int{sum, i})
				if err != nil {
					return 0, err
				}
				sum = v
			}
			return sum, nil
		}))
		e := newEnv(t, reg, opts)
		var out int
		expectCompleted(t, e.run("chain", "Chain", 20), &out)
		if out != 210 {
			t.Fatalf("sum = %d, want 210", out)
		}
		if n := countKind(e.history("chain"), duroxide.EventActivityScheduled); n != 20 {
			t.Fatalf("%d activities scheduled, want 20", n)
		}
	})
}

func TestFanOutFanIn1000(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterActivity(reg, "Square", func(_ context.Context, n int) (int, error) { return n * n, nil }))
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Fan", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
			tasks := make([]*duroxide.Task, n)
			for i := range tasks {
				tasks[i] = ctx.CallActivity("Square", i)
			}
			if err := ctx.Join(tasks...); err != nil {
				return 0, err
			}
			sum := 0
			for _, t := range tasks {
				v, err := duroxide.Await[int](t)
				if err != nil {
					return 0, err
				}
				sum += v
			}
			return sum, nil
		}))
		e := newEnv(t, reg, opts)
		var out int
		expectCompleted(t, e.run("fan", "Fan", 1000), &out)
		want := 0
		for i := 0; i < 1000; i++ {
			want += i * i
		}
		if out != want {
			t.Fatalf("sum = %d, want %d", out, want)
		}
		h := e.history("fan")
		if countKind(h, duroxide.EventActivityCompleted) != 1000 {
			t.Fatalf("completions = %d", countKind(h, duroxide.EventActivityCompleted))
		}
	})
}

// raceOrch waits for "Approve" or a timer and reports which won.
func raceOrch(ctx *duroxide.OrchestrationContext, timeoutMs int) (string, error) {
	ev := ctx.WaitForEvent("Approve")
	timer := ctx.CreateTimer(time.Duration(timeoutMs) * time.Millisecond)
	if ctx.Select(ev, timer) == 0 {
		var who string
		if err := ev.Await(&who); err != nil {
			return "", err
		}
		return "approved by " + who, nil
	}
	return "timed out", nil
}

func TestTimerRacesExternalEvent(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Race", raceOrch))
		e := newEnv(t, reg, opts)

		t.Run("event wins", func(t *testing.T) {
			e.startOrch("race-event", "Race", 60_000)
			e.waitForEvent("race-event", duroxide.EventExternalSubscribed, "Approve")
			if err := e.c.RaiseEvent(context.Background(), "race-event", "Approve", "alice"); err != nil {
				t.Fatal(err)
			}
			var out string
			expectCompleted(t, e.wait("race-event"), &out)
			if out != "approved by alice" {
				t.Fatalf("out = %q", out)
			}
		})
		t.Run("timer wins", func(t *testing.T) {
			var out string
			expectCompleted(t, e.run("race-timer", "Race", 50), &out)
			if out != "timed out" {
				t.Fatalf("out = %q", out)
			}
			// A late event is recorded but changes nothing.
			if err := e.c.RaiseEvent(context.Background(), "race-timer", "Approve", "bob"); err != nil {
				t.Fatal(err)
			}
			st, err := e.c.GetStatus(context.Background(), "race-timer")
			if err != nil || st.Status != duroxide.StatusCompleted {
				t.Fatalf("status after late event: %v %v", st, err)
			}
		})
	})
}

func TestSubOrchestrations(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterActivity(reg, "Greet", greet))
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Child", func(ctx *duroxide.OrchestrationContext, name string) (string, error) {
			if name == "fail" {
				return "", errors.New("child refused")
			}
			return duroxide.CallActivityTyped[string](ctx, "Greet", name)
		}))
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Parent", func(ctx *duroxide.OrchestrationContext, names []string) ([]string, error) {
			var tasks []*duroxide.Task
			for _, n := range names {
				tasks = append(tasks, ctx.CallSubOrchestration("Child", n))
			}
			var out []string
			for _, t := range tasks {
				var s string
				if err := t.Await(&s); err != nil {
					out = append(out, "error: "+err.Error())
					continue
				}
				out = append(out, s)
			}
			return out, nil
		}))
		e := newEnv(t, reg, opts)
		var out []string
		expectCompleted(t, e.run("parent", "Parent", []string{"a", "fail", "b"}), &out)
		if len(out) != 3 || out[0] != "Hello, a!" || out[2] != "Hello, b!" {
			t.Fatalf("out = %q", out)
		}
		if !strings.Contains(out[1], "sub-orchestration Child failed") || !strings.Contains(out[1], "child refused") {
			t.Fatalf("child failure = %q", out[1])
		}
		// Children are real instances linked to their parent.
		h := e.history("parent")
		var childID string
		for _, ev := range h {
			if ev.Kind == duroxide.EventSubOrchestrationScheduled {
				childID = ev.Instance
				break
			}
		}
		if !strings.HasPrefix(childID, "parent::sub::") {
			t.Fatalf("child id = %q", childID)
		}
		st, err := e.c.GetStatus(context.Background(), childID)
		if err != nil || st.ParentInstance != "parent" || st.Status != duroxide.StatusCompleted {
			t.Fatalf("child status = %+v, %v", st, err)
		}
	})
}

func TestDetachedOrchestration(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Greet", greet))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Worker", func(ctx *duroxide.OrchestrationContext, name string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "Greet", name)
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Launcher", func(ctx *duroxide.OrchestrationContext, _ struct{}) (string, error) {
		if err := ctx.StartOrchestration("Worker", "detached-child", "detached"); err != nil {
			return "", err
		}
		// Work after the detached start must replay cleanly.
		return duroxide.CallActivityTyped[string](ctx, "Greet", "launcher")
	}))
	e := newEnv(t, reg, duroxide.Options{CacheSize: -1})
	expectCompleted(t, e.run("launcher", "Launcher", struct{}{}), nil)
	var out string
	expectCompleted(t, e.wait("detached-child"), &out)
	if out != "Hello, detached!" {
		t.Fatalf("detached output = %q", out)
	}
	st, _ := e.c.GetStatus(context.Background(), "detached-child")
	if st.ParentInstance != "" {
		t.Fatalf("detached child has parent %q", st.ParentInstance)
	}
}

func TestContinueAsNewCarriesEvents(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		reg := duroxide.NewRegistry()
		// Counter consumes one "Add" event per execution and continues as
		// new until it has seen n events; extra events raised in one burst
		// must be carried over, not lost.
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Counter", func(ctx *duroxide.OrchestrationContext, st [2]int) (int, error) {
			total, left := st[0], st[1]
			var v int
			if err := ctx.WaitForEvent("Add").Await(&v); err != nil {
				return 0, err
			}
			total += v
			left--
			ctx.SetCustomStatus(fmt.Sprintf("total=%d", total))
			if left == 0 {
				return total, nil
			}
			return 0, ctx.ContinueAsNew([2]int{total, left})
		}))
		e := newEnv(t, reg, opts)
		e.startOrch("counter", "Counter", [2]int{0, 5})
		for i := 1; i <= 5; i++ {
			if err := e.c.RaiseEvent(context.Background(), "counter", "Add", i); err != nil {
				t.Fatal(err)
			}
		}
		var out int
		st := e.wait("counter")
		expectCompleted(t, st, &out)
		if out != 15 {
			t.Fatalf("total = %d, want 15", out)
		}
		if st.ExecutionID != 5 {
			t.Fatalf("execution = %d, want 5", st.ExecutionID)
		}
		if st.CustomStatus == nil || *st.CustomStatus != "total=15" {
			t.Fatalf("custom status = %v", st.CustomStatus)
		}
		ex, err := e.c.ListExecutions(context.Background(), "counter")
		if err != nil || len(ex) != 5 {
			t.Fatalf("executions = %d, %v", len(ex), err)
		}
		for _, x := range ex[:4] {
			if x.Status != duroxide.StatusContinuedAsNew {
				t.Fatalf("execution %d status %s", x.ExecutionID, x.Status)
			}
		}
		// Each execution has its own history starting at event 1.
		h1, _ := e.c.ReadHistory(context.Background(), "counter", 1)
		if len(h1) == 0 || h1[0].EventID != 1 || h1[len(h1)-1].Kind != duroxide.EventOrchestrationContinuedAsNew {
			t.Fatalf("execution 1 history = %v", h1)
		}
	})
}

func TestSagaCompensation(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		var mu sync.Mutex
		var log []string
		note := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
		reg := duroxide.NewRegistry()
		for _, step := range []string{"ReserveFlight", "ReserveHotel", "CancelFlight", "CancelHotel"} {
			step := step
			duroxide.Must(duroxide.RegisterActivity(reg, step, func(_ context.Context, trip string) (string, error) {
				note(step)
				return step + ":" + trip, nil
			}))
		}
		duroxide.Must(duroxide.RegisterActivity(reg, "ChargeCard", func(_ context.Context, trip string) (string, error) {
			note("ChargeCard")
			return "", duroxide.NonRetryable(errors.New("card declined"))
		}))
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Trip", func(ctx *duroxide.OrchestrationContext, trip string) (string, error) {
			var compensations []string
			for _, s := range []struct{ do, undo string }{{"ReserveFlight", "CancelFlight"}, {"ReserveHotel", "CancelHotel"}, {"ChargeCard", ""}} {
				if err := ctx.CallActivity(s.do, trip).Await(nil); err != nil {
					for i := len(compensations) - 1; i >= 0; i-- {
						if cerr := ctx.CallActivity(compensations[i], trip).Await(nil); cerr != nil {
							return "", cerr
						}
					}
					return "", fmt.Errorf("trip %s rolled back: %w", trip, err)
				}
				if s.undo != "" {
					compensations = append(compensations, s.undo)
				}
			}
			return "booked", nil
		}))
		e := newEnv(t, reg, opts)
		st := e.run("trip", "Trip", "paris")
		if st.Status != duroxide.StatusFailed {
			t.Fatalf("status = %s", st.Status)
		}
		if !strings.Contains(st.Error.Message, "card declined") || !strings.Contains(st.Error.Message, "rolled back") {
			t.Fatalf("error = %q", st.Error.Message)
		}
		mu.Lock()
		defer mu.Unlock()
		want := "ReserveFlight ReserveHotel ChargeCard CancelHotel CancelFlight"
		if strings.Join(log, " ") != want {
			t.Fatalf("steps = %v, want %s", log, want)
		}
	})
}

// TestSelectLoserReplay is the seed's select bug: during replay the winner
// is ready at once while the loser (a timer) was also scheduled; work
// scheduled after the select must still line up with history.
func TestSelectLoserReplay(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterActivity(reg, "FailFast", func(context.Context, string) (string, error) {
			return "", errors.New("fast failure")
		}))
		duroxide.Must(duroxide.RegisterActivity(reg, "Greet", greet))
		duroxide.Must(duroxide.RegisterOrchestration(reg, "SelectThenWork", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
			act := ctx.CallActivity("FailFast", "x")
			timer := ctx.CreateTimer(500 * time.Millisecond)
			winner := ctx.Select(act, timer)
			first := "timer"
			if winner == 0 {
				first = "activity: " + act.Await(nil).Error()
			}
			// More work after the select: must match history on replay.
			second, err := duroxide.CallActivityTyped[string](ctx, "Greet", "after")
			if err != nil {
				return "", err
			}
			third, err := duroxide.CallActivityTyped[string](ctx, "Greet", "again")
			if err != nil {
				return "", err
			}
			return first + " | " + second + " | " + third, nil
		}))
		e := newEnv(t, reg, opts)
		var out string
		st := e.run("select-bug", "SelectThenWork", "")
		expectCompleted(t, st, &out)
		if !strings.HasPrefix(out, "activity: ") || !strings.Contains(out, "Hello, after!") {
			t.Fatalf("out = %q", out)
		}
		h := e.history("select-bug")
		if n := countKind(h, duroxide.EventTimerCreated); n != 1 {
			t.Fatalf("TimerCreated = %d, want 1", n)
		}
		if n := countKind(h, duroxide.EventTimerFired); n > 1 {
			t.Fatalf("TimerFired = %d, want ≤1", n)
		}
	})
}

func TestNondeterminismCodeSwap(t *testing.T) {
	reg1 := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg1, "A", greet))
	duroxide.Must(duroxide.RegisterActivity(reg1, "B", greet))
	duroxide.Must(duroxide.RegisterOrchestration(reg1, "Swap", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		if err := ctx.CallActivity("A", "x").Await(nil); err != nil {
			return "", err
		}
		return "", ctx.WaitForEvent("Go").Await(nil)
	}))
	e := newEnv(t, reg1, duroxide.Options{})
	e.startOrch("swap", "Swap", "")
	e.waitForEvent("swap", duroxide.EventExternalSubscribed, "Go")

	// The same name and version now schedules B first.
	reg2 := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg2, "A", greet))
	duroxide.Must(duroxide.RegisterActivity(reg2, "B", greet))
	duroxide.Must(duroxide.RegisterOrchestration(reg2, "Swap", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		if err := ctx.CallActivity("B", "x").Await(nil); err != nil {
			return "", err
		}
		return "", ctx.WaitForEvent("Go").Await(nil)
	}))
	e.restart(reg2)
	if err := e.c.RaiseEvent(context.Background(), "swap", "Go", nil); err != nil {
		t.Fatal(err)
	}
	st := e.wait("swap")
	if st.Status != duroxide.StatusFailed {
		t.Fatalf("status = %s", st.Status)
	}
	msg := st.Error.Message
	if !strings.HasPrefix(msg, "nondeterministic:") || !strings.Contains(msg, `"A"`) || !strings.Contains(msg, `"B"`) {
		t.Fatalf("error = %q; want nondeterministic naming A and B", msg)
	}
	if !errors.Is(st.Err(), duroxide.ErrNondeterminism) {
		t.Fatalf("errors.Is(ErrNondeterminism) false for %v", st.Err())
	}
}

func TestNondeterminismExtraSchedule(t *testing.T) {
	reg1 := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg1, "Shape", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		if err := ctx.Sleep(time.Millisecond); err != nil {
			return "", err
		}
		return "", ctx.WaitForEvent("Go").Await(nil)
	}))
	e := newEnv(t, reg1, duroxide.Options{})
	e.startOrch("shape", "Shape", "")
	e.waitForEvent("shape", duroxide.EventExternalSubscribed, "Go")

	// New code waits for the event without the timer: history has a timer
	// the code no longer schedules.
	reg2 := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg2, "Shape", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		return "", ctx.WaitForEvent("Go").Await(nil)
	}))
	e.restart(reg2)
	if err := e.c.RaiseEvent(context.Background(), "shape", "Go", nil); err != nil {
		t.Fatal(err)
	}
	st := e.wait("shape")
	if st.Status != duroxide.StatusFailed || !strings.HasPrefix(st.Error.Message, "nondeterministic:") ||
		!strings.Contains(st.Error.Message, "timer") {
		t.Fatalf("status = %s, error = %v", st.Status, st.Err())
	}
}

func TestCancelInstance(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		started := make(chan struct{}, 1)
		sawCancel := make(chan struct{}, 1)
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterActivity(reg, "Block", func(ctx context.Context, _ string) (string, error) {
			started <- struct{}{}
			<-ctx.Done()
			sawCancel <- struct{}{}
			return "", ctx.Err()
		}))
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Long", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
			return duroxide.CallActivityTyped[string](ctx, "Block", "")
		}))
		e := newEnv(t, reg, opts)
		e.startOrch("long", "Long", "")
		<-started
		if err := e.c.CancelInstance(context.Background(), "long", "user asked"); err != nil {
			t.Fatal(err)
		}
		st := e.wait("long")
		if st.Status != duroxide.StatusCancelled || !errors.Is(st.Err(), duroxide.ErrCancelled) {
			t.Fatalf("status = %s, err = %v", st.Status, st.Err())
		}
		if !strings.Contains(st.Error.Display(), "user asked") {
			t.Fatalf("error = %q", st.Error.Display())
		}
		select {
		case <-sawCancel:
		case <-time.After(10 * time.Second):
			t.Fatal("running activity never saw ctx.Done()")
		}
		// Cancelling again, or a finished or unknown instance, is a no-op.
		if err := e.c.CancelInstance(context.Background(), "long", "again"); err != nil {
			t.Fatal(err)
		}
		if err := e.c.CancelInstance(context.Background(), "nobody", "x"); err != nil {
			t.Fatal(err)
		}
		st2, _ := e.c.GetStatus(context.Background(), "long")
		if st2.Status != duroxide.StatusCancelled {
			t.Fatalf("status after second cancel = %s", st2.Status)
		}
	})
}

func TestCancelPropagatesToChildren(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "WaitForever", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		return "", ctx.WaitForEvent("never").Await(nil)
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Parent", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		a := ctx.CallSubOrchestration("WaitForever", "", duroxide.WithInstanceID("kid-1"))
		b := ctx.CallSubOrchestration("WaitForever", "", duroxide.WithInstanceID("kid-2"))
		return "", ctx.Join(a, b)
	}))
	e := newEnv(t, reg, duroxide.Options{})
	e.startOrch("cparent", "Parent", "")
	e.waitForEvent("kid-1", duroxide.EventExternalSubscribed, "never")
	e.waitForEvent("kid-2", duroxide.EventExternalSubscribed, "never")
	if err := e.c.CancelInstance(context.Background(), "cparent", "stop all"); err != nil {
		t.Fatal(err)
	}
	if st := e.wait("cparent"); st.Status != duroxide.StatusCancelled {
		t.Fatalf("parent %s", st.Status)
	}
	for _, k := range []string{"kid-1", "kid-2"} {
		if st := e.wait(k); st.Status != duroxide.StatusCancelled {
			t.Fatalf("%s %s", k, st.Status)
		}
	}
}

func TestSelectLoserActivityIsCancelled(t *testing.T) {
	sawCancel := make(chan struct{}, 1)
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Slow", func(ctx context.Context, _ string) (string, error) {
		select {
		case <-ctx.Done():
			sawCancel <- struct{}{}
			return "", ctx.Err()
		case <-time.After(30 * time.Second):
			return "late", nil
		}
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Timeout", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		act := ctx.CallActivity("Slow", "")
		if ctx.Select(act, ctx.CreateTimer(50*time.Millisecond)) == 1 {
			return "gave up", nil
		}
		return "finished", nil
	}))
	e := newEnv(t, reg, duroxide.Options{})
	var out string
	expectCompleted(t, e.run("loser", "Timeout", ""), &out)
	if out != "gave up" {
		t.Fatalf("out = %q", out)
	}
	select {
	case <-sawCancel:
	case <-time.After(10 * time.Second):
		t.Fatal("select loser activity was not cancelled")
	}
	h := e.history("loser")
	if countKind(h, duroxide.EventActivityCancelRequested) != 1 {
		t.Fatalf("history lacks the cancellation: %v", h)
	}
}

func TestSystemCallsAreDeterministic(t *testing.T) {
	modes(t, func(t *testing.T, opts duroxide.Options) {
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Sys", func(ctx *duroxide.OrchestrationContext, _ string) ([]string, error) {
			g := ctx.NewGUID()
			now := ctx.UtcNow()
			if err := ctx.Sleep(5 * time.Millisecond); err != nil {
				return nil, err
			}
			// After replay these must be the recorded values.
			return []string{g, now.Format(time.RFC3339Nano), ctx.NewGUID()}, nil
		}))
		e := newEnv(t, reg, opts)
		var out []string
		expectCompleted(t, e.run("sys", "Sys", ""), &out)
		if len(out) != 3 || len(out[0]) != 36 || out[0] == out[2] {
			t.Fatalf("out = %q", out)
		}
		h := e.history("sys")
		if countKind(h, duroxide.EventSystemCall) != 3 {
			t.Fatalf("system calls recorded = %d", countKind(h, duroxide.EventSystemCall))
		}
		if h[1].Result != out[0] {
			t.Fatalf("recorded guid %q != returned %q", h[1].Result, out[0])
		}
	})
}

func TestVersionPinning(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "V", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		if err := ctx.WaitForEvent("go").Await(nil); err != nil {
			return "", err
		}
		return "v1", nil
	}))
	e := newEnv(t, reg, duroxide.Options{})
	e.startOrch("pinned", "V", "")
	e.waitForEvent("pinned", duroxide.EventExternalSubscribed, "go")

	reg2 := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg2, "V", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		if err := ctx.WaitForEvent("go").Await(nil); err != nil {
			return "", err
		}
		return "v1 (still)", nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg2, "V", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		return "v2", nil
	}, duroxide.WithVersion("2.0.0")))
	e.restart(reg2)
	if err := e.c.RaiseEvent(context.Background(), "pinned", "go", nil); err != nil {
		t.Fatal(err)
	}
	var out string
	expectCompleted(t, e.wait("pinned"), &out)
	if out != "v1 (still)" {
		t.Fatalf("running instance switched version: %q", out)
	}
	expectCompleted(t, e.run("fresh", "V", ""), &out)
	if out != "v2" {
		t.Fatalf("new instance runs %q, want v2", out)
	}
	if err := e.c.StartOrchestration(context.Background(), "exact", "V", "", duroxide.StartVersion("1.0.0")); err != nil {
		t.Fatal(err)
	}
	e.waitForEvent("exact", duroxide.EventExternalSubscribed, "go")
	st, _ := e.c.GetStatus(context.Background(), "exact")
	if st.OrchestrationVersion != "1.0.0" {
		t.Fatalf("exact start version = %s", st.OrchestrationVersion)
	}
}

func TestStartIsIdempotent(t *testing.T) {
	var runs atomic.Int32
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Count", func(context.Context, string) (int32, error) { return runs.Add(1), nil }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Once", func(ctx *duroxide.OrchestrationContext, _ string) (int32, error) {
		return duroxide.CallActivityTyped[int32](ctx, "Count", "")
	}))
	e := newEnv(t, reg, duroxide.Options{})
	for i := 0; i < 3; i++ {
		e.startOrch("once", "Once", "")
	}
	expectCompleted(t, e.wait("once"), nil)
	e.startOrch("once", "Once", "")
	// Every start message has been consumed (discarded) once the queues are empty.
	e.waitFor("empty queues", func() bool {
		st, err := e.c.Stats(context.Background())
		return err == nil && st.OrchestratorQueue == 0 && st.WorkerQueue == 0
	})
	if n := runs.Load(); n != 1 {
		t.Fatalf("activity ran %d times", n)
	}
}

func TestCustomStatusAndLogging(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Status", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		ctx.SetCustomStatus("step 1")
		if err := ctx.WaitForEvent("next").Await(nil); err != nil {
			return "", err
		}
		ctx.SetCustomStatus("step 2")
		s, _ := ctx.CustomStatus()
		return s, nil
	}))
	e := newEnv(t, reg, duroxide.Options{CacheSize: -1})
	e.startOrch("cs", "Status", "")
	e.waitFor("custom status step 1", func() bool {
		st, err := e.c.GetStatus(context.Background(), "cs")
		return err == nil && st.CustomStatus != nil && *st.CustomStatus == "step 1"
	})
	if err := e.c.RaiseEvent(context.Background(), "cs", "next", nil); err != nil {
		t.Fatal(err)
	}
	var out string
	st := e.wait("cs")
	expectCompleted(t, st, &out)
	if out != "step 2" || st.CustomStatus == nil || *st.CustomStatus != "step 2" {
		t.Fatalf("out = %q status = %v", out, st.CustomStatus)
	}
}

func TestPanicsFailTheInstanceNotTheProcess(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Boom", func(context.Context, string) (string, error) { panic("activity exploded") }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "CallsBoom", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "Boom", "")
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Panics", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		var m map[string]int
		m["x"] = 1 // nil map write
		return "", nil
	}))
	e := newEnv(t, reg, duroxide.Options{})
	st := e.run("boom", "CallsBoom", "")
	if st.Status != duroxide.StatusFailed || !strings.Contains(st.Error.Message, "activity exploded") {
		t.Fatalf("activity panic: %s %v", st.Status, st.Err())
	}
	st = e.run("panics", "Panics", "")
	if st.Status != duroxide.StatusFailed || !strings.Contains(st.Error.Message, "orchestration panicked") {
		t.Fatalf("orchestration panic: %s %v", st.Status, st.Err())
	}
}

func TestUnregisteredOrchestrationBecomesPoison(t *testing.T) {
	reg := duroxide.NewRegistry()
	e := newEnv(t, reg, duroxide.Options{MaxAttempts: 3, UnregisteredBackoff: 5 * time.Millisecond, UnregisteredBackoffMax: 10 * time.Millisecond})
	st := e.run("ghost", "NotRegistered", "")
	if st.Status != duroxide.StatusFailed || st.Error.Category != duroxide.CategoryPoison {
		t.Fatalf("status = %s, err = %+v", st.Status, st.Error)
	}
}

func TestUnregisteredActivityBecomesPoison(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "CallsGhost", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "Ghost", "")
	}))
	e := newEnv(t, reg, duroxide.Options{MaxAttempts: 3, UnregisteredBackoff: 5 * time.Millisecond, UnregisteredBackoffMax: 10 * time.Millisecond})
	st := e.run("ghost-act", "CallsGhost", "")
	if st.Status != duroxide.StatusFailed || st.Error.Category != duroxide.CategoryPoison || !strings.Contains(st.Error.Message, "Ghost") {
		t.Fatalf("status = %s, err = %+v", st.Status, st.Error)
	}
}

func TestManagementAPI(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Greet", greet))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Hello", func(ctx *duroxide.OrchestrationContext, name string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "Greet", name)
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Wait", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		return "", ctx.WaitForEvent("x").Await(nil)
	}))
	e := newEnv(t, reg, duroxide.Options{})
	for i := 0; i < 5; i++ {
		e.run(fmt.Sprintf("m-%d", i), "Hello", "x")
	}
	e.startOrch("m-wait", "Wait", "")
	e.waitForEvent("m-wait", duroxide.EventExternalSubscribed, "x")
	ctx := context.Background()
	page, err := e.c.ListInstances(ctx, duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusCompleted}, Limit: 3})
	if err != nil || len(page.Instances) != 3 || page.NextCursor == "" {
		t.Fatalf("page 1: %+v %v", page, err)
	}
	page2, err := e.c.ListInstances(ctx, duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusCompleted}, Limit: 3, Cursor: page.NextCursor})
	if err != nil || len(page2.Instances) != 2 {
		t.Fatalf("page 2: %+v %v", page2, err)
	}
	running, _ := e.c.ListInstances(ctx, duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusRunning}})
	if len(running.Instances) != 1 || running.Instances[0].Instance != "m-wait" {
		t.Fatalf("running = %+v", running.Instances)
	}
	if _, err := e.c.DeleteInstance(ctx, "m-wait", false); !errors.Is(err, duroxide.ErrInstanceRunning) {
		t.Fatalf("delete running without force: %v", err)
	}
	res, err := e.c.DeleteInstance(ctx, "m-0", false)
	if err != nil || res.InstancesDeleted != 1 || res.EventsDeleted != 4 {
		t.Fatalf("delete: %+v %v", res, err)
	}
	if _, err := e.c.GetStatus(ctx, "m-0"); !errors.Is(err, duroxide.ErrNotFound) {
		t.Fatalf("deleted instance still found: %v", err)
	}
	stats, err := e.c.Stats(ctx)
	if err != nil || stats.Instances[duroxide.StatusCompleted] != 4 || stats.Instances[duroxide.StatusRunning] != 1 {
		t.Fatalf("stats = %+v %v", stats, err)
	}
}

func TestWaitForCompletionHonoursContext(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Wait", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		return "", ctx.WaitForEvent("x").Await(nil)
	}))
	e := newEnv(t, reg, duroxide.Options{})
	e.startOrch("w", "Wait", "")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := e.c.WaitForCompletion(ctx, "w"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func TestStoppedRuntimeResumesOnRestart(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Greet", greet))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Resume", func(ctx *duroxide.OrchestrationContext, _ string) (string, error) {
		if err := ctx.Sleep(300 * time.Millisecond); err != nil {
			return "", err
		}
		return duroxide.CallActivityTyped[string](ctx, "Greet", "again")
	}))
	e := newEnv(t, reg, duroxide.Options{})
	e.startOrch("resume", "Resume", "")
	e.waitForEvent("resume", duroxide.EventTimerCreated, "")
	e.stop()
	e.store.Close()
	e.open()
	e.start()
	var out string
	expectCompleted(t, e.wait("resume"), &out)
	if out != "Hello, again!" {
		t.Fatalf("out = %q", out)
	}
}
