// Package historyview reads a duroxide history as steps a person can
// follow: an activity call with each attempt's outcome, its attempt
// timeouts and the backoffs between attempts; user timers, waits, events,
// sub-orchestrations, and the result or failure. It relies on what the
// history records (Event.Attempt, MaxAttempts, Policy, Purpose) and reads
// older histories, which lack those fields, by their event order. The API,
// the web console and the CLI all show histories through it; payloads are
// masked (package redact).
package historyview

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/redact"
)

// Step, Attempt and Timer are the readable forms (the API's JSON types).
type (
	Step    = client.HistoryStep
	Attempt = client.HistoryAttempt
	Timer   = client.HistoryTimer
)

func evTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// group is an activity call being assembled: attempts of the same activity
// with the same input, retried under one policy.
type group struct {
	item     *Step
	key      string
	pending  bool  // the last attempt failed and a retry is expected
	failedAt int64 // event id of the last attempt's failure
}

// Steps turns one execution's events (in event id order) into
// readable steps. running tells whether the execution is still going.
func Steps(events []duroxide.Event, running bool) []Step {
	byID := map[int64]*duroxide.Event{}
	completion := map[int64]*duroxide.Event{} // schedule id → completion / fired
	cancels := map[int64]*duroxide.Event{}    // schedule id → cancel request
	for i := range events {
		e := &events[i]
		byID[e.EventID] = e
		switch e.Kind {
		case duroxide.EventActivityCompleted, duroxide.EventActivityFailed, duroxide.EventTimerFired,
			duroxide.EventSubOrchestrationCompleted, duroxide.EventSubOrchestrationFailed:
			if _, dup := completion[e.SourceEventID]; !dup {
				completion[e.SourceEventID] = e
			}
		case duroxide.EventActivityCancelRequested, duroxide.EventSubOrchestrationCancelRequested:
			if _, dup := cancels[e.SourceEventID]; !dup {
				cancels[e.SourceEventID] = e
			}
		}
	}
	consumed := map[int64]bool{}
	timer := func(t *duroxide.Event) *Timer {
		consumed[t.EventID] = true
		tv := &Timer{EventID: t.EventID, FireAt: evTime(t.FireAtMs)}
		if t.FireAtMs != 0 && t.TimestampMs != 0 {
			tv.Delay = time.Duration(t.FireAtMs-t.TimestampMs) * time.Millisecond
		}
		if f := completion[t.EventID]; f != nil {
			tv.Fired, tv.FiredID = true, f.EventID
			consumed[f.EventID] = true
		}
		return tv
	}
	// scheduledLater reports whether key is scheduled again after event id.
	scheduledLater := func(key string, after int64) bool {
		for i := range events {
			e := &events[i]
			if e.EventID > after && e.Kind == duroxide.EventActivityScheduled && e.Name+"\x00"+e.Input == key {
				return true
			}
		}
		return false
	}

	var items []*Step
	pending := map[string]*group{} // activity key → group awaiting a retry
	totals := map[int64]*Timer{}   // ActivityScheduled id → total-timeout timer before it
	subs := map[string][]*Step{}   // event name → open waits
	add := func(it *Step) *Step { items = append(items, it); return it }

	for i := range events {
		e := &events[i]
		if consumed[e.EventID] {
			continue
		}
		at := evTime(e.TimestampMs)
		switch e.Kind {
		case duroxide.EventOrchestrationStarted:
			it := add(&Step{Kind: "start", Title: "Started " + e.Name, Status: "info", At: at, IDs: []int64{e.EventID},
				Payload: redact.JSON(e.Input), PayloadFor: "input"})
			if e.Version != "" {
				it.Title += " v" + e.Version
			}
			if e.ParentInstance != "" {
				it.Link, it.LinkText = e.ParentInstance, "parent "+e.ParentInstance
			}
			if len(e.CarryForward) > 0 {
				it.Lines = append(it.Lines, fmt.Sprintf("%d external event(s) carried over from the previous execution", len(e.CarryForward)))
			}

		case duroxide.EventActivityScheduled:
			key := e.Name + "\x00" + e.Input
			g := pending[key]
			if g != nil {
				delete(pending, key)
				g.item.Retried = true
				g.item.IDs = append(g.item.IDs, e.EventID)
			} else {
				g = &group{key: key, item: add(&Step{Kind: "activity", Title: e.Name, At: at, IDs: []int64{e.EventID},
					Input: redact.JSON(e.Input)})}
				g.item.Policy = e.Policy
				if tv := totals[e.EventID]; tv != nil {
					g.item.Total = tv
					g.item.IDs = append([]int64{tv.EventID}, g.item.IDs...)
				}
			}
			g.item.Attempts = append(g.item.Attempts, Attempt{N: len(g.item.Attempts) + 1, EventID: e.EventID, At: at})
			a := &g.item.Attempts[len(g.item.Attempts)-1]
			// Newer histories record the attempt and the policy's maximum;
			// in older ones attempts are counted and the maximum is unknown.
			if e.Attempt > 0 {
				a.N, a.Of = e.Attempt, e.MaxAttempts
			}
			// A timer created right after the schedule is the attempt's timeout.
			if next := byID[e.EventID+1]; next != nil && next.Kind == duroxide.EventTimerCreated && !consumed[next.EventID] &&
				(next.Purpose == duroxide.TimerAttemptTimeout || next.Purpose == "" /* an older history: a timer right after a schedule bounds it */) {
				a.Timeout = timer(next)
				g.item.IDs = append(g.item.IDs, next.EventID)
			}
			var failID int64
			var nonRetryable bool
			switch done := completion[e.EventID]; {
			case done != nil && done.Kind == duroxide.EventActivityCompleted:
				consumed[done.EventID] = true
				g.item.IDs = append(g.item.IDs, done.EventID)
				a.Status, a.StatusText, a.Result = "ok", "completed", redact.JSON(done.Result)
				a.Took = elapsed(e, done)
			case done != nil:
				consumed[done.EventID] = true
				g.item.IDs = append(g.item.IDs, done.EventID)
				a.Status, a.StatusText = "failed", "failed"
				a.Took = elapsed(e, done)
				if done.Error != nil {
					a.Error, nonRetryable = done.Error.Display(), done.Error.NonRetryable
					if done.Error.Timeout {
						a.Status, a.StatusText = "timeout", "timed out"
					}
				}
				failID = done.EventID
			case cancels[e.EventID] != nil:
				cr := cancels[e.EventID]
				consumed[cr.EventID] = true
				g.item.IDs = append(g.item.IDs, cr.EventID)
				switch {
				case cr.Reason == "attempt timed out" && a.Timeout != nil && a.Timeout.Fired:
					a.Status, a.StatusText = "timeout", "timed out"
					a.Error = fmt.Sprintf("no result within %s", FormatDuration(a.Timeout.Delay))
					failID = a.Timeout.FiredID
				case cr.Reason == "orchestration_terminal":
					a.Status, a.StatusText = "cancelled", "abandoned: the orchestration ended"
				default:
					a.Status, a.StatusText = "cancelled", "cancelled: "+cr.Reason
				}
			case running:
				a.Status, a.StatusText = "running", "running"
			default:
				a.Status, a.StatusText = "cancelled", "no result (the execution ended)"
			}
			if failID != 0 && !nonRetryable && (a.Of == 0 || a.N < a.Of) {
				g.pending, g.failedAt = true, failID
				pending[key] = g
			} else {
				g.pending = false
			}
			finishGroup(g)

		case duroxide.EventTimerCreated:
			// A retry sequence's total timeout: created just before its first
			// attempt (a backoff timer is followed by its TimerFired first).
			if e.Purpose == duroxide.TimerTotalTimeout {
				if next := byID[e.EventID+1]; next != nil && next.Kind == duroxide.EventActivityScheduled {
					totals[next.EventID] = timer(e)
					continue
				}
			}
			// In an older history (no purpose recorded), a timer right before
			// the first attempt of a call is taken for its total timeout.
			if next := byID[e.EventID+1]; e.Purpose == "" && next != nil && next.Kind == duroxide.EventActivityScheduled && pending[next.Name+"\x00"+next.Input] == nil {
				totals[next.EventID] = timer(e)
				continue
			}
			// A retry backoff: the wait after a failed attempt, followed by the
			// next attempt of the same call (or still running).
			var best *group
			for _, g := range pending {
				if e.Purpose == duroxide.TimerUser {
					break // recorded as the orchestration's own timer
				}
				if g.failedAt < e.EventID && g.item.Attempts[len(g.item.Attempts)-1].Backoff == nil && (best == nil || g.failedAt > best.failedAt) {
					best = g
				}
			}
			if best != nil {
				f := completion[e.EventID]
				if (f != nil && scheduledLater(best.key, f.EventID)) || (f == nil && running) {
					tv := timer(e)
					best.item.Attempts[len(best.item.Attempts)-1].Backoff = tv
					best.item.IDs = append(best.item.IDs, e.EventID)
					if tv.Fired {
						best.item.IDs = append(best.item.IDs, tv.FiredID)
					}
					finishGroup(best)
					continue
				}
			}
			tv := timer(e)
			it := add(&Step{Kind: "timer", Title: "Timer " + FormatDuration(tv.Delay), At: at, IDs: []int64{e.EventID}})
			if tv.Fired {
				it.IDs = append(it.IDs, tv.FiredID)
				it.Status, it.StatusText = "ok", "fired at "+tv.FireAt.Format("15:04:05.000")
			} else if running {
				it.Status, it.StatusText = "waiting", "fires at "+tv.FireAt.Format("15:04:05")
			} else {
				it.Status, it.StatusText = "cancelled", "did not fire"
			}

		case duroxide.EventExternalSubscribed:
			it := add(&Step{Kind: "wait", Title: "Wait for event " + e.Name, At: at, IDs: []int64{e.EventID}})
			if running {
				it.Status, it.StatusText = "waiting", "waiting"
			} else {
				it.Status, it.StatusText = "info", "not received in this execution"
			}
			subs[e.Name] = append(subs[e.Name], it)

		case duroxide.EventExternalEvent:
			it := add(&Step{Kind: "event", Title: "Event " + e.Name + " received", Status: "ok", At: at, IDs: []int64{e.EventID},
				Payload: redact.JSON(e.Data), PayloadFor: "data"})
			if open := subs[e.Name]; len(open) > 0 {
				open[0].Status, open[0].StatusText = "ok", fmt.Sprintf("received (#%d)", e.EventID)
				subs[e.Name] = open[1:]
			} else {
				it.Lines = append(it.Lines, "no wait was open for it yet: it is kept until one is")
			}

		case duroxide.EventSubOrchestrationScheduled:
			it := add(&Step{Kind: "sub", Title: "Sub-orchestration " + e.Name, At: at, IDs: []int64{e.EventID},
				Input: redact.JSON(e.Input)})
			if e.Instance != "" {
				it.Link, it.LinkText = e.Instance, e.Instance
				if _, n, ok := strings.Cut(e.Instance, "::attempt-"); ok {
					it.Title += " (attempt " + n + ")"
					it.Retried = true
				}
			}
			switch done := completion[e.EventID]; {
			case done != nil && done.Kind == duroxide.EventSubOrchestrationCompleted:
				consumed[done.EventID] = true
				it.IDs = append(it.IDs, done.EventID)
				it.Status, it.StatusText, it.Payload, it.PayloadFor = "ok", "completed after "+took(e, done), redact.JSON(done.Result), "result"
			case done != nil:
				consumed[done.EventID] = true
				it.IDs = append(it.IDs, done.EventID)
				it.Status, it.StatusText = "failed", "failed after "+took(e, done)
				if done.Error != nil {
					it.Error = done.Error.Display()
				}
			case cancels[e.EventID] != nil:
				consumed[cancels[e.EventID].EventID] = true
				it.IDs = append(it.IDs, cancels[e.EventID].EventID)
				it.Status, it.StatusText = "cancelled", "cancelled: "+cancels[e.EventID].Reason
			case running:
				it.Status, it.StatusText = "running", "running"
			default:
				it.Status, it.StatusText = "cancelled", "no result"
			}

		case duroxide.EventOrchestrationChained:
			it := add(&Step{Kind: "chained", Title: "Started orchestration " + e.Name, Status: "info", At: at, IDs: []int64{e.EventID},
				Input: redact.JSON(e.Input)})
			if e.Instance != "" {
				it.Link, it.LinkText = e.Instance, e.Instance
			}

		case duroxide.EventCustomStatusUpdated:
			it := add(&Step{Kind: "status", Status: "info", At: at, IDs: []int64{e.EventID}})
			if e.CustomStatus == nil {
				it.Title = "Custom status cleared"
			} else {
				it.Title = "Custom status: " + *e.CustomStatus
			}

		case duroxide.EventSystemCall:
			v := e.Result
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && strings.Contains(strings.ToLower(e.Name), "now") {
				v = time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000 UTC")
			}
			add(&Step{Kind: "syscall", Title: "Recorded " + e.Name + " = " + Shorten(v, 80), Status: "info", At: at, IDs: []int64{e.EventID}})

		case duroxide.EventOrchestrationCancelRequested:
			add(&Step{Kind: "cancel", Title: "Cancellation requested", Status: "cancelled", StatusText: e.Reason, At: at, IDs: []int64{e.EventID}})

		case duroxide.EventOrchestrationCompleted:
			add(&Step{Kind: "completed", Title: "Completed", Status: "ok", At: at, IDs: []int64{e.EventID},
				Payload: redact.JSON(e.Result), PayloadFor: "output"})

		case duroxide.EventOrchestrationFailed:
			it := add(&Step{Kind: "failed", Title: "Failed", Status: "failed", At: at, IDs: []int64{e.EventID}})
			if e.Error != nil {
				it.Error = e.Error.Display()
				if e.Error.Category == duroxide.CategoryCancelled {
					it.Title, it.Status = "Cancelled", "cancelled"
				}
			}

		case duroxide.EventOrchestrationContinuedAsNew:
			add(&Step{Kind: "continued", Title: "Continued as new", Status: "info", At: at, IDs: []int64{e.EventID},
				Payload: redact.JSON(e.Input), PayloadFor: "input of the next execution"})

		case duroxide.EventActivityCancelRequested, duroxide.EventSubOrchestrationCancelRequested:
			if e.Reason == "orchestration_terminal" {
				continue
			}
			add(&Step{Kind: "other", Title: fmt.Sprintf("Cancellation of #%d requested", e.SourceEventID), Status: "info",
				StatusText: e.Reason, At: at, IDs: []int64{e.EventID}})

		default:
			title := string(e.Kind)
			if e.SourceEventID != 0 {
				title += fmt.Sprintf(" (for #%d)", e.SourceEventID)
			}
			add(&Step{Kind: "other", Title: title, Status: "info", At: at, IDs: []int64{e.EventID}})
		}
	}
	if !running {
		// Retries the execution never got to (it was cancelled or ended).
		for _, g := range pending {
			g.pending = false
			finishGroup(g)
		}
	}
	out := make([]Step, len(items))
	for i, it := range items {
		out[i] = *it
	}
	return out
}

// finishGroup sets an activity call's overall status from its attempts.
func finishGroup(g *group) {
	it := g.item
	last := it.Attempts[len(it.Attempts)-1]
	n := len(it.Attempts)
	failed := 0
	for _, a := range it.Attempts {
		if a.Status == "failed" || a.Status == "timeout" {
			failed++
		}
	}
	it.Lines = it.Lines[:0]
	if n > 1 {
		it.Lines = append(it.Lines, fmt.Sprintf("%d attempts, %d retried after a failure", n, failed))
	}
	it.Error = ""
	switch {
	case g.pending && last.Backoff != nil && !last.Backoff.Fired:
		it.Status, it.StatusText = "waiting", fmt.Sprintf("retrying: backing off %s after %s", FormatDuration(last.Backoff.Delay), last.Label())
	case g.pending:
		it.Status, it.StatusText = "waiting", "retrying after "+last.Label()
	case last.Status == "ok":
		it.Status, it.StatusText = "ok", "completed"
		if n > 1 {
			it.StatusText = "completed on " + last.Label()
		} else if last.Took > 0 {
			it.StatusText = "completed after " + FormatDuration(last.Took)
		}
		it.Payload, it.PayloadFor = last.Result, "result"
	case last.Status == "running":
		it.Status, it.StatusText = "running", "running ("+last.Label()+")"
	case last.Status == "failed" || last.Status == "timeout":
		it.Status, it.StatusText = "failed", "failed"
		if n > 1 || last.Of > 1 {
			it.StatusText = "failed on " + last.Label()
		}
		it.Error = last.Error
	default:
		it.Status, it.StatusText = "cancelled", last.StatusText
	}
}

func took(from, to *duroxide.Event) string {
	if from.TimestampMs == 0 || to.TimestampMs == 0 {
		return ""
	}
	return FormatDuration(time.Duration(to.TimestampMs-from.TimestampMs) * time.Millisecond)
}

// RawEvent is one event in a table of events, its detail masked.
type RawEvent struct {
	ID, Src int64
	Kind    string
	At      time.Time
	Name    string
	Detail  string
}

// RawEvents lists the events one by one with a short detail each.
func RawEvents(events []duroxide.Event) []RawEvent {
	out := make([]RawEvent, 0, len(events))
	for _, e := range events {
		r := RawEvent{ID: e.EventID, Src: e.SourceEventID, Kind: string(e.Kind), At: evTime(e.TimestampMs), Name: e.Name}
		switch {
		case e.Error != nil:
			r.Detail = e.Error.Display()
		case e.Kind == duroxide.EventTimerCreated:
			r.Detail = "fire at " + evTime(e.FireAtMs).Format("15:04:05.000")
		case e.Reason != "":
			r.Detail = e.Reason
		case e.CustomStatus != nil:
			r.Detail = *e.CustomStatus
		case e.Instance != "":
			r.Detail = e.Instance
		case e.Result != "":
			r.Detail = Shorten(redact.OneLine(e.Result), 120)
		case e.Data != "":
			r.Detail = Shorten(redact.OneLine(e.Data), 120)
		}
		out = append(out, r)
	}
	return out
}

// elapsed is the time between two events (0 when one has no timestamp).
func elapsed(from, to *duroxide.Event) time.Duration {
	if from.TimestampMs == 0 || to.TimestampMs == 0 {
		return 0
	}
	return time.Duration(to.TimestampMs-from.TimestampMs) * time.Millisecond
}

// FormatDuration is a compact human duration: 850 ms, 2.5 s, 3m10s, 2h5m.
func FormatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "–"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < 10*time.Second:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", d.Seconds()), ".0") + " s"
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Shorten cuts s to at most n bytes (on a rune boundary) and marks the cut
// with "…".
func Shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
