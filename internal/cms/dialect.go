package cms

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"
)

// dialect holds what differs between SQLite and PostgreSQL. Queries are
// written once, with "?" placeholders and "{p}" in front of every table name;
// [store.q] turns them into the dialect's form.
type dialect struct {
	name string // "sqlite" or "postgres"
	// prefix is put in front of table names: "cms_" (SQLite) or
	// "<schema>." (PostgreSQL).
	prefix string
	// dollar numbers placeholders $1, $2, … instead of "?".
	dollar bool
	// forUpdate ends a SELECT that reads a row about to be updated in the
	// same transaction. SQLite needs none: its transactions start with
	// BEGIN IMMEDIATE and so hold the write lock.
	forUpdate string
	// ts converts a time into the value stored: Unix milliseconds (SQLite)
	// or a timestamptz (PostgreSQL).
	ts func(time.Time) any
	// tableExists is a query with one parameter (the table's qualified
	// name) that returns one row with one boolean or integer column.
	tableExists string
	// migrationsTable creates the migration bookkeeping table.
	migrationsTable string
	// lock, if set, runs first in the migration transaction to serialize
	// concurrent migrations (PostgreSQL: an advisory lock).
	lock     string
	lockArgs []any
	// setup runs in the migration transaction before the tables are read
	// (PostgreSQL: CREATE SCHEMA).
	setup      string
	migrations []migration
	// uniqueViolation reports which unique constraint err violates: one of
	// the uq* keys below, "" if it is no unique violation.
	uniqueViolation func(err error) string
	// foreignKeyViolation reports whether err is a foreign key violation.
	foreignKeyViolation func(err error) bool
}

// Unique constraints of the instances table, as reported by uniqueViolation.
const (
	uqName         = "name"                    // active name
	uqDNSLabel     = "dns_label"               // active DNS label
	uqCreateOrch   = "create_orchestration_id" // idempotency key
	uqInternalName = "internal_name"
	uqID           = "id"
	uqOther        = "other"
)

func sqliteDialect() *dialect {
	return &dialect{
		name:            "sqlite",
		prefix:          "cms_",
		ts:              func(t time.Time) any { return t.UnixMilli() },
		tableExists:     "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
		migrationsTable: "CREATE TABLE IF NOT EXISTS cms_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
		migrations:      sqliteMigrations,
		uniqueViolation: func(err error) string {
			var se sqlite3.Error
			if !errors.As(err, &se) || se.ExtendedCode != sqlite3.ErrConstraintUnique {
				return ""
			}
			// "UNIQUE constraint failed: cms_instances.name"
			_, cols, _ := strings.Cut(se.Error(), "failed: ")
			switch strings.TrimSpace(cols) {
			case "cms_instances.name":
				return uqName
			case "cms_instances.dns_label":
				return uqDNSLabel
			case "cms_instances.create_orchestration_id":
				return uqCreateOrch
			case "cms_instances.internal_name":
				return uqInternalName
			case "cms_instances.id":
				return uqID
			}
			return uqOther
		},
		foreignKeyViolation: func(err error) bool {
			var se sqlite3.Error
			return errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintForeignKey
		},
	}
}

// pgMigrationLockKey is the first key of the two-key advisory lock that
// serializes migrations of one schema (the second is a hash of the schema
// name): "cms" in ASCII.
const pgMigrationLockKey = 0x636d73

func postgresDialect(schema string) *dialect {
	q := quoteIdent(schema)
	ms := make([]migration, len(postgresMigrations))
	for i, m := range postgresMigrations {
		m.sql = strings.ReplaceAll(m.sql, "{{s}}", q)
		ms[i] = m
	}
	return &dialect{
		name:            "postgres",
		prefix:          q + ".",
		dollar:          true,
		forUpdate:       " FOR UPDATE",
		ts:              func(t time.Time) any { return t },
		tableExists:     "SELECT to_regclass(?) IS NOT NULL",
		migrationsTable: "CREATE TABLE IF NOT EXISTS " + q + ".schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)",
		lock:            "SELECT pg_advisory_xact_lock(?, hashtext(?))",
		lockArgs:        []any{pgMigrationLockKey, schema},
		setup:           "CREATE SCHEMA IF NOT EXISTS " + q,
		migrations:      ms,
		uniqueViolation: func(err error) string {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "23505" {
				return ""
			}
			switch pe.ConstraintName {
			case "instances_active_name":
				return uqName
			case "instances_active_dns_label":
				return uqDNSLabel
			case "instances_create_orchestration":
				return uqCreateOrch
			case "instances_internal_name_key":
				return uqInternalName
			case "instances_id_key":
				return uqID
			}
			return uqOther
		},
		foreignKeyViolation: func(err error) bool {
			var pe *pgconn.PgError
			return errors.As(err, &pe) && pe.Code == "23503"
		},
	}
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// rewrite turns a query written with "?" and "{p}" into the dialect's form.
// Queries never contain "?" inside literals.
func (d *dialect) rewrite(query string) string {
	query = strings.ReplaceAll(query, "{p}", d.prefix)
	if !d.dollar {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// dbTime scans a stored time (Unix milliseconds, a time.Time or NULL) into
// *t, in UTC; NULL gives the zero time.
type dbTime struct{ t *time.Time }

func (s dbTime) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*s.t = time.Time{}
	case int64:
		*s.t = time.UnixMilli(x).UTC()
	case time.Time:
		*s.t = x.UTC()
	default:
		return errors.New("cms: unexpected time value type")
	}
	return nil
}
