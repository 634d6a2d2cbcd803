package duroxide

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"
)

// Executor runs orchestration turns in memory, without a store or a
// runtime: the same engine the Runtime uses, driven by the caller. Test kits
// (duroxide/duroxidetest) and replay checkers build on it; applications use
// Runtime.
//
// Every call replays the given history from its first event in a fresh
// engine, exactly as a runtime does after a restart, so a program that runs
// on an Executor exercises replay on every turn.
type Executor struct {
	rt    *Runtime
	clock func() time.Time
}

// ExecutorOptions configures an Executor.
type ExecutorOptions struct {
	// Logger receives orchestration logs (nil: discarded).
	Logger *slog.Logger
	// Clock is the wall clock for event timestamps, timer deadlines and
	// UtcNow (nil: time.Now). Test kits pass a virtual clock.
	Clock func() time.Time
	// ChangeVersions pins the versions GetVersion records, as
	// Options.ChangeVersions does for a Runtime.
	ChangeVersions map[string]int
}

// NewExecutor returns an Executor over the registered orchestrations.
func NewExecutor(reg *Registry, opts ExecutorOptions) *Executor {
	if opts.Logger == nil {
		opts.Logger = slog.New(discardHandler{})
	}
	rt := &Runtime{reg: reg, logger: opts.Logger, opts: Options{ChangeVersions: maps.Clone(opts.ChangeVersions)}}
	return &Executor{rt: rt, clock: opts.Clock}
}

// Turn runs one turn of an instance as a runtime would: it replays history
// (the instance's current execution; empty to start a new execution), applies
// msgs and returns what the runtime would commit. A new execution needs a
// WorkStartOrchestration message (execution 1) or a WorkContinueAsNew
// message (execution ExecutionID+1) among msgs; executionID is ignored then.
// Nondeterminism is not an error here: the commit fails the instance, as in
// a runtime. Errors mean the turn could not run at all (no start message,
// orchestration not registered).
func (x *Executor) Turn(instance string, executionID int64, history []Event, msgs []WorkItem) (*TurnCommit, error) {
	var eng *engine
	if len(history) == 0 {
		var start *WorkItem
		execID := int64(1)
		for i := range msgs {
			if msgs[i].Kind == WorkStartOrchestration {
				start = &msgs[i]
				break
			}
			if msgs[i].Kind == WorkContinueAsNew {
				start, execID = &msgs[i], msgs[i].ExecutionID+1
				break
			}
		}
		if start == nil {
			return nil, fmt.Errorf("duroxide: executor: instance %s has no history and no start message", instance)
		}
		fn, version, ok := x.rt.reg.orchestration(start.Name, start.Version)
		if !ok {
			return nil, fmt.Errorf("duroxide: executor: orchestration %s (version %q) is not registered", start.Name, start.Version)
		}
		eng = x.newEngine(instance, execID, fn)
		eng.beginTurn()
		started := Event{Kind: EventOrchestrationStarted, Name: start.Name, Version: version, Input: start.Input,
			ParentInstance: start.ParentInstance, ParentExecutionID: start.ParentExecutionID, ParentID: start.ParentID}
		if start.Kind == WorkContinueAsNew {
			started.CarryForward, started.CustomStatus = start.CarryForward, start.CustomStatus
		}
		eng.record(started)
		for i := range msgs {
			if &msgs[i] != start {
				eng.applyMessage(&msgs[i])
			}
		}
	} else {
		fn, err := x.lookup(history)
		if err != nil {
			return nil, err
		}
		eng = x.newEngine(instance, executionID, fn)
		eng.replay(history)
		eng.beginTurn()
		for i := range msgs {
			eng.applyMessage(&msgs[i])
		}
	}
	defer eng.close()
	eng.flush()
	return eng.commit(), nil
}

func (x *Executor) newEngine(instance string, execID int64, fn orchFunc) *engine {
	e := newEngine(x.rt, instance, execID, fn)
	e.clock = x.clock
	return e
}

func (x *Executor) lookup(history []Event) (orchFunc, error) {
	if len(history) == 0 || history[0].Kind != EventOrchestrationStarted {
		return nil, errors.New("duroxide: history does not begin with OrchestrationStarted")
	}
	name, version := history[0].Name, history[0].Version
	fn, _, ok := x.rt.reg.orchestration(name, version)
	if !ok {
		return nil, fmt.Errorf("duroxide: orchestration %s version %q is not registered", name, version)
	}
	return fn, nil
}

// NondeterminismError reports that today's code cannot replay a recorded
// history. It matches ErrNondeterminism.
type NondeterminismError struct {
	Instance string
	Message  string
}

func (e *NondeterminismError) Error() string {
	return fmt.Sprintf("instance %s: %s", e.Instance, e.Message)
}

// Is matches ErrNondeterminism.
func (e *NondeterminismError) Is(target error) bool { return target == ErrNondeterminism }

// Replay runs a recorded execution history (as Client.ReadHistory returns
// it) through the registered code and reports whether the code still
// produces it. It is the check to run on recorded histories before
// deploying a change to an orchestration. It returns a *NondeterminismError
// when the code schedules something other than history records, and, for a
// finished execution, when the code does not finish the same way (complete,
// continue as new, fail). An unfinished history replays if the code agrees
// with all of it; what the code would do next is not checked. Activities
// are not run and no time passes. instance and executionID are what the
// code sees as ctx.InstanceID and ctx.ExecutionID.
func (x *Executor) Replay(instance string, executionID int64, history []Event) error {
	fn, err := x.lookup(history)
	if err != nil {
		return err
	}
	eng := x.newEngine(instance, executionID, fn)
	eng.strict = true
	defer eng.close()
	eng.replay(history)
	nd := func(format string, args ...any) error {
		return &NondeterminismError{Instance: instance, Message: "nondeterministic: " + fmt.Sprintf(format, args...)}
	}
	if d := eng.failure; d != nil && d.Category == CategoryConfiguration && strings.HasPrefix(d.Message, "nondeterministic") {
		return &NondeterminismError{Instance: instance, Message: d.Message}
	}
	last := history[len(history)-1]
	if !last.Kind.IsTerminal() {
		return nil
	}
	// Markers still pending at the end were never recorded: the execution
	// finished before the change existed.
	eng.skipAbsentMarkers(&last)
	if d := eng.failure; d != nil && d.Category == CategoryConfiguration && strings.HasPrefix(d.Message, "nondeterministic") {
		return &NondeterminismError{Instance: instance, Message: d.Message}
	}
	if last.Kind == EventOrchestrationFailed && last.Error != nil && last.Error.Category != CategoryApplication {
		// Cancelled, poisoned or failed by the engine: the code did not
		// decide the outcome, so there is nothing more to compare.
		return nil
	}
	if !eng.finished {
		if len(eng.emitted) > 0 {
			return nd("history ends with %s at event %d, but the code goes on to schedule %s", last.Kind, last.EventID, describeEvent(&eng.emitted[0].ev))
		}
		return nd("history ends with %s at event %d, but the code is still waiting", last.Kind, last.EventID)
	}
	var can *continueAsNewError
	got := EventOrchestrationCompleted
	switch {
	case eng.panicMsg != "":
		got = EventOrchestrationFailed
	case errors.As(eng.outErr, &can):
		got = EventOrchestrationContinuedAsNew
	case eng.outErr != nil:
		got = EventOrchestrationFailed
	}
	if got != last.Kind {
		return nd("history ends with %s at event %d, but the code ends with %s", last.Kind, last.EventID, got)
	}
	return nil
}

// discardHandler drops every log record.
type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (h discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h discardHandler) WithGroup(string) slog.Handler           { return h }

// ErrorDetailsFromError converts an activity's error into the durable form a
// runtime records for it (category, Go type, JSON payload, NonRetryable,
// Timeout). Test kits use it to fail mocked activities exactly as real ones.
func ErrorDetailsFromError(err error) *ErrorDetails { return detailsFromError(err) }
