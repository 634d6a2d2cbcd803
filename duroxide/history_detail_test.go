package duroxide_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// TestRetryHistoryDetail: a retry sequence's history says which attempt each
// schedule is, under which policy, and what each timer is for.
func TestRetryHistoryDetail(t *testing.T) {
	f := newFlaky()
	e := newEnv(t, retryRegistry(f), duroxide.Options{})
	var out string
	expectCompleted(t, e.run("detail", "Retry", flakyInput{Key: "detail", FailN: 2, Attempts: 4, Fixed: 10 * time.Millisecond,
		Timeout: time.Minute, Total: time.Hour}), &out)
	var got []string
	for _, ev := range e.history("detail") {
		switch ev.Kind {
		case duroxide.EventActivityScheduled:
			if ev.MaxAttempts != 4 || ev.Policy != "4 attempts, fixed 10ms, 1m0s per attempt, 1h0m0s in total" {
				t.Errorf("%v: max attempts %d, policy %q", ev, ev.MaxAttempts, ev.Policy)
			}
			got = append(got, "attempt "+itoa(ev.Attempt))
		case duroxide.EventTimerCreated:
			got = append(got, string(ev.Purpose)+" "+itoa(ev.Attempt))
		}
	}
	want := "total_timeout 0,attempt 1,attempt_timeout 1,backoff 1,attempt 2,attempt_timeout 2,backoff 2,attempt 3,attempt_timeout 3"
	if strings.Join(got, ",") != want {
		t.Fatalf("schedules and timers:\n got %s\nwant %s", strings.Join(got, ","), want)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// oldFormatHistory is a retry sequence with a user timer as stored before
// attempt numbers, policies and timer purposes were recorded.
const oldFormatHistory = `[
 {"id":1,"type":"OrchestrationStarted","ts":1000,"name":"Old","version":"1.0.0","input":"\"x\""},
 {"id":2,"type":"TimerCreated","ts":1000,"fire_at":1010},
 {"id":3,"type":"TimerFired","src":2,"ts":1010,"fire_at":1010},
 {"id":4,"type":"ActivityScheduled","ts":1010,"name":"Echo","input":"\"x\""},
 {"id":5,"type":"TimerCreated","ts":1010,"fire_at":61010},
 {"id":6,"type":"ActivityFailed","src":4,"ts":1020,"error":{"category":"application","message":"boom"}},
 {"id":7,"type":"TimerCreated","ts":1020,"fire_at":1030},
 {"id":8,"type":"TimerFired","src":7,"ts":1030,"fire_at":1030},
 {"id":9,"type":"ActivityScheduled","ts":1030,"name":"Echo","input":"\"x\""},
 {"id":10,"type":"TimerCreated","ts":1030,"fire_at":61030}
]`

func oldRegistry() *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Old", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		if err := ctx.Sleep(10 * time.Millisecond); err != nil {
			return "", err
		}
		p := duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: 10 * time.Millisecond}).WithTimeout(time.Minute)
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Echo", in, p)
	}))
	return reg
}

// TestOldFormatHistoryReplays: histories written before the detail fields
// existed replay, and the instance continues with the fields recorded.
func TestOldFormatHistoryReplays(t *testing.T) {
	var h []duroxide.Event
	if err := json.Unmarshal([]byte(oldFormatHistory), &h); err != nil {
		t.Fatal(err)
	}
	x := duroxide.NewExecutor(oldRegistry(), duroxide.ExecutorOptions{})
	if err := x.Replay("old", 1, h); err != nil {
		t.Fatalf("replay of old-format history: %v", err)
	}
	// Attempt 2 fails; the next turn records a backoff timer with its purpose.
	c, err := x.Turn("old", 1, h, []duroxide.WorkItem{{Kind: duroxide.WorkActivityFailed, Instance: "old", ExecutionID: 1, ID: 9,
		Error: &duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: "boom again"}}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != duroxide.StatusRunning {
		t.Fatalf("status %s, output %s", c.Status, c.Output)
	}
	var timers []duroxide.Event
	for _, ev := range c.HistoryDelta {
		if ev.Kind == duroxide.EventTimerCreated {
			timers = append(timers, ev)
		}
	}
	if len(timers) != 1 || timers[0].Purpose != duroxide.TimerBackoff || timers[0].Attempt != 2 {
		t.Fatalf("new events: %v", c.HistoryDelta)
	}
	h = append(h, c.HistoryDelta...)
	c, err = x.Turn("old", 1, h, []duroxide.WorkItem{{Kind: duroxide.WorkTimerFired, Instance: "old", ExecutionID: 1, ID: timers[0].EventID}})
	if err != nil {
		t.Fatal(err)
	}
	var sched *duroxide.Event
	for i := range c.HistoryDelta {
		if c.HistoryDelta[i].Kind == duroxide.EventActivityScheduled {
			sched = &c.HistoryDelta[i]
		}
	}
	if sched == nil || sched.Attempt != 3 || sched.MaxAttempts != 3 {
		t.Fatalf("attempt 3 not recorded with its number: %v", c.HistoryDelta)
	}
}

// TestRecordedDetailIsChecked: a recorded attempt number or timer purpose
// that the code no longer produces is nondeterminism.
func TestRecordedDetailIsChecked(t *testing.T) {
	var h []duroxide.Event
	if err := json.Unmarshal([]byte(oldFormatHistory), &h); err != nil {
		t.Fatal(err)
	}
	h[1].Purpose = duroxide.TimerBackoff // the code's first timer is a user timer
	err := duroxide.NewExecutor(oldRegistry(), duroxide.ExecutorOptions{}).Replay("old", 1, h)
	if !errors.Is(err, duroxide.ErrNondeterminism) || !strings.Contains(err.Error(), "a timer (backoff)") {
		t.Fatalf("err = %v", err)
	}
}

func versionedRegistry(minV, maxV int, calls *[]string) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "V", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		if _, err := duroxide.CallActivityTyped[string](ctx, "A", in); err != nil {
			return "", err
		}
		v := 0 // maxV < 0: the code before GetVersion was added
		if maxV >= 0 {
			v = ctx.GetVersion("add-b", minV, maxV)
		}
		*calls = append(*calls, "version "+itoa(v))
		if v >= 1 {
			if _, err := duroxide.CallActivityTyped[string](ctx, "B", in); err != nil {
				return "", err
			}
		}
		out, err := duroxide.CallActivityTyped[string](ctx, "C", in)
		return out + " v" + itoa(v), err
	}))
	return reg
}

// runToEnd drives an instance through an Executor, completing every
// activity with its name.
func runToEnd(t *testing.T, x *duroxide.Executor, h []duroxide.Event, msgs []duroxide.WorkItem) ([]duroxide.Event, *duroxide.TurnCommit) {
	t.Helper()
	for i := 0; i < 20; i++ {
		c, err := x.Turn("v", 1, h, msgs)
		if err != nil {
			t.Fatal(err)
		}
		h = append(h, c.HistoryDelta...)
		if c.Status != duroxide.StatusRunning {
			return h, c
		}
		msgs = nil
		for _, w := range c.WorkerItems {
			msgs = append(msgs, duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: "v", ExecutionID: 1, ID: w.ID, Result: `"` + w.Name + `"`})
		}
	}
	t.Fatal("instance did not finish")
	return nil, nil
}

func TestGetVersion(t *testing.T) {
	var calls []string
	start := []duroxide.WorkItem{{Kind: duroxide.WorkStartOrchestration, Instance: "v", Name: "V", Input: `"in"`}}

	// A history from the code before the change.
	oldX := duroxide.NewExecutor(versionedRegistry(0, -1, &calls), duroxide.ExecutorOptions{})
	preChange, c := runToEnd(t, oldX, nil, start)
	if c.Output != `"C v0"` {
		t.Fatalf("old code output %s", c.Output)
	}
	newX := duroxide.NewExecutor(versionedRegistry(0, 1, &calls), duroxide.ExecutorOptions{})
	calls = nil
	if err := newX.Replay("v", 1, preChange); err != nil {
		t.Fatalf("new code replaying a pre-change history: %v", err)
	}
	if strings.Join(calls, ",") != "version 0" {
		t.Fatalf("pre-change history took %v", calls)
	}
	// An instance in flight before the change (A done, C scheduled) keeps the old path.
	inflight := preChange[:4] // Started, A scheduled, A completed, C scheduled
	if inflight[len(inflight)-1].Kind != duroxide.EventActivityScheduled || inflight[len(inflight)-1].Name != "C" {
		t.Fatalf("unexpected history shape: %v", preChange)
	}
	_, c = runToEnd(t, newX, inflight, []duroxide.WorkItem{{Kind: duroxide.WorkActivityCompleted, Instance: "v", ExecutionID: 1,
		ID: inflight[len(inflight)-1].EventID, Result: `"C"`}})
	if c.Output != `"C v0"` {
		t.Fatalf("in-flight instance output %s", c.Output)
	}

	// A new instance takes the new path and records version 1.
	newH, c := runToEnd(t, newX, nil, start)
	if c.Output != `"C v1"` {
		t.Fatalf("new instance output %s", c.Output)
	}
	found := false
	for _, ev := range newH {
		if ev.Kind == duroxide.EventVersionMarker && ev.Name == "add-b" && ev.Result == "1" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no version marker in %v", newH)
	}
	if err := newX.Replay("v", 1, newH); err != nil {
		t.Fatal(err)
	}
	// Dropping the old branch (min 1) makes pre-change histories unreplayable.
	dropX := duroxide.NewExecutor(versionedRegistry(1, 1, &calls), duroxide.ExecutorOptions{})
	if err := dropX.Replay("v", 1, newH); err != nil {
		t.Fatalf("v1 history with min 1: %v", err)
	}
	err := dropX.Replay("v", 1, preChange)
	if !errors.Is(err, duroxide.ErrNondeterminism) || !strings.Contains(err.Error(), `change "add-b"`) {
		t.Fatalf("pre-change history with min 1: %v", err)
	}
}

// TestReplayDetectsChangedCode: the replayer reports a reordered step and a
// step added before the end of a finished history.
func TestReplayDetectsChangedCode(t *testing.T) {
	var calls []string
	x := duroxide.NewExecutor(versionedRegistry(0, 0, &calls), duroxide.ExecutorOptions{})
	h, _ := runToEnd(t, x, nil, []duroxide.WorkItem{{Kind: duroxide.WorkStartOrchestration, Instance: "v", Name: "V", Input: `"in"`}})

	changed := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(changed, "V", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		if _, err := duroxide.CallActivityTyped[string](ctx, "A", in); err != nil {
			return "", err
		}
		ctx.GetVersion("add-b", 0, 0)
		out, err := duroxide.CallActivityTyped[string](ctx, "C", in)
		if err != nil {
			return "", err
		}
		_, err = duroxide.CallActivityTyped[string](ctx, "D", in) // added without GetVersion
		return out + " v0", err
	}))
	err := duroxide.NewExecutor(changed, duroxide.ExecutorOptions{}).Replay("v", 1, h)
	if !errors.Is(err, duroxide.ErrNondeterminism) || !strings.Contains(err.Error(), `activity "D"`) {
		t.Fatalf("err = %v", err)
	}
}
