// Package duroxidetest runs duroxide orchestrations in memory for tests:
// activities and sub-orchestrations are mocked by name, time is virtual
// (timers and retry waits pass at once), and every turn runs on the real
// engine, replaying the history from its start as a runtime does after a
// restart. It also checks recorded histories against today's code (Replay,
// ReplayFile), the check to run before deploying a changed orchestration.
//
// A test builds an Env on a registry holding the orchestrations under test,
// scripts the activities with OnActivity, runs the orchestration with Run,
// and asserts on the Result and on Calls.
package duroxidetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// DefaultStart is the virtual time a run starts at unless WithStartTime is given.
var DefaultStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Env is one in-memory run of an orchestration. It is not safe for
// concurrent use; build a new one per test.
type Env struct {
	reg        *duroxide.Registry
	x          *duroxide.Executor
	xopts      duroxide.ExecutorOptions
	start, now time.Time
	instanceID string
	maxExec    int
	maxTime    time.Duration
	maxTurns   int

	activities map[string]*Mock
	subs       map[string]*Mock
	planned    []plannedMessage

	futures   []*future
	seq       int64
	instances map[string]*instance
	order     []string
	calls     []*Call
	detached  []Detached
	ran       bool
}

type plannedMessage struct {
	at time.Duration
	w  duroxide.WorkItem
}

type future struct {
	at        time.Time
	late      bool // planned messages go after everything else due at the same instant
	seq       int64
	run       func()
	cancelled bool
}

type instance struct {
	id, name   string
	execID     int64
	history    []duroxide.Event
	pending    []duroxide.WorkItem
	status     duroxide.Status
	output     string
	executions [][]duroxide.Event
}

// Option configures an Env.
type Option func(*Env)

// WithInstanceID sets the instance id of the orchestration under test
// (default "test-instance"); ctx.InstanceID returns it.
func WithInstanceID(id string) Option { return func(e *Env) { e.instanceID = id } }

// WithStartTime sets the virtual time the run starts at (default DefaultStart).
func WithStartTime(t time.Time) Option { return func(e *Env) { e.start = t } }

// WithMaxExecutions lets the orchestration under test continue as new n−1
// times (default 1: the run ends at the first continue-as-new, and
// Result.NextInput holds the input of the next execution).
func WithMaxExecutions(n int) Option { return func(e *Env) { e.maxExec = max(n, 1) } }

// WithMaxVirtualTime bounds the virtual time a run may take (default 30 days).
func WithMaxVirtualTime(d time.Duration) Option { return func(e *Env) { e.maxTime = d } }

// WithLogger sends orchestration logs to l (default: discarded).
func WithLogger(l *slog.Logger) Option {
	return func(e *Env) { e.xopts.Logger = l }
}

// WithChangeVersion pins the version the run records for a GetVersion
// change id, as duroxide.Options.ChangeVersions does on a runtime: a
// GetVersion(id, min, max) reached for the first time records min(v, max).
// With v = duroxide.VersionBeforeChange the run takes the code path of
// instances that started before the change, to test the old branch.
func WithChangeVersion(id string, v int) Option {
	return func(e *Env) {
		if e.xopts.ChangeVersions == nil {
			e.xopts.ChangeVersions = map[string]int{}
		}
		e.xopts.ChangeVersions[id] = v
	}
}

// New returns an Env over reg, which holds the orchestrations under test
// (and any sub-orchestrations that should run rather than be mocked).
// Activities registered in reg are not run: every activity the
// orchestration calls must be mocked with OnActivity.
func New(reg *duroxide.Registry, opts ...Option) *Env {
	e := &Env{reg: reg, start: DefaultStart, instanceID: "test-instance", maxExec: 1, maxTime: 30 * 24 * time.Hour,
		maxTurns: 10000, activities: map[string]*Mock{}, subs: map[string]*Mock{}, instances: map[string]*instance{}}
	e.xopts.Clock = e.Now
	for _, o := range opts {
		o(e)
	}
	e.x = duroxide.NewExecutor(reg, e.xopts)
	e.now = e.start
	return e
}

// Now is the virtual time.
func (e *Env) Now() time.Time { return e.now }

// Elapsed is the virtual time since the run started.
func (e *Env) Elapsed() time.Duration { return e.now.Sub(e.start) }

// OnActivity returns the mock of an activity (the same one on every call).
func (e *Env) OnActivity(name string) *Mock {
	if m, ok := e.activities[name]; ok {
		return m
	}
	m := &Mock{name: name}
	e.activities[name] = m
	return m
}

// OnSubOrchestration mocks a sub-orchestration: its calls do not run the
// child, they complete with the mock's behaviour. Without a mock, a
// sub-orchestration registered in the registry runs in the Env.
func (e *Env) OnSubOrchestration(name string) *Mock {
	if m, ok := e.subs[name]; ok {
		return m
	}
	m := &Mock{name: name}
	e.subs[name] = m
	return m
}

// RaiseEventAt raises an external event on the orchestration under test at
// virtual time start+at; at 0 it arrives with the start message, in the
// first turn. It arrives after the timers and results due at the same
// instant, in the same batch. Called while the run is in progress (from a
// mock's Do), at is relative to the current virtual time.
func (e *Env) RaiseEventAt(at time.Duration, name string, data any) {
	d, err := encode(data)
	if err != nil {
		panic(fmt.Sprintf("duroxidetest: encode event data: %v", err))
	}
	e.plan(at, duroxide.WorkItem{Kind: duroxide.WorkExternalRaised, Name: name, Data: d})
}

// CancelAt cancels the orchestration under test at virtual time start+at
// (relative to now while the run is in progress).
func (e *Env) CancelAt(at time.Duration, reason string) {
	e.plan(at, duroxide.WorkItem{Kind: duroxide.WorkCancelInstance, Reason: reason})
}

func (e *Env) plan(at time.Duration, w duroxide.WorkItem) {
	w.Instance = e.instanceID
	if !e.ran {
		e.planned = append(e.planned, plannedMessage{at: at, w: w})
		return
	}
	e.schedule(e.now.Add(at), func() { e.enqueue(w) }).late = true
}

// Call is one call of an activity or sub-orchestration.
type Call struct {
	Kind     string // "activity" or "sub-orchestration"
	Name     string
	Input    json.RawMessage
	Attempt  int           // attempt number under a retry policy (0 without one)
	At       time.Duration // virtual time since the start
	Instance string        // calling instance
	// Outcome, once known.
	Done      bool
	Result    json.RawMessage
	Err       error
	Cancelled bool // the orchestration withdrew the call before it finished

	id, exec int64  // activity: schedule event id and execution
	child    string // sub-orchestration: child instance id
	f        *future
}

// DecodeInput reads the call's input into out.
func (c *Call) DecodeInput(out any) error { return json.Unmarshal(c.Input, out) }

func (c *Call) String() string {
	s := c.Name
	if c.Attempt > 0 {
		s += fmt.Sprintf("#%d", c.Attempt)
	}
	return s
}

// Calls lists every activity and sub-orchestration call, in call order.
func (e *Env) Calls() []*Call { return e.calls }

// CallsTo lists the calls of one activity or sub-orchestration.
func (e *Env) CallsTo(name string) []*Call {
	var out []*Call
	for _, c := range e.calls {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

// CallNames lists the calls as "name" or, under a retry policy,
// "name#attempt", in call order: a compact form to compare in tests.
func (e *Env) CallNames() []string {
	out := make([]string, len(e.calls))
	for i, c := range e.calls {
		out[i] = c.String()
	}
	return out
}

// Detached is an orchestration started with StartOrchestration. The Env
// records it and does not run it.
type Detached struct {
	Name, Instance string
	Input          json.RawMessage
}

// Detached lists the detached orchestrations started during the run.
func (e *Env) Detached() []Detached { return e.detached }

// Result is how the orchestration under test ended.
type Result struct {
	Status duroxide.Status
	// Output is the JSON result of a completed orchestration.
	Output json.RawMessage
	// Err is the failure of a failed or cancelled orchestration (a
	// *duroxide.OrchestrationError).
	Err error
	// NextInput is the input of the next execution after a continue-as-new.
	NextInput json.RawMessage
	// Elapsed is the virtual time the run took.
	Elapsed time.Duration
	// History is the last execution's history; Executions holds every
	// execution's, oldest first.
	History    []duroxide.Event
	Executions [][]duroxide.Event
	// CustomStatus is the last custom status set.
	CustomStatus string
}

// Decode reads a completed orchestration's output (or, after a
// continue-as-new, the next input) into out.
func (r *Result) Decode(out any) error {
	raw := r.Output
	if r.Status == duroxide.StatusContinuedAsNew {
		raw = r.NextInput
	}
	if len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// Run starts the orchestration name with input as the instance under test
// and runs it until it completes, fails, is cancelled or continues as new
// (see WithMaxExecutions). Virtual time jumps to the next timer, delayed
// result or planned event whenever nothing else can happen.
//
// The error reports a problem of the test rather than an outcome of the
// orchestration: a call of an activity or sub-orchestration that is neither
// mocked nor registered, a run that blocks with nothing left to wait for,
// nondeterminism (the code did not replay its own history), or a run
// beyond its limits.
func (e *Env) Run(name string, input any) (*Result, error) {
	if e.ran {
		return nil, errors.New("duroxidetest: an Env runs once; build a new one")
	}
	e.ran = true
	in, err := encode(input)
	if err != nil {
		return nil, fmt.Errorf("duroxidetest: encode input: %w", err)
	}
	e.newInstance(e.instanceID, name)
	e.enqueue(duroxide.WorkItem{Kind: duroxide.WorkStartOrchestration, Instance: e.instanceID, Name: name, Input: in})
	for _, p := range e.planned {
		w := p.w
		if p.at <= 0 {
			e.enqueue(w) // in the same batch as the start
			continue
		}
		e.schedule(e.start.Add(p.at), func() { e.enqueue(w) }).late = true
	}
	root := e.instances[e.instanceID]
	turns := 0
	for !root.status.IsTerminal() {
		if turns++; turns > e.maxTurns {
			return nil, fmt.Errorf("duroxidetest: more than %d turns; is the orchestration looping?", e.maxTurns)
		}
		ran, err := e.runPendingTurn()
		if err != nil {
			return nil, err
		}
		if ran {
			continue
		}
		due := e.popDue()
		if len(due) == 0 {
			return nil, e.blocked(root)
		}
		if due[0].at.After(e.now) {
			e.now = due[0].at
		}
		if e.Elapsed() > e.maxTime {
			return nil, fmt.Errorf("duroxidetest: the run passed %v of virtual time (WithMaxVirtualTime)", e.maxTime)
		}
		for _, f := range due {
			f.run()
		}
	}
	res := &Result{Status: root.status, Elapsed: e.Elapsed(), Executions: root.executions}
	res.History = root.executions[len(root.executions)-1]
	switch root.status {
	case duroxide.StatusCompleted:
		res.Output = json.RawMessage(root.output)
	case duroxide.StatusContinuedAsNew:
		res.NextInput = json.RawMessage(root.output)
	default:
		var d duroxide.ErrorDetails
		if err := json.Unmarshal([]byte(root.output), &d); err != nil {
			d = duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: root.output}
		}
		res.Err = &duroxide.OrchestrationError{Instance: root.id, Details: d}
	}
	for _, h := range root.executions {
		for _, ev := range h {
			if ev.Kind == duroxide.EventCustomStatusUpdated {
				res.CustomStatus = ""
				if ev.CustomStatus != nil {
					res.CustomStatus = *ev.CustomStatus
				}
			}
		}
	}
	if errors.Is(res.Err, duroxide.ErrNondeterminism) {
		return res, fmt.Errorf("duroxidetest: %w", res.Err)
	}
	// The turns already replayed every prefix; this also checks the end.
	for i, h := range root.executions {
		if err := e.x.Replay(root.id, int64(i+1), h); err != nil {
			return res, fmt.Errorf("duroxidetest: replaying the recorded history: %w", err)
		}
	}
	return res, nil
}

func (e *Env) newInstance(id, name string) *instance {
	in := &instance{id: id, name: name, execID: 1, status: duroxide.StatusPending}
	e.instances[id] = in
	e.order = append(e.order, id)
	return in
}

func (e *Env) enqueue(w duroxide.WorkItem) {
	if in, ok := e.instances[w.Instance]; ok && !in.status.IsTerminal() {
		in.pending = append(in.pending, w)
	}
}

func (e *Env) schedule(at time.Time, run func()) *future {
	e.seq++
	f := &future{at: at, seq: e.seq, run: run}
	e.futures = append(e.futures, f)
	return f
}

// popDue removes the futures due at the earliest pending instant, in
// delivery order: results and timers first, then planned messages (events,
// cancellation), each in scheduling order. Their messages reach each
// instance as one batch, as a runtime fetches what is due together.
func (e *Env) popDue() []*future {
	live := e.futures[:0]
	for _, f := range e.futures {
		if !f.cancelled {
			live = append(live, f)
		}
	}
	e.futures = live
	if len(live) == 0 {
		return nil
	}
	sort.SliceStable(live, func(i, j int) bool {
		if !live[i].at.Equal(live[j].at) {
			return live[i].at.Before(live[j].at)
		}
		if live[i].late != live[j].late {
			return !live[i].late
		}
		return live[i].seq < live[j].seq
	})
	n := 1
	for n < len(live) && live[n].at.Equal(live[0].at) {
		n++
	}
	due := append([]*future(nil), live[:n]...)
	e.futures = live[n:]
	return due
}

// runPendingTurn runs one turn of the first instance with messages.
func (e *Env) runPendingTurn() (bool, error) {
	for _, id := range e.order {
		in := e.instances[id]
		if len(in.pending) == 0 || in.status.IsTerminal() {
			continue
		}
		msgs := in.pending
		in.pending = nil
		c, err := e.x.Turn(in.id, in.execID, in.history, msgs)
		if err != nil {
			return true, fmt.Errorf("duroxidetest: turn of %s: %w", in.id, err)
		}
		if len(in.history) == 0 {
			in.execID = c.ExecutionID
			in.executions = append(in.executions, nil)
		}
		in.history = append(in.history, c.HistoryDelta...)
		in.executions[len(in.executions)-1] = in.history
		in.status, in.output = c.Status, c.Output
		return true, e.apply(in, c)
	}
	return false, nil
}

// apply carries out a turn's side effects.
func (e *Env) apply(in *instance, c *duroxide.TurnCommit) error {
	byID := map[int64]*duroxide.Event{}
	for i := range c.HistoryDelta {
		byID[c.HistoryDelta[i].EventID] = &c.HistoryDelta[i]
	}
	for _, ref := range c.CancelledActivities {
		for _, call := range e.calls {
			if call.Kind == "activity" && call.Instance == ref.Instance && call.id == ref.ActivityID && call.exec == ref.ExecutionID && !call.Done {
				call.Cancelled, call.Done = true, true
				if call.f != nil {
					call.f.cancelled = true
				}
			}
		}
	}
	for _, w := range c.WorkerItems {
		if err := e.callActivity(in, w, byID[w.ID]); err != nil {
			return err
		}
	}
	for _, w := range c.OrchestratorItems {
		switch w.Kind {
		case duroxide.WorkTimerFired:
			w := w
			e.schedule(time.UnixMilli(w.FireAtMs), func() { e.enqueue(w) })
		case duroxide.WorkStartOrchestration:
			if w.ParentInstance == "" {
				e.detached = append(e.detached, Detached{Name: w.Name, Instance: w.Instance, Input: json.RawMessage(w.Input)})
				continue
			}
			if err := e.callSub(w, byID[w.ParentID]); err != nil {
				return err
			}
		case duroxide.WorkContinueAsNew:
			if in.id == e.instanceID && len(in.executions) >= e.maxExec {
				continue // the run ends here; Result.NextInput has the input
			}
			in.history, in.status = nil, duroxide.StatusPending
			in.pending = append(in.pending, w)
		case duroxide.WorkCancelInstance:
			if _, ok := e.instances[w.Instance]; ok {
				e.enqueue(w)
			} else {
				for _, call := range e.calls {
					if call.Kind == "sub-orchestration" && call.child == w.Instance && !call.Done {
						call.Cancelled, call.Done = true, true
						if call.f != nil {
							call.f.cancelled = true
						}
					}
				}
			}
		default: // sub-orchestration results for the parent
			for _, call := range e.calls {
				if call.Kind == "sub-orchestration" && call.child == in.id && !call.Done {
					call.Done = true
					if w.Kind == duroxide.WorkSubOrchCompleted {
						call.Result = json.RawMessage(w.Result)
					} else if w.Error != nil {
						call.Err = &duroxide.OrchestrationError{Instance: in.id, Details: *w.Error}
					}
				}
			}
			e.enqueue(w)
		}
	}
	return nil
}

func (e *Env) callActivity(in *instance, w duroxide.WorkItem, ev *duroxide.Event) error {
	m, ok := e.activities[w.Name]
	if !ok {
		return fmt.Errorf("duroxidetest: %s called activity %q, which is not mocked (Env.OnActivity)", in.id, w.Name)
	}
	call := &Call{Kind: "activity", Name: w.Name, Input: json.RawMessage(w.Input), At: e.Elapsed(), Instance: in.id, id: w.ID, exec: w.ExecutionID}
	if ev != nil {
		call.Attempt = ev.Attempt
	}
	e.calls = append(e.calls, call)
	out := m.next().run(context.Background(), w.Input)
	if out.hang {
		return nil
	}
	call.f = e.schedule(e.now.Add(out.delay), func() {
		call.Done = true
		comp := duroxide.WorkItem{Instance: w.Instance, ExecutionID: w.ExecutionID, ID: w.ID}
		if out.err != nil {
			call.Err = out.err
			comp.Kind, comp.Error = duroxide.WorkActivityFailed, duroxide.ErrorDetailsFromError(out.err)
		} else {
			call.Result = json.RawMessage(out.result)
			comp.Kind, comp.Result = duroxide.WorkActivityCompleted, out.result
		}
		e.enqueue(comp)
	})
	return nil
}

func (e *Env) callSub(w duroxide.WorkItem, ev *duroxide.Event) error {
	call := &Call{Kind: "sub-orchestration", Name: w.Name, Input: json.RawMessage(w.Input), At: e.Elapsed(), Instance: w.ParentInstance, child: w.Instance}
	if ev != nil {
		call.Attempt = ev.Attempt
	}
	e.calls = append(e.calls, call)
	reply := duroxide.WorkItem{Instance: w.ParentInstance, ExecutionID: w.ParentExecutionID, ID: w.ParentID}
	if m, ok := e.subs[w.Name]; ok {
		out := m.next().run(context.Background(), w.Input)
		if out.hang {
			return nil
		}
		call.f = e.schedule(e.now.Add(out.delay), func() {
			call.Done = true
			if out.err != nil {
				call.Err = out.err
				reply.Kind, reply.Error = duroxide.WorkSubOrchFailed, duroxide.ErrorDetailsFromError(out.err)
			} else {
				call.Result = json.RawMessage(out.result)
				reply.Kind, reply.Result = duroxide.WorkSubOrchCompleted, out.result
			}
			e.enqueue(reply)
		})
		return nil
	}
	if _, ok := e.reg.OrchestrationNames()[w.Name]; !ok {
		return fmt.Errorf("duroxidetest: %s called sub-orchestration %q, which is neither mocked (Env.OnSubOrchestration) nor registered", w.ParentInstance, w.Name)
	}
	if _, exists := e.instances[w.Instance]; exists {
		return nil // a duplicate start is ignored, as by a store
	}
	e.newInstance(w.Instance, w.Name)
	e.enqueue(w)
	return nil
}

// blocked describes a run that cannot progress.
func (e *Env) blocked(root *instance) error {
	var waits []string
	for _, ev := range root.history {
		if ev.Kind == duroxide.EventExternalSubscribed {
			waits = append(waits, ev.Name)
		}
	}
	var hanging []string
	for _, c := range e.calls {
		if !c.Done {
			hanging = append(hanging, c.String())
		}
	}
	msg := fmt.Sprintf("duroxidetest: the orchestration is blocked at +%v with nothing left to happen", e.Elapsed())
	if len(waits) > 0 {
		msg += "; it subscribed to events " + strings.Join(waits, ", ") + " (Env.RaiseEventAt)"
	}
	if len(hanging) > 0 {
		msg += "; calls that never finish: " + strings.Join(hanging, ", ")
	}
	return errors.New(msg)
}
