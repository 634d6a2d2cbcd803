package duroxide_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// env is a runtime on a fresh SQLite file.
type env struct {
	t     *testing.T
	path  string
	store *sqlite.Store
	reg   *duroxide.Registry
	rt    *duroxide.Runtime
	c     *duroxide.Client
	opts  duroxide.Options
}

func quietLogger() *slog.Logger {
	if os.Getenv("DUROXIDE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newEnv opens a store in a temp dir and starts a runtime with reg.
func newEnv(t *testing.T, reg *duroxide.Registry, opts duroxide.Options) *env {
	t.Helper()
	e := &env{t: t, path: filepath.Join(t.TempDir(), "duroxide.db"), reg: reg, opts: opts}
	e.open()
	e.start()
	t.Cleanup(func() { e.stop(); e.store.Close() })
	return e
}

func (e *env) open() {
	e.t.Helper()
	st, err := sqlite.Open(context.Background(), e.path)
	if err != nil {
		e.t.Fatalf("open sqlite store: %v", err)
	}
	e.store = st
	e.c = duroxide.NewClient(st)
}

func (e *env) start() {
	e.t.Helper()
	o := e.opts
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	rt, err := duroxide.Start(context.Background(), e.store, e.reg, o)
	if err != nil {
		e.t.Fatalf("start runtime: %v", err)
	}
	e.rt = rt
}

func (e *env) stop() {
	if e.rt != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = e.rt.Shutdown(ctx)
		cancel()
		e.rt = nil
	}
}

// restart stops the runtime and starts a new one with reg on the same file.
func (e *env) restart(reg *duroxide.Registry) {
	e.t.Helper()
	e.stop()
	e.reg = reg
	e.start()
}

func (e *env) startOrch(id, name string, input any) {
	e.t.Helper()
	if err := e.c.StartOrchestration(context.Background(), id, name, input); err != nil {
		e.t.Fatalf("start %s: %v", id, err)
	}
}

// wait waits (at most 30s) for an instance to finish.
func (e *env) wait(id string) *duroxide.OrchestrationStatus {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.c.WaitForCompletion(ctx, id)
	if err != nil {
		e.t.Fatalf("wait for %s: %v", id, err)
	}
	return st
}

// run starts an instance and waits for it.
func (e *env) run(id, name string, input any) *duroxide.OrchestrationStatus {
	e.t.Helper()
	e.startOrch(id, name, input)
	return e.wait(id)
}

func (e *env) history(id string) []duroxide.Event {
	e.t.Helper()
	h, err := e.c.ReadHistory(context.Background(), id, 0)
	if err != nil {
		e.t.Fatalf("history of %s: %v", id, err)
	}
	return h
}

// waitFor polls cond until it holds (at most 30s).
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitForEvent waits until an instance's history has an event of kind k
// (with name, if given).
func (e *env) waitForEvent(id string, k duroxide.EventKind, name string) {
	e.t.Helper()
	e.waitFor(string(k)+" in "+id, func() bool {
		h, _ := e.c.ReadHistory(context.Background(), id, 0)
		for _, ev := range h {
			if ev.Kind == k && (name == "" || ev.Name == name) {
				return true
			}
		}
		return false
	})
}

func countKind(h []duroxide.Event, k duroxide.EventKind) int {
	n := 0
	for _, ev := range h {
		if ev.Kind == k {
			n++
		}
	}
	return n
}

// modes runs f with the instance cache on and off, so both the incremental
// and the full-replay paths are exercised.
func modes(t *testing.T, f func(t *testing.T, opts duroxide.Options)) {
	t.Run("cached", func(t *testing.T) { f(t, duroxide.Options{}) })
	t.Run("replay", func(t *testing.T) { f(t, duroxide.Options{CacheSize: -1}) })
}

func expectCompleted(t *testing.T, st *duroxide.OrchestrationStatus, out any) {
	t.Helper()
	if st.Status != duroxide.StatusCompleted {
		t.Fatalf("status = %s, error = %v; want Completed", st.Status, st.Err())
	}
	if out != nil {
		if err := st.Decode(out); err != nil {
			t.Fatalf("decode output: %v", err)
		}
	}
}
