// Package sqlite is the embedded SQLite store of duroxide: a
// [duroxide.Store] (and [duroxide.Notifier]) kept in a single database file
// in WAL mode, or in memory for tests and benchmarks.
//
// # Usage
//
//	st, err := sqlite.Open(ctx, "/var/lib/app/duroxide.db")
//	if err != nil { ... }
//	defer st.Close()
//
// The file and its schema are created on first use. The schema is versioned
// (table schema_version) and migrated forward when a newer release opens an
// older file; a file written by a newer release is refused.
//
// # Concurrency and speed
//
// Every mutating call runs on one dedicated write connection. Writes are
// group-committed: concurrent calls of a store are queued, and the caller
// that finds no commit in progress runs the whole queue in one BEGIN
// IMMEDIATE transaction, each call in its own savepoint (so a failing call,
// for example an ack with a duplicate event id, rolls back alone). Under
// load this turns many small WAL appends into few larger ones. An in-process
// lock, shared by all stores opened on the same file in this process,
// serializes their transactions, so writers never contend inside SQLite (no
// SQLITE_BUSY storms); other processes sharing the file wait on the busy
// timeout (WithBusyTimeout) and a timeout surfaces as a retryable error.
//
// Pure reads (ReadHistory, GetInstance, List*, Stats, GetCustomStatus,
// NextVisibleAt) never wait for writers: short point reads use the write
// connection when it is idle (its page cache is always warm) and otherwise,
// like the longer reads, a pool of read-only connections. Checkpoints run
// on a background connection, concurrently with commits. Statements are
// prepared once per connection.
//
// A fetch is a single UPDATE … RETURNING that picks and locks an instance,
// plus a metadata read; an ack is one transaction whose first statement
// (deleting the tagged messages) also validates the lock. Worker fetches,
// renewals, abandons and enqueues are single statements.
//
// The instance lock is carried by the orchestrator messages a fetch tagged
// (lock_token, locked_until): an instance is locked while one of its
// messages has an unexpired lock. Orchestration lock tokens embed the
// instance id and worker lock tokens the message id, so every lookup by
// token is a primary-key lookup.
//
// # Notifications
//
// Store implements [duroxide.Notifier]. Notifications are in-process: every
// *Store opened on the same file in this process (for example a client and a
// runtime using separate handles) is told when a message may have become
// visible or an instance reached a terminal status. Writes made by other
// processes are not signalled; runtimes fall back to polling for those.
//
// # Data layout
//
// Timestamps are integer milliseconds since the Unix epoch, taken from the
// clock of the calling process. Events and work
// items are stored as their encoding/json form, one history row per event
// keyed by (instance, execution_id, event_id); history is append-only and is
// never re-read or re-encoded by an ack.
package sqlite
