package duroxide

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// OrchestrationContext is what orchestration code uses to schedule work. All
// of its methods are deterministic: on replay they return what they returned
// the first time. Orchestration code must do all I/O through activities and
// must not use goroutines, time.Now, random numbers or maps with
// order-dependent results outside of what the context offers.
type OrchestrationContext struct {
	e      *engine
	logger *slog.Logger
}

// InstanceID is the id of the running instance.
func (c *OrchestrationContext) InstanceID() string { return c.e.instance }

// ExecutionID is the 1-based execution number (continue-as-new starts a new one).
func (c *OrchestrationContext) ExecutionID() int64 { return c.e.executionID }

// Name is the orchestration's registered name.
func (c *OrchestrationContext) Name() string { return c.e.name }

// Version is the orchestration version this instance runs.
func (c *OrchestrationContext) Version() string { return c.e.version }

// IsReplaying reports whether the code is re-running recorded history.
func (c *OrchestrationContext) IsReplaying() bool { return c.e.replaying }

// Now is the deterministic current time: the timestamp of the latest history
// event the orchestration has seen. It only moves forward.
func (c *OrchestrationContext) Now() time.Time { return time.UnixMilli(c.e.nowMs) }

// Logger returns a logger tagged with the instance that drops records while
// the orchestration replays, so each line is written once.
func (c *OrchestrationContext) Logger() *slog.Logger {
	if c.logger == nil {
		c.logger = slog.New(&replayHandler{inner: c.e.rt.logger.Handler(), e: c.e}).With(
			"instance_id", c.e.instance, "execution_id", c.e.executionID, "orchestration", c.e.name)
	}
	return c.logger
}

// CallActivity schedules an activity. input is JSON-encoded. An activity
// registered with a default retry policy (WithDefaultRetry, or
// Options.RetryPolicies) runs under it, as with CallActivityWithRetry; the
// policy is recorded when the call is first scheduled, and the call keeps
// following that record on replay. CallActivityWithRetry(name, input,
// NoRetry()) makes one attempt whatever the default.
func (c *OrchestrationContext) CallActivity(name string, input any) *Task {
	in, err := encodePayload(input)
	t := c.e.newTask(taskActivity, name)
	if err != nil {
		t.resolve("", fmt.Errorf("activity %s: %w", name, err))
		return t
	}
	c.e.emit(&action{ev: Event{Kind: EventActivityScheduled, Name: name, Input: in}, task: t, defaultRetry: true})
	return t
}

// CreateTimer schedules a durable timer that fires after d.
func (c *OrchestrationContext) CreateTimer(d time.Duration) *Task {
	if d < 0 {
		d = 0
	}
	t := c.e.newTask(taskTimer, "timer")
	c.e.emit(&action{ev: Event{Kind: EventTimerCreated, Purpose: TimerUser}, task: t, delay: d})
	return t
}

// Sleep waits for a durable timer of duration d.
func (c *OrchestrationContext) Sleep(d time.Duration) error { return c.CreateTimer(d).Await(nil) }

// WaitForEvent waits for the next external event with this name. Events
// raised before the wait are buffered and delivered in arrival order; events
// not consumed when the orchestration continues as new are carried over.
func (c *OrchestrationContext) WaitForEvent(name string) *Task {
	t := c.e.newTask(taskExternal, name)
	c.e.emit(&action{ev: Event{Kind: EventExternalSubscribed, Name: name}, task: t})
	c.e.subscribe(t)
	return t
}

// SubOrchestrationOption configures CallSubOrchestration and StartOrchestration.
type SubOrchestrationOption func(*subConfig)

type subConfig struct{ instance, version string }

// WithInstanceID gives a sub-orchestration an explicit instance id (used as
// is). Without it the id is "<parent>::sub::<event id>".
func WithInstanceID(id string) SubOrchestrationOption { return func(c *subConfig) { c.instance = id } }

// WithSubVersion starts a sub-orchestration on a specific registered version.
func WithSubVersion(v string) SubOrchestrationOption { return func(c *subConfig) { c.version = v } }

// CallSubOrchestration starts a child orchestration and returns a task for its result.
func (c *OrchestrationContext) CallSubOrchestration(name string, input any, opts ...SubOrchestrationOption) *Task {
	var cfg subConfig
	for _, o := range opts {
		o(&cfg)
	}
	t := c.e.newTask(taskSubOrch, name)
	in, err := encodePayload(input)
	if err != nil {
		t.resolve("", fmt.Errorf("sub-orchestration %s: %w", name, err))
		return t
	}
	c.e.emit(&action{ev: Event{Kind: EventSubOrchestrationScheduled, Name: name, Version: cfg.version, Input: in, Instance: cfg.instance}, task: t})
	return t
}

// StartOrchestration starts a detached (fire-and-forget) orchestration with
// the given instance id. It is not linked to this one: it is not cancelled
// with it and reports nothing back. Starting an id that exists is a no-op.
func (c *OrchestrationContext) StartOrchestration(name, instanceID string, input any, opts ...SubOrchestrationOption) error {
	var cfg subConfig
	for _, o := range opts {
		o(&cfg)
	}
	if instanceID == "" {
		return fmt.Errorf("start orchestration %s: empty instance id", name)
	}
	in, err := encodePayload(input)
	if err != nil {
		return fmt.Errorf("start orchestration %s: %w", name, err)
	}
	c.e.emit(&action{ev: Event{Kind: EventOrchestrationChained, Name: name, Version: cfg.version, Instance: instanceID, Input: in}})
	return nil
}

// ContinueAsNew ends this execution and starts a new one of the same
// instance with a fresh history and the given input. Use it as the return
// value: return zero, ctx.ContinueAsNew(next). Unconsumed external events and
// the custom status are carried over. The new execution runs the latest
// registered version unless WithSubVersion is given.
func (c *OrchestrationContext) ContinueAsNew(input any, opts ...SubOrchestrationOption) error {
	var cfg subConfig
	for _, o := range opts {
		o(&cfg)
	}
	in, err := encodePayload(input)
	if err != nil {
		return fmt.Errorf("continue as new: %w", err)
	}
	return &continueAsNewError{input: in, version: cfg.version}
}

type continueAsNewError struct{ input, version string }

func (e *continueAsNewError) Error() string { return "continue as new" }

// SetCustomStatus publishes a status string that clients can read while the
// orchestration runs (last write wins; at most 256 KiB).
func (c *OrchestrationContext) SetCustomStatus(status string) {
	s := status
	c.e.customStat = &s
	c.e.emit(&action{ev: Event{Kind: EventCustomStatusUpdated, CustomStatus: &s}})
}

// ClearCustomStatus removes the custom status.
func (c *OrchestrationContext) ClearCustomStatus() {
	c.e.customStat = nil
	c.e.emit(&action{ev: Event{Kind: EventCustomStatusUpdated}})
}

// CustomStatus returns the current custom status.
func (c *OrchestrationContext) CustomStatus() (string, bool) {
	if c.e.customStat == nil {
		return "", false
	}
	return *c.e.customStat, true
}

// UtcNow returns the wall-clock time, recorded in history on first execution.
func (c *OrchestrationContext) UtcNow() time.Time {
	t := c.e.newTask(taskSysCall, "utc_now")
	c.e.emit(&action{ev: Event{Kind: EventSystemCall, Name: "utc_now"}, task: t,
		sysFn: func() string { return strconv.FormatInt(c.e.wallMs(), 10) }})
	c.e.block(func() bool { return t.done })
	ms, _ := strconv.ParseInt(t.result, 10, 64)
	return time.UnixMilli(ms).UTC()
}

// VersionBeforeChange is what GetVersion returns to an execution that passed
// the change point before the change was deployed (its history has no marker).
const VersionBeforeChange = 0

// GetVersion makes a code change safe for instances already in flight. Put
// it where the code changes and branch on its result:
//
//	if ctx.GetVersion("deploy-with-dns", duroxide.VersionBeforeChange, 1) == 1 {
//		// new code
//	} else {
//		// code as it was
//	}
//
// An execution that reaches the call for the first time records maxSupported
// in history (a VersionMarker event) and gets it back on every replay;
// when Options.ChangeVersions (ExecutorOptions.ChangeVersions) pins the
// change id, it records min(pin, maxSupported) instead. A pin below
// minSupported fails the execution (a configuration error) when it would be
// recorded; a pin never alters a version already in history. An
// execution whose history passed this point before the call existed gets
// VersionBeforeChange, so it replays the old branch. A recorded (or implied)
// version outside [minSupported, maxSupported] means the code can no longer
// run this history: the instance fails as nondeterministic. Once no instance
// older than the change remains, raise minSupported to drop the old branch.
// changeID must be unique within the orchestration and never reused.
func (c *OrchestrationContext) GetVersion(changeID string, minSupported, maxSupported int) int {
	if changeID == "" || minSupported > maxSupported {
		panic(fmt.Sprintf("duroxide: GetVersion(%q, %d, %d): need a change id and min ≤ max", changeID, minSupported, maxSupported))
	}
	t := c.e.newTask(taskSysCall, changeID)
	record := maxSupported
	pin, pinned := c.e.rt.opts.ChangeVersions[changeID]
	if pinned {
		record = min(pin, maxSupported)
	}
	recorded := false // set when this call records the marker (not replayed from history)
	c.e.emit(&action{ev: Event{Kind: EventVersionMarker, Name: changeID}, task: t, sysFn: func() string {
		recorded = true
		return strconv.Itoa(record)
	}})
	c.e.block(func() bool { return t.done })
	v, err := strconv.Atoi(t.result)
	if recorded && pinned && pin < minSupported {
		c.e.fail(&ErrorDetails{Category: CategoryConfiguration, Message: fmt.Sprintf(
			"change %q: ChangeVersions pins version %d, below the oldest the code supports (%d)", changeID, pin, minSupported)})
		c.e.block(func() bool { return false })
	}
	if err != nil || v < minSupported || v > maxSupported {
		c.e.nondeterministic("change %q: history has version %q, the code supports %d to %d", changeID, t.result, minSupported, maxSupported)
		c.e.block(func() bool { return false })
	}
	return v
}

// NewGUID returns a random UUID (version 4), recorded in history.
func (c *OrchestrationContext) NewGUID() string {
	t := c.e.newTask(taskSysCall, "new_guid")
	c.e.emit(&action{ev: Event{Kind: EventSystemCall, Name: "new_guid"}, task: t, sysFn: newGUID})
	c.e.block(func() bool { return t.done })
	return t.result
}

// Select waits until at least one of the tasks is done and returns the index
// of the winner: the lowest index among those done. Every other task is
// cancelled: an activity is withdrawn from the queue (its context is
// cancelled if it is running, and a late result is ignored), a
// sub-orchestration is cancelled, a wait for an event stops consuming
// events, a timer is forgotten. The decision is recorded, so replay makes
// the same one.
func (c *OrchestrationContext) Select(tasks ...*Task) int {
	if len(tasks) == 0 {
		panic("duroxide: Select needs at least one task")
	}
	c.e.block(func() bool {
		for _, t := range tasks {
			if t.done {
				return true
			}
		}
		return false
	})
	winner := -1
	for i, t := range tasks {
		if t.done && winner < 0 {
			winner = i
		}
	}
	for i, t := range tasks {
		if i != winner {
			c.e.cancelTask(t, "select loser")
		}
	}
	return winner
}

// Join waits until every task is done. Read each result with Await; Join
// returns the first error among them in argument order, or nil.
func (c *OrchestrationContext) Join(tasks ...*Task) error {
	c.e.block(func() bool {
		for _, t := range tasks {
			if !t.done {
				return false
			}
		}
		return true
	})
	for _, t := range tasks {
		if t.err != nil {
			return t.err
		}
	}
	return nil
}

// Cancel withdraws interest in a pending task, as a select loser would be.
func (c *OrchestrationContext) Cancel(t *Task) { c.e.cancelTask(t, "cancelled by orchestration") }

// replayHandler drops log records while the orchestration replays, and
// logs the others in the execution's trace (see engine.logContext).
type replayHandler struct {
	inner slog.Handler
	e     *engine
}

func (h *replayHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !h.e.replaying && h.inner.Enabled(ctx, l)
}
func (h *replayHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.e.replaying {
		return nil
	}
	return h.inner.Handle(h.e.logContext(ctx), r)
}
func (h *replayHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &replayHandler{inner: h.inner.WithAttrs(a), e: h.e}
}
func (h *replayHandler) WithGroup(n string) slog.Handler {
	return &replayHandler{inner: h.inner.WithGroup(n), e: h.e}
}
