package cms

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one schema version. Each dialect lists its migrations in
// version order (1, 2, …); a release that changes the schema appends the
// next one, and applied migrations never change.
type migration struct {
	version int
	name    string
	sql     string
}

// SQLite: tables are prefixed cms_ so that they live next to duroxide's
// tables in the same file. Times are Unix milliseconds.
var sqliteMigrations = []migration{{
	version: 1,
	name:    "initial",
	sql: `
CREATE TABLE cms_instances (
	seq                     INTEGER PRIMARY KEY AUTOINCREMENT,
	id                      TEXT    NOT NULL UNIQUE,
	name                    TEXT    NOT NULL,
	internal_name           TEXT    NOT NULL UNIQUE,
	driver                  TEXT    NOT NULL DEFAULT '',
	postgres_version        TEXT    NOT NULL DEFAULT '',
	storage_gb              INTEGER NOT NULL DEFAULT 0,
	internal                INTEGER NOT NULL DEFAULT 0,
	dns_label               TEXT    NOT NULL DEFAULT '',
	state                   TEXT    NOT NULL CHECK (state IN ('creating','running','failed','deleting','deleted')),
	health                  TEXT    NOT NULL DEFAULT 'unknown' CHECK (health IN ('unknown','healthy','unhealthy')),
	host                    TEXT    NOT NULL DEFAULT '',
	port                    INTEGER NOT NULL DEFAULT 0,
	connection_string       TEXT    NOT NULL DEFAULT '',
	external_ip             TEXT    NOT NULL DEFAULT '',
	dns_name                TEXT    NOT NULL DEFAULT '',
	create_orchestration_id TEXT    NOT NULL DEFAULT '',
	delete_orchestration_id TEXT    NOT NULL DEFAULT '',
	actor_orchestration_id  TEXT    NOT NULL DEFAULT '',
	failure_reason          TEXT    NOT NULL DEFAULT '',
	created_at              INTEGER NOT NULL,
	updated_at              INTEGER NOT NULL,
	deleted_at              INTEGER
);
CREATE UNIQUE INDEX cms_instances_active_name ON cms_instances (name)
	WHERE state IN ('creating','running','deleting');
CREATE UNIQUE INDEX cms_instances_active_dns_label ON cms_instances (dns_label)
	WHERE dns_label <> '' AND state IN ('creating','running','deleting');
CREATE UNIQUE INDEX cms_instances_create_orchestration ON cms_instances (create_orchestration_id)
	WHERE create_orchestration_id <> '';
CREATE INDEX cms_instances_name ON cms_instances (name, created_at);
CREATE INDEX cms_instances_state ON cms_instances (state);
CREATE INDEX cms_instances_created ON cms_instances (created_at, seq);

CREATE TABLE cms_instance_events (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	internal_name TEXT    NOT NULL REFERENCES cms_instances (internal_name),
	event_type    TEXT    NOT NULL,
	old_state     TEXT    NOT NULL DEFAULT '',
	new_state     TEXT    NOT NULL DEFAULT '',
	message       TEXT    NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL
);
CREATE INDEX cms_instance_events_instance ON cms_instance_events (internal_name, id);

CREATE TABLE cms_instance_health_checks (
	id               INTEGER PRIMARY KEY AUTOINCREMENT,
	internal_name    TEXT    NOT NULL REFERENCES cms_instances (internal_name),
	status           TEXT    NOT NULL CHECK (status IN ('unknown','healthy','unhealthy')),
	postgres_version TEXT    NOT NULL DEFAULT '',
	response_time_ms INTEGER NOT NULL DEFAULT 0,
	error            TEXT    NOT NULL DEFAULT '',
	checked_at       INTEGER NOT NULL,
	UNIQUE (internal_name, checked_at)
);

CREATE TABLE cms_instance_secrets (
	internal_name TEXT    PRIMARY KEY REFERENCES cms_instances (internal_name),
	key_id        TEXT    NOT NULL,
	nonce         BLOB    NOT NULL,
	ciphertext    BLOB    NOT NULL,
	updated_at    INTEGER NOT NULL
);
`,
}, {
	version: 2,
	name:    "instance_problem",
	sql: `
ALTER TABLE cms_instances ADD COLUMN problem TEXT NOT NULL DEFAULT '';
ALTER TABLE cms_instances ADD COLUMN problem_at INTEGER;
CREATE INDEX cms_instances_problem ON cms_instances (created_at) WHERE problem <> '';
`,
}, {
	version: 3,
	name:    "control_plane",
	sql: `
CREATE TABLE cms_settings (
	name       TEXT    PRIMARY KEY,
	value      TEXT    NOT NULL,
	updated_at INTEGER NOT NULL
);

CREATE TABLE cms_instance_placements (
	internal_name TEXT    PRIMARY KEY REFERENCES cms_instances (internal_name),
	host          TEXT    NOT NULL,
	created_at    INTEGER NOT NULL
);
`,
}, {
	version: 4,
	name:    "sessions",
	sql: `
CREATE TABLE cms_sessions (
	token_hash TEXT    PRIMARY KEY,
	kind       TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
);
CREATE INDEX cms_sessions_expires ON cms_sessions (expires_at);
`,
}, {
	version: 5,
	name:    "backups",
	sql: `
CREATE TABLE cms_backups (
	id               TEXT    PRIMARY KEY,
	internal_name    TEXT    NOT NULL,
	instance_name    TEXT    NOT NULL,
	kind             TEXT    NOT NULL,
	state            TEXT    NOT NULL CHECK (state IN ('running','completed','failed','deleted')),
	orchestration_id TEXT    NOT NULL DEFAULT '',
	started_at       INTEGER NOT NULL DEFAULT 0,
	finished_at      INTEGER NOT NULL DEFAULT 0,
	size_bytes       INTEGER NOT NULL DEFAULT 0,
	duration_ms      INTEGER NOT NULL DEFAULT 0,
	start_wal        TEXT    NOT NULL DEFAULT '',
	timeline         INTEGER NOT NULL DEFAULT 0,
	postgres_version TEXT    NOT NULL DEFAULT '',
	error            TEXT    NOT NULL DEFAULT '',
	created_at       INTEGER NOT NULL,
	deleted_at       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX cms_backups_instance ON cms_backups (internal_name, created_at);
CREATE INDEX cms_backups_name ON cms_backups (instance_name, created_at);

CREATE TABLE cms_backup_settings (
	internal_name TEXT    PRIMARY KEY,
	enabled       INTEGER NOT NULL,
	interval_ms   INTEGER NOT NULL,
	retention_ms  INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
);
`,
}, {
	version: 6,
	name:    "replicas",
	sql: `
CREATE TABLE cms_instance_replicas (
	internal_name               TEXT    PRIMARY KEY,
	replicas                    INTEGER NOT NULL DEFAULT 0,
	sync_replica                INTEGER NOT NULL DEFAULT 0,
	read_only_connection_string TEXT    NOT NULL DEFAULT '',
	primary_server              TEXT    NOT NULL DEFAULT '',
	failover_seq                INTEGER NOT NULL DEFAULT 0,
	updated_at                  INTEGER NOT NULL
);
`,
}}

// PostgreSQL: tables live in their own schema ({{s}}, quoted). Times are
// timestamptz.
var postgresMigrations = []migration{{
	version: 1,
	name:    "initial",
	sql: `
CREATE TABLE {{s}}.instances (
	seq                     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id                      uuid        NOT NULL UNIQUE,
	name                    text        NOT NULL,
	internal_name           text        NOT NULL UNIQUE,
	driver                  text        NOT NULL DEFAULT '',
	postgres_version        text        NOT NULL DEFAULT '',
	storage_gb              integer     NOT NULL DEFAULT 0,
	internal                boolean     NOT NULL DEFAULT false,
	dns_label               text        NOT NULL DEFAULT '',
	state                   text        NOT NULL CHECK (state IN ('creating','running','failed','deleting','deleted')),
	health                  text        NOT NULL DEFAULT 'unknown' CHECK (health IN ('unknown','healthy','unhealthy')),
	host                    text        NOT NULL DEFAULT '',
	port                    integer     NOT NULL DEFAULT 0,
	connection_string       text        NOT NULL DEFAULT '',
	external_ip             text        NOT NULL DEFAULT '',
	dns_name                text        NOT NULL DEFAULT '',
	create_orchestration_id text        NOT NULL DEFAULT '',
	delete_orchestration_id text        NOT NULL DEFAULT '',
	actor_orchestration_id  text        NOT NULL DEFAULT '',
	failure_reason          text        NOT NULL DEFAULT '',
	created_at              timestamptz NOT NULL,
	updated_at              timestamptz NOT NULL,
	deleted_at              timestamptz
);
CREATE UNIQUE INDEX instances_active_name ON {{s}}.instances (name)
	WHERE state IN ('creating','running','deleting');
CREATE UNIQUE INDEX instances_active_dns_label ON {{s}}.instances (dns_label)
	WHERE dns_label <> '' AND state IN ('creating','running','deleting');
CREATE UNIQUE INDEX instances_create_orchestration ON {{s}}.instances (create_orchestration_id)
	WHERE create_orchestration_id <> '';
CREATE INDEX instances_name ON {{s}}.instances (name, created_at);
CREATE INDEX instances_state ON {{s}}.instances (state);
CREATE INDEX instances_created ON {{s}}.instances (created_at, seq);

CREATE TABLE {{s}}.instance_events (
	id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	internal_name text        NOT NULL REFERENCES {{s}}.instances (internal_name),
	event_type    text        NOT NULL,
	old_state     text        NOT NULL DEFAULT '',
	new_state     text        NOT NULL DEFAULT '',
	message       text        NOT NULL DEFAULT '',
	created_at    timestamptz NOT NULL
);
CREATE INDEX instance_events_instance ON {{s}}.instance_events (internal_name, id);

CREATE TABLE {{s}}.instance_health_checks (
	id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	internal_name    text        NOT NULL REFERENCES {{s}}.instances (internal_name),
	status           text        NOT NULL CHECK (status IN ('unknown','healthy','unhealthy')),
	postgres_version text        NOT NULL DEFAULT '',
	response_time_ms bigint      NOT NULL DEFAULT 0,
	error            text        NOT NULL DEFAULT '',
	checked_at       timestamptz NOT NULL,
	UNIQUE (internal_name, checked_at)
);

CREATE TABLE {{s}}.instance_secrets (
	internal_name text        PRIMARY KEY REFERENCES {{s}}.instances (internal_name),
	key_id        text        NOT NULL,
	nonce         bytea       NOT NULL,
	ciphertext    bytea       NOT NULL,
	updated_at    timestamptz NOT NULL
);
`,
}, {
	version: 2,
	name:    "instance_problem",
	sql: `
ALTER TABLE {{s}}.instances ADD COLUMN problem text NOT NULL DEFAULT '';
ALTER TABLE {{s}}.instances ADD COLUMN problem_at timestamptz;
CREATE INDEX instances_problem ON {{s}}.instances (created_at) WHERE problem <> '';
`,
}, {
	version: 3,
	name:    "control_plane",
	sql: `
CREATE TABLE {{s}}.settings (
	name       text        PRIMARY KEY,
	value      text        NOT NULL,
	updated_at timestamptz NOT NULL
);

CREATE TABLE {{s}}.instance_placements (
	internal_name text        PRIMARY KEY REFERENCES {{s}}.instances (internal_name),
	host          text        NOT NULL,
	created_at    timestamptz NOT NULL
);
`,
}, {
	version: 4,
	name:    "sessions",
	sql: `
CREATE TABLE {{s}}.sessions (
	token_hash text   PRIMARY KEY,
	kind       text   NOT NULL,
	created_at bigint NOT NULL,
	expires_at bigint NOT NULL
);
CREATE INDEX sessions_expires ON {{s}}.sessions (expires_at);
`,
}, {
	version: 5,
	name:    "backups",
	sql: `
CREATE TABLE {{s}}.backups (
	id               text    PRIMARY KEY,
	internal_name    text    NOT NULL,
	instance_name    text    NOT NULL,
	kind             text    NOT NULL,
	state            text    NOT NULL CHECK (state IN ('running','completed','failed','deleted')),
	orchestration_id text    NOT NULL DEFAULT '',
	started_at       bigint  NOT NULL DEFAULT 0,
	finished_at      bigint  NOT NULL DEFAULT 0,
	size_bytes       bigint  NOT NULL DEFAULT 0,
	duration_ms      bigint  NOT NULL DEFAULT 0,
	start_wal        text    NOT NULL DEFAULT '',
	timeline         integer NOT NULL DEFAULT 0,
	postgres_version text    NOT NULL DEFAULT '',
	error            text    NOT NULL DEFAULT '',
	created_at       bigint  NOT NULL,
	deleted_at       bigint  NOT NULL DEFAULT 0
);
CREATE INDEX backups_instance ON {{s}}.backups (internal_name, created_at);
CREATE INDEX backups_name ON {{s}}.backups (instance_name, created_at);

CREATE TABLE {{s}}.backup_settings (
	internal_name text    PRIMARY KEY,
	enabled       integer NOT NULL,
	interval_ms   bigint  NOT NULL,
	retention_ms  bigint  NOT NULL,
	updated_at    bigint  NOT NULL
);
`,
}, {
	version: 6,
	name:    "replicas",
	sql: `
CREATE TABLE {{s}}.instance_replicas (
	internal_name               text    PRIMARY KEY,
	replicas                    integer NOT NULL DEFAULT 0,
	sync_replica                integer NOT NULL DEFAULT 0,
	read_only_connection_string text    NOT NULL DEFAULT '',
	primary_server              text    NOT NULL DEFAULT '',
	failover_seq                integer NOT NULL DEFAULT 0,
	updated_at                  bigint  NOT NULL
);
`,
}}

// SchemaVersion is the schema version this release migrates to.
func SchemaVersion() int { return len(sqliteMigrations) }

// migrate brings the schema up to date. Everything runs in one transaction:
// on SQLite a BEGIN IMMEDIATE one (the file's write lock), on PostgreSQL one
// that first takes a transaction-scoped advisory lock on the schema. So
// processes that start together apply each migration exactly once, and a
// failed migration leaves nothing behind.
func (s *store) migrate(ctx context.Context) error {
	ms := s.d.migrations
	// Fast path without locks or DDL: already up to date.
	cur, err := s.schemaVersion(ctx, s.db)
	if err != nil {
		return err
	}
	if cur >= len(ms) {
		if cur > len(ms) {
			s.log.Warn("cms: database schema is newer than this release", "db_version", cur, "release_version", len(ms))
		}
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if s.d.lock != "" {
		if _, err := tx.ExecContext(ctx, s.q(s.d.lock), s.d.lockArgs...); err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
	}
	if s.d.setup != "" {
		if _, err := tx.ExecContext(ctx, s.d.setup); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.d.migrationsTable); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	if cur, err = s.schemaVersion(ctx, tx); err != nil {
		return err
	}
	for _, m := range ms {
		if m.version <= cur {
			continue
		}
		// No arguments: both drivers run the whole multi-statement text.
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, s.q("INSERT INTO {p}schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
			m.version, m.name, s.d.ts(s.now())); err != nil {
			return fmt.Errorf("record migration %d: %w", m.version, err)
		}
		s.log.Info("cms: applied migration", "dialect", s.d.name, "version", m.version, "name", m.name)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion returns the highest applied migration, 0 if none.
func (s *store) schemaVersion(ctx context.Context, q queryer) (int, error) {
	var exists bool
	if err := q.QueryRowContext(ctx, s.q(s.d.tableExists), s.d.rewrite("{p}schema_migrations")).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := q.QueryRowContext(ctx, s.q("SELECT coalesce(max(version), 0) FROM {p}schema_migrations")).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}
