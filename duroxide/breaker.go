package duroxide

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// ErrCircuitOpen matches an activity attempt that failed fast because the
// activity's circuit breaker was open: the activity function was not
// called. The attempt is an ordinary failed attempt in history (a
// *CircuitOpenError), so a retry policy backs off and tries again.
var ErrCircuitOpen = errors.New("duroxide: circuit open")

// CircuitOpenError is the error of an attempt refused by an open circuit
// breaker. It survives the trip through history (errors.As on the
// orchestration's *TaskError rebuilds it).
type CircuitOpenError struct {
	Activity string `json:"activity"`
	Key      string `json:"key,omitempty"`
	// HalfOpenAt is when the breaker lets a probe call through again.
	HalfOpenAt time.Time `json:"half_open_at"`
}

func (e *CircuitOpenError) Error() string {
	key := ""
	if e.Key != "" {
		key = fmt.Sprintf(" (key %q)", e.Key)
	}
	return fmt.Sprintf("circuit breaker of activity %s%s is open: failed fast without calling it; it half-opens at %s",
		e.Activity, key, e.HalfOpenAt.UTC().Format(time.RFC3339Nano))
}

// Is matches ErrCircuitOpen.
func (e *CircuitOpenError) Is(target error) bool { return target == ErrCircuitOpen }

// CircuitBreakerConfig configures the circuit breaker of an activity
// (WithCircuitBreaker, Options.CircuitBreakers). The breaker runs in the
// activity worker, never in orchestration code: each runtime keeps its own
// breakers (per activity name and key), and every decision it takes
// becomes an ordinary recorded attempt outcome, so replay is unaffected.
//
// Closed, it counts the outcomes of calls over a sliding Window and opens
// when at least MinCalls calls ended and at least FailureRatio of them
// failed. Open, it fails every attempt fast with a *CircuitOpenError
// (matching ErrCircuitOpen) without calling the function. After CoolDown
// it half-opens: up to Probes calls go through at once; Probes successes
// close it (with a fresh window), one failure opens it again.
// Cancelled calls (select losers, attempt timeouts, shutdown) count for
// nothing. The zero value of every field means its default.
type CircuitBreakerConfig struct {
	// Window is the period over which outcomes are counted (default 1m).
	Window time.Duration
	// MinCalls is how many calls must end within the window before the
	// breaker may open (default 10).
	MinCalls int
	// FailureRatio opens the breaker when failures/calls reaches it, in
	// (0, 1] (default 0.5).
	FailureRatio float64
	// CoolDown is how long the breaker stays open before half-opening
	// (default 30s).
	CoolDown time.Duration
	// Probes is how many successful probe calls close a half-open breaker,
	// and how many may run at once (default 1).
	Probes int
	// Key derives a key from the activity's JSON input, giving each key
	// its own breaker (say, one per data-plane target); nil or "" is one
	// breaker for the activity. KeyFromField builds a common one.
	Key func(input json.RawMessage) string
	// IsFailure decides whether an error counts against the circuit
	// (default: every error except those marked NonRetryable, which say
	// the call was wrong rather than the callee unwell).
	IsFailure func(error) bool
	// Now is the breaker's clock (nil: time.Now); tests pass a fake one.
	Now func() time.Time
}

// KeyFromField returns a CircuitBreakerConfig.Key that keys the breaker by
// a top-level field of a JSON object input (its JSON text, quotes removed
// for strings); inputs without it share the "" breaker.
func KeyFromField(field string) func(json.RawMessage) string {
	return func(in json.RawMessage) string {
		var m map[string]json.RawMessage
		if json.Unmarshal(in, &m) != nil {
			return ""
		}
		v, ok := m[field]
		if !ok {
			return ""
		}
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
		return string(v)
	}
}

// Validate reports why a configuration cannot be used.
func (c CircuitBreakerConfig) Validate() error {
	if c.Window < 0 || c.CoolDown < 0 {
		return fmt.Errorf("window %v and cool-down %v must not be negative", c.Window, c.CoolDown)
	}
	if c.MinCalls < 0 || c.Probes < 0 {
		return fmt.Errorf("min calls %d and probes %d must not be negative", c.MinCalls, c.Probes)
	}
	if math.IsNaN(c.FailureRatio) || c.FailureRatio < 0 || c.FailureRatio > 1 {
		return fmt.Errorf("failure ratio %v must be in (0, 1]", c.FailureRatio)
	}
	return nil
}

func (c CircuitBreakerConfig) withDefaults() CircuitBreakerConfig {
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	if c.MinCalls <= 0 {
		c.MinCalls = 10
	}
	if c.FailureRatio <= 0 {
		c.FailureRatio = 0.5
	}
	if c.CoolDown <= 0 {
		c.CoolDown = 30 * time.Second
	}
	if c.Probes <= 0 {
		c.Probes = 1
	}
	if c.IsFailure == nil {
		c.IsFailure = func(err error) bool { return !IsNonRetryable(err) }
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// CircuitState is the state of a circuit breaker; its value is what the
// duroxide_circuit_state gauge reports.
type CircuitState int

// Circuit breaker states.
const (
	CircuitClosed   CircuitState = 0
	CircuitOpen     CircuitState = 1
	CircuitHalfOpen CircuitState = 2
)

func (s CircuitState) String() string {
	switch s {
	case CircuitOpen:
		return "open"
	case CircuitHalfOpen:
		return "half_open"
	default:
		return "closed"
	}
}

const breakerBuckets = 10

type breakerBucket struct {
	epoch           int64 // bucket number since the Unix epoch; stale when older than the window
	calls, failures int
}

// breaker is one circuit breaker (activity name and key).
type breaker struct {
	cfg       CircuitBreakerConfig
	name, key string

	mu         sync.Mutex
	state      CircuitState
	halfOpenAt time.Time
	buckets    [breakerBuckets]breakerBucket
	probes     int // probe calls in flight (half-open)
	probeOK    int // successful probes (half-open)
}

// allow decides whether a call may run. It returns whether the call is a
// half-open probe, or the time the breaker half-opens when it refuses.
// from and to report a transition (from != to).
func (b *breaker) allow() (ok, probe bool, halfOpenAt time.Time, from, to CircuitState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	from = b.state
	if b.state == CircuitOpen && !b.cfg.Now().Before(b.halfOpenAt) {
		b.state, b.probes, b.probeOK = CircuitHalfOpen, 0, 0
	}
	switch b.state {
	case CircuitOpen:
		return false, false, b.halfOpenAt, from, b.state
	case CircuitHalfOpen:
		if b.probes+b.probeOK >= b.cfg.Probes {
			return false, false, b.halfOpenAt, from, b.state
		}
		b.probes++
		return true, true, time.Time{}, from, b.state
	}
	return true, false, time.Time{}, from, b.state
}

// record counts the outcome of a call allow let through.
func (b *breaker) record(probe, failed bool) (from, to CircuitState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	from = b.state
	now := b.cfg.Now()
	if probe {
		if b.state != CircuitHalfOpen {
			return from, b.state
		}
		b.probes--
		if failed {
			b.trip(now)
			return from, b.state
		}
		b.probeOK++
		if b.probeOK >= b.cfg.Probes {
			b.state = CircuitClosed
			b.buckets = [breakerBuckets]breakerBucket{}
		}
		return from, b.state
	}
	if b.state != CircuitClosed {
		return from, b.state // a call admitted before the breaker opened
	}
	width := int64(b.cfg.Window / breakerBuckets)
	if width <= 0 {
		width = 1
	}
	epoch := now.UnixNano() / width
	bk := &b.buckets[epoch%breakerBuckets]
	if bk.epoch != epoch {
		*bk = breakerBucket{epoch: epoch}
	}
	bk.calls++
	if failed {
		bk.failures++
	}
	calls, failures := 0, 0
	for _, x := range b.buckets {
		if x.epoch > epoch-breakerBuckets {
			calls += x.calls
			failures += x.failures
		}
	}
	if calls >= b.cfg.MinCalls && float64(failures) >= b.cfg.FailureRatio*float64(calls) {
		b.trip(now)
	}
	return from, b.state
}

// release gives back a probe slot whose call ended without an outcome.
func (b *breaker) release(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	if b.state == CircuitHalfOpen && b.probes > 0 {
		b.probes--
	}
	b.mu.Unlock()
}

func (b *breaker) trip(now time.Time) {
	b.state, b.halfOpenAt, b.probes, b.probeOK = CircuitOpen, now.Add(b.cfg.CoolDown), 0, 0
	b.buckets = [breakerBuckets]breakerBucket{}
}

// breakers holds a runtime's circuit breakers.
type breakers struct {
	mu sync.Mutex
	m  map[[2]string]*breaker
}

// breakerFor returns the breaker of an activity call, nil when the
// activity has none.
func (rt *Runtime) breakerFor(name, input string) *breaker {
	cfg, ok := rt.opts.CircuitBreakers[name]
	if !ok {
		if cfg, ok = rt.reg.CircuitBreaker(name); !ok {
			return nil
		}
	}
	key := ""
	if cfg.Key != nil {
		key = cfg.Key(json.RawMessage(input))
	}
	rt.breakers.mu.Lock()
	defer rt.breakers.mu.Unlock()
	if rt.breakers.m == nil {
		rt.breakers.m = map[[2]string]*breaker{}
	}
	k := [2]string{name, key}
	b := rt.breakers.m[k]
	if b == nil {
		b = &breaker{cfg: cfg.withDefaults(), name: name, key: key}
		rt.breakers.m[k] = b
		rt.metrics.circuitState(name, key, CircuitClosed)
	}
	return b
}

// circuitTransition reports a breaker's change of state in metrics and logs.
func (rt *Runtime) circuitTransition(b *breaker, from, to CircuitState) {
	if from == to {
		return
	}
	rt.metrics.circuitTransition(b.name, b.key, to)
	log := rt.logger.With("activity_name", b.name, "circuit_key", b.key, "from", from.String(), "to", to.String())
	switch to {
	case CircuitOpen:
		b.mu.Lock()
		at := b.halfOpenAt
		b.mu.Unlock()
		log.Warn("circuit breaker opened: attempts fail fast until it half-opens", "half_open_at", at)
	case CircuitHalfOpen:
		log.Info("circuit breaker half-open: letting probe calls through")
	default:
		log.Info("circuit breaker closed")
	}
}

// CircuitBreakerStatus is the state of one circuit breaker of a runtime.
type CircuitBreakerStatus struct {
	Activity string
	Key      string
	State    CircuitState
	// HalfOpenAt is when an open breaker half-opens.
	HalfOpenAt time.Time
}

// CircuitBreakers returns the state of the runtime's circuit breakers
// (those that have seen a call), sorted by activity and key.
func (rt *Runtime) CircuitBreakers() []CircuitBreakerStatus {
	rt.breakers.mu.Lock()
	list := make([]*breaker, 0, len(rt.breakers.m))
	for _, b := range rt.breakers.m {
		list = append(list, b)
	}
	rt.breakers.mu.Unlock()
	out := make([]CircuitBreakerStatus, 0, len(list))
	for _, b := range list {
		b.mu.Lock()
		st := CircuitBreakerStatus{Activity: b.name, Key: b.key, State: b.state}
		if b.state == CircuitOpen {
			st.HalfOpenAt = b.halfOpenAt
		}
		b.mu.Unlock()
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b CircuitBreakerStatus) int {
		return cmp.Or(cmp.Compare(a.Activity, b.Activity), cmp.Compare(a.Key, b.Key))
	})
	return out
}
