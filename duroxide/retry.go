package duroxide

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"time"
)

// Backoff computes the wait before a retry. The implementations are
// NoBackoff, Fixed, Linear and Exponential; RetryPolicy.DelayForAttempt
// evaluates them.
type Backoff interface {
	// delay is the wait after failed attempt k (1-based).
	delay(k int) time.Duration
	validate() error
}

// NoBackoff retries at once.
type NoBackoff struct{}

// Fixed waits Delay before every retry.
type Fixed struct{ Delay time.Duration }

// Linear waits Base·k after attempt k, at most Max (0: no cap).
type Linear struct{ Base, Max time.Duration }

// Exponential waits Base·Multiplier^(k−1) after attempt k, at most Max (0: no cap).
type Exponential struct {
	Base       time.Duration
	Multiplier float64
	Max        time.Duration
}

func (NoBackoff) delay(int) time.Duration { return 0 }
func (NoBackoff) validate() error         { return nil }

func (b Fixed) delay(int) time.Duration { return b.Delay }
func (b Fixed) validate() error {
	if b.Delay < 0 {
		return fmt.Errorf("fixed delay %v is negative", b.Delay)
	}
	return nil
}

func (b Linear) delay(k int) time.Duration {
	if k < 1 {
		k = 1
	}
	var d time.Duration
	if b.Base > 0 && time.Duration(k) > math.MaxInt64/b.Base {
		d = math.MaxInt64
	} else {
		d = b.Base * time.Duration(k)
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	return d
}
func (b Linear) validate() error {
	if b.Base < 0 || b.Max < 0 {
		return fmt.Errorf("linear backoff durations must not be negative (base %v, max %v)", b.Base, b.Max)
	}
	return nil
}

// delay saturates instead of overflowing.
func (b Exponential) delay(k int) time.Duration {
	if k < 1 {
		k = 1
	}
	f := float64(b.Base) * math.Pow(b.Multiplier, float64(k-1))
	var d time.Duration
	switch {
	case math.IsNaN(f) || f <= 0:
		d = 0
	case f >= math.MaxInt64:
		d = math.MaxInt64
	default:
		d = time.Duration(f)
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	return d
}
func (b Exponential) validate() error {
	if b.Base < 0 || b.Max < 0 {
		return fmt.Errorf("exponential backoff durations must not be negative (base %v, max %v)", b.Base, b.Max)
	}
	if math.IsNaN(b.Multiplier) || math.IsInf(b.Multiplier, 0) || b.Multiplier < 1 {
		return fmt.Errorf("exponential backoff multiplier %v must be a finite number ≥ 1", b.Multiplier)
	}
	return nil
}

// RetryPolicy says how often and how patiently to retry an activity or a
// sub-orchestration. Each attempt is recorded in history as its own
// schedule and each wait is a durable timer, so a retry sequence survives
// crashes and restarts exactly where it was.
//
// Build one with NewRetryPolicy and the With methods; policies are values
// and the methods return modified copies.
type RetryPolicy struct {
	MaxAttempts int
	Backoff     Backoff
	// Timeout bounds each attempt (0: none). A timed-out attempt is cancelled
	// and counts as a failed attempt.
	Timeout time.Duration
	// TotalTimeout bounds the whole sequence, waits included (0: none).
	TotalTimeout time.Duration
	// Jitter spreads each wait uniformly by ±Jitter·wait (0 ≤ Jitter ≤ 1),
	// deterministically per instance and attempt so replay sees the same wait.
	Jitter float64
	// RetryIf, when set, decides whether a failed attempt may be retried.
	RetryIf func(error) bool
	// TimeoutEndsSequence restores the Rust runtime's behaviour: a timed-out
	// attempt ends the sequence at once instead of being retried.
	TimeoutEndsSequence bool
	// Name labels the policy in history (Event.Policy) so readers can tell
	// which policy a retry ran under; optional.
	Name string
}

// WithName labels the policy in history.
func (p RetryPolicy) WithName(name string) RetryPolicy { p.Name = name; return p }

// Summary is the policy as recorded in history: its name (if any), then
// attempts, backoff and timeouts, e.g. "cms: 5 attempts, exponential 500ms×2
// max 5s, 30s per attempt".
func (p RetryPolicy) Summary() string {
	// Built with strconv, not fmt: it is recorded at every retry
	// sequence's start and end.
	b := make([]byte, 0, 64)
	if p.Name != "" {
		b = append(append(b, p.Name...), ": "...)
	}
	b = append(strconv.AppendInt(b, int64(p.MaxAttempts), 10), " attempts"...)
	dur := func(prefix string, d time.Duration) { b = append(append(b, prefix...), d.String()...) }
	switch bo := p.Backoff.(type) {
	case nil, NoBackoff:
		b = append(b, ", no backoff"...)
	case Fixed:
		dur(", fixed ", bo.Delay)
	case Linear:
		dur(", linear ", bo.Base)
		if bo.Max > 0 {
			dur(" max ", bo.Max)
		}
	case Exponential:
		dur(", exponential ", bo.Base)
		b = strconv.AppendFloat(append(b, "×"...), bo.Multiplier, 'g', -1, 64)
		if bo.Max > 0 {
			dur(" max ", bo.Max)
		}
	}
	if p.Jitter > 0 {
		b = append(strconv.AppendFloat(append(b, " ±"...), p.Jitter*100, 'g', 3, 64), '%')
	}
	if p.Timeout > 0 {
		dur(", ", p.Timeout)
		b = append(b, " per attempt"...)
	}
	if p.TotalTimeout > 0 {
		dur(", ", p.TotalTimeout)
		b = append(b, " in total"...)
	}
	return string(b)
}

// NewRetryPolicy returns a policy of maxAttempts attempts with exponential
// backoff (100ms, ×2, at most 30s) and no timeouts.
func NewRetryPolicy(maxAttempts int) RetryPolicy {
	return RetryPolicy{MaxAttempts: maxAttempts, Backoff: Exponential{Base: 100 * time.Millisecond, Multiplier: 2, Max: 30 * time.Second}}
}

// WithBackoff sets the backoff strategy.
func (p RetryPolicy) WithBackoff(b Backoff) RetryPolicy { p.Backoff = b; return p }

// WithTimeout sets the per-attempt timeout.
func (p RetryPolicy) WithTimeout(d time.Duration) RetryPolicy { p.Timeout = d; return p }

// WithTotalTimeout bounds the whole sequence.
func (p RetryPolicy) WithTotalTimeout(d time.Duration) RetryPolicy { p.TotalTimeout = d; return p }

// WithJitter sets the jitter fraction (0..1).
func (p RetryPolicy) WithJitter(fraction float64) RetryPolicy { p.Jitter = fraction; return p }

// WithRetryIf sets the retry predicate. It sees the attempt's error (a
// *TaskError whose errors.As rebuilds the activity's own error type).
func (p RetryPolicy) WithRetryIf(f func(error) bool) RetryPolicy { p.RetryIf = f; return p }

// WithTimeoutEndsSequence makes a per-attempt timeout final (the Rust
// runtime's behaviour) instead of retrying it.
func (p RetryPolicy) WithTimeoutEndsSequence() RetryPolicy { p.TimeoutEndsSequence = true; return p }

// DelayForAttempt is the wait after failed attempt k (1-based), before jitter.
func (p RetryPolicy) DelayForAttempt(k int) time.Duration {
	if p.Backoff == nil {
		return 0
	}
	return p.Backoff.delay(k)
}

// Validate reports why a policy cannot be used; errors match ErrInvalidPolicy.
func (p RetryPolicy) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidPolicy, fmt.Sprintf(format, args...))
	}
	if p.MaxAttempts < 1 {
		return bad("max attempts must be at least 1, got %d", p.MaxAttempts)
	}
	if p.Timeout < 0 {
		return bad("timeout %v is negative", p.Timeout)
	}
	if p.TotalTimeout < 0 {
		return bad("total timeout %v is negative", p.TotalTimeout)
	}
	if math.IsNaN(p.Jitter) || p.Jitter < 0 || p.Jitter > 1 {
		return bad("jitter %v must be between 0 and 1", p.Jitter)
	}
	if p.Backoff != nil {
		if err := p.Backoff.validate(); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}

// NoRetry is the policy of exactly one attempt. Pass it to
// CallActivityWithRetry to call an activity registered with a default retry
// policy (WithDefaultRetry) without retrying it.
func NoRetry() RetryPolicy { return RetryPolicy{MaxAttempts: 1, Name: "no retry"} }

// PolicyRecord is the durable form of a RetryPolicy: the first schedule
// event of a retry sequence records the policy it starts under
// (Event.RetryPolicy), so a sequence started under an activity's registered
// default keeps following it after a restart with a different default.
// Durations are in nanoseconds. RetryIf, a function, is not recorded.
type PolicyRecord struct {
	Name        string `json:"name,omitempty"`
	MaxAttempts int    `json:"max_attempts"`
	// Backoff is "none", "fixed", "linear" or "exponential"; Base is the
	// fixed delay or the linear/exponential base.
	Backoff             string        `json:"backoff,omitempty"`
	Base                time.Duration `json:"base_ns,omitempty"`
	Multiplier          float64       `json:"multiplier,omitempty"`
	Max                 time.Duration `json:"max_ns,omitempty"`
	Timeout             time.Duration `json:"timeout_ns,omitempty"`
	TotalTimeout        time.Duration `json:"total_timeout_ns,omitempty"`
	Jitter              float64       `json:"jitter,omitempty"`
	TimeoutEndsSequence bool          `json:"timeout_ends_sequence,omitempty"`
	// Source is "call" for a policy passed by the call, "default" for an
	// activity's registered (or Options.RetryPolicies) default.
	Source string `json:"source,omitempty"`
}

// Record returns the durable form of the policy (without RetryIf).
func (p RetryPolicy) Record() *PolicyRecord {
	r := &PolicyRecord{Name: p.Name, MaxAttempts: p.MaxAttempts, Timeout: p.Timeout, TotalTimeout: p.TotalTimeout,
		Jitter: p.Jitter, TimeoutEndsSequence: p.TimeoutEndsSequence, Backoff: "none"}
	switch b := p.Backoff.(type) {
	case Fixed:
		r.Backoff, r.Base = "fixed", b.Delay
	case Linear:
		r.Backoff, r.Base, r.Max = "linear", b.Base, b.Max
	case Exponential:
		r.Backoff, r.Base, r.Multiplier, r.Max = "exponential", b.Base, b.Multiplier, b.Max
	}
	return r
}

// Policy rebuilds the recorded policy (RetryIf unset).
func (r *PolicyRecord) Policy() RetryPolicy {
	p := RetryPolicy{Name: r.Name, MaxAttempts: r.MaxAttempts, Timeout: r.Timeout, TotalTimeout: r.TotalTimeout,
		Jitter: r.Jitter, TimeoutEndsSequence: r.TimeoutEndsSequence}
	switch r.Backoff {
	case "fixed":
		p.Backoff = Fixed{Delay: r.Base}
	case "linear":
		p.Backoff = Linear{Base: r.Base, Max: r.Max}
	case "exponential":
		p.Backoff = Exponential{Base: r.Base, Multiplier: r.Multiplier, Max: r.Max}
	default:
		p.Backoff = NoBackoff{}
	}
	return p
}

// CallActivityWithRetry schedules an activity under a retry policy. It
// returns one Task for the whole sequence, which can be awaited or raced in
// Select like any other; cancelling it cancels the attempt in flight. When
// every attempt fails, the error is the last attempt's, wrapped with the
// activity name and the attempt count (a *TaskError); errors.Is(err,
// ErrTimeout) holds if that attempt timed out. The policy overrides the
// activity's registered default (WithDefaultRetry); NoRetry() makes one
// attempt.
func (c *OrchestrationContext) CallActivityWithRetry(name string, input any, policy RetryPolicy) *Task {
	in, err := encodePayload(input)
	if err != nil {
		t := c.e.newTask(taskComposite, name)
		t.resolve("", fmt.Errorf("activity %s: %w", name, err))
		return t
	}
	return c.e.retrySequence("activity", name, policy, c.e.activityAttempts(name, in, policy, "call"))
}

// activityAttempts returns the schedule function of an activity's retry
// sequence; attempt 1 records the policy.
func (e *engine) activityAttempts(name, in string, policy RetryPolicy, source string) func(int) *Task {
	summary := policy.Summary()
	return func(attempt int) *Task {
		t := e.newTask(taskActivity, name)
		ev := Event{Kind: EventActivityScheduled, Name: name, Input: in, Attempt: attempt, MaxAttempts: policy.MaxAttempts, Policy: summary}
		if attempt == 1 {
			ev.RetryPolicy = policy.Record()
			ev.RetryPolicy.Source = source
		}
		e.emit(&action{ev: ev, task: t})
		return t
	}
}

// defaultRetry is the default policy of an activity: Options.RetryPolicies,
// else its registration's.
func (rt *Runtime) defaultRetry(name string) (RetryPolicy, bool) {
	if p, ok := rt.opts.RetryPolicies[name]; ok {
		return p, true
	}
	return rt.reg.DefaultRetry(name)
}

// prepareDefaultRetry fills in the retry detail of a plain CallActivity's
// schedule event being recorded now: the activity's default policy, if it
// has one, which the sequence then follows (adoptDefaultRetry).
func (e *engine) prepareDefaultRetry(ev *Event) {
	p, ok := e.rt.defaultRetry(ev.Name)
	if !ok {
		return
	}
	ev.Attempt, ev.MaxAttempts, ev.Policy = 1, p.MaxAttempts, p.Summary()
	ev.RetryPolicy = p.Record()
	ev.RetryPolicy.Source = "default"
}

// adoptDefaultRetry turns a plain CallActivity whose schedule event ev
// (just recorded, or found in history) started a retry sequence into that
// sequence, following the policy recorded on ev, not today's default. A
// schedule without retry detail stays a plain call. It runs when the
// schedule is bound, so the sequence's timers take the place right after
// the schedule, before whatever the code emitted later.
func (e *engine) adoptDefaultRetry(a *action, ev *Event) {
	outer := a.task
	if ev.Attempt == 0 || outer.cancelled || outer.done || e.failure != nil {
		return
	}
	cur, hasCur := e.rt.defaultRetry(ev.Name)
	var p RetryPolicy
	switch {
	case ev.RetryPolicy != nil:
		p = ev.RetryPolicy.Policy()
	case hasCur:
		p = cur
		p.MaxAttempts = max(ev.MaxAttempts, 1)
	default:
		p = RetryPolicy{MaxAttempts: max(ev.MaxAttempts, 1)}
	}
	if hasCur {
		p.RetryIf = cur.RetryIf
	}
	first := e.newTask(taskActivity, ev.Name)
	first.id = ev.EventID
	e.open[ev.EventID] = first
	outer.id, outer.kind = 0, taskComposite
	later := e.emitted
	e.emitted = nil
	s := e.newRetrySeq("activity", ev.Name, p, e.activityAttempts(ev.Name, ev.Input, p, "default"), outer)
	s.armTotal()
	s.attempt = 1
	s.watch(first)
	e.emitted = append(e.emitted, later...)
}

// CallSubOrchestrationWithRetry starts a sub-orchestration under a retry
// policy: each attempt is a new child instance (with WithInstanceID, attempt
// k > 1 uses "<id>::attempt-<k>").
func (c *OrchestrationContext) CallSubOrchestrationWithRetry(name string, input any, policy RetryPolicy, opts ...SubOrchestrationOption) *Task {
	var cfg subConfig
	for _, o := range opts {
		o(&cfg)
	}
	in, err := encodePayload(input)
	if err != nil {
		t := c.e.newTask(taskComposite, name)
		t.resolve("", fmt.Errorf("sub-orchestration %s: %w", name, err))
		return t
	}
	summary := policy.Summary()
	return c.e.retrySequence("sub-orchestration", name, policy, func(attempt int) *Task {
		t := c.e.newTask(taskSubOrch, name)
		id := cfg.instance
		if id != "" && attempt > 1 {
			id += "::attempt-" + strconv.Itoa(attempt)
		}
		c.e.emit(&action{ev: Event{Kind: EventSubOrchestrationScheduled, Name: name, Version: cfg.version, Input: in, Instance: id,
			Attempt: attempt, MaxAttempts: policy.MaxAttempts, Policy: summary}, task: t})
		return t
	})
}

// CallActivityWithRetryTyped runs an activity under a retry policy and
// decodes its result.
func CallActivityWithRetryTyped[Out any](c *OrchestrationContext, name string, input any, policy RetryPolicy) (Out, error) {
	return Await[Out](c.CallActivityWithRetry(name, input, policy))
}

// CallActivityTyped runs an activity and decodes its result (under the
// activity's default retry policy, if it has one).
func CallActivityTyped[Out any](c *OrchestrationContext, name string, input any) (Out, error) {
	return Await[Out](c.CallActivity(name, input))
}

// retrySeq drives a retry policy. It runs entirely in task callbacks,
// which the engine invokes in history order, so the actions it emits are
// the same on every replay.
type retrySeq struct {
	e        *engine
	kind     string
	name     string
	p        RetryPolicy
	schedule func(attempt int) *Task
	outer    *Task

	attempt  int
	current  *Task // attempt in flight
	deadline *Task // its timeout timer
	backoff  *Task // wait in progress
	total    *Task // whole-sequence timer
	finished bool
	startMs  int64 // deterministic time the sequence started
}

// retrySequence starts a retry sequence whose attempts schedule emits.
func (e *engine) retrySequence(kind, name string, p RetryPolicy, schedule func(attempt int) *Task) *Task {
	outer := e.newTask(taskComposite, name)
	if err := p.Validate(); err != nil {
		msg := fmt.Sprintf("%s %s: %v", kind, name, err)
		e.fail(&ErrorDetails{Category: CategoryApplication, Message: msg, NonRetryable: true})
		outer.resolve("", fmt.Errorf("%s %s: %w", kind, name, err))
		return outer
	}
	s := e.newRetrySeq(kind, name, p, schedule, outer)
	s.armTotal()
	s.startAttempt()
	return outer
}

func (e *engine) newRetrySeq(kind, name string, p RetryPolicy, schedule func(int) *Task, outer *Task) *retrySeq {
	s := &retrySeq{e: e, kind: kind, name: name, p: p, schedule: schedule, outer: outer, startMs: e.nowMs}
	outer.onCancel = func() {
		if !s.finished {
			s.finished = true
			s.cancelParts()
		}
	}
	return s
}

func (s *retrySeq) cancelParts() {
	for _, t := range []*Task{s.current, s.deadline, s.backoff, s.total} {
		if t != nil && !t.done {
			s.e.cancelTask(t, "retry sequence ended")
		}
	}
}

// end is how a sequence ended, for metrics and RetryStats: "success",
// "exhausted" (attempts or total time used up) or "failed" (stopped early
// by a non-retryable error or RetryIf).
func (s *retrySeq) finish(res string, err error, end string) {
	s.finished = true
	s.cancelParts()
	e := s.e
	if s.kind == "activity" && !e.replaying {
		name, attempt, d := s.name, s.attempt, time.Duration(e.nowMs-s.startMs)*time.Millisecond
		policy := s.p
		e.post = append(e.post, func() { e.rt.observeSequence(name, policy, end, attempt, d) })
	}
	s.outer.resolve(res, err)
}

// observe records the outcome of an attempt.
func (s *retrySeq) observe(status string) {
	e := s.e
	if s.kind != "activity" || e.replaying {
		return
	}
	name, attempt := s.name, s.attempt
	e.post = append(e.post, func() { e.rt.observeAttempt(name, attempt, status) })
}

func (s *retrySeq) armTotal() {
	e, p := s.e, s.p
	if p.TotalTimeout <= 0 {
		return
	}
	tt := e.newTask(taskTimer, "retry total timeout")
	e.emit(&action{ev: Event{Kind: EventTimerCreated, Purpose: TimerTotalTimeout, MaxAttempts: p.MaxAttempts}, task: tt, delay: p.TotalTimeout})
	s.total = tt
	tt.whenDone(func() {
		if s.finished || tt.err != nil {
			return
		}
		s.finish("", &TaskError{Kind: s.kind, Name: s.name, Attempts: s.attempt, Details: ErrorDetails{Category: CategoryApplication,
			Message: fmt.Sprintf("retry sequence exceeded its total timeout of %v", p.TotalTimeout), Timeout: true}}, "exhausted")
	})
}

func (s *retrySeq) startAttempt() {
	if s.finished {
		return
	}
	s.attempt++
	s.backoff = nil
	s.watch(s.schedule(s.attempt))
}

// watch follows attempt t (already scheduled): its timeout and its outcome.
func (s *retrySeq) watch(t *Task) {
	e, p := s.e, s.p
	s.current = t
	attempt := s.attempt
	if p.Timeout > 0 {
		dl := e.newTask(taskTimer, "attempt timeout")
		e.emit(&action{ev: Event{Kind: EventTimerCreated, Purpose: TimerAttemptTimeout, Attempt: attempt, MaxAttempts: p.MaxAttempts}, task: dl, delay: p.Timeout})
		s.deadline = dl
		dl.whenDone(func() {
			if s.finished || s.current != t || t.done || dl.err != nil {
				return
			}
			e.cancelTask(t, "attempt timed out")
			s.attemptFailed(&TaskError{Kind: s.kind, Name: s.name, Details: ErrorDetails{Category: CategoryApplication,
				Message: fmt.Sprintf("attempt %d timed out after %v", attempt, p.Timeout), Timeout: true}}, true)
		})
	}
	t.whenDone(func() {
		if s.finished || s.current != t {
			return
		}
		if s.deadline != nil && !s.deadline.done {
			e.cancelTask(s.deadline, "attempt finished")
		}
		if t.err == nil {
			s.observe("success")
			s.finish(t.result, nil, "success")
			return
		}
		if t.cancelled {
			return // cancelled by this sequence; already handled
		}
		s.attemptFailed(t.err, false)
	})
}

func (s *retrySeq) attemptFailed(err error, timedOut bool) {
	e, p := s.e, s.p
	if timedOut {
		s.observe("timeout")
	} else {
		s.observe("failure")
	}
	exhausted := s.attempt >= p.MaxAttempts
	if exhausted || IsNonRetryable(err) || (timedOut && p.TimeoutEndsSequence) || (p.RetryIf != nil && !p.RetryIf(err)) {
		end := "failed"
		if exhausted && p.MaxAttempts > 1 {
			end = "exhausted"
		}
		s.finish("", wrapAttemptError(s.kind, s.name, s.attempt, err), end)
		return
	}
	d := p.DelayForAttempt(s.attempt)
	if p.Jitter > 0 && d > 0 {
		d = jittered(d, p.Jitter, e.instance, e.executionID, s.current.id)
	}
	if !e.replaying {
		inst, k, n, delay, msg, kind, name := e.instance, s.attempt, p.MaxAttempts, d, err.Error(), s.kind, s.name
		e.post = append(e.post, func() {
			e.rt.logger.WarnContext(e.logContext(context.Background()), "activity attempt failed; will retry",
				"instance_id", inst, "execution_id", e.executionID, "kind", kind, "activity_name", name,
				"attempt", k, "max_attempts", n, "retry_delay", delay.String(), "error", msg)
		})
	}
	s.current, s.deadline = nil, nil
	if d <= 0 {
		s.startAttempt()
		return
	}
	bt := e.newTask(taskTimer, "retry backoff")
	e.emit(&action{ev: Event{Kind: EventTimerCreated, Purpose: TimerBackoff, Attempt: s.attempt, MaxAttempts: p.MaxAttempts}, task: bt, delay: d})
	s.backoff = bt
	bt.whenDone(func() {
		if bt.err == nil {
			s.startAttempt()
		}
	})
}

func wrapAttemptError(kind, name string, attempts int, err error) error {
	var te *TaskError
	if errors.As(err, &te) {
		return &TaskError{Kind: kind, Name: name, Details: te.Details, Attempts: attempts}
	}
	return &TaskError{Kind: kind, Name: name, Details: *detailsFromError(err), Attempts: attempts}
}

// jittered spreads d by ±fraction, deterministically from the instance,
// execution and failed attempt's event id.
func jittered(d time.Duration, fraction float64, instance string, exec, eventID int64) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(instance))
	_, _ = h.Write([]byte(strconv.FormatInt(exec, 10) + ":" + strconv.FormatInt(eventID, 10)))
	u := float64(h.Sum64()>>11) / float64(1<<53) // [0,1)
	f := 1 + fraction*(2*u-1)
	out := time.Duration(float64(d) * f)
	if out < 0 {
		out = 0
	}
	return out
}
