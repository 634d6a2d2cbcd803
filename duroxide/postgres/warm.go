package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/toygres/toygres/duroxide"
)

// warm opens the pool's connections at once, in parallel, and, with calls,
// runs the runtime's common calls once on each (warmConn), so that the first
// calls after Open neither wait for a new connection (tens of milliseconds
// against a database whose caches are cold) nor pay for what PostgreSQL and
// pgx do once per session. Best effort: a connection that cannot be opened
// or warmed now is opened when first needed and warms itself on first use.
func (s *Store) warm(ctx context.Context, calls bool) {
	n := int(s.pool.Config().MaxConns)
	conns := make(chan *pgxpool.Conn, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.pool.Acquire(ctx)
			if err != nil {
				return
			}
			if calls {
				if err := s.warmConn(ctx, c); err != nil && ctx.Err() == nil {
					slog.Warn("postgres store: warming a connection failed", "schema", s.schema, "error", err)
				}
			}
			conns <- c
		}()
	}
	wg.Wait()
	close(conns)
	for c := range conns {
		c.Release()
	}
}

// warmConn runs, on c and inside a transaction that it rolls back, a start
// that leases its first activity (start_turn2), that activity's completion
// with the next schedule (commit_activity_turn2), and one fetch from each
// queue, all with the statements the store sends later. A session compiles
// a PL/pgSQL function and plans each of its statements on first use, and
// pgx prepares each statement once per connection: measured on a fresh
// schema, the first of these calls on each connection took 3–17 ms where
// later ones take 0.1–0.3 ms, and a runtime that had just started made them
// on all its connections at once, while its first workflows were starting.
// Nothing of the transaction stays: the instance is a fresh random id, and
// a fetch that leases a message of another process gives it back with the
// rollback.
func (s *Store) warmConn(ctx context.Context, c *pgxpool.Conn) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	const lease = time.Minute
	inst := "duroxide-warm-" + uuid()
	activity := func(id int64) []duroxide.WorkItem {
		return []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: inst, ExecutionID: 1, ID: id, Name: "warm"}}
	}
	start := &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "warm",
		HistoryDelta: []duroxide.Event{
			{EventID: 1, Kind: duroxide.EventOrchestrationStarted, Name: "warm"},
			{EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "warm"},
		},
		WorkerItems: activity(2)}
	vals, leases, _, err := s.turnArgs(start, 1, lease, inst)
	if err != nil {
		return err
	}
	var ok bool
	if err := tx.QueryRow(ctx, s.turnCall("start_turn2", "instance"), vals...).Scan(&ok); err != nil {
		return fmt.Errorf("start_turn2: %w", err)
	}

	next := &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "warm",
		HistoryDelta: []duroxide.Event{
			{EventID: 3, Kind: duroxide.EventActivityCompleted, SourceEventID: 2},
			{EventID: 4, Kind: duroxide.EventActivityScheduled, Name: "warm"},
		},
		WorkerItems: activity(4)}
	if vals, _, _, err = s.turnArgs(next, 1, lease, inst, []string{leases[0].LockToken}, []int64{}, int64(2)); err != nil {
		return err
	}
	if err := tx.QueryRow(ctx, s.turnCall("commit_activity_turn2", "instance", "tokens", "timers", "last_event"), vals...).Scan(&ok); err != nil {
		return fmt.Errorf("commit_activity_turn2: %w", err)
	}

	for _, fn := range []string{"fetch_work_item2", "fetch_orchestration_item2"} {
		rows, err := tx.Query(ctx, s.fetchSQL(fn), lockMs(lease), s.owner)
		if err != nil {
			return fmt.Errorf("%s: %w", fn, err)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%s: %w", fn, err)
		}
	}
	return nil
}

// fetchSQL is the statement that calls fetch function fn.
func (s *Store) fetchSQL(fn string) string { return "SELECT * FROM " + s.fn(fn) + "($1, $2)" }
