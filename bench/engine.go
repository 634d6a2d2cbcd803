package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Engine is one durable-execution engine set up on one store for one run.
// Every engine registers the same five workflows:
//
//	seq(n)    n sequential calls of the no-op activity
//	fan(n)    n parallel calls of the no-op activity, then await all
//	timer(ms) one durable timer of ms milliseconds
//	retry(k)  one call of an activity that fails twice, retried by the
//	          engine's own retry feature (3 attempts, fixed 10 ms backoff)
//	long(n)   same as seq(n); the activity records its start time
//
// The no-op activity returns its input plus one and the workflows return
// the sum, so a result can be checked.
type Engine interface {
	// Start opens the store (fresh, empty) and starts the workers.
	Start(ctx context.Context, cfg runConfig) error
	// StartWorkflow starts workflow kind with input as instance id.
	StartWorkflow(ctx context.Context, kind, id string, input int) error
	// Done reports whether instance id finished successfully; it returns an
	// error if the instance failed.
	Done(ctx context.Context, id string) (bool, error)
	// Result returns the integer result of a finished instance.
	Result(ctx context.Context, id string) (int, error)
	// Stop stops workers and closes the store.
	Stop(ctx context.Context) error
	// LastError returns the last error the engine logged, if any (used to
	// explain a run that timed out).
	LastError() string
}

// runConfig is what a child process needs to set up one engine on one store.
type runConfig struct {
	Store string // sqlite-normal, sqlite-full, sqlite-off, memory, postgres
	Dir   string // fresh directory for SQLite files
	PgURL string // fresh database for postgres
	// CountCalls, in profile mode, names a file for duroxide's fetch counts.
	CountCalls string
}

// Concurrency given to every engine that has such knobs (see README).
const (
	orchConcurrency = 4  // workflow/orchestration tasks processed at once
	actConcurrency  = 16 // activities executed at once
	poolSize        = 10 // PostgreSQL connections
	retryDelay      = 10 * time.Millisecond
	retryAttempts   = 3
)

// stamps records the start time of each no-op activity by its input, for
// the long scenario (nil otherwise).
var stamps []atomic.Int64

func noop(i int) int {
	if stamps != nil && i >= 0 && i < len(stamps) {
		stamps[i].CompareAndSwap(0, time.Now().UnixNano())
	}
	return i + 1
}

// flaky fails the first two calls for each key.
var (
	flakyMu    sync.Mutex
	flakyCalls = map[int]int{}
	attempts   atomic.Int64
)

var errTransient = errors.New("transient failure")

func flaky(key int) (int, error) {
	attempts.Add(1)
	flakyMu.Lock()
	flakyCalls[key]++
	n := flakyCalls[key]
	flakyMu.Unlock()
	if n <= retryAttempts-1 {
		return 0, fmt.Errorf("attempt %d of key %d: %w", n, key, errTransient)
	}
	return key + 1, nil
}

// expected returns the result a workflow of kind with input must return.
func expected(kind string, input int) int {
	switch kind {
	case "seq", "fan", "long":
		return input * (input + 1) / 2
	case "timer":
		return 1
	case "retry":
		return input + 1
	}
	return -1
}

// lastErr keeps the last error message an engine logged. A slog record is
// kept as it is and formatted only when asked for: the harness should not
// add its own formatting to every warning an engine logs in a timed run.
type lastErr struct {
	mu     sync.Mutex
	msg    string
	rec    slog.Record
	hasRec bool
}

func (l *lastErr) set(s string) {
	l.mu.Lock()
	l.msg, l.hasRec = s, false
	l.mu.Unlock()
}

func (l *lastErr) setRecord(r slog.Record) {
	r = r.Clone()
	l.mu.Lock()
	l.rec, l.hasRec = r, true
	l.mu.Unlock()
}

func (l *lastErr) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hasRec {
		msg := l.rec.Message
		l.rec.Attrs(func(a slog.Attr) bool {
			msg += " " + a.Key + "=" + a.Value.String()
			return true
		})
		return msg
	}
	return l.msg
}

func newEngine(name string) (Engine, error) {
	switch name {
	case "duroxide":
		return &duroxideEngine{}, nil
	case "go-workflows":
		return &gowfEngine{}, nil
	case "durabletask-go":
		return &dtaskEngine{}, nil
	case "dbos":
		return &dbosEngine{}, nil
	}
	return nil, fmt.Errorf("unknown engine %q", name)
}

// notApplicable says why an engine cannot run on a store or a scenario, or
// returns "".
func notApplicable(engine, store, scenario string) string {
	switch {
	case engine == "go-workflows" && (store == "postgres" || store == "postgres-nosync"):
		return "go-workflows v1.2.0 has no PostgreSQL backend (SQLite, MySQL, Redis only)"
	case engine == "durabletask-go" && (store == "postgres" || store == "postgres-nosync") && scenario == "fan":
		return "durabletask-go v0.6.0 PostgreSQL backend cannot schedule ≥ 2 activities in one turn " +
			"(multi-row INSERT INTO NewTasks numbers its parameters with stride 3 for 2 columns: " +
			"SQLSTATE 42P18; microsoft/durabletask-go#94, fixed after v0.6.0)"
	}
	return ""
}
