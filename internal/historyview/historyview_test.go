package historyview

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/orchestrations"
)

// hist builds a history with ids 1…n and timestamps a second apart.
type hist struct {
	evs []duroxide.Event
	t0  int64
}

func (h *hist) add(e duroxide.Event) int64 {
	e.EventID = int64(len(h.evs) + 1)
	if e.TimestampMs == 0 {
		e.TimestampMs = h.t0 + e.EventID*1000
	}
	h.evs = append(h.evs, e)
	return e.EventID
}

func (h *hist) timer(d time.Duration) int64 {
	ts := h.t0 + int64(len(h.evs)+1)*1000
	return h.add(duroxide.Event{Kind: duroxide.EventTimerCreated, TimestampMs: ts, FireAtMs: ts + d.Milliseconds()})
}

// TestStepsRetries: an activity call retried twice is one step with three
// attempts, each with its timeout and the backoff after it; the maximum of
// attempts shows when the history records it (newer runtimes) and is left
// out when it does not (older histories).
func TestStepsRetries(t *testing.T) {
	for _, recorded := range []bool{true, false} {
		t.Run(map[bool]string{true: "recorded", false: "older"}[recorded], func(t *testing.T) { testStepsRetries(t, recorded) })
	}
}

func testStepsRetries(t *testing.T, recorded bool) {
	of := ""
	if recorded {
		of = " of 5"
	}
	h := &hist{t0: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC).UnixMilli()}
	h.add(duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: orchestrations.CreateInstance, Input: `{"name":"db","password":"hunter22"}`})
	cs := "testing connection"
	h.add(duroxide.Event{Kind: duroxide.EventCustomStatusUpdated, CustomStatus: &cs})
	in := `{"internal_name":"db-1a2b3c4d"}`
	fail := &duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: "injected test-connection failure"}
	for attempt := 1; attempt <= 3; attempt++ {
		sched := duroxide.Event{Kind: duroxide.EventActivityScheduled, Name: activities.TestConnection, Input: in}
		if recorded {
			sched.Attempt, sched.MaxAttempts, sched.Policy = attempt, 5, "5 attempts"
		}
		s := h.add(sched)
		h.timer(60 * time.Second) // attempt timeout
		if recorded {
			h.evs[len(h.evs)-1].Purpose, h.evs[len(h.evs)-1].Attempt = duroxide.TimerAttemptTimeout, attempt
		}
		if attempt < 3 {
			h.add(duroxide.Event{Kind: duroxide.EventActivityFailed, SourceEventID: s, Error: fail})
			b := h.timer(time.Duration(attempt) * 2 * time.Second) // backoff
			if recorded {
				h.evs[len(h.evs)-1].Purpose = duroxide.TimerBackoff
			}
			h.add(duroxide.Event{Kind: duroxide.EventTimerFired, SourceEventID: b})
			continue
		}
		h.add(duroxide.Event{Kind: duroxide.EventActivityCompleted, SourceEventID: s, Result: `{"version":"16.4"}`})
	}
	h.add(duroxide.Event{Kind: duroxide.EventOrchestrationCompleted, Result: `{"ok":true}`})

	items := Steps(h.evs, false)
	var kinds []string
	for _, it := range items {
		kinds = append(kinds, it.Kind)
	}
	if got := strings.Join(kinds, ","); got != "start,status,activity,completed" {
		t.Fatalf("items: %s", got)
	}
	if p := string(items[0].Payload); strings.Contains(p, "hunter22") || !strings.Contains(p, `"password":"***"`) {
		t.Fatalf("the input's password is not masked: %s", items[0].Payload)
	}
	act := items[2]
	if len(act.Attempts) != 3 || !act.Retried || act.Status != "ok" || act.StatusText != "completed on attempt 3"+of {
		t.Fatalf("activity: %+v", act)
	}
	for i, a := range act.Attempts {
		if a.Label() != fmt.Sprintf("attempt %d%s", i+1, of) {
			t.Errorf("attempt %d label %q", i, a.Label())
		}
		if a.Timeout == nil || a.Timeout.Delay != 60*time.Second || a.Timeout.Fired {
			t.Errorf("attempt %d timeout timer: %+v", i, a.Timeout)
		}
		if i < 2 {
			if a.Status != "failed" || a.Error != "injected test-connection failure" {
				t.Errorf("attempt %d: %+v", i, a)
			}
			if a.Backoff == nil || a.Backoff.Delay != time.Duration(i+1)*2*time.Second || !a.Backoff.Fired {
				t.Errorf("attempt %d backoff: %+v", i, a.Backoff)
			}
		} else if a.Status != "ok" || a.Backoff != nil {
			t.Errorf("last attempt: %+v", a)
		}
	}
}

// TestStepsOlderHistory: a history without recorded purposes is read by
// its event order: the total timeout before a first attempt, the attempt
// timeout after it, a pending backoff, and an interval timer that is no
// backoff.
func TestStepsOlderHistory(t *testing.T) {
	h := &hist{t0: time.Now().UnixMilli()}
	h.add(duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: orchestrations.CreateInstance})
	h.timer(10 * time.Minute) // wait-for-ready's total timeout
	s := h.add(duroxide.Event{Kind: duroxide.EventActivityScheduled, Name: activities.WaitForReady, Input: `{}`})
	h.timer(30 * time.Second)
	h.add(duroxide.Event{Kind: duroxide.EventActivityFailed, SourceEventID: s, Error: &duroxide.ErrorDetails{Message: "not ready"}})
	h.timer(250 * time.Millisecond) // backoff, still pending
	items := Steps(h.evs, true)
	if len(items) != 2 || items[1].Kind != "activity" {
		t.Fatalf("items: %+v", items)
	}
	act := items[1]
	if act.Total == nil || act.Total.Delay != 10*time.Minute {
		t.Fatalf("total timeout: %+v", act.Total)
	}
	if act.Status != "waiting" || act.Attempts[0].Backoff == nil || act.Attempts[0].Label() != "attempt 1" {
		t.Fatalf("pending retry: %+v %+v", act, act.Attempts[0])
	}

	// The health actor: a wait, a probe and the interval timer.
	a := &hist{t0: time.Now().UnixMilli()}
	a.add(duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: orchestrations.InstanceActor})
	a.add(duroxide.Event{Kind: duroxide.EventExternalSubscribed, Name: orchestrations.EventInstanceDeleted})
	p := a.add(duroxide.Event{Kind: duroxide.EventActivityScheduled, Name: activities.TestConnection, Input: `{}`})
	a.timer(30 * time.Second)
	a.add(duroxide.Event{Kind: duroxide.EventActivityCompleted, SourceEventID: p, Result: `{}`})
	iv := a.timer(time.Second) // the interval: not a backoff
	a.add(duroxide.Event{Kind: duroxide.EventTimerFired, SourceEventID: iv})
	a.add(duroxide.Event{Kind: duroxide.EventOrchestrationContinuedAsNew, Input: `{"checks":3}`})
	items = Steps(a.evs, false)
	var kinds []string
	for _, it := range items {
		kinds = append(kinds, it.Kind+":"+it.Status)
	}
	if got := strings.Join(kinds, ","); got != "start:info,wait:info,activity:ok,timer:ok,continued:info" {
		t.Fatalf("actor items: %s", got)
	}
	if items[3].Title != "Timer 1 s" {
		t.Fatalf("timer title %q", items[3].Title)
	}
}

// TestStepsEventsSubsAndFailure: a wait and the event that ends it, a
// failed sub-orchestration (linked), and the orchestration's failure; raw
// events mask secrets too.
func TestStepsEventsSubsAndFailure(t *testing.T) {
	h := &hist{t0: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC).UnixMilli()}
	h.add(duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: "parent"})
	h.add(duroxide.Event{Kind: duroxide.EventExternalSubscribed, Name: "go"})
	h.add(duroxide.Event{Kind: duroxide.EventExternalEvent, Name: "go", Data: `{"token":"s3cret"}`})
	s := h.add(duroxide.Event{Kind: duroxide.EventSubOrchestrationScheduled, Name: "child", Instance: "parent::sub::4"})
	h.add(duroxide.Event{Kind: duroxide.EventSubOrchestrationFailed, SourceEventID: s, Error: &duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: "child broke"}})
	h.add(duroxide.Event{Kind: duroxide.EventOrchestrationFailed, Error: &duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: "child broke"}})

	steps := Steps(h.evs, false)
	var got []string
	for _, st := range steps {
		got = append(got, st.Kind+":"+st.Status)
	}
	if g := strings.Join(got, ","); g != "start:info,wait:ok,event:ok,sub:failed,failed:failed" {
		t.Fatalf("steps: %s", g)
	}
	if sub := steps[3]; sub.Link != "parent::sub::4" || !strings.Contains(sub.Error, "child broke") || len(sub.IDs) != 2 {
		t.Errorf("sub-orchestration step: %+v", sub)
	}
	if p := string(steps[2].Payload); strings.Contains(p, "s3cret") {
		t.Errorf("event payload not masked: %s", p)
	}
	for _, r := range RawEvents(h.evs) {
		if strings.Contains(r.Detail, "s3cret") {
			t.Errorf("raw event %d shows the secret: %s", r.ID, r.Detail)
		}
	}
}
