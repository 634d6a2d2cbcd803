package postgres

import (
	"context"
	"embed"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migrations live in migrations/NNNN_name.sql. Each file runs once per
// schema, in version order, in its own transaction, with {{s}} replaced by
// the quoted schema name and {{chan}} by the schema's NOTIFY channel. A
// release that changes the schema adds the next file; applied files never
// change.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := migrationFS.ReadDir("migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		base := e.Name()
		num, rest, ok := strings.Cut(strings.TrimSuffix(base, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("bad migration file name %q", base)
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", base))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: rest, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migrations are not numbered 1..n: %d at position %d", m.version, i+1)
		}
	}
	return out, nil
}

// LatestSchemaVersion is the schema version this release migrates to.
func LatestSchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrationLockKey is the first key of the two-key advisory lock that
// serializes migrations of one schema (the second is a hash of the schema).
const migrationLockKey = 0x64757278 // "durx"

// migrate brings the schema up to date. All of it runs in one transaction
// holding a transaction-scoped advisory lock on the schema, so concurrent
// starts of several processes apply each migration exactly once and a
// failed migration leaves nothing behind.
func (s *Store) migrate(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	// Fast path without locks or DDL (which also needs no CREATE privilege
	// on a schema provisioned by someone else): already up to date.
	var reg *string
	if err := pool.QueryRow(ctx, "SELECT to_regclass($1)::text", s.q+".schema_migrations").Scan(&reg); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if reg != nil {
		var current int
		if err := pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+s.q+".schema_migrations").Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current >= len(ms) {
			return nil
		}
	}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", migrationLockKey, s.schema); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+s.q); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.q+`.schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+s.q+".schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		sql := strings.NewReplacer("{{s}}", s.q, "{{chan}}", s.channel).Replace(m.sql)
		// No arguments: the simple protocol runs the whole multi-statement file.
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.q+".schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return fmt.Errorf("record migration %d: %w", m.version, err)
		}
	}
	return tx.Commit(ctx)
}
