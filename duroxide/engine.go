package duroxide

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// engine replays one execution of one instance. Orchestration code runs as a
// coroutine (see code), never concurrently with the engine: control passes
// back and forth directly, so everything is deterministic.
//
// An engine is kept between turns (the runtime's cache), so a turn applies
// only the new messages instead of replaying the whole history.
type engine struct {
	rt    *Runtime
	hints *deltaHint // rt's hint for this orchestration, looked up once (engine.hint)

	instance          string
	executionID       int64
	name, version     string
	input             string
	parentInstance    string
	parentExecutionID int64
	parentID          int64
	createdAtMs       int64
	fn                orchFunc

	nextID    int64
	replaying bool
	nowMs     int64 // deterministic time: timestamp of the latest applied event

	emitted []*action           // actions not yet matched to history or recorded
	open    map[int64]*Task     // schedule id → task awaiting its completion
	kinds   map[int64]EventKind // every schedule id of this execution → its kind

	// External events: buffered arrivals and waiting subscriptions, per name.
	arrivals   []ExternalArrival
	subs       []*Task
	customStat *string

	// Orchestration code, run as a coroutine (see startCode).
	started  bool
	next     func() (struct{}, bool) // runs the code until it blocks or returns
	stop     func()                  // ends the code's coroutine
	yield    func(struct{}) bool     // called by the code to block
	waiting  func() bool
	finished bool
	aborting bool
	outRes   string
	outErr   error
	panicMsg string

	// Terminal state.
	terminal   bool
	failure    *ErrorDetails // engine-detected failure (nondeterminism, cancel, panic)
	cancelReq  bool
	cancelText string

	// Turn output.
	delta     []Event
	workItems []WorkItem
	orchItems []WorkItem
	cancelled []ActivityRef
	// cancelledTimers are timers of this execution whose TimerFired
	// message is no longer wanted (select losers, finished attempts,
	// timers open when the execution ends).
	cancelledTimers []int64
	setCS           bool
	status          Status
	output          string

	ctx *OrchestrationContext

	startedMs int64
	// clock is the wall clock for new events (nil: time.Now); the in-memory
	// Executor sets a virtual one.
	clock func() time.Time
	// strict makes history recorded after the code returned a
	// nondeterminism (Executor.Replay) instead of being ignored.
	strict bool
	// post holds metric updates and log lines of the current turn, emitted
	// after its commit succeeds.
	post []func()

	// Tracing (tracing.go). traceCtx is the traceparent recorded on the
	// execution's OrchestrationStarted (carried to its activities and
	// children); orchSC its parsed form; orchSpan the live orchestration
	// span when this process opened it; turnStart when the current turn
	// began (set only when tracing).
	traceCtx      string
	orchSC        trace.SpanContext
	orchSpan      trace.Span
	orchCommitted bool
	turnStart     time.Time
}

type action struct {
	ev     Event
	task   *Task // task bound by a schedule action
	target *Task // task cancelled by a cancel action
	delay  time.Duration
	sysFn  func() string
	// defaultRetry marks a plain CallActivity: its schedule may start a
	// retry sequence under the activity's default policy.
	defaultRetry bool
}

func newEngine(rt *Runtime, instance string, executionID int64, fn orchFunc) *engine {
	e := &engine{
		rt:          rt,
		instance:    instance,
		executionID: executionID,
		fn:          fn,
		nextID:      1,
		open:        map[int64]*Task{},
		kinds:       map[int64]EventKind{},
	}
	e.ctx = &OrchestrationContext{e: e}
	return e
}

// wallMs is the current wall-clock time in Unix milliseconds.
func (e *engine) wallMs() int64 {
	if e.clock != nil {
		return e.clock().UnixMilli()
	}
	return time.Now().UnixMilli()
}

func (e *engine) beginTurn() {
	e.post = nil
	e.delta, e.workItems, e.orchItems, e.cancelled, e.cancelledTimers = nil, nil, nil, nil, nil
	e.setCS, e.status, e.output = false, StatusRunning, ""
}

// ---------------------------------------------------------------------------
// Orchestration goroutine handoff.

func (e *engine) startCode() {
	e.started = true
	e.next, e.stop = iter.Pull(e.code)
	e.runCode()
}

// abortCode is the panic that unwinds orchestration code blocked when its
// engine is closed (the code's deferred functions run, as they would on a
// return).
type abortCode struct{}

// code runs the orchestration function. It runs as a coroutine of
// whichever goroutine drives the engine: control passes back and forth
// directly (iter.Pull), without waking another thread as a goroutine
// hand-off over channels does; the orchestration code still runs on a
// goroutine of its own, blocked between turns.
func (e *engine) code(yield func(struct{}) bool) {
	e.yield = yield
	returned := false
	defer func() {
		r := recover()
		switch {
		case r != nil:
			if _, ok := r.(abortCode); !ok {
				e.panicMsg = fmt.Sprint(r)
			}
		case !returned && !e.aborting:
			// runtime.Goexit in the orchestration code: fail the
			// orchestration, and hand control back without finishing the
			// Goexit (iter.Pull would pass it on to the engine's caller).
			// The coroutine stays parked for good: close does not stop a
			// finished engine.
			e.panicMsg = "runtime.Goexit called"
			e.finished, e.waiting = true, nil
			yield(struct{}{})
			select {}
		}
		e.finished = true
		e.waiting = nil
	}()
	if !e.aborting {
		e.outRes, e.outErr = e.fn(e.ctx, e.input)
	}
	returned = true
}

// runCode gives control to the orchestration until it blocks or returns.
func (e *engine) runCode() {
	e.waiting = nil
	e.next()
	if e.finished && !e.terminal && e.failure == nil {
		e.codeFinished()
	}
}

// block is called by the orchestration code: it hands control back to the
// engine until ready reports true.
func (e *engine) block(ready func() bool) {
	if e.aborting {
		panic(abortCode{})
	}
	if ready() {
		return
	}
	e.waiting = ready
	if !e.yield(struct{}{}) || e.aborting {
		panic(abortCode{})
	}
}

// maybeResume resumes the orchestration if what it waits for is ready.
func (e *engine) maybeResume() {
	for e.started && !e.finished && e.failure == nil && e.waiting != nil && e.waiting() {
		e.runCode()
	}
}

// close ends the orchestration code if it is still parked (see abortCode).
func (e *engine) close() {
	if e.orchSpan != nil {
		e.endOrchSpan("", true)
	}
	if e.started && !e.finished {
		e.aborting = true
		e.stop()
	}
}

// ---------------------------------------------------------------------------
// Emission (called from the orchestration code or from task callbacks).

func (e *engine) emit(a *action) {
	if e.aborting {
		panic(abortCode{})
	}
	e.emitted = append(e.emitted, a)
}

func (e *engine) newTask(kind taskKind, name string) *Task {
	return &Task{e: e, kind: kind, name: name}
}

// cancelTask withdraws interest in a pending task (a select loser).
func (e *engine) cancelTask(t *Task, reason string) {
	if t.done || t.cancelled {
		return
	}
	t.cancelled = true
	switch t.kind {
	case taskActivity:
		if t.id != 0 {
			delete(e.open, t.id)
		}
		e.emit(&action{ev: Event{Kind: EventActivityCancelRequested, Reason: reason}, target: t})
	case taskSubOrch:
		if t.id != 0 {
			delete(e.open, t.id)
		}
		e.emit(&action{ev: Event{Kind: EventSubOrchestrationCancelRequested, Reason: reason}, target: t})
	case taskTimer:
		if t.id != 0 {
			delete(e.open, t.id)
			if !e.replaying { // a replayed cancellation was committed by its own turn
				e.cancelledTimers = append(e.cancelledTimers, t.id)
			}
		}
	case taskExternal:
		for i, s := range e.subs {
			if s == t {
				e.subs = append(e.subs[:i], e.subs[i+1:]...)
				break
			}
		}
	case taskComposite:
		if t.onCancel != nil {
			t.onCancel()
		}
	}
	t.resolve("", &TaskError{Kind: t.kind.String(), Name: t.name, Details: ErrorDetails{Category: CategoryCancelled, Message: reason}})
}

// ---------------------------------------------------------------------------
// Applying events.

// fail ends the execution with an engine-detected error.
func (e *engine) fail(d *ErrorDetails) {
	if e.failure == nil && !e.terminal {
		e.failure = d
	}
}

func (e *engine) nondeterministic(format string, args ...any) {
	e.fail(&ErrorDetails{Category: CategoryConfiguration, Message: "nondeterministic: " + fmt.Sprintf(format, args...)})
}

// replay applies persisted history.
func (e *engine) replay(history []Event) {
	if len(history) == 0 {
		e.nondeterministic("corrupted history: empty")
		return
	}
	if history[0].Kind != EventOrchestrationStarted {
		e.nondeterministic("corrupted history: first event is %s, not OrchestrationStarted", history[0].Kind)
		return
	}
	if last := history[len(history)-1].EventID; last >= e.nextID {
		e.nextID = last + 1 // even if replay stops early, new events go after history
	}
	e.replaying = true
	for i := range history {
		if e.failure != nil || e.terminal {
			break
		}
		e.apply(&history[i])
	}
	e.replaying = false
	if !e.terminal && e.failure == nil {
		e.maybeResume()
	}
}

// record appends a new event to the turn's delta and applies it.
func (e *engine) record(ev Event) {
	ev.EventID = e.nextID
	if ev.TimestampMs == 0 {
		ev.TimestampMs = e.wallMs()
	}
	e.apply(e.appendDelta(ev))
}

// appendDelta appends ev to the turn's delta and returns the stored copy.
// A turn's first event gives the delta the capacity that turns of this
// orchestration recorded lately (deltaHint): a retry chain records ten
// events or so, and growing to that one append at a time copies each
// 300-byte event up to four times.
func (e *engine) appendDelta(ev Event) *Event {
	if e.delta == nil {
		first, started := ev.Kind == EventOrchestrationStarted, ""
		if first {
			started = ev.Name
		}
		if h := e.hint(started); h != nil {
			if n := h.get(first); n > 1 {
				e.delta = make([]Event, 0, n)
			}
		}
	}
	e.delta = append(e.delta, ev)
	return &e.delta[len(e.delta)-1]
}

// hint returns the delta hint of this engine's orchestration (nil without
// a runtime). Before the start is applied the engine has no name yet;
// started is the name its OrchestrationStarted carries.
func (e *engine) hint(started string) *deltaHint {
	if e.hints == nil && e.rt != nil {
		name := e.name
		if name == "" {
			name = started
		}
		e.hints = e.rt.deltaHint(name)
	}
	return e.hints
}

func (e *engine) apply(ev *Event) {
	if ev.EventID >= e.nextID {
		e.nextID = ev.EventID + 1
	}
	if ev.TimestampMs > e.nowMs {
		e.nowMs = ev.TimestampMs
	}
	switch ev.Kind {
	case EventOrchestrationStarted:
		if e.started {
			e.nondeterministic("duplicate OrchestrationStarted at event %d", ev.EventID)
			return
		}
		e.name, e.version, e.input = ev.Name, ev.Version, ev.Input
		e.startedMs = ev.TimestampMs
		e.parentInstance, e.parentExecutionID, e.parentID = ev.ParentInstance, ev.ParentExecutionID, ev.ParentID
		e.arrivals = append(e.arrivals[:0], ev.CarryForward...)
		e.customStat = ev.CustomStatus
		e.traceCtx = ev.TraceContext
		e.startCode()

	case EventActivityScheduled, EventTimerCreated, EventExternalSubscribed, EventSubOrchestrationScheduled,
		EventOrchestrationChained, EventCustomStatusUpdated, EventSystemCall, EventVersionMarker:
		e.matchSchedule(ev)

	case EventActivityCancelRequested, EventSubOrchestrationCancelRequested:
		if ev.Reason == reasonTerminal {
			return // written by the engine at a terminal turn, not by code
		}
		e.matchSchedule(ev)

	case EventActivityCompleted, EventActivityFailed, EventTimerFired,
		EventSubOrchestrationCompleted, EventSubOrchestrationFailed:
		t, ok := e.open[ev.SourceEventID]
		if !ok {
			e.nondeterministic("%s for event %d, which is not an open schedule", ev.Kind, ev.SourceEventID)
			return
		}
		want := completionKind(ev.Kind)
		if k := e.kinds[ev.SourceEventID]; k != want {
			e.nondeterministic("%s for event %d, which is a %s", ev.Kind, ev.SourceEventID, k)
			return
		}
		delete(e.open, ev.SourceEventID)
		switch ev.Kind {
		case EventActivityCompleted, EventSubOrchestrationCompleted:
			t.resolve(ev.Result, nil)
		case EventTimerFired:
			t.resolve("", nil)
		default:
			d := ErrorDetails{Category: CategoryApplication}
			if ev.Error != nil {
				d = *ev.Error
			}
			kind := "activity"
			if ev.Kind == EventSubOrchestrationFailed {
				kind = "sub-orchestration"
			}
			t.resolve("", &TaskError{Kind: kind, Name: t.name, Details: d})
		}
		e.maybeResume()

	case EventExternalEvent:
		e.deliverExternal(ExternalArrival{Name: ev.Name, Data: ev.Data})
		e.maybeResume()

	case EventOrchestrationCancelRequested:
		e.cancelReq, e.cancelText = true, ev.Reason

	case EventOrchestrationCompleted, EventOrchestrationFailed, EventOrchestrationContinuedAsNew:
		e.terminal = true

	default:
		e.nondeterministic("unknown event kind %q at event %d", ev.Kind, ev.EventID)
	}
}

func completionKind(k EventKind) EventKind {
	switch k {
	case EventActivityCompleted, EventActivityFailed:
		return EventActivityScheduled
	case EventTimerFired:
		return EventTimerCreated
	default:
		return EventSubOrchestrationScheduled
	}
}

// matchSchedule pairs a recorded schedule event with the next action the code emitted.
func (e *engine) matchSchedule(ev *Event) {
	e.skipAbsentMarkers(ev)
	if e.failure != nil {
		return
	}
	if len(e.emitted) == 0 {
		if e.finished && !e.strict {
			return // the code already returned; the rest of history is irrelevant
		}
		if e.finished {
			e.nondeterministic("history has %s at event %d, but the code had already returned", describeEvent(ev), ev.EventID)
			return
		}
		e.nondeterministic("history has %s at event %d, but the code scheduled nothing", describeEvent(ev), ev.EventID)
		return
	}
	a := e.emitted[0]
	if !actionMatches(a, ev) {
		e.nondeterministic("history has %s at event %d, but the code scheduled %s", describeEvent(ev), ev.EventID, describeEvent(&a.ev))
		return
	}
	e.emitted = e.emitted[1:]
	e.bind(a, ev)
	if a.defaultRetry {
		e.adoptDefaultRetry(a, ev)
	}
	e.maybeResume()
}

// skipAbsentMarkers resolves the version markers at the head of the code's
// actions that history does not have: the execution passed those points
// before the change existed, so GetVersion returns VersionBeforeChange.
// Schedule events are recorded in the order the code emitted them, so a
// marker that was recorded is the next schedule event when its action is
// at the head.
func (e *engine) skipAbsentMarkers(ev *Event) {
	for len(e.emitted) > 0 && e.failure == nil {
		a := e.emitted[0]
		if a.ev.Kind != EventVersionMarker || (ev.Kind == EventVersionMarker && ev.Name == a.ev.Name) {
			return
		}
		e.emitted = e.emitted[1:]
		a.task.resolve(strconv.Itoa(VersionBeforeChange), nil)
		e.maybeResume()
	}
}

func actionMatches(a *action, ev *Event) bool {
	if a.ev.Kind != ev.Kind {
		return false
	}
	switch ev.Kind {
	case EventActivityScheduled, EventSubOrchestrationScheduled:
		// Attempt numbers are compared only when both sides have one, so
		// histories written before they were recorded still replay.
		if a.ev.Attempt != 0 && ev.Attempt != 0 && a.ev.Attempt != ev.Attempt {
			return false
		}
		return a.ev.Name == ev.Name && a.ev.Input == ev.Input
	case EventTimerCreated:
		return a.ev.Purpose == "" || ev.Purpose == "" || a.ev.Purpose == ev.Purpose
	case EventExternalSubscribed, EventSystemCall, EventVersionMarker:
		return a.ev.Name == ev.Name
	case EventOrchestrationChained:
		return a.ev.Name == ev.Name && a.ev.Instance == ev.Instance && a.ev.Input == ev.Input
	case EventActivityCancelRequested, EventSubOrchestrationCancelRequested:
		return a.target != nil && a.target.id == ev.SourceEventID
	}
	return true
}

func describeEvent(ev *Event) string {
	switch ev.Kind {
	case EventActivityScheduled:
		if ev.Attempt > 0 {
			return fmt.Sprintf("activity %q attempt %d with input %s", ev.Name, ev.Attempt, truncate(ev.Input, 80))
		}
		return fmt.Sprintf("activity %q with input %s", ev.Name, truncate(ev.Input, 80))
	case EventSubOrchestrationScheduled:
		if ev.Attempt > 0 {
			return fmt.Sprintf("sub-orchestration %q attempt %d with input %s", ev.Name, ev.Attempt, truncate(ev.Input, 80))
		}
		return fmt.Sprintf("sub-orchestration %q with input %s", ev.Name, truncate(ev.Input, 80))
	case EventTimerCreated:
		if ev.Purpose != "" {
			return fmt.Sprintf("a timer (%s)", ev.Purpose)
		}
		return "a timer"
	case EventVersionMarker:
		return fmt.Sprintf("version marker %q", ev.Name)
	case EventExternalSubscribed:
		return fmt.Sprintf("a wait for event %q", ev.Name)
	case EventOrchestrationChained:
		return fmt.Sprintf("detached orchestration %q (instance %q)", ev.Name, ev.Instance)
	case EventCustomStatusUpdated:
		return "a custom status update"
	case EventSystemCall:
		return fmt.Sprintf("system call %q", ev.Name)
	case EventActivityCancelRequested:
		return fmt.Sprintf("cancellation of activity event %d", ev.SourceEventID)
	case EventSubOrchestrationCancelRequested:
		return fmt.Sprintf("cancellation of sub-orchestration event %d", ev.SourceEventID)
	}
	return string(ev.Kind)
}

func truncate(s string, n int) string {
	if s == "" {
		return `""`
	}
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// bind attaches a schedule event (recorded now or found in history) to its action.
func (e *engine) bind(a *action, ev *Event) {
	switch ev.Kind {
	case EventActivityScheduled, EventTimerCreated, EventSubOrchestrationScheduled:
		e.kinds[ev.EventID] = ev.Kind
		a.task.id = ev.EventID
		if ev.Kind == EventSubOrchestrationScheduled {
			a.task.child = ev.Instance
		}
		if !a.task.cancelled {
			e.open[ev.EventID] = a.task
		}
	case EventSystemCall, EventVersionMarker:
		a.task.id = ev.EventID
		a.task.resolve(ev.Result, nil)
	case EventCustomStatusUpdated:
		e.customStat = ev.CustomStatus
	case EventExternalSubscribed:
		a.task.id = ev.EventID
	}
}

func (e *engine) deliverExternal(arr ExternalArrival) {
	for i, s := range e.subs {
		if s.name == arr.Name {
			e.subs = append(e.subs[:i], e.subs[i+1:]...)
			s.resolve(arr.Data, nil)
			return
		}
	}
	e.arrivals = append(e.arrivals, arr)
}

// subscribe registers a wait for an external event; a buffered arrival of
// that name is consumed at once.
func (e *engine) subscribe(t *Task) {
	for i, a := range e.arrivals {
		if a.Name == t.name {
			e.arrivals = append(e.arrivals[:i], e.arrivals[i+1:]...)
			t.resolve(a.Data, nil)
			return
		}
	}
	e.subs = append(e.subs, t)
}

// ---------------------------------------------------------------------------
// New messages.

// applyMessage turns a queue message into a new history event, or drops it.
func (e *engine) applyMessage(m *WorkItem) {
	if e.terminal || e.failure != nil {
		if e.terminal && e.status == StatusContinuedAsNew && m.Kind == WorkExternalRaised {
			// Events that arrived in the same batch as the continue-as-new
			// go to the next execution.
			for i := range e.orchItems {
				if w := &e.orchItems[i]; w.Kind == WorkContinueAsNew {
					w.CarryForward = append(w.CarryForward, ExternalArrival{Name: m.Name, Data: m.Data})
				}
			}
		}
		return
	}
	switch m.Kind {
	case WorkActivityCompleted, WorkActivityFailed, WorkTimerFired, WorkSubOrchCompleted, WorkSubOrchFailed:
		if m.ExecutionID != 0 && m.ExecutionID != e.executionID {
			e.rt.logger.Debug("dropping completion for another execution", "instance", e.instance, "kind", m.Kind, "execution_id", m.ExecutionID)
			return
		}
		var ev Event
		switch m.Kind {
		case WorkActivityCompleted:
			ev = Event{Kind: EventActivityCompleted, Result: m.Result}
		case WorkActivityFailed:
			ev = Event{Kind: EventActivityFailed, Error: m.Error}
		case WorkTimerFired:
			ev = Event{Kind: EventTimerFired, FireAtMs: m.FireAtMs}
		case WorkSubOrchCompleted:
			ev = Event{Kind: EventSubOrchestrationCompleted, Result: m.Result}
		default:
			ev = Event{Kind: EventSubOrchestrationFailed, Error: m.Error}
		}
		ev.SourceEventID = m.ID
		k, known := e.kinds[m.ID]
		if !known {
			e.nondeterministic("%s for event %d, which was never scheduled", ev.Kind, m.ID)
			return
		}
		if k != completionKind(ev.Kind) {
			e.nondeterministic("%s for event %d, which is a %s", ev.Kind, m.ID, k)
			return
		}
		if _, open := e.open[m.ID]; !open {
			return // duplicate delivery, or the result of a cancelled task
		}
		if m.Error != nil && (m.Error.Category == CategoryPoison || m.Error.Category == CategoryInfrastructure || m.Error.Category == CategoryConfiguration) {
			// A system failure of a child task fails this execution; the
			// code does not get to handle it.
			e.fail(m.Error)
			e.record(ev)
			return
		}
		e.record(ev)
	case WorkExternalRaised:
		e.record(Event{Kind: EventExternalEvent, Name: m.Name, Data: m.Data})
	case WorkCancelInstance:
		if !e.cancelReq {
			e.record(Event{Kind: EventOrchestrationCancelRequested, Reason: m.Reason})
		}
	default:
		// Duplicate starts and stale continue-as-new items are ignored.
	}
}

// ---------------------------------------------------------------------------
// Finishing a turn.

const reasonTerminal = "orchestration_terminal"

// flush records the actions the code emitted beyond history, resuming the
// code whenever a recorded action resolves what it waits for, until the
// orchestration is quiescent.
func (e *engine) flush() {
	for e.failure == nil && !e.terminal && !e.cancelReq {
		if len(e.emitted) == 0 {
			break
		}
		e.flushOne()
		e.maybeResume()
	}
	if e.cancelReq && !e.terminal && e.failure == nil {
		e.fail(&ErrorDetails{Category: CategoryCancelled, Message: e.cancelText})
	}
	if e.failure != nil && !e.terminal {
		e.finishWith(StatusFailed)
		return
	}
	if e.finished && !e.terminal {
		e.codeFinished()
	}
}

func (e *engine) emitSideEffects(a *action, ev *Event) {
	switch ev.Kind {
	case EventActivityScheduled:
		e.workItems = append(e.workItems, WorkItem{Kind: WorkActivityExecute, Instance: e.instance, ExecutionID: e.executionID,
			ID: ev.EventID, Name: ev.Name, Input: ev.Input, OrchestrationName: e.name,
			TraceContext: e.traceCtx, Attempt: ev.Attempt, MaxAttempts: ev.MaxAttempts})
	case EventTimerCreated:
		e.orchItems = append(e.orchItems, WorkItem{Kind: WorkTimerFired, Instance: e.instance, ExecutionID: e.executionID,
			ID: ev.EventID, FireAtMs: ev.FireAtMs})
	case EventSubOrchestrationScheduled:
		e.orchItems = append(e.orchItems, WorkItem{Kind: WorkStartOrchestration, Instance: ev.Instance, Name: ev.Name,
			Version: ev.Version, Input: ev.Input, ParentInstance: e.instance, ParentExecutionID: e.executionID, ParentID: ev.EventID,
			TraceContext: e.traceCtx})
	case EventOrchestrationChained:
		e.orchItems = append(e.orchItems, WorkItem{Kind: WorkStartOrchestration, Instance: ev.Instance, Name: ev.Name,
			Version: ev.Version, Input: ev.Input, TraceContext: e.traceCtx})
	case EventCustomStatusUpdated:
		e.setCS = true
	case EventActivityCancelRequested:
		if ev.SourceEventID != 0 {
			e.cancelled = append(e.cancelled, ActivityRef{Instance: e.instance, ExecutionID: e.executionID, ActivityID: ev.SourceEventID})
		}
	case EventSubOrchestrationCancelRequested:
		if a.target.child != "" {
			e.orchItems = append(e.orchItems, WorkItem{Kind: WorkCancelInstance, Instance: a.target.child, Reason: "parent dropped sub-orchestration"})
		}
	}
}

// codeFinished turns the orchestration's return into the terminal event.
func (e *engine) codeFinished() {
	if e.terminal {
		return
	}
	if len(e.emitted) > 0 && e.replaying {
		return // the rest is recorded when history ends
	}
	switch {
	case e.panicMsg != "":
		e.fail(&ErrorDetails{Category: CategoryApplication, Message: "orchestration panicked: " + e.panicMsg})
	case e.outErr != nil:
		if can, ok := e.outErr.(*continueAsNewError); ok {
			e.continueAsNew(can)
			return
		}
		e.fail(detailsFromError(e.outErr))
	}
	if e.replaying {
		return // terminal events are only written for new progress
	}
	// Record any detached starts or status updates emitted before returning.
	for len(e.emitted) > 0 && e.failure == nil {
		e.flushOne()
	}
	if e.failure != nil {
		e.finishWith(StatusFailed)
		return
	}
	e.finishWith(StatusCompleted)
}

func (e *engine) flushOne() {
	a := e.emitted[0]
	e.emitted = e.emitted[1:]
	ev := a.ev
	ev.TimestampMs = e.wallMs()
	ev.EventID = e.nextID
	switch ev.Kind {
	case EventTimerCreated:
		ev.FireAtMs = ev.TimestampMs + (a.delay + time.Millisecond - 1).Milliseconds()
	case EventSubOrchestrationScheduled:
		if ev.Instance == "" {
			ev.Instance = e.instance + "::sub::" + strconv.FormatInt(ev.EventID, 10)
		}
	case EventSystemCall, EventVersionMarker:
		ev.Result = a.sysFn()
	case EventActivityCancelRequested, EventSubOrchestrationCancelRequested:
		ev.SourceEventID = a.target.id
	case EventActivityScheduled:
		if a.defaultRetry && !a.task.cancelled {
			e.prepareDefaultRetry(&ev)
		}
	}
	rec := e.appendDelta(ev)
	e.nextID++
	e.bind(a, rec)
	e.emitSideEffects(a, rec)
	if a.defaultRetry {
		e.adoptDefaultRetry(a, rec)
	}
}

// finishWith writes the terminal event and its side effects.
func (e *engine) finishWith(st Status) {
	if e.terminal {
		return
	}
	if e.replaying {
		return
	}
	e.cancelOutstanding()
	var ev Event
	switch st {
	case StatusCompleted:
		ev = Event{Kind: EventOrchestrationCompleted, Result: e.outRes}
		e.output = e.outRes
	default:
		d := e.failure
		ev = Event{Kind: EventOrchestrationFailed, Error: d}
		if d.Category == CategoryCancelled {
			st = StatusCancelled
		}
		e.output = mustJSON(d)
	}
	e.status = st
	e.appendNew(ev)
	e.terminal = true
	if e.parentInstance != "" {
		w := WorkItem{Instance: e.parentInstance, ExecutionID: e.parentExecutionID, ID: e.parentID}
		if st == StatusCompleted {
			w.Kind, w.Result = WorkSubOrchCompleted, e.outRes
		} else {
			w.Kind, w.Error = WorkSubOrchFailed, e.failure
		}
		e.orchItems = append(e.orchItems, w)
	}
}

func (e *engine) continueAsNew(can *continueAsNewError) {
	e.cancelOutstanding()
	carry := append([]ExternalArrival(nil), e.arrivals...)
	e.appendNew(Event{Kind: EventOrchestrationContinuedAsNew, Input: can.input, Version: can.version})
	e.terminal = true
	e.status, e.output = StatusContinuedAsNew, can.input
	// An empty version starts the next execution on the latest registered one.
	e.orchItems = append(e.orchItems, WorkItem{Kind: WorkContinueAsNew, Instance: e.instance, ExecutionID: e.executionID,
		Name: e.name, Version: can.version, Input: can.input, CarryForward: carry, CustomStatus: e.customStat,
		ParentInstance: e.parentInstance, ParentExecutionID: e.parentExecutionID, ParentID: e.parentID,
		TraceContext: e.traceCtx})
}

// cancelOutstanding withdraws activities and sub-orchestrations still in
// flight when the execution ends.
func (e *engine) cancelOutstanding() {
	// Actions emitted but never recorded are dropped: they were never
	// dispatched. Cancellations among them of tasks that were (an attempt
	// whose timeout ended its sequence, and with it the execution) are
	// carried out with the rest below.
	for _, a := range e.emitted {
		if a.target != nil && a.target.id != 0 && (a.ev.Kind == EventActivityCancelRequested || a.ev.Kind == EventSubOrchestrationCancelRequested) {
			e.open[a.target.id] = a.target
		}
	}
	e.emitted = nil
	ids := make([]int64, 0, len(e.open))
	for id := range e.open {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		t := e.open[id]
		switch t.kind {
		case taskActivity:
			e.appendNew(Event{Kind: EventActivityCancelRequested, SourceEventID: id, Reason: reasonTerminal})
			e.cancelled = append(e.cancelled, ActivityRef{Instance: e.instance, ExecutionID: e.executionID, ActivityID: id})
		case taskSubOrch:
			e.appendNew(Event{Kind: EventSubOrchestrationCancelRequested, SourceEventID: id, Reason: reasonTerminal})
			e.orchItems = append(e.orchItems, WorkItem{Kind: WorkCancelInstance, Instance: t.child, Reason: "parent orchestration ended"})
		case taskTimer:
			e.cancelledTimers = append(e.cancelledTimers, id)
		}
	}
	e.open = map[int64]*Task{}
}

func (e *engine) appendNew(ev Event) {
	ev.EventID = e.nextID
	e.nextID++
	if ev.TimestampMs == 0 {
		ev.TimestampMs = e.wallMs()
	}
	e.appendDelta(ev)
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// deltaHint is how many events the turns of one orchestration recorded
// lately: the first turn of an execution and the later ones apart (a start
// records two or three, a retry chain ten or more).
type deltaHint struct{ first, later atomic.Int32 }

// maxDeltaHint bounds the capacity given ahead of time.
const maxDeltaHint = 64

func (h *deltaHint) get(first bool) int {
	if first {
		return int(h.first.Load())
	}
	return int(h.later.Load())
}

// observe takes a committed turn's event count: the hint jumps up to a
// larger count and drifts down by an eighth of the gap to a smaller one.
func (h *deltaHint) observe(first bool, n int) {
	a := &h.later
	if first {
		a = &h.first
	}
	n = min(n, maxDeltaHint)
	cur := int(a.Load())
	switch {
	case n > cur:
		a.Store(int32(n))
	case n < cur:
		a.Store(int32(cur - (cur-n+7)/8))
	}
}

// deltaHint returns the hint of orchestration name.
func (rt *Runtime) deltaHint(name string) *deltaHint {
	if v, ok := rt.deltaHints.Load(name); ok {
		return v.(*deltaHint)
	}
	v, _ := rt.deltaHints.LoadOrStore(name, new(deltaHint))
	return v.(*deltaHint)
}
