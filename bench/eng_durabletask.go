package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/microsoft/durabletask-go/api"
	"github.com/microsoft/durabletask-go/backend"
	dtpostgres "github.com/microsoft/durabletask-go/backend/postgres"
	dtsqlite "github.com/microsoft/durabletask-go/backend/sqlite"
	"github.com/microsoft/durabletask-go/task"
)

// dtaskEngine runs durabletask-go v0.6.0 in process: orchestration worker
// and activity worker on one backend.
type dtaskEngine struct {
	be     backend.Backend
	worker backend.TaskHubWorker
	c      backend.TaskHubClient
	log    *dtLogger
}

func dtSeq(ctx *task.OrchestrationContext) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	sum := 0
	for i := 0; i < n; i++ {
		var v int
		if err := ctx.CallActivity("Noop", task.WithActivityInput(i)).Await(&v); err != nil {
			return nil, err
		}
		sum += v
	}
	return sum, nil
}

func dtFan(ctx *task.OrchestrationContext) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	ts := make([]task.Task, n)
	for i := range ts {
		ts[i] = ctx.CallActivity("Noop", task.WithActivityInput(i))
	}
	sum := 0
	for _, t := range ts {
		var v int
		if err := t.Await(&v); err != nil {
			return nil, err
		}
		sum += v
	}
	return sum, nil
}

func dtTimer(ctx *task.OrchestrationContext) (any, error) {
	var ms int
	if err := ctx.GetInput(&ms); err != nil {
		return nil, err
	}
	if err := ctx.CreateTimer(time.Duration(ms) * time.Millisecond).Await(nil); err != nil {
		return nil, err
	}
	return 1, nil
}

// BackoffCoefficient 1: every wait is InitialRetryInterval.
var dtRetryPolicy = &task.RetryPolicy{MaxAttempts: retryAttempts, InitialRetryInterval: retryDelay, BackoffCoefficient: 1}

func dtRetry(ctx *task.OrchestrationContext) (any, error) {
	var k, v int
	if err := ctx.GetInput(&k); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("Flaky", task.WithActivityInput(k), task.WithActivityRetryPolicy(dtRetryPolicy)).Await(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func (e *dtaskEngine) Start(ctx context.Context, cfg runConfig) error {
	e.log = &dtLogger{}
	r := task.NewTaskRegistry()
	for name, o := range map[string]task.Orchestrator{"seq": dtSeq, "long": dtSeq, "fan": dtFan, "timer": dtTimer, "retry": dtRetry} {
		if err := r.AddOrchestratorN(name, o); err != nil {
			return err
		}
	}
	if err := r.AddActivityN("Noop", func(ctx task.ActivityContext) (any, error) {
		var i int
		if err := ctx.GetInput(&i); err != nil {
			return nil, err
		}
		return noop(i), nil
	}); err != nil {
		return err
	}
	if err := r.AddActivityN("Flaky", func(ctx task.ActivityContext) (any, error) {
		var k int
		if err := ctx.GetInput(&k); err != nil {
			return nil, err
		}
		return flaky(k)
	}); err != nil {
		return err
	}
	switch cfg.Store {
	case "sqlite-normal", "sqlite-full", "sqlite-off":
		// The backend opens the DSN with modernc.org/sqlite and one
		// connection; its default is the rollback journal with FULL. The
		// _pragma parameters put it on WAL with the synchronous mode under
		// test, on every connection.
		sync := map[string]string{"sqlite-normal": "NORMAL", "sqlite-full": "FULL", "sqlite-off": "OFF"}[cfg.Store]
		dsn := "file:" + filepath.Join(cfg.Dir, "dtask.db") + "?_pragma=journal_mode(WAL)&_pragma=synchronous(" + sync + ")&_pragma=busy_timeout(5000)"
		e.be = dtsqlite.NewSqliteBackend(dtsqlite.NewSqliteOptions(dsn), e.log)
	case "memory":
		e.be = dtsqlite.NewSqliteBackend(dtsqlite.NewSqliteOptions(""), e.log)
	case "postgres", "postgres-nosync":
		pc, err := pgxpool.ParseConfig(cfg.PgURL)
		if err != nil {
			return err
		}
		pc.MaxConns = poolSize // NewPostgresOptions defaults to 1
		e.be = dtpostgres.NewPostgresBackend(&dtpostgres.PostgresOptions{
			PgOptions: pc, OrchestrationLockTimeout: 2 * time.Minute, ActivityLockTimeout: 2 * time.Minute,
		}, e.log)
	default:
		return fmt.Errorf("durabletask-go: unknown store %q", cfg.Store)
	}
	ex := task.NewTaskExecutor(r)
	ow := backend.NewOrchestrationWorker(e.be, ex, e.log, backend.WithMaxParallelism(orchConcurrency))
	aw := backend.NewActivityTaskWorker(e.be, ex, e.log, backend.WithMaxParallelism(actConcurrency))
	e.worker = backend.NewTaskHubWorker(e.be, ow, aw, e.log)
	if err := e.worker.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	e.c = backend.NewTaskHubClient(e.be)
	return nil
}

func (e *dtaskEngine) StartWorkflow(ctx context.Context, kind, id string, input int) error {
	_, err := e.c.ScheduleNewOrchestration(ctx, kind, api.WithInstanceID(api.InstanceID(id)), api.WithInput(input))
	return err
}

func (e *dtaskEngine) Done(ctx context.Context, id string) (bool, error) {
	md, err := e.c.FetchOrchestrationMetadata(ctx, api.InstanceID(id))
	if err != nil {
		if errors.Is(err, api.ErrInstanceNotFound) {
			return false, nil
		}
		return false, err
	}
	switch md.RuntimeStatus {
	case api.RUNTIME_STATUS_COMPLETED:
		return true, nil
	case api.RUNTIME_STATUS_FAILED, api.RUNTIME_STATUS_TERMINATED, api.RUNTIME_STATUS_CANCELED:
		msg := ""
		if md.FailureDetails != nil {
			msg = md.FailureDetails.GetErrorMessage()
		}
		return false, fmt.Errorf("%s: status %v: %s", id, md.RuntimeStatus, msg)
	}
	return false, nil
}

func (e *dtaskEngine) Result(ctx context.Context, id string) (int, error) {
	md, err := e.c.FetchOrchestrationMetadata(ctx, api.InstanceID(id))
	if err != nil {
		return 0, err
	}
	var v int
	err = json.Unmarshal([]byte(md.SerializedOutput), &v)
	return v, err
}

func (e *dtaskEngine) Stop(ctx context.Context) error {
	if e.worker != nil {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return e.worker.Shutdown(sctx)
	}
	return nil
}

func (e *dtaskEngine) LastError() string { return e.log.errs.get() }

// dtLogger discards durabletask-go's logs but remembers the last error.
type dtLogger struct{ errs lastErr }

func (l *dtLogger) Debug(...any)          {}
func (l *dtLogger) Debugf(string, ...any) {}
func (l *dtLogger) Info(...any)           {}
func (l *dtLogger) Infof(string, ...any)  {}
func (l *dtLogger) Warn(v ...any)         { l.errs.set(fmt.Sprint(v...)) }
func (l *dtLogger) Warnf(f string, v ...any) {
	l.errs.set(fmt.Sprintf(f, v...))
}
func (l *dtLogger) Error(v ...any) { l.errs.set(fmt.Sprint(v...)) }
func (l *dtLogger) Errorf(f string, v ...any) {
	l.errs.set(fmt.Sprintf(f, v...))
}
