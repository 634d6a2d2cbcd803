package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/postgres"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// duroxideEngine runs duroxide from the working tree (replace ../ in go.mod).
type duroxideEngine struct {
	store  duroxide.Store
	closer func() error
	rt     *duroxide.Runtime
	c      *duroxide.Client
	errs   lastErr

	counter *countingStore  // profile mode only
	counted string          // where to write its counts
	pg      *postgres.Store // PostgreSQL runs: for the group-commit counts
}

func (e *duroxideEngine) Start(ctx context.Context, cfg runConfig) error {
	var err error
	switch cfg.Store {
	case "sqlite-normal", "sqlite-full", "sqlite-off":
		mode := map[string]sqlite.SyncMode{"sqlite-normal": sqlite.SyncNormal, "sqlite-full": sqlite.SyncFull, "sqlite-off": sqlite.SyncOff}[cfg.Store]
		var st *sqlite.Store
		st, err = sqlite.Open(ctx, filepath.Join(cfg.Dir, "duroxide.db"), sqlite.WithSynchronous(mode))
		if err == nil {
			e.store, e.closer = st, st.Close
		}
	case "memory":
		var st *sqlite.Store
		st, err = sqlite.Open(ctx, sqlite.MemoryPath)
		if err == nil {
			e.store, e.closer = st, st.Close
		}
	case "postgres", "postgres-nosync":
		var st *postgres.Store
		opts := []postgres.Option{postgres.WithPoolSize(poolSize)}
		if v := os.Getenv("BENCH_PG_GROUP"); v != "" { // diagnosis: group-commit transactions at once
			n, _ := strconv.Atoi(v)
			opts = append(opts, postgres.WithGroupCommit(n))
		}
		st, err = postgres.Open(ctx, cfg.PgURL, opts...)
		if err == nil {
			e.store, e.closer, e.pg = st, st.Close, st
		}
	default:
		return fmt.Errorf("duroxide: unknown store %q", cfg.Store)
	}
	if err != nil {
		return err
	}
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Noop", func(_ context.Context, i int) (int, error) { return noop(i), nil }))
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(_ context.Context, k int) (int, error) { return flaky(k) }))
	seq := func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		sum := 0
		for i := 0; i < n; i++ {
			v, err := duroxide.CallActivityTyped[int](ctx, "Noop", i)
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	}
	duroxide.Must(duroxide.RegisterOrchestration(reg, "seq", seq))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "long", seq))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "fan", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		ts := make([]*duroxide.Task, n)
		for i := range ts {
			ts[i] = ctx.CallActivity("Noop", i)
		}
		if err := ctx.Join(ts...); err != nil {
			return 0, err
		}
		sum := 0
		for _, t := range ts {
			v, err := duroxide.Await[int](t)
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "timer", func(ctx *duroxide.OrchestrationContext, ms int) (int, error) {
		if err := ctx.Sleep(time.Duration(ms) * time.Millisecond); err != nil {
			return 0, err
		}
		return 1, nil
	}))
	policy := duroxide.NewRetryPolicy(retryAttempts).WithBackoff(duroxide.Fixed{Delay: retryDelay})
	duroxide.Must(duroxide.RegisterOrchestration(reg, "retry", func(ctx *duroxide.OrchestrationContext, k int) (int, error) {
		return duroxide.CallActivityWithRetryTyped[int](ctx, "Flaky", k, policy)
	}))
	if cfg.CountCalls != "" {
		var cs *countingStore
		e.store, cs = wrapCounting(e.store)
		e.counted = cfg.CountCalls
		e.counter = cs
	}
	logger := slog.New(&captureHandler{errs: &e.errs})
	e.rt, err = duroxide.Start(ctx, e.store, reg, duroxide.Options{
		OrchestrationConcurrency: orchConcurrency,
		ActivityConcurrency:      actConcurrency,
		Logger:                   logger,
	})
	if err != nil {
		return err
	}
	e.c = e.rt.Client()
	return nil
}

func (e *duroxideEngine) StartWorkflow(ctx context.Context, kind, id string, input int) error {
	return e.c.StartOrchestration(ctx, id, kind, input)
}

func (e *duroxideEngine) Done(ctx context.Context, id string) (bool, error) {
	st, err := e.c.GetStatus(ctx, id)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, err
	}
	switch st.Status {
	case duroxide.StatusCompleted:
		return true, nil
	case duroxide.StatusFailed, duroxide.StatusCancelled:
		return false, fmt.Errorf("%s: %s: %v", id, st.Status, st.Err())
	}
	return false, nil
}

func (e *duroxideEngine) Result(ctx context.Context, id string) (int, error) {
	st, err := e.c.GetStatus(ctx, id)
	if err != nil {
		return 0, err
	}
	var v int
	err = st.Decode(&v)
	return v, err
}

func (e *duroxideEngine) Stop(ctx context.Context) error {
	if e.counter != nil {
		extra := ""
		if e.pg != nil {
			g := e.pg.GroupCommitStats()
			extra = fmt.Sprintf("group commit: %d write calls in %d transactions (%d calls shared one, largest %d, %d failed alone)\n",
				g.Calls, g.Transactions, g.Batched, g.MaxBatch, g.Failed)
		}
		e.counter.write(e.counted, extra)
	}
	if e.rt != nil {
		_ = e.rt.Shutdown(ctx)
	}
	if e.closer != nil {
		return e.closer()
	}
	return nil
}

func (e *duroxideEngine) LastError() string { return e.errs.get() }

func isNotFound(err error) bool { return err != nil && errors.Is(err, duroxide.ErrNotFound) }

// captureHandler discards logs but remembers the last warning or error.
type captureHandler struct{ errs *lastErr }

func (h *captureHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.errs.setRecord(r)
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

var discardLogger = slog.New(slog.NewTextHandler(io.Discard, nil))
