package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/cschleiden/go-workflows/backend"
	"github.com/cschleiden/go-workflows/backend/monoprocess"
	gwsqlite "github.com/cschleiden/go-workflows/backend/sqlite"
	"github.com/cschleiden/go-workflows/client"
	"github.com/cschleiden/go-workflows/core"
	"github.com/cschleiden/go-workflows/worker"
	"github.com/cschleiden/go-workflows/workflow"
)

// gowfEngine runs go-workflows v1.2.0: SQLite backend wrapped in the
// monoprocess backend (channel wake-ups instead of 200 ms polling, as the
// project's own bench/ does), one worker in the same process.
type gowfEngine struct {
	b      backend.Backend
	w      *worker.Worker
	c      *client.Client
	cancel context.CancelFunc
	mu     sync.Mutex
	inst   map[string]*workflow.Instance
	errs   lastErr
}

// No retries for plain activity calls (the other engines' plain calls do not
// retry either; go-workflows' default would be 3 attempts).
var gwNoRetry = workflow.ActivityOptions{RetryOptions: workflow.RetryOptions{MaxAttempts: 1}}

// BackoffCoefficient 1 makes every wait FirstRetryInterval
// (go-workflows computes FirstRetryInterval × coefficient^attempt).
var gwRetry = workflow.ActivityOptions{RetryOptions: workflow.RetryOptions{
	MaxAttempts: retryAttempts, FirstRetryInterval: retryDelay, BackoffCoefficient: 1,
}}

func gwNoop(_ context.Context, i int) (int, error)  { return noop(i), nil }
func gwFlaky(_ context.Context, k int) (int, error) { return flaky(k) }

func gwSeq(ctx workflow.Context, n int) (int, error) {
	sum := 0
	for i := 0; i < n; i++ {
		v, err := workflow.ExecuteActivity[int](ctx, gwNoRetry, gwNoop, i).Get(ctx)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func gwLong(ctx workflow.Context, n int) (int, error) { return gwSeq(ctx, n) }

func gwFan(ctx workflow.Context, n int) (int, error) {
	fs := make([]workflow.Future[int], n)
	for i := range fs {
		fs[i] = workflow.ExecuteActivity[int](ctx, gwNoRetry, gwNoop, i)
	}
	sum := 0
	for _, f := range fs {
		v, err := f.Get(ctx)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func gwTimer(ctx workflow.Context, ms int) (int, error) {
	if _, err := workflow.ScheduleTimer(ctx, time.Duration(ms)*time.Millisecond).Get(ctx); err != nil {
		return 0, err
	}
	return 1, nil
}

func gwRetryWf(ctx workflow.Context, k int) (int, error) {
	return workflow.ExecuteActivity[int](ctx, gwRetry, gwFlaky, k).Get(ctx)
}

var gwWorkflows = map[string]any{"seq": gwSeq, "long": gwLong, "fan": gwFan, "timer": gwTimer, "retry": gwRetryWf}

func (e *gowfEngine) Start(ctx context.Context, cfg runConfig) error {
	e.inst = map[string]*workflow.Instance{}
	opts := gwsqlite.WithBackendOptions(
		backend.WithLogger(slog.New(&captureHandler{errs: &e.errs})),
	)
	var be backend.Backend
	switch cfg.Store {
	case "sqlite-normal", "sqlite-full", "sqlite-off":
		// NewSqliteBackend opens "file:<path>" with modernc.org/sqlite, sets
		// journal_mode=WAL and one connection; the _pragma parameter sets
		// synchronous on every connection it opens.
		sync := map[string]string{"sqlite-normal": "NORMAL", "sqlite-full": "FULL", "sqlite-off": "OFF"}[cfg.Store]
		path := filepath.Join(cfg.Dir, "gowf.db") + "?_pragma=synchronous(" + sync + ")"
		be = gwsqlite.NewSqliteBackend(path, opts)
	case "memory":
		be = gwsqlite.NewInMemoryBackend(opts)
	default:
		return fmt.Errorf("go-workflows: no backend for store %q", cfg.Store)
	}
	e.b = monoprocess.NewMonoprocessBackend(be)
	wo := worker.DefaultOptions
	wo.MaxParallelWorkflowTasks = orchConcurrency
	wo.MaxParallelActivityTasks = actConcurrency
	// The default executor cache (128) is smaller than the 200 live
	// instances of seq/timer/retry; duroxide's cache holds 2048.
	wo.WorkflowExecutorCacheSize = 2048
	e.w = worker.New(e.b, &wo)
	for _, wf := range gwWorkflows {
		if err := e.w.RegisterWorkflow(wf); err != nil {
			return err
		}
	}
	if err := e.w.RegisterActivity(gwNoop); err != nil {
		return err
	}
	if err := e.w.RegisterActivity(gwFlaky); err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	if err := e.w.Start(wctx); err != nil {
		return err
	}
	e.c = client.New(e.b)
	return nil
}

func (e *gowfEngine) StartWorkflow(ctx context.Context, kind, id string, input int) error {
	wf, ok := gwWorkflows[kind]
	if !ok {
		return fmt.Errorf("unknown workflow %q", kind)
	}
	in, err := e.c.CreateWorkflowInstance(ctx, client.WorkflowInstanceOptions{InstanceID: id}, wf, input)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.inst[id] = in
	e.mu.Unlock()
	return nil
}

func (e *gowfEngine) instance(id string) *workflow.Instance {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inst[id]
}

func (e *gowfEngine) Done(ctx context.Context, id string) (bool, error) {
	s, err := e.c.GetWorkflowInstanceState(ctx, e.instance(id))
	if err != nil {
		return false, err
	}
	// A failed workflow is also "finished"; Result tells them apart.
	return s == core.WorkflowInstanceStateFinished, nil
}

func (e *gowfEngine) Result(ctx context.Context, id string) (int, error) {
	return client.GetWorkflowResult[int](ctx, e.c, e.instance(id), 10*time.Second)
}

func (e *gowfEngine) Stop(context.Context) error {
	if e.cancel != nil {
		e.cancel()
		_ = e.w.WaitForCompletion()
	}
	if e.b != nil {
		return e.b.Close()
	}
	return nil
}

func (e *gowfEngine) LastError() string { return e.errs.get() }
