package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/orchestrations"
)

// knownPolicies are the retry policies Toygres' orchestrations call their
// activities with, so that the history can say "attempt 2 of 5" and tell an
// attempt timeout from a retry backoff. Histories of other orchestrations
// are read without them.
var knownPolicies = map[string]map[string]duroxide.RetryPolicy{
	orchestrations.CreateInstance: {
		activities.CreateRecord:         activities.PolicyCMS,
		activities.Deploy:               activities.PolicyDeploy,
		activities.WaitForReady:         activities.PolicyWaitForReady,
		activities.GetConnectionStrings: activities.PolicyGetConnectionStrings,
		activities.TestConnection:       activities.PolicyCreateTestConnection,
		activities.UpdateState:          activities.PolicyCMS,
		activities.SetActor:             activities.PolicyCMS,
	},
	orchestrations.DeleteInstance: {
		activities.GetInstance:        activities.PolicyDeleteLookup,
		activities.UpdateState:        activities.PolicyCMS,
		activities.AwaitOrchestration: activities.PolicyAwaitCreate,
		activities.RaiseEvent:         activities.PolicyCMS,
		activities.DeletePostgres:     activities.PolicyDeletePostgres,
		activities.ForgetPassword:     activities.PolicyCMS,
		activities.AddEvent:           activities.PolicyCMS,
	},
	orchestrations.InstanceActor: {
		activities.GetInstanceConnection: activities.PolicyActorGetConnection,
		activities.TestConnection:        activities.PolicyActorProbe,
		activities.RecordHealthCheck:     activities.PolicyCMS,
		activities.UpdateHealth:          activities.PolicyCMS,
	},
}

// histItem is one readable entry of an execution's history: an activity
// call with all its attempts, a timer, an event, a status change…
type histItem struct {
	Kind       string // start, activity, timer, wait, event, sub, chained, status, syscall, cancel, completed, failed, continued, other
	Title      string
	Status     string // ok, failed, running, cancelled, waiting, info
	StatusText string
	At         time.Time
	IDs        []int64
	Lines      []string
	Input      string
	Payload    string
	PayloadFor string
	Error      string
	Link       string
	LinkText   string
	Attempts   []*attemptView
	Total      *timerView // the retry sequence's total timeout
	Retried    bool
}

// attemptView is one attempt of an activity call.
type attemptView struct {
	N, Of      int
	EventID    int64
	At         time.Time
	Status     string // ok, failed, timeout, cancelled, running
	StatusText string
	Took       string
	Error      string
	Result     string
	Timeout    *timerView // the attempt's timeout timer
	Backoff    *timerView // the wait after this attempt, before the next
}

// timerView is a durable timer.
type timerView struct {
	EventID int64
	Delay   time.Duration
	FireAt  time.Time
	Fired   bool
	FiredID int64
}

// IDList is the event ids as "#3 #4 #9".
func (h histItem) IDList() string {
	var b strings.Builder
	for i, id := range h.IDs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("#" + strconv.FormatInt(id, 10))
	}
	return b.String()
}

// ShowAttempts tells whether the attempts are worth listing: not for a
// call that succeeded on its first attempt.
func (h histItem) ShowAttempts() bool {
	n := len(h.Attempts)
	return n > 1 || (n == 1 && h.Attempts[0].Status != "ok") || h.Total != nil
}

// Label is "attempt 2 of 5" (or "attempt 2" when the policy is unknown).
func (a *attemptView) Label() string {
	if a.Of > 0 {
		return fmt.Sprintf("attempt %d of %d", a.N, a.Of)
	}
	return fmt.Sprintf("attempt %d", a.N)
}

func evTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// group is an activity call being assembled: attempts of the same activity
// with the same input, retried under one policy.
type group struct {
	item     *histItem
	key      string
	policy   *duroxide.RetryPolicy
	pending  bool  // the last attempt failed and a retry is expected
	failedAt int64 // event id of the last attempt's failure
}

// readableHistory turns one execution's events (in event id order) into
// readable items. running tells whether the execution is still going.
func readableHistory(orchName string, events []duroxide.Event, running bool) []histItem {
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
	policies := knownPolicies[orchName]
	consumed := map[int64]bool{}
	timer := func(t *duroxide.Event) *timerView {
		consumed[t.EventID] = true
		tv := &timerView{EventID: t.EventID, FireAt: evTime(t.FireAtMs)}
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

	var items []*histItem
	pending := map[string]*group{}   // activity key → group awaiting a retry
	totals := map[int64]*timerView{} // ActivityScheduled id → total-timeout timer before it
	subs := map[string][]*histItem{} // event name → open waits
	add := func(it *histItem) *histItem { items = append(items, it); return it }

	for i := range events {
		e := &events[i]
		if consumed[e.EventID] {
			continue
		}
		at := evTime(e.TimestampMs)
		switch e.Kind {
		case duroxide.EventOrchestrationStarted:
			it := add(&histItem{Kind: "start", Title: "Started " + e.Name, Status: "info", At: at, IDs: []int64{e.EventID},
				Payload: prettyPayload(e.Input, 4000), PayloadFor: "input"})
			if e.Version != "" {
				it.Title += " v" + e.Version
			}
			if e.ParentInstance != "" {
				it.Link, it.LinkText = orchURL(e.ParentInstance), "parent "+e.ParentInstance
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
				g = &group{key: key, item: add(&histItem{Kind: "activity", Title: e.Name, At: at, IDs: []int64{e.EventID},
					Input: prettyPayload(e.Input, 4000)})}
				if p, ok := policies[e.Name]; ok {
					g.policy = &p
				}
				if tv := totals[e.EventID]; tv != nil {
					g.item.Total = tv
					g.item.IDs = append([]int64{tv.EventID}, g.item.IDs...)
				}
			}
			a := &attemptView{N: len(g.item.Attempts) + 1, EventID: e.EventID, At: at}
			if g.policy != nil {
				a.Of = g.policy.MaxAttempts
			}
			// Newer histories record the attempt and the policy; older ones
			// are read with knownPolicies.
			if e.Attempt > 0 {
				a.N, a.Of = e.Attempt, e.MaxAttempts
			}
			g.item.Attempts = append(g.item.Attempts, a)
			// A timer created right after the schedule is the attempt's timeout.
			if next := byID[e.EventID+1]; next != nil && next.Kind == duroxide.EventTimerCreated && !consumed[next.EventID] &&
				(next.Purpose == duroxide.TimerAttemptTimeout || (next.Purpose == "" && (g.policy == nil || g.policy.Timeout > 0))) {
				a.Timeout = timer(next)
				g.item.IDs = append(g.item.IDs, next.EventID)
			}
			var failID int64
			var nonRetryable bool
			switch done := completion[e.EventID]; {
			case done != nil && done.Kind == duroxide.EventActivityCompleted:
				consumed[done.EventID] = true
				g.item.IDs = append(g.item.IDs, done.EventID)
				a.Status, a.StatusText, a.Result = "ok", "completed", prettyPayload(done.Result, 4000)
				a.Took = took(e, done)
			case done != nil:
				consumed[done.EventID] = true
				g.item.IDs = append(g.item.IDs, done.EventID)
				a.Status, a.StatusText = "failed", "failed"
				a.Took = took(e, done)
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
					a.Error = fmt.Sprintf("no result within %s", fmtDur(a.Timeout.Delay))
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
			if next := byID[e.EventID+1]; e.Purpose == "" && next != nil && next.Kind == duroxide.EventActivityScheduled && pending[next.Name+"\x00"+next.Input] == nil {
				p, known := policies[next.Name]
				if !known || p.TotalTimeout > 0 {
					totals[next.EventID] = timer(e)
					continue
				}
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
			it := add(&histItem{Kind: "timer", Title: "Timer " + fmtDur(tv.Delay), At: at, IDs: []int64{e.EventID}})
			if tv.Fired {
				it.IDs = append(it.IDs, tv.FiredID)
				it.Status, it.StatusText = "ok", "fired at "+tv.FireAt.Format("15:04:05.000")
			} else if running {
				it.Status, it.StatusText = "waiting", "fires at "+tv.FireAt.Format("15:04:05")
			} else {
				it.Status, it.StatusText = "cancelled", "did not fire"
			}

		case duroxide.EventExternalSubscribed:
			it := add(&histItem{Kind: "wait", Title: "Wait for event " + e.Name, At: at, IDs: []int64{e.EventID}})
			if running {
				it.Status, it.StatusText = "waiting", "waiting"
			} else {
				it.Status, it.StatusText = "info", "not received in this execution"
			}
			subs[e.Name] = append(subs[e.Name], it)

		case duroxide.EventExternalEvent:
			it := add(&histItem{Kind: "event", Title: "Event " + e.Name + " received", Status: "ok", At: at, IDs: []int64{e.EventID},
				Payload: prettyPayload(e.Data, 4000), PayloadFor: "data"})
			if open := subs[e.Name]; len(open) > 0 {
				open[0].Status, open[0].StatusText = "ok", fmt.Sprintf("received (#%d)", e.EventID)
				subs[e.Name] = open[1:]
			} else {
				it.Lines = append(it.Lines, "no wait was open for it yet: it is kept until one is")
			}

		case duroxide.EventSubOrchestrationScheduled:
			it := add(&histItem{Kind: "sub", Title: "Sub-orchestration " + e.Name, At: at, IDs: []int64{e.EventID},
				Input: prettyPayload(e.Input, 4000)})
			if e.Instance != "" {
				it.Link, it.LinkText = orchURL(e.Instance), e.Instance
				if _, n, ok := strings.Cut(e.Instance, "::attempt-"); ok {
					it.Title += " (attempt " + n + ")"
					it.Retried = true
				}
			}
			switch done := completion[e.EventID]; {
			case done != nil && done.Kind == duroxide.EventSubOrchestrationCompleted:
				consumed[done.EventID] = true
				it.IDs = append(it.IDs, done.EventID)
				it.Status, it.StatusText, it.Payload, it.PayloadFor = "ok", "completed after "+took(e, done), prettyPayload(done.Result, 4000), "result"
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
			it := add(&histItem{Kind: "chained", Title: "Started orchestration " + e.Name, Status: "info", At: at, IDs: []int64{e.EventID},
				Input: prettyPayload(e.Input, 4000)})
			if e.Instance != "" {
				it.Link, it.LinkText = orchURL(e.Instance), e.Instance
			}

		case duroxide.EventCustomStatusUpdated:
			it := add(&histItem{Kind: "status", Status: "info", At: at, IDs: []int64{e.EventID}})
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
			add(&histItem{Kind: "syscall", Title: "Recorded " + e.Name + " = " + shorten(v, 80), Status: "info", At: at, IDs: []int64{e.EventID}})

		case duroxide.EventOrchestrationCancelRequested:
			add(&histItem{Kind: "cancel", Title: "Cancellation requested", Status: "cancelled", StatusText: e.Reason, At: at, IDs: []int64{e.EventID}})

		case duroxide.EventOrchestrationCompleted:
			add(&histItem{Kind: "completed", Title: "Completed", Status: "ok", At: at, IDs: []int64{e.EventID},
				Payload: prettyPayload(e.Result, 4000), PayloadFor: "output"})

		case duroxide.EventOrchestrationFailed:
			it := add(&histItem{Kind: "failed", Title: "Failed", Status: "failed", At: at, IDs: []int64{e.EventID}})
			if e.Error != nil {
				it.Error = e.Error.Display()
				if e.Error.Category == duroxide.CategoryCancelled {
					it.Title, it.Status = "Cancelled", "cancelled"
				}
			}

		case duroxide.EventOrchestrationContinuedAsNew:
			add(&histItem{Kind: "continued", Title: "Continued as new", Status: "info", At: at, IDs: []int64{e.EventID},
				Payload: prettyPayload(e.Input, 4000), PayloadFor: "input of the next execution"})

		case duroxide.EventActivityCancelRequested, duroxide.EventSubOrchestrationCancelRequested:
			if e.Reason == "orchestration_terminal" {
				continue
			}
			add(&histItem{Kind: "other", Title: fmt.Sprintf("Cancellation of #%d requested", e.SourceEventID), Status: "info",
				StatusText: e.Reason, At: at, IDs: []int64{e.EventID}})

		default:
			title := string(e.Kind)
			if e.SourceEventID != 0 {
				title += fmt.Sprintf(" (for #%d)", e.SourceEventID)
			}
			add(&histItem{Kind: "other", Title: title, Status: "info", At: at, IDs: []int64{e.EventID}})
		}
	}
	if !running {
		// Retries the execution never got to (it was cancelled or ended).
		for _, g := range pending {
			g.pending = false
			finishGroup(g)
		}
	}
	out := make([]histItem, len(items))
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
		it.Status, it.StatusText = "waiting", fmt.Sprintf("retrying: backing off %s after %s", fmtDur(last.Backoff.Delay), last.Label())
	case g.pending:
		it.Status, it.StatusText = "waiting", "retrying after "+last.Label()
	case last.Status == "ok":
		it.Status, it.StatusText = "ok", "completed"
		if n > 1 {
			it.StatusText = "completed on " + last.Label()
		} else if last.Took != "" {
			it.StatusText = "completed after " + last.Took
		}
		it.Payload, it.PayloadFor = last.Result, "result"
	case last.Status == "running":
		it.Status, it.StatusText = "running", "running ("+last.Label()+")"
	case last.Status == "failed" || last.Status == "timeout":
		it.Status, it.StatusText = "failed", "failed"
		if n > 1 || (g.policy != nil && g.policy.MaxAttempts > 1) {
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
	return fmtDur(time.Duration(to.TimestampMs-from.TimestampMs) * time.Millisecond)
}

// rawEvent is one event for the raw table.
type rawEvent struct {
	ID, Src int64
	Kind    string
	At      time.Time
	Name    string
	Detail  string
}

func rawEvents(events []duroxide.Event) []rawEvent {
	out := make([]rawEvent, 0, len(events))
	for _, e := range events {
		r := rawEvent{ID: e.EventID, Src: e.SourceEventID, Kind: string(e.Kind), At: evTime(e.TimestampMs), Name: e.Name}
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
			r.Detail = shorten(maskedOneLine(e.Result), 120)
		case e.Data != "":
			r.Detail = shorten(maskedOneLine(e.Data), 120)
		}
		out = append(out, r)
	}
	return out
}

// secretKeys are JSON keys whose values are masked in shown payloads (as
// the API does).
var secretKeys = []string{"password", "passwd", "secret", "token", "credential"}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range secretKeys {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

func mask(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if isSecretKey(k) {
				if s, ok := val.(string); !ok || s != "" {
					x[k] = "***"
				}
				continue
			}
			mask(val)
		}
	case []any:
		for _, e := range x {
			mask(e)
		}
	}
}

// prettyPayload shows a stored payload: JSON indented with secret-looking
// keys masked, other text as is; at most limit bytes.
func prettyPayload(s string, limit int) string {
	if s == "" || s == "null" {
		return ""
	}
	out := s
	if json.Valid([]byte(s)) {
		var v any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if dec.Decode(&v) == nil {
			mask(v)
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if enc.Encode(v) == nil {
				out = strings.TrimRight(buf.String(), "\n")
			}
		}
	}
	if len(out) > limit {
		out = shorten(out, limit) + fmt.Sprintf("\n(%d bytes in all)", len(out))
	}
	return out
}

// maskedOneLine is a payload on one line, secrets masked.
func maskedOneLine(s string) string {
	if json.Valid([]byte(s)) {
		var v any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if dec.Decode(&v) == nil {
			mask(v)
			if b, err := json.Marshal(v); err == nil {
				return string(b)
			}
		}
	}
	return strings.ReplaceAll(s, "\n", " ")
}
