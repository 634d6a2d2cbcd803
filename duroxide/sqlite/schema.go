package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// SchemaVersion is the schema version this build writes; it is the number
// of entries of migrations.
const SchemaVersion = 3

// migrations[i] upgrades a database from version i to version i+1. Released
// entries never change; new releases append.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE instances (
	instance              TEXT    NOT NULL PRIMARY KEY,
	orchestration_name    TEXT    NOT NULL,
	orchestration_version TEXT    NOT NULL DEFAULT '',
	current_execution_id  INTEGER NOT NULL DEFAULT 1,
	status                TEXT    NOT NULL DEFAULT 'Running', -- status of the current execution
	output                TEXT,                               -- output of the current execution
	parent_instance       TEXT,                               -- NULL for a root
	custom_status         TEXT,
	custom_status_version INTEGER NOT NULL DEFAULT 0,
	created_at            INTEGER NOT NULL,                   -- ms
	updated_at            INTEGER NOT NULL                    -- ms
) WITHOUT ROWID;
CREATE INDEX idx_instances_created ON instances(created_at, instance);
CREATE INDEX idx_instances_parent ON instances(parent_instance, created_at, instance) WHERE parent_instance IS NOT NULL;

CREATE TABLE executions (
	instance     TEXT    NOT NULL,
	execution_id INTEGER NOT NULL,
	status       TEXT    NOT NULL DEFAULT 'Running',
	output       TEXT,
	started_at   INTEGER NOT NULL,
	completed_at INTEGER,
	PRIMARY KEY (instance, execution_id)
) WITHOUT ROWID;

CREATE TABLE history (
	instance     TEXT    NOT NULL,
	execution_id INTEGER NOT NULL,
	event_id     INTEGER NOT NULL,
	kind         TEXT    NOT NULL,
	data         TEXT    NOT NULL, -- JSON of duroxide.Event
	PRIMARY KEY (instance, execution_id, event_id)
) WITHOUT ROWID;

-- Clustered by instance: a fetch tags, and an ack deletes, one instance's
-- messages. id is a store-wide increasing sequence (see hub.nextID) giving
-- queue order. The instance lock is carried by the tagged messages: an
-- instance is locked while one of its messages has locked_until > now.
CREATE TABLE orchestrator_queue (
	instance      TEXT    NOT NULL,
	id            INTEGER NOT NULL,
	work_item     TEXT    NOT NULL, -- JSON of duroxide.WorkItem
	visible_at    INTEGER NOT NULL, -- ms
	lock_token    TEXT,             -- random part of the lock token of the fetch that tagged it
	locked_until  INTEGER,          -- ms
	attempt_count INTEGER NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
	PRIMARY KEY (instance, id)
) WITHOUT ROWID;
CREATE INDEX idx_oq_visible ON orchestrator_queue(visible_at, id);

CREATE TABLE worker_queue (
	id            INTEGER PRIMARY KEY,
	instance      TEXT    NOT NULL,
	execution_id  INTEGER NOT NULL,
	activity_id   INTEGER NOT NULL,
	work_item     TEXT    NOT NULL, -- JSON of duroxide.WorkItem
	visible_at    INTEGER NOT NULL, -- ms
	lock_token    TEXT,
	locked_until  INTEGER,          -- ms
	attempt_count INTEGER NOT NULL DEFAULT 0 CHECK (attempt_count >= 0)
);
CREATE INDEX idx_wq_activity ON worker_queue(instance, execution_id, activity_id);
`,
	// 2: lease owners. Every store handle heartbeats its row; a lock whose
	// lock_owner is missing here, or whose alive_until passed, belongs to a
	// dead handle and is free to take (see Store doc).
	`
CREATE TABLE owners (
	owner_id     TEXT    NOT NULL PRIMARY KEY,
	heartbeat_at INTEGER NOT NULL, -- ms, last heartbeat
	alive_until  INTEGER NOT NULL  -- ms, dead from then on unless it beats again
) WITHOUT ROWID;
ALTER TABLE orchestrator_queue ADD COLUMN lock_owner TEXT;
ALTER TABLE worker_queue ADD COLUMN lock_owner TEXT;
`,
	// 3: the worker queue's index leaves out the activity id. An activity
	// turn reuses the completed activity's row for the next activity of
	// the same execution (reuseWorker): with the activity id in the index,
	// that update rewrote an index page too, one WAL frame of about four
	// per step. A cancellation (instance, execution, activity) reads the
	// execution's entries, its activities in flight.
	`
DROP INDEX idx_wq_activity;
CREATE INDEX idx_wq_execution ON worker_queue(instance, execution_id);
`,
}

// migrate creates the schema_version table and applies missing migrations
// in one immediate transaction (so concurrent openers serialize).
func (s *Store) migrate(ctx context.Context) (err error) {
	c := s.wconn
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return wrap("open: migrate", err)
	}
	defer func() {
		if err != nil {
			_, _ = c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return wrap("open: migrate", err)
	}
	var cur sql.NullInt64
	if err := c.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_version").Scan(&cur); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return wrap("open: migrate", err)
	}
	v := int(cur.Int64)
	if v > len(migrations) {
		return wrap("open: migrate", fmt.Errorf("database schema version %d is newer than this build supports (%d)", v, len(migrations)))
	}
	for ; v < len(migrations); v++ {
		if _, err := c.ExecContext(ctx, migrations[v]); err != nil {
			return wrap("open: migrate", fmt.Errorf("migration %d: %w", v+1, err))
		}
		if _, err := c.ExecContext(ctx, "INSERT INTO schema_version(version, applied_at) VALUES (?, ?)", v+1, nowMs()); err != nil {
			return wrap("open: migrate", err)
		}
	}
	var maxID sql.NullInt64
	if err := c.QueryRowContext(ctx, "SELECT max(id) FROM orchestrator_queue").Scan(&maxID); err != nil {
		return wrap("open: migrate", err)
	}
	s.hub.seedID(maxID.Int64)
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		return wrap("open: migrate", err)
	}
	return nil
}
