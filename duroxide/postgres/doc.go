// Package postgres is the PostgreSQL store of duroxide: a [duroxide.Store]
// and [duroxide.Notifier] that any number of processes (runtimes, clients,
// workers) can share, built on pgx v5 and pgxpool.
//
// # Usage
//
// Open the store with a connection URL and hand it to the runtime and the
// client wherever a duroxide.Store is expected:
//
//	st, err := postgres.Open(ctx, "postgres://app:secret@db.example:5432/app?sslmode=require",
//		postgres.WithSchema("orders"), postgres.WithPoolSize(20))
//	if err != nil { ... }
//	defer st.Close()
//	rt, err := duroxide.Start(ctx, st, registry, duroxide.Options{})
//
// The URL may also be a key=value connection string; anything pgx
// understands works (PGHOST and friends fill in what it omits). Every
// process using the same database and schema sees the same instances and
// queues; different schemas are fully isolated.
//
// # Schema and migrations
//
// Open creates the schema (default "duroxide") and applies the migrations
// embedded in this package (migrations/NNNN_*.sql) that it lacks, recording
// them in <schema>.schema_migrations. Migrations run in one transaction under
// a transaction-scoped advisory lock, so processes starting together apply
// each exactly once. A later release adds migration N+1; applied migrations
// never change.
//
// Tables: instances, executions, history (one row per event, the event's
// JSON text stored verbatim and never re-encoded), orchestrator_queue,
// instance_locks and worker_queue. Times are integer milliseconds since the
// Unix epoch, always taken from the database clock (<schema>.now_ms()), so
// lock expiry is judged by one clock however many hosts share the database.
//
// # One round trip per call
//
// Every hot operation is a single call of a plpgsql function created by the
// migrations in the store's schema: enqueue_orchestrator, enqueue_worker,
// fetch_orchestration_item, ack_orchestration_item,
// abandon_orchestration_item, renew_orchestration_item_lock,
// fetch_work_item, ack_work_item, renew_work_item_lock, abandon_work_item,
// delete_instances, delete_instances_bulk and prune_executions. Reads are
// single statements. (next_visible_in, which earlier versions called, stays in
// the schema for their processes; NextVisibleAt now reads the database clock
// and the queue in one statement of its own.)
//
// A turn's call passes its events, work items and timers as text[] and
// bigint[] arguments. Open registers, on every pooled connection, a codec
// that writes them in PostgreSQL's binary array format straight into one
// buffer sized for the call (pooled across calls); pgx's own codecs handle
// every other value, and in the text-format query modes the arrays are sent
// as array literals.
//
// # Group commit
//
// With synchronous_commit on, each committed write transaction waits for
// a WAL flush. The runtime's write calls of one handle that run at the same
// moment (turn commits, worker acks; see [WithGroupCommit]) therefore
// share transactions: one runs at a time (by default), a call that finds
// the committer idle goes out at once on its own, and calls that arrive
// while it is busy go together into the next, one savepoint each, so that each call still
// succeeds or fails alone (a lost lock, a turn conflict, a duplicate event)
// while the others commit. Each caller learns its outcome after the shared
// COMMIT. Fetches and a client's starts and enqueues do not wait in this
// queue.
//
// # Locking across processes
//
// An instance is locked by a row in instance_locks (token, locked_until).
// fetch_orchestration_item walks the visible messages in id order, skips
// instances with a live lock, takes a non-blocking transaction-scoped
// advisory lock on the candidate (so two fetches never work on one instance
// at once, and neither waits for the other), then upserts the lock row,
// replacing it only if it has expired, and tags every visible message of
// the instance with the token. When any step loses a race the search goes
// on with the next instance, so a fetch returns nothing only when nothing
// is available. An ack validates the token and expiry under a row lock on
// the lock row, so two acks with one token cannot both succeed and a lock
// cannot be taken over in the middle of an ack. Worker messages are taken
// with SELECT … FOR UPDATE SKIP LOCKED and carry their own lock token and
// expiry; an expired lock can be taken by any fetch.
//
// # Notifications
//
// Writes that make work visible call pg_notify on the channel
// <schema>_notify; see [Store.Watch]. One extra connection per Store
// listens, reconnecting after failures.
//
// # Errors
//
// Every error is an [*Error] naming the operation. Lost locks, unknown
// instances and the like wrap the duroxide sentinels (errors.Is works).
// Connection failures, deadlocks, serialization failures and invalidated
// cached plans are retryable ([duroxide.IsRetryable]); pgxpool reconnects
// by itself, so once the database is back the store works again.
//
// # Testing
//
// Package pgtest starts a throwaway PostgreSQL cluster for tests (or uses
// the server named by DUROXIDE_TEST_PG_URL).
package postgres
