package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	_ "github.com/dbos-inc/dbos-transact-golang/dbos/driver/sqlite" // registers SQLite (modernc.org/sqlite) with DBOS
)

// dbosEngine runs DBOS Transact v1.8.0 in its direct mode: RunWorkflow
// starts the workflow at once in a goroutine of this process, and each step
// is an inline call followed by one checkpoint insert (no queue).
type dbosEngine struct {
	ctx  dbos.Context
	db   *sql.DB
	mu   sync.Mutex
	h    map[string]dbos.WorkflowHandle[int]
	errs lastErr
}

func dbNoop(i int) dbos.Step[int] {
	return func(context.Context) (int, error) { return noop(i), nil }
}

func dbSeq(ctx dbos.Context, n int) (int, error) {
	sum := 0
	for i := 0; i < n; i++ {
		v, err := dbos.RunAsStep(ctx, dbNoop(i), dbos.WithStepName("Noop"))
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func dbLong(ctx dbos.Context, n int) (int, error) { return dbSeq(ctx, n) }

func dbFan(ctx dbos.Context, n int) (int, error) {
	chs := make([]<-chan dbos.StepOutcome[int], n)
	for i := range chs {
		ch, err := dbos.Go(ctx, dbNoop(i), dbos.WithStepName("Noop"))
		if err != nil {
			return 0, err
		}
		chs[i] = ch
	}
	sum := 0
	for _, ch := range chs {
		o := <-ch
		if o.Err != nil {
			return 0, o.Err
		}
		sum += o.Result
	}
	return sum, nil
}

func dbTimer(ctx dbos.Context, ms int) (int, error) {
	if _, err := dbos.Sleep(ctx, time.Duration(ms)*time.Millisecond); err != nil {
		return 0, err
	}
	return 1, nil
}

// DBOS step retries: maxRetries counts retries (3 runs = 2 retries); the
// wait is base × factor^(n−1) with ±5 % jitter, so factor 1 gives 10 ms.
func dbRetry(ctx dbos.Context, k int) (int, error) {
	return dbos.RunAsStep(ctx, func(context.Context) (int, error) { return flaky(k) },
		dbos.WithStepName("Flaky"), dbos.WithStepMaxRetries(retryAttempts-1),
		dbos.WithStepBaseInterval(retryDelay), dbos.WithStepBackoffFactor(1))
}

var dbWorkflows = map[string]dbos.Workflow[int, int]{"seq": dbSeq, "long": dbLong, "fan": dbFan, "timer": dbTimer, "retry": dbRetry}

func (e *dbosEngine) Start(ctx context.Context, cfg runConfig) error {
	e.h = map[string]dbos.WorkflowHandle[int]{}
	conf := dbos.Config{AppName: "duroxide-bench", Logger: slog.New(&captureHandler{errs: &e.errs})}
	// The DBOS SQLite driver's own pool (OpenSQLitePool) is reproduced here
	// so the synchronous mode can be chosen: it would run PRAGMA
	// synchronous=NORMAL after opening whatever the URL said.
	const common = "_txlock=immediate&_pragma=busy_timeout(5000)&_pragma=foreign_keys(ON)"
	switch cfg.Store {
	case "sqlite-normal", "sqlite-full", "sqlite-off":
		sync := map[string]string{"sqlite-normal": "NORMAL", "sqlite-full": "FULL", "sqlite-off": "OFF"}[cfg.Store]
		dsn := "file:" + filepath.Join(cfg.Dir, "dbos.db") + "?" + common + "&_pragma=journal_mode(WAL)&_pragma=synchronous(" + sync + ")"
		if err := e.openSQLite(ctx, dsn); err != nil {
			return err
		}
		conf.SQLiteSystemDB = e.db
	case "memory":
		// "sqlite::memory:" would give each of the pool's 8 connections its
		// own empty database; the memdb VFS shares one in-memory database
		// between the connections of this process.
		dsn := "file:/dbos-bench-mem?vfs=memdb&" + common
		if err := e.openSQLite(ctx, dsn); err != nil {
			return err
		}
		conf.SQLiteSystemDB = e.db
	case "postgres", "postgres-nosync":
		sep := "?"
		if strings.Contains(cfg.PgURL, "?") {
			sep = "&"
		}
		conf.DatabaseURL = cfg.PgURL + sep + fmt.Sprintf("pool_max_conns=%d", poolSize) // DBOS default: 20
	default:
		return fmt.Errorf("dbos: unknown store %q", cfg.Store)
	}
	dctx, err := dbos.NewContext(context.WithoutCancel(ctx), conf)
	if err != nil {
		return err
	}
	e.ctx = dctx
	for _, wf := range dbWorkflows {
		dbos.RegisterWorkflow(dctx, wf)
	}
	return dbos.Launch(dctx)
}

func (e *dbosEngine) openSQLite(ctx context.Context, dsn string) error {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(8) // as DBOS's own pool
	db.SetMaxIdleConns(4)
	db.SetConnMaxLifetime(time.Hour)
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	e.db = db
	return nil
}

func (e *dbosEngine) StartWorkflow(_ context.Context, kind, id string, input int) error {
	wf, ok := dbWorkflows[kind]
	if !ok {
		return fmt.Errorf("unknown workflow %q", kind)
	}
	h, err := dbos.RunWorkflow(e.ctx, wf, input, dbos.WithWorkflowID(id))
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.h[id] = h
	e.mu.Unlock()
	return nil
}

func (e *dbosEngine) handle(id string) dbos.WorkflowHandle[int] {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.h[id]
}

func (e *dbosEngine) Done(_ context.Context, id string) (bool, error) {
	st, err := e.handle(id).GetStatus()
	if err != nil {
		return false, err
	}
	switch st.Status {
	case dbos.WorkflowStatusSuccess:
		return true, nil
	case dbos.WorkflowStatusError, dbos.WorkflowStatusCancelled:
		return false, fmt.Errorf("%s: %s: %v", id, st.Status, st.Error)
	}
	return false, nil
}

func (e *dbosEngine) Result(_ context.Context, id string) (int, error) {
	return e.handle(id).GetResult(dbos.WithHandleTimeout(10 * time.Second))
}

func (e *dbosEngine) Stop(context.Context) error {
	if e.ctx != nil {
		dbos.Shutdown(e.ctx, 10*time.Second)
	}
	if e.db != nil {
		return e.db.Close()
	}
	return nil
}

func (e *dbosEngine) LastError() string { return e.errs.get() }
