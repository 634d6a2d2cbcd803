package duroxide

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// DefaultVersion is the version of orchestrations registered without one.
const DefaultVersion = "1.0.0"

// Registry holds the orchestrations and activities a runtime can run, by
// name (and, for orchestrations, version). Register everything before
// starting the runtime.
type Registry struct {
	mu     sync.RWMutex
	orchs  map[string][]orchEntry // sorted by version ascending
	activs map[string]*activityEntry
}

// activityEntry is a registered activity with its registration options.
type activityEntry struct {
	fn      activityFunc
	retry   *RetryPolicy          // WithDefaultRetry
	breaker *CircuitBreakerConfig // WithCircuitBreaker
}

type orchFunc func(ctx *OrchestrationContext, input string) (string, error)
type activityFunc func(ctx context.Context, input string) (string, error)

type orchEntry struct {
	version string
	key     [3]int
	fn      orchFunc
	keep    int  // WithKeepExecutions value
	keepSet bool // whether WithKeepExecutions was given
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{orchs: map[string][]orchEntry{}, activs: map[string]*activityEntry{}}
}

// RegisterOption configures a registration.
type RegisterOption func(*registerConfig)

type registerConfig struct {
	version    string
	versionSet bool
	keep       int
	keepSet    bool
	retry      *RetryPolicy
	breaker    *CircuitBreakerConfig
}

// WithVersion registers an orchestration under a semantic version
// ("major.minor.patch"). New instances start on the highest registered
// version unless started with an explicit one; running instances keep the
// version they started with.
func WithVersion(v string) RegisterOption {
	return func(c *registerConfig) { c.version, c.versionSet = v, true }
}

// WithDefaultRetry gives an activity its default retry policy: a plain
// CallActivity or CallActivityTyped of it then runs as a retry sequence
// under p, exactly as CallActivityWithRetry(name, input, p) would. A call
// with an explicit policy (CallActivityWithRetry, NoRetry() included)
// ignores the default.
//
// The default is configuration, not code: the policy in force when a
// sequence starts is recorded on its first ActivityScheduled event
// (Event.RetryPolicy), and the sequence keeps following that record, also
// after a restart with a different default. New sequences use the default
// registered at the time they start. Only RetryIf, a function, cannot be
// recorded: a recorded sequence uses the RetryIf of the current default.
// It applies to activities only.
func WithDefaultRetry(p RetryPolicy) RegisterOption {
	return func(c *registerConfig) { c.retry = &p }
}

// WithCircuitBreaker puts a circuit breaker in front of an activity (see
// CircuitBreakerConfig). Options.CircuitBreakers overrides it. It applies to
// activities only.
func WithCircuitBreaker(cfg CircuitBreakerConfig) RegisterOption {
	return func(c *registerConfig) { c.breaker = &cfg }
}

// WithKeepExecutions overrides Options.KeepExecutions for one orchestration
// (version): n > 0 keeps the newest n executions of each instance's
// continue-as-new chain, n <= 0 keeps all of them. It applies to the turns
// that start the executions of this version.
func WithKeepExecutions(n int) RegisterOption {
	return func(c *registerConfig) { c.keep, c.keepSet = n, true }
}

// RegisterOrchestration adds an orchestration function. Input and output are
// JSON-encoded; use json.RawMessage for raw payloads.
func RegisterOrchestration[In, Out any](r *Registry, name string, fn func(ctx *OrchestrationContext, input In) (Out, error), opts ...RegisterOption) error {
	cfg := registerConfig{version: DefaultVersion}
	for _, o := range opts {
		o(&cfg)
	}
	if name == "" {
		return fmt.Errorf("duroxide: register orchestration: empty name")
	}
	key, err := parseVersion(cfg.version)
	if err != nil {
		return fmt.Errorf("duroxide: register orchestration %s: %w", name, err)
	}
	if cfg.retry != nil || cfg.breaker != nil {
		return fmt.Errorf("duroxide: register orchestration %s: WithDefaultRetry and WithCircuitBreaker apply to activities only", name)
	}
	wrapped := func(ctx *OrchestrationContext, input string) (string, error) {
		var in In
		if err := decodePayload(input, &in); err != nil {
			return "", NonRetryable(fmt.Errorf("decode input of orchestration %s: %w", name, err))
		}
		out, err := fn(ctx, in)
		if err != nil {
			return "", err
		}
		return encodePayload(out)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.orchs[name] {
		if e.key == key {
			return fmt.Errorf("duroxide: orchestration %s version %s is already registered", name, cfg.version)
		}
	}
	list := append(r.orchs[name], orchEntry{version: cfg.version, key: key, fn: wrapped, keep: cfg.keep, keepSet: cfg.keepSet})
	sort.Slice(list, func(i, j int) bool { return lessVersion(list[i].key, list[j].key) })
	r.orchs[name] = list
	return nil
}

// RegisterActivity adds an activity function. Activities run at least once
// per scheduling; they receive a context that is cancelled when the
// orchestration no longer wants the result. Use ActivityInfoFromContext to
// learn which instance called it. Options: WithDefaultRetry,
// WithCircuitBreaker.
func RegisterActivity[In, Out any](r *Registry, name string, fn func(ctx context.Context, input In) (Out, error), opts ...RegisterOption) error {
	if name == "" {
		return fmt.Errorf("duroxide: register activity: empty name")
	}
	var cfg registerConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.versionSet || cfg.keepSet {
		return fmt.Errorf("duroxide: register activity %s: WithVersion and WithKeepExecutions apply to orchestrations only", name)
	}
	if cfg.retry != nil {
		if err := cfg.retry.Validate(); err != nil {
			return fmt.Errorf("duroxide: register activity %s: default retry: %w", name, err)
		}
	}
	if cfg.breaker != nil {
		if err := cfg.breaker.Validate(); err != nil {
			return fmt.Errorf("duroxide: register activity %s: circuit breaker: %w", name, err)
		}
	}
	if strings.HasPrefix(name, "__duroxide") {
		return fmt.Errorf("duroxide: register activity %s: names starting with __duroxide are reserved", name)
	}
	wrapped := func(ctx context.Context, input string) (string, error) {
		var in In
		if err := decodePayload(input, &in); err != nil {
			return "", NonRetryable(fmt.Errorf("decode input of activity %s: %w", name, err))
		}
		out, err := fn(ctx, in)
		if err != nil {
			return "", err
		}
		return encodePayload(out)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.activs[name]; ok {
		return fmt.Errorf("duroxide: activity %s is already registered", name)
	}
	r.activs[name] = &activityEntry{fn: wrapped, retry: cfg.retry, breaker: cfg.breaker}
	return nil
}

// Must panics if err is not nil; it shortens registration code in main
// functions and tests: duroxide.Must(duroxide.RegisterActivity(...)).
func Must(err error) {
	if err != nil {
		panic(err)
	}
}

// orchestration finds a handler; version "" means the latest.
func (r *Registry) orchestration(name, version string) (orchFunc, string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.orchs[name]
	if len(list) == 0 {
		return nil, "", false
	}
	if version == "" {
		e := list[len(list)-1]
		return e.fn, e.version, true
	}
	key, err := parseVersion(version)
	if err != nil {
		return nil, "", false
	}
	for _, e := range list {
		if e.key == key {
			return e.fn, e.version, true
		}
	}
	return nil, "", false
}

// keepExecutions returns the WithKeepExecutions setting of a registered
// orchestration version (resolved version, as orchestration returns it).
func (r *Registry) keepExecutions(name, version string) (n int, set bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	key, err := parseVersion(version)
	if err != nil {
		return 0, false
	}
	for _, e := range r.orchs[name] {
		if e.key == key {
			if e.keepSet && e.keep <= 0 {
				return 0, true
			}
			return e.keep, e.keepSet
		}
	}
	return 0, false
}

func (r *Registry) activity(name string) (activityFunc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.activs[name]
	if !ok {
		return nil, false
	}
	return a.fn, true
}

// DefaultRetry returns the retry policy an activity was registered with
// (WithDefaultRetry).
func (r *Registry) DefaultRetry(name string) (RetryPolicy, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if a, ok := r.activs[name]; ok && a.retry != nil {
		return *a.retry, true
	}
	return RetryPolicy{}, false
}

// CircuitBreaker returns the circuit breaker configuration an activity was
// registered with (WithCircuitBreaker).
func (r *Registry) CircuitBreaker(name string) (CircuitBreakerConfig, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if a, ok := r.activs[name]; ok && a.breaker != nil {
		return *a.breaker, true
	}
	return CircuitBreakerConfig{}, false
}

// OrchestrationNames lists registered orchestrations with their versions.
func (r *Registry) OrchestrationNames() map[string][]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := map[string][]string{}
	for n, list := range r.orchs {
		for _, e := range list {
			out[n] = append(out[n], e.version)
		}
	}
	return out
}

// ActivityNames lists registered activities, sorted.
func (r *Registry) ActivityNames() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.activs))
	for n := range r.activs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func parseVersion(v string) ([3]int, error) {
	var key [3]int
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return key, fmt.Errorf("version %q is not major.minor.patch", v)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return key, fmt.Errorf("version %q is not major.minor.patch", v)
		}
		key[i] = n
	}
	return key, nil
}

func lessVersion(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// encodePayload turns a value into its JSON text.
func encodePayload(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case json.RawMessage:
		return string(x), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode payload: %w", err)
	}
	return string(b), nil
}

// decodePayload reads JSON text into out; an empty payload leaves out zero.
func decodePayload(s string, out any) error {
	if out == nil || s == "" {
		return nil
	}
	switch p := out.(type) {
	case *json.RawMessage:
		*p = json.RawMessage(s)
		return nil
	case *int:
		// Integers without reflection (and without the stack growth that
		// json's decoder costs a fresh goroutine); any text that is not a
		// plain JSON integer goes to json.Unmarshal.
		if n, ok := plainInt(s, strconv.IntSize); ok {
			*p = int(n)
			return nil
		}
	case *int64:
		if n, ok := plainInt(s, 64); ok {
			*p = n
			return nil
		}
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	return nil
}

// plainInt parses s as a JSON integer (optional minus, no leading zeros, no
// plus sign, exponent or fraction) that fits in bits.
func plainInt(s string, bits int) (int64, bool) {
	d := s
	if len(d) > 0 && d[0] == '-' {
		d = d[1:]
	}
	if len(d) == 0 || len(d) > 1 && d[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, bits)
	return n, err == nil
}
