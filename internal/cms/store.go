package cms

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/mattn/go-sqlite3"
)

// DefaultSchema is the PostgreSQL schema of the CMS tables.
const DefaultSchema = "toygres_cms"

// DefaultBusyTimeout is how long a SQLite connection waits for the file's
// write lock, which the durable-execution store's connections share.
const DefaultBusyTimeout = 10 * time.Second

// Event types.
const (
	EventStateChange  = "state_change"
	EventHealthChange = "health_change"
	EventNote         = "note"
)

// ErrInvalidTransition is returned (wrapped) by UpdateState for a state
// change the lifecycle does not allow: a deleted instance stays deleted.
var ErrInvalidTransition = errors.New("cms: invalid state transition")

// Options configure OpenSQLite and OpenPostgres.
type Options struct {
	// SecretKey is the 32-byte AES-256-GCM key that encrypts passwords.
	// Exactly one of SecretKey and KeyFile must be set.
	SecretKey []byte
	// KeyFile holds the key (see LoadOrCreateKeyFile). If it does not exist
	// a random key is generated and written to it with mode 0600. Back it
	// up: stored passwords cannot be decrypted without it.
	KeyFile string
	// Logger receives migration and key-file messages (never secrets).
	// Nil discards them.
	Logger *slog.Logger

	// Schema is the PostgreSQL schema (default DefaultSchema): lower-case
	// letters, digits and underscores, at most 48 bytes. Ignored by SQLite,
	// whose tables are prefixed cms_.
	Schema string
	// BusyTimeout is SQLite's lock wait (default DefaultBusyTimeout).
	BusyTimeout time.Duration
	// MaxConns caps the connection pool (default 4 for SQLite, 10 for
	// PostgreSQL).
	MaxConns int
}

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// store implements Store on database/sql for both dialects.
type store struct {
	db   *sql.DB
	d    *dialect
	seal *sealer
	log  *slog.Logger

	qmu    sync.RWMutex
	qcache map[string]string
}

var _ Store = (*store)(nil)

// OpenSQLite opens the CMS in the SQLite file at path, normally the file of
// the durable-execution store (duroxide/sqlite), and creates or migrates its
// cms_ tables. The file is put in WAL mode; every transaction starts with
// BEGIN IMMEDIATE and waits up to Options.BusyTimeout for the write lock,
// which it shares with the other connection pools on the file.
//
// The Store returned by OpenSQLite and OpenPostgres behaves the same on both
// databases. Beyond the Store contract:
//
//   - Names are enforced by a partial unique index over active states, so
//     racing creates of one name leave exactly one winner. A non-empty
//     DNSLabel is likewise held by one active instance at a time (a clash is
//     also ErrNameTaken), and UpdateState fails with ErrNameTaken when it
//     would make an instance active while another holds its name.
//   - CreateInstance replayed with a CreateOrchestrationID that created a
//     different record (another Name or InternalName) fails.
//   - Records are removed only by Purge. A deleted instance stays deleted
//     (ErrInvalidTransition), and moving to deleted also forgets its
//     password.
//   - Times are UTC with millisecond precision; records, events and checks
//     of the same millisecond keep their insertion order. A second health
//     check of one instance in the same millisecond is ignored.
//   - Methods taking an internal name return ErrNotFound (wrapped) when no
//     such instance exists, including SetPassword, AddEvent, Events,
//     RecordHealthCheck and HealthChecks; DeletePassword is a no-op then.
//   - Connection strings that carry a password are refused.
//   - Passwords are sealed with AES-256-GCM under a random nonce per write,
//     bound to the instance's internal name, and stored with the key's
//     KeyID; one written under another key fails with ErrDecrypt.
func OpenSQLite(ctx context.Context, path string, opts Options) (Store, error) {
	if path == "" || path == ":memory:" {
		return nil, errors.New("cms: open sqlite: a file path is required")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("cms: open sqlite: path %q must not contain '?' or '#'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("cms: open sqlite: %w", err)
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = DefaultBusyTimeout
	}
	// No _journal_mode here: WAL is a property of the file, set once below.
	dsn := fmt.Sprintf("%s?_busy_timeout=%d&_txlock=immediate&_synchronous=NORMAL&_foreign_keys=1",
		abs, busy.Milliseconds())
	db := sql.OpenDB(sqliteConnector{dsn: dsn})
	n := opts.MaxConns
	if n <= 0 {
		n = 4
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	if err := sqliteWAL(ctx, db, busy); err != nil {
		db.Close()
		return nil, fmt.Errorf("cms: open sqlite %s: %w", abs, err)
	}
	return finishOpen(ctx, db, sqliteDialect(), opts, "sqlite "+abs)
}

// sqliteWAL puts the file in WAL mode. Switching the journal mode can fail
// with SQLITE_BUSY without waiting on the busy handler while another
// connection (this process's or another's) opens or switches the file, so
// it is retried until timeout.
func sqliteWAL(ctx context.Context, db *sql.DB, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		if err == nil {
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("cannot enable WAL mode (journal mode is %q)", mode)
			}
			return nil
		}
		var se sqlite3.Error
		if !errors.As(err, &se) || (se.Code != sqlite3.ErrBusy && se.Code != sqlite3.ErrLocked) || time.Now().After(deadline) {
			return fmt.Errorf("enable WAL mode: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sqliteConnector opens go-sqlite3 connections without registering a
// driver name.
type sqliteConnector struct{ dsn string }

func (c sqliteConnector) Connect(context.Context) (driver.Conn, error) {
	return c.Driver().Open(c.dsn)
}
func (c sqliteConnector) Driver() driver.Driver { return &sqlite3.SQLiteDriver{} }

// OpenPostgres connects to the PostgreSQL database at url (a postgres:// URL
// or key=value string as accepted by pgx) and creates or migrates the CMS
// tables in Options.Schema (default toygres_cms). Migrations run under an
// advisory lock, so several processes may open the same database at once.
func OpenPostgres(ctx context.Context, url string, opts Options) (Store, error) {
	schema := opts.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	if !schemaRE.MatchString(schema) {
		return nil, fmt.Errorf("cms: open postgres: invalid schema name %q: want [a-z_][a-z0-9_]*, at most 48 bytes", schema)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("cms: open postgres: parse connection URL: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	n := opts.MaxConns
	if n <= 0 {
		n = 10
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return finishOpen(ctx, db, postgresDialect(schema), opts, "postgres schema "+schema)
}

func finishOpen(ctx context.Context, db *sql.DB, d *dialect, opts Options, where string) (Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := resolveKey(opts, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	seal, err := newSealer(key)
	clear(key)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &store{db: db, d: d, seal: seal, log: log, qcache: map[string]string{}}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("cms: open %s: %w", where, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("cms: open %s: migrate: %w", where, err)
	}
	if err := s.checkKeyID(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connection pool.
func (s *store) Close() error { return s.db.Close() }

// q returns query in the store's dialect (cached).
func (s *store) q(query string) string {
	s.qmu.RLock()
	r, ok := s.qcache[query]
	s.qmu.RUnlock()
	if ok {
		return r
	}
	r = s.d.rewrite(query)
	s.qmu.Lock()
	s.qcache[query] = r
	s.qmu.Unlock()
	return r
}

// now is the time stored for "now": UTC, truncated to milliseconds so that
// both dialects store exactly what they return.
func (s *store) now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// tx runs fn in a transaction (on SQLite a BEGIN IMMEDIATE one).
func (s *store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func validState(st State) bool {
	switch st {
	case StateCreating, StateRunning, StateFailed, StateDeleting, StateDeleted:
		return true
	}
	return false
}

func validHealth(h Health) bool {
	switch h {
	case HealthUnknown, HealthHealthy, HealthUnhealthy:
		return true
	}
	return false
}

// hasPassword reports whether a connection string carries a password: a
// URL with one in its user info, or a password keyword or query parameter.
func hasPassword(cs string) bool {
	if u, err := url.Parse(cs); err == nil && u.User != nil {
		if _, set := u.User.Password(); set {
			return true
		}
	}
	return strings.Contains(strings.ToLower(cs), "password=")
}

// activeStates is the SQL list of states that hold a name; it must match
// State.Active and the partial unique indexes.
const activeStates = "('creating','running','deleting')"

const instanceCols = `id, name, internal_name, driver, postgres_version, storage_gb, internal, dns_label,
	state, health, host, port, connection_string, external_ip, dns_name,
	create_orchestration_id, delete_orchestration_id, actor_orchestration_id, failure_reason,
	created_at, updated_at, deleted_at`

// instanceSelectCols are the columns scanInstance reads: instanceCols plus
// the columns of later migrations, which inserts leave at their defaults.
const instanceSelectCols = instanceCols + ", problem, problem_at"

type scanner interface{ Scan(dest ...any) error }

func scanInstance(r scanner) (*Instance, error) {
	var i Instance
	err := r.Scan(&i.ID, &i.Name, &i.InternalName, &i.Driver, &i.PostgresVersion, &i.StorageGB, &i.Internal, &i.DNSLabel,
		&i.State, &i.Health, &i.Host, &i.Port, &i.ConnectionString, &i.ExternalIP, &i.DNSName,
		&i.CreateOrchestrationID, &i.DeleteOrchestrationID, &i.ActorOrchestrationID, &i.FailureReason,
		dbTime{&i.CreatedAt}, dbTime{&i.UpdatedAt}, dbTime{&i.DeletedAt}, &i.Problem, dbTime{&i.ProblemAt})
	if err != nil {
		return nil, err
	}
	return &i, nil
}

// getOne runs a query for at most one instance; ErrNoRows becomes ErrNotFound.
func (s *store) getOne(ctx context.Context, query string, args ...any) (*Instance, error) {
	inst, err := scanInstance(s.db.QueryRowContext(ctx, s.q(query), args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return inst, err
}

// CreateInstance implements Store.
func (s *store) CreateInstance(ctx context.Context, inst Instance) (*Instance, error) {
	if inst.Name == "" || inst.InternalName == "" {
		return nil, errors.New("cms: create instance: Name and InternalName are required")
	}
	if hasPassword(inst.ConnectionString) {
		return nil, fmt.Errorf("cms: create instance %q: the connection string must not contain a password", inst.Name)
	}
	if inst.CreateOrchestrationID != "" {
		got, err := s.byCreateOrchestration(ctx, inst)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return got, err
		}
	}
	now := s.now()
	if inst.ID == "" {
		inst.ID = newUUID()
	}
	inst.State, inst.Health = StateCreating, HealthUnknown
	inst.CreatedAt, inst.UpdatedAt, inst.DeletedAt = now, now, time.Time{}
	inst.Problem, inst.ProblemAt = "", time.Time{}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO {p}instances (`+instanceCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			inst.ID, inst.Name, inst.InternalName, inst.Driver, inst.PostgresVersion, inst.StorageGB, inst.Internal, inst.DNSLabel,
			string(inst.State), string(inst.Health), inst.Host, inst.Port, inst.ConnectionString, inst.ExternalIP, inst.DNSName,
			inst.CreateOrchestrationID, inst.DeleteOrchestrationID, inst.ActorOrchestrationID, inst.FailureReason,
			s.d.ts(now), s.d.ts(now), nil); err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, inst.InternalName, EventStateChange, "", StateCreating, "instance created", now)
	})
	if err == nil {
		return &inst, nil
	}
	uq := s.d.uniqueViolation(err)
	if uq != "" && inst.CreateOrchestrationID != "" {
		// A concurrent or earlier insert by the same orchestration (which
		// may surface as a violation of any of the unique indexes).
		got, gerr := s.byCreateOrchestration(ctx, inst)
		if gerr == nil || !errors.Is(gerr, ErrNotFound) {
			return got, gerr
		}
	}
	switch uq {
	case uqName:
		return nil, fmt.Errorf("cms: create instance %q: %w", inst.Name, ErrNameTaken)
	case uqDNSLabel:
		return nil, fmt.Errorf("cms: create instance %q: DNS label %q: %w", inst.Name, inst.DNSLabel, ErrNameTaken)
	case uqInternalName:
		return nil, fmt.Errorf("cms: create instance %q: internal name %q already exists", inst.Name, inst.InternalName)
	case uqID:
		return nil, fmt.Errorf("cms: create instance %q: id %q already exists", inst.Name, inst.ID)
	}
	return nil, fmt.Errorf("cms: create instance %q: %w", inst.Name, err)
}

// byCreateOrchestration returns the instance created by inst's create
// orchestration, checking that it is the same record.
func (s *store) byCreateOrchestration(ctx context.Context, inst Instance) (*Instance, error) {
	got, err := s.getOne(ctx, "SELECT "+instanceSelectCols+" FROM {p}instances WHERE create_orchestration_id = ?", inst.CreateOrchestrationID)
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("cms: create instance %q: %w", inst.Name, err)
	}
	if got.Name != inst.Name || got.InternalName != inst.InternalName {
		return nil, fmt.Errorf("cms: create instance %q: orchestration %q already created instance %q (%s)",
			inst.Name, inst.CreateOrchestrationID, got.Name, got.InternalName)
	}
	return got, nil
}

// Get implements Store.
func (s *store) Get(ctx context.Context, name string) (*Instance, error) {
	inst, err := s.getOne(ctx, "SELECT "+instanceSelectCols+" FROM {p}instances WHERE name = ?"+
		" ORDER BY CASE WHEN state IN "+activeStates+" THEN 0 ELSE 1 END, created_at DESC, seq DESC LIMIT 1", name)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: get %q: %w", name, err)
	}
	return inst, nil
}

// GetByInternalName implements Store.
func (s *store) GetByInternalName(ctx context.Context, internalName string) (*Instance, error) {
	inst, err := s.getOne(ctx, "SELECT "+instanceSelectCols+" FROM {p}instances WHERE internal_name = ?", internalName)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: internal name %q", ErrNotFound, internalName)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: get %q: %w", internalName, err)
	}
	return inst, nil
}

// List implements Store. Instances created in the same millisecond are
// ordered by insertion, newest first.
func (s *store) List(ctx context.Context, opts ListOptions) ([]Instance, error) {
	var where []string
	var args []any
	switch {
	case len(opts.States) > 0:
		ph := make([]string, len(opts.States))
		for i, st := range opts.States {
			if !validState(st) {
				return nil, fmt.Errorf("cms: list: invalid state %q", st)
			}
			ph[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	case !opts.IncludeDeleted:
		where = append(where, "state <> 'deleted'")
	}
	if opts.Broken {
		where = append(where, "problem <> ''")
	}
	if opts.Name != "" {
		where = append(where, "name = ?")
		args = append(args, opts.Name)
	}
	query := "SELECT " + instanceSelectCols + " FROM {p}instances"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY created_at DESC, seq DESC"
	if opts.Limit > 0 {
		query += " LIMIT ?"
		args = append(args, opts.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("cms: list: %w", err)
	}
	defer rows.Close()
	out := []Instance{}
	for rows.Next() {
		inst, err := scanInstance(rows)
		if err != nil {
			return nil, fmt.Errorf("cms: list: %w", err)
		}
		out = append(out, *inst)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cms: list: %w", err)
	}
	return out, nil
}

// UpdateState implements Store. Moving to deleted also forgets the stored
// password. A deleted instance stays deleted: moving it to another state
// fails. Moving an instance to an active state while another active
// instance holds its name (or DNS label) fails with ErrNameTaken.
func (s *store) UpdateState(ctx context.Context, internalName string, state State, u StateUpdate) (State, error) {
	if !validState(state) {
		return "", fmt.Errorf("cms: update state of %q: invalid state %q", internalName, state)
	}
	if hasPassword(u.ConnectionString) {
		return "", fmt.Errorf("cms: update state of %q: the connection string must not contain a password", internalName)
	}
	var prev State
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, s.q("SELECT state FROM {p}instances WHERE internal_name = ?"+s.d.forUpdate), internalName).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		prev = State(cur)
		if prev == StateDeleted && state != StateDeleted {
			return fmt.Errorf("%w: a deleted instance cannot become %s", ErrInvalidTransition, state)
		}
		now := s.now()
		changed := prev != state
		var sets []string
		var args []any
		set := func(col string, v any) {
			sets = append(sets, col+" = ?")
			args = append(args, v)
		}
		if changed {
			set("state", string(state))
			if state == StateDeleted {
				// Nothing is left of a deleted instance to be broken.
				set("deleted_at", s.d.ts(now))
				set("problem", "")
				set("problem_at", nil)
			}
		}
		if u.Host != "" {
			set("host", u.Host)
		}
		if u.Port != 0 {
			set("port", u.Port)
		}
		if u.ConnectionString != "" {
			set("connection_string", u.ConnectionString)
		}
		if u.ExternalIP != "" {
			set("external_ip", u.ExternalIP)
		}
		if u.DNSName != "" {
			set("dns_name", u.DNSName)
		}
		if u.DeleteOrchestrationID != "" {
			set("delete_orchestration_id", u.DeleteOrchestrationID)
		}
		if u.ActorOrchestrationID != "" {
			set("actor_orchestration_id", u.ActorOrchestrationID)
		}
		if u.FailureReason != "" {
			set("failure_reason", u.FailureReason)
		}
		if len(sets) == 0 {
			return nil
		}
		set("updated_at", s.d.ts(now))
		args = append(args, internalName)
		if _, err := tx.ExecContext(ctx, s.q("UPDATE {p}instances SET "+strings.Join(sets, ", ")+" WHERE internal_name = ?"), args...); err != nil {
			return err
		}
		if !changed {
			return nil
		}
		if state == StateDeleted {
			if _, err := tx.ExecContext(ctx, s.q("DELETE FROM {p}instance_secrets WHERE internal_name = ?"), internalName); err != nil {
				return err
			}
		}
		return s.insertEvent(ctx, tx, internalName, EventStateChange, prev, state, u.Message, now)
	})
	switch {
	case err == nil:
		if prev != state {
			s.log.Debug("cms: state change", "instance", internalName, "from", string(prev), "to", string(state))
		}
		return prev, nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalidTransition):
		return "", fmt.Errorf("cms: update state of %q: %w", internalName, err)
	}
	switch s.d.uniqueViolation(err) {
	case uqName, uqDNSLabel:
		return "", fmt.Errorf("cms: update state of %q to %s: another active instance has its name or DNS label: %w", internalName, state, ErrNameTaken)
	}
	return "", fmt.Errorf("cms: update state of %q: %w", internalName, err)
}

// UpdateHealth implements Store. ErrNotFound for an unknown instance.
func (s *store) UpdateHealth(ctx context.Context, internalName string, h Health) error {
	if !validHealth(h) {
		return fmt.Errorf("cms: update health of %q: invalid health %q", internalName, h)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error { return s.updateHealth(ctx, tx, internalName, h) })
	if err != nil {
		return fmt.Errorf("cms: update health of %q: %w", internalName, err)
	}
	return nil
}

// updateHealth sets a running instance's health in tx, with an event when
// it changes.
func (s *store) updateHealth(ctx context.Context, tx *sql.Tx, internalName string, h Health) error {
	var st, cur string
	err := tx.QueryRowContext(ctx, s.q("SELECT state, health FROM {p}instances WHERE internal_name = ?"+s.d.forUpdate), internalName).Scan(&st, &cur)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if State(st) != StateRunning || Health(cur) == h {
		return nil
	}
	now := s.now()
	if _, err := tx.ExecContext(ctx, s.q("UPDATE {p}instances SET health = ?, updated_at = ? WHERE internal_name = ?"),
		string(h), s.d.ts(now), internalName); err != nil {
		return err
	}
	return s.insertEvent(ctx, tx, internalName, EventHealthChange, "", "", fmt.Sprintf("health %s -> %s", cur, h), now)
}

// SetActor implements Store. ErrNotFound for an unknown instance.
func (s *store) SetActor(ctx context.Context, internalName, orchestrationID string) error {
	res, err := s.db.ExecContext(ctx, s.q("UPDATE {p}instances SET actor_orchestration_id = ?, updated_at = ? WHERE internal_name = ?"),
		orchestrationID, s.d.ts(s.now()), internalName)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return fmt.Errorf("cms: set actor of %q: %w", internalName, err)
	}
	return nil
}

func mustAffect(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

func (s *store) insertEvent(ctx context.Context, tx *sql.Tx, internalName, typ string, oldState, newState State, msg string, at time.Time) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO {p}instance_events (internal_name, event_type, old_state, new_state, message, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`), internalName, typ, string(oldState), string(newState), msg, s.d.ts(at))
	return err
}

// AddEvent implements Store. ErrNotFound for an unknown instance.
func (s *store) AddEvent(ctx context.Context, internalName, message string) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO {p}instance_events (internal_name, event_type, message, created_at)
		VALUES (?, ?, ?, ?)`), internalName, EventNote, message, s.d.ts(s.now()))
	if err != nil && s.d.foreignKeyViolation(err) {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("cms: add event to %q: %w", internalName, err)
	}
	return nil
}

const eventCols = "id, internal_name, event_type, old_state, new_state, message, created_at"

func (s *store) queryEvents(ctx context.Context, query string, args ...any) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.ID, &e.Instance, &e.Type, &e.OldState, &e.NewState, &e.Message, dbTime{&e.CreatedAt}); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// limitClause appends " LIMIT ?" and its argument when limit > 0.
func limitClause(query string, args []any, limit int) (string, []any) {
	if limit > 0 {
		return query + " LIMIT ?", append(args, limit)
	}
	return query, args
}

// exists reports whether an instance with this internal name exists.
func (s *store) exists(ctx context.Context, internalName string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, s.q("SELECT 1 FROM {p}instances WHERE internal_name = ?"), internalName).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// Events implements Store. Events of one millisecond are ordered by
// insertion. ErrNotFound for an unknown instance.
func (s *store) Events(ctx context.Context, internalName string, limit int) ([]Event, error) {
	q, args := limitClause("SELECT "+eventCols+" FROM {p}instance_events WHERE internal_name = ? ORDER BY id DESC", []any{internalName}, limit)
	evs, err := s.queryEvents(ctx, q, args...)
	if err == nil && len(evs) == 0 {
		var ok bool
		if ok, err = s.exists(ctx, internalName); err == nil && !ok {
			err = ErrNotFound
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cms: events of %q: %w", internalName, err)
	}
	return evs, nil
}

// RecentEvents implements Store (limit 0: all).
func (s *store) RecentEvents(ctx context.Context, limit int) ([]Event, error) {
	q, args := limitClause("SELECT "+eventCols+" FROM {p}instance_events ORDER BY id DESC", nil, limit)
	evs, err := s.queryEvents(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("cms: recent events: %w", err)
	}
	return evs, nil
}

// RecordHealthCheck implements Store. CheckedAt is stored with millisecond
// precision (zero: now); a second check of the same instance in the same
// millisecond is ignored. ErrNotFound for an unknown instance.
func (s *store) RecordHealthCheck(ctx context.Context, hc HealthCheck) error {
	if !validHealth(hc.Status) {
		return fmt.Errorf("cms: record health check of %q: invalid status %q", hc.Instance, hc.Status)
	}
	at := hc.CheckedAt.UTC().Truncate(time.Millisecond)
	if hc.CheckedAt.IsZero() {
		at = s.now()
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO {p}instance_health_checks
			(internal_name, status, postgres_version, response_time_ms, error, checked_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (internal_name, checked_at) DO NOTHING`),
			hc.Instance, string(hc.Status), hc.PostgresVersion, hc.ResponseTimeMs, hc.Error, s.d.ts(at))
		if err != nil && s.d.foreignKeyViolation(err) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err // a check recorded before (a redelivery) changes nothing
		}
		return s.updateHealth(ctx, tx, hc.Instance, hc.Status)
	})
	if err != nil {
		return fmt.Errorf("cms: record health check of %q: %w", hc.Instance, err)
	}
	return nil
}

// HealthChecks implements Store, ordered by CheckedAt. ErrNotFound for an
// unknown instance.
func (s *store) HealthChecks(ctx context.Context, internalName string, limit int) ([]HealthCheck, error) {
	q, args := limitClause(`SELECT id, internal_name, status, postgres_version, response_time_ms, error, checked_at
		FROM {p}instance_health_checks WHERE internal_name = ? ORDER BY checked_at DESC, id DESC`, []any{internalName}, limit)
	out, err := func() ([]HealthCheck, error) {
		rows, err := s.db.QueryContext(ctx, s.q(q), args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := []HealthCheck{}
		for rows.Next() {
			var hc HealthCheck
			if err := rows.Scan(&hc.ID, &hc.Instance, &hc.Status, &hc.PostgresVersion, &hc.ResponseTimeMs, &hc.Error, dbTime{&hc.CheckedAt}); err != nil {
				return nil, err
			}
			out = append(out, hc)
		}
		return out, rows.Err()
	}()
	if err == nil && len(out) == 0 {
		var ok bool
		if ok, err = s.exists(ctx, internalName); err == nil && !ok {
			err = ErrNotFound
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cms: health checks of %q: %w", internalName, err)
	}
	return out, nil
}

// Counts implements Store. Every state and health value is present in the
// maps, with 0 when no instance has it.
func (s *store) Counts(ctx context.Context) (*Counts, error) {
	c := &Counts{ByState: map[State]int{}, ByHealth: map[Health]int{}}
	for _, st := range []State{StateCreating, StateRunning, StateFailed, StateDeleting, StateDeleted} {
		c.ByState[st] = 0
	}
	for _, h := range []Health{HealthUnknown, HealthHealthy, HealthUnhealthy} {
		c.ByHealth[h] = 0
	}
	count := func(query string, add func(string, int)) error {
		rows, err := s.db.QueryContext(ctx, s.q(query))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			var n int
			if err := rows.Scan(&k, &n); err != nil {
				return err
			}
			add(k, n)
		}
		return rows.Err()
	}
	if err := count("SELECT state, count(*) FROM {p}instances GROUP BY state", func(k string, n int) { c.ByState[State(k)] = n }); err != nil {
		return nil, fmt.Errorf("cms: counts: %w", err)
	}
	if err := count("SELECT health, count(*) FROM {p}instances WHERE state = 'running' GROUP BY health", func(k string, n int) { c.ByHealth[Health(k)] = n }); err != nil {
		return nil, fmt.Errorf("cms: counts: %w", err)
	}
	return c, nil
}

// SetPassword implements Store: the password is encrypted with AES-256-GCM
// under a fresh random nonce. ErrNotFound for an unknown instance.
func (s *store) SetPassword(ctx context.Context, internalName, password string) error {
	nonce, ct, err := s.seal.seal(internalName, password)
	if err != nil {
		return fmt.Errorf("cms: set password of %q: encrypt: %w", internalName, err)
	}
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO {p}instance_secrets (internal_name, key_id, nonce, ciphertext, updated_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (internal_name) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce,
			ciphertext = excluded.ciphertext, updated_at = excluded.updated_at`),
		internalName, s.seal.keyID, nonce, ct, s.d.ts(s.now()))
	if err != nil && s.d.foreignKeyViolation(err) {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("cms: set password of %q: %w", internalName, err)
	}
	return nil
}

// Password implements Store. A password written with another key fails
// with ErrDecrypt.
func (s *store) Password(ctx context.Context, internalName string) (string, error) {
	var keyID string
	var nonce, ct []byte
	err := s.db.QueryRowContext(ctx, s.q("SELECT key_id, nonce, ciphertext FROM {p}instance_secrets WHERE internal_name = ?"),
		internalName).Scan(&keyID, &nonce, &ct)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("cms: password of %q: %w", internalName, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("cms: password of %q: %w", internalName, err)
	}
	pw, err := s.seal.open(internalName, keyID, nonce, ct)
	if err != nil {
		return "", fmt.Errorf("cms: password of %q: %w", internalName, err)
	}
	return pw, nil
}

// DeletePassword implements Store; it is a no-op when none is stored.
func (s *store) DeletePassword(ctx context.Context, internalName string) error {
	if _, err := s.db.ExecContext(ctx, s.q("DELETE FROM {p}instance_secrets WHERE internal_name = ?"), internalName); err != nil {
		return fmt.Errorf("cms: delete password of %q: %w", internalName, err)
	}
	return nil
}
