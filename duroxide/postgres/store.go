package postgres

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/internal/wire"
)

// DefaultSchema is the schema used when WithSchema is not given.
const DefaultSchema = "duroxide"

// DefaultPoolSize is the maximum number of pooled connections when
// WithPoolSize is not given. The NOTIFY listener uses one more connection.
const DefaultPoolSize = 10

// Option configures Open.
type Option func(*options)

type options struct {
	schema    string
	poolSize  int
	poolCfg   func(*pgxpool.Config)
	heartbeat time.Duration
	deadAfter time.Duration
	group     int
	noWarm    bool
}

// Default liveness settings (see WithLiveness).
const (
	DefaultHeartbeat = time.Second
	DefaultDeadAfter = 5 * time.Second
)

// WithLiveness sets how often the store handle proves it is alive
// (heartbeat, default 1s) and after how long without a heartbeat the other
// handles consider it dead and take over its leases (deadAfter, default
// 5s), judged on the database's clock. deadAfter should span several
// heartbeats: a live handle wrongly found dead (a connection outage longer
// than deadAfter) loses its leases, and its work runs again.
func WithLiveness(heartbeat, deadAfter time.Duration) Option {
	return func(o *options) {
		if heartbeat > 0 {
			o.heartbeat = heartbeat
		}
		if deadAfter > 0 {
			o.deadAfter = deadAfter
		}
	}
}

// WithSchema selects the PostgreSQL schema holding the store's tables and
// functions (default "duroxide"). Stores in different schemas of one
// database are fully isolated. The name must match [a-z_][a-z0-9_]* and be
// at most 48 bytes long; the schema is created if missing.
func WithSchema(name string) Option { return func(o *options) { o.schema = name } }

// DefaultGroupCommit is the number of group-commit transactions a handle
// runs at once when WithGroupCommit is not given.
const DefaultGroupCommit = 1

// WithGroupCommit sets how many transactions at once carry the runtime's
// write calls (AckOrchestrationItem, CommitActivityTurn, AckWorkItem,
// EnqueueWorkItem; default 1). A call that finds one of them idle runs at
// once; calls that arrive while all are busy share the next transaction
// (one WAL flush), each in its own savepoint, so each still succeeds or
// fails alone. 0 runs every call as its own transaction. Each uses one
// pooled connection while it runs; at most half the pool.
//
// A client's calls (StartTurn, EnqueueStarts, EnqueueOrchestratorItem) run
// on their own connection at once: a client usually waits for each before
// the next, and queueing it behind a transaction in flight would add that
// transaction's time to its latency. The other way round, a batch that
// would start while a client call is in flight waits until that call
// returns (at most 2 ms), so that the call does not wait for the batch's
// WAL flush before its own.
func WithGroupCommit(n int) Option { return func(o *options) { o.group = max(n, 0) } }

// WithoutWarmup leaves the pool's connections as they open: Open does not
// run the store's common calls once on each (see Open). The warm-up costs
// Open about 50 ms on a fresh schema with ten connections (measured on a
// 2-core machine with a local server) and saves the first calls of a
// runtime more than that; a short-lived client that makes a call or two
// can skip it.
func WithoutWarmup() Option { return func(o *options) { o.noWarm = true } }

// WithPoolSize sets the maximum number of pooled connections (default 10).
func WithPoolSize(n int) Option { return func(o *options) { o.poolSize = n } }

// WithPoolConfig lets the caller adjust the pgxpool configuration (TLS,
// timeouts, connection hooks) after the URL is parsed and the other options
// are applied.
func WithPoolConfig(fn func(*pgxpool.Config)) Option { return func(o *options) { o.poolCfg = fn } }

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// Store is a duroxide.Store and duroxide.Notifier backed by PostgreSQL.
// Any number of processes may share one database (and schema): instance
// locks, worker-queue locks and lock expiry are decided inside the
// database, on the database's clock.
type Store struct {
	pool    *pgxpool.Pool
	schema  string
	q       string // quoted schema
	channel string // NOTIFY channel

	notifyMu sync.Mutex
	notify   *listener
	closed   bool

	// Writes announce themselves: at once to this handle's watchers, and
	// to other processes through pg_notify, sent by one goroutine that
	// coalesces everything written meanwhile into one notification per
	// queue. (A NOTIFY inside every write transaction would serialize all
	// commits on PostgreSQL's global notification-queue lock.)
	pending atomic.Uint32
	// alone is set while no other live handle uses the schema (as of the
	// last heartbeat): nobody listens, so the notifier sends nothing. A new
	// handle says hello (a notification) at Open, which clears it in
	// handles that listen, as does (re)connecting the listener. A handle
	// that does not listen learns of a new one at its next heartbeat; until
	// then the new handle finds that handle's writes by polling.
	alone      atomic.Bool
	notifyPID  atomic.Uint32 // backend of the notifier's connection
	kick       chan struct{}
	stopNotify chan struct{}
	notifyDone chan struct{}

	// Lease ownership (see duroxide.LeaseReclaimer).
	owner     string
	heartbeat time.Duration
	deadAfter time.Duration
	hbStop    chan struct{}
	beatNow   chan struct{} // a heartbeat now, to recount the other handles
	hbDone    chan struct{}
	hbOnce    sync.Once

	// group runs the write calls as group commits (nil: each alone).
	group *committer

	turnSQL sync.Map // turn function name → its call (turnCall)
}

const (
	bitOrch   = 1
	bitWorker = 2
	bitStatus = 4
)

// announce tells watchers that a write may have made work visible.
func (s *Store) announce(bits uint32) {
	s.notifyMu.Lock()
	l := s.notify
	s.notifyMu.Unlock()
	if l != nil {
		var qs []duroxide.Queue
		if bits&bitOrch != 0 {
			qs = append(qs, duroxide.QueueOrchestrator)
		}
		if bits&bitWorker != 0 {
			qs = append(qs, duroxide.QueueWorker)
		}
		if bits&bitStatus != 0 {
			qs = append(qs, duroxide.QueueStatus)
		}
		l.fire(qs...)
	}
	s.pending.Or(bits)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// notifier sends the coalesced pg_notify calls on a connection of its own,
// whose backend pid lets this handle's listener skip its own announcements.
func (s *Store) notifier() {
	defer close(s.notifyDone)
	var conn *pgxpool.Conn
	defer func() {
		if conn != nil {
			conn.Release()
		}
	}()
	for {
		select {
		case <-s.stopNotify:
			return
		case <-s.kick:
		}
		bits := s.pending.Swap(0)
		if bits == 0 || s.alone.Load() {
			continue
		}
		var payloads []string
		for _, b := range []struct {
			bit uint32
			p   string
		}{{bitOrch, "o"}, {bitWorker, "w"}, {bitStatus, "s"}} {
			if bits&b.bit != 0 {
				payloads = append(payloads, b.p)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if conn == nil {
			c, err := s.pool.Acquire(ctx)
			if err == nil {
				conn = c
				s.notifyPID.Store(c.Conn().PgConn().PID())
			}
		}
		var err error
		if conn != nil {
			_, err = conn.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", s.channel, payloads)
		}
		if conn == nil || err != nil {
			// Send it anyway on any connection; drop the broken one.
			if conn != nil {
				s.notifyPID.Store(0)
				conn.Release()
				conn = nil
			}
			_, _ = s.pool.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", s.channel, payloads)
		}
		cancel()
	}
}

var (
	_ duroxide.Store           = (*Store)(nil)
	_ duroxide.Notifier        = (*Store)(nil)
	_ duroxide.LeaseReclaimer  = (*Store)(nil)
	_ duroxide.LocalDispatcher = (*Store)(nil)
	_ duroxide.Starter         = (*Store)(nil)
)

// Open connects to the PostgreSQL database at url (a postgres:// URL or a
// key=value connection string, as accepted by pgxpool.ParseConfig),
// creates the schema or migrates it to the current version, and returns the
// store. Migrations are serialized with an advisory lock, so several
// processes may open the same schema at once. Open also opens the pool's
// connections and (unless WithoutWarmup) runs the store's common calls once
// on each, in a transaction it rolls back, so that the first calls of a
// runtime do not pay for compiling and planning the store's functions.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	o := options{schema: DefaultSchema, poolSize: DefaultPoolSize, heartbeat: DefaultHeartbeat, deadAfter: DefaultDeadAfter, group: DefaultGroupCommit}
	for _, opt := range opts {
		opt(&o)
	}
	if !schemaRE.MatchString(o.schema) {
		return nil, &Error{Op: "Open", Err: fmt.Errorf("invalid schema name %q: want [a-z_][a-z0-9_]*, at most 48 bytes", o.schema)}
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, &Error{Op: "Open", Err: fmt.Errorf("parse connection URL: %w", err)}
	}
	if o.poolSize > 0 {
		cfg.MaxConns = int32(o.poolSize)
	}
	if o.poolCfg != nil {
		o.poolCfg(cfg)
	}
	if after := cfg.AfterConnect; after != nil {
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			if err := registerTurnArrays(ctx, conn); err != nil {
				return err
			}
			return after(ctx, conn)
		}
	} else {
		cfg.AfterConnect = registerTurnArrays
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, wrap("Open", err)
	}
	s := &Store{
		pool:    pool,
		schema:  o.schema,
		q:       pgx.Identifier{o.schema}.Sanitize(),
		channel: o.schema + "_notify",

		kick:       make(chan struct{}, 1),
		stopNotify: make(chan struct{}),
		notifyDone: make(chan struct{}),

		owner:     uuid(),
		heartbeat: o.heartbeat,
		deadAfter: o.deadAfter,
		hbStop:    make(chan struct{}),
		beatNow:   make(chan struct{}, 1),
		hbDone:    make(chan struct{}),
	}
	if err := s.migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, wrap("Open", fmt.Errorf("migrate schema %s: %w", o.schema, err))
	}
	since, _, others, err := s.beat(ctx, 0)
	if err != nil {
		pool.Close()
		return nil, wrap("Open", fmt.Errorf("register lease owner: %w", err))
	}
	// Tell handles that believe they are alone to notify again.
	s.alone.Store(others == 0)
	if _, err := pool.Exec(ctx, "SELECT pg_notify($1, 'h')", s.channel); err != nil {
		slog.Warn("postgres store: hello notification failed", "schema", s.schema, "error", err)
	}
	s.warm(ctx, !o.noWarm)
	if o.group > 0 {
		// Leave connections to the fetches, the heartbeat and the notifier.
		s.group = newCommitter(pool, min(o.group, max(1, int(cfg.MaxConns)/2)))
	}
	go s.notifier()
	go s.heartbeatLoop(since)
	return s, nil
}

// uuid returns a random (version 4) UUID string.
func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// OwnerID returns the lease owner id of this handle.
func (s *Store) OwnerID() string { return s.owner }

// beat extends the handle's liveness; it returns the database time,
// whether an owner died since the database time since, and how many other
// handles are alive.
func (s *Store) beat(ctx context.Context, since int64) (now int64, died bool, others int, err error) {
	err = s.queryRow(ctx, "SELECT * FROM "+s.fn("heartbeat2")+"($1, $2, $3)", s.owner, ms(s.deadAfter), since).Scan(&now, &died, &others)
	return now, died, others, err
}

// heartbeatLoop keeps the handle alive. When it sees that another owner
// died, it wakes this handle's watchers: the dead owner's work just became
// fetchable, and no write announces it.
func (s *Store) heartbeatLoop(since int64) {
	defer close(s.hbDone)
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.hbStop:
			return
		case <-t.C:
		case <-s.beatNow:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.deadAfter)
		now, died, others, err := s.beat(ctx, since)
		cancel()
		if err != nil {
			slog.Warn("postgres store: heartbeat failed", "schema", s.schema, "error", err)
			continue
		}
		since = now
		s.alone.Store(others == 0)
		if died {
			s.notifyMu.Lock()
			l := s.notify
			s.notifyMu.Unlock()
			if l != nil {
				l.fire(duroxide.QueueOrchestrator, duroxide.QueueWorker)
			}
		}
	}
}

// stopHeartbeat stops the heartbeat; safe to call more than once.
func (s *Store) stopHeartbeat() {
	s.hbOnce.Do(func() {
		close(s.hbStop)
		<-s.hbDone
	})
}

// ReclaimLeases implements duroxide.LeaseReclaimer: every other owner of
// the schema is declared dead (its row deleted), so its leases can be
// fetched at once, without counting the lost attempts. Use it only when
// this handle is the schema's sole user; other live handles re-register at
// their next heartbeat, but the leases they held are lost.
func (s *Store) ReclaimLeases(ctx context.Context) (int, error) {
	var n int
	err := s.queryRow(ctx, "WITH d AS (DELETE FROM "+s.q+".owners WHERE owner_id <> $1 RETURNING 1) SELECT count(*) FROM d", s.owner).Scan(&n)
	if err != nil {
		return 0, wrap("ReclaimLeases", err)
	}
	// Another handle's reclaim may have dropped this handle's row: restore
	// it now, or this handle's own leases would look lost until its next
	// heartbeat.
	if _, _, _, err := s.beat(ctx, 0); err != nil {
		return 0, wrap("ReclaimLeases", err)
	}
	if n > 0 {
		s.announce(bitOrch | bitWorker)
	}
	return n, nil
}

// Schema returns the name of the store's schema.
func (s *Store) Schema() string { return s.schema }

// Pool returns the underlying connection pool (for diagnostics and tests;
// do not close it).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close stops the notification listener and closes the pool. It waits for
// connections in use to be released.
//
// The handle's lease owner is dropped first: leases it still holds can be
// taken over by other handles at once, without counting an attempt.
func (s *Store) Close() error {
	s.stopHeartbeat()
	s.notifyMu.Lock()
	open := !s.closed
	s.notifyMu.Unlock()
	if open {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := s.pool.Exec(ctx, "DELETE FROM "+s.q+".owners WHERE owner_id = $1", s.owner); err == nil {
			s.announce(bitOrch | bitWorker)
		}
		cancel()
	}
	s.notifyMu.Lock()
	l := s.notify
	s.notify = nil
	wasClosed := s.closed
	s.closed = true
	s.notifyMu.Unlock()
	if l != nil {
		l.stop()
	}
	if !wasClosed {
		close(s.stopNotify)
		<-s.notifyDone
	}
	if s.group != nil {
		s.group.close()
	}
	s.pool.Close()
	return nil
}

// fn returns the qualified name of a store function.
func (s *Store) fn(name string) string { return s.q + "." + name }

// do runs one store call, repeating it (at most retryAttempts times in all,
// with a short pause) when the error proves that nothing was applied.
func (s *Store) do(ctx context.Context, call func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = call()
		if err == nil || attempt == retryAttempts || !safeToRepeat(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt*20) * time.Millisecond):
		}
	}
}

// exec runs a statement through do.
func (s *Store) exec(ctx context.Context, sql string, args ...any) error {
	return s.do(ctx, func() error {
		_, err := s.pool.Exec(ctx, sql, args...)
		return err
	})
}

// query runs a multi-row query through do: reset clears what a failed
// attempt collected, each is called per row.
func (s *Store) query(ctx context.Context, sql string, args []any, reset func(), each func(pgx.Rows) error) error {
	return s.do(ctx, func() error {
		reset()
		rows, err := s.pool.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := each(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// write runs a write statement through do, as a group commit when the
// handle has a committer. dest receives the first row's columns (none:
// the rows are discarded); no row is pgx.ErrNoRows.
func (s *Store) write(ctx context.Context, sql string, args []any, dest ...any) error {
	if s.group == nil {
		if len(dest) == 0 {
			return s.exec(ctx, sql, args...)
		}
		return s.queryRow(ctx, sql, args...).Scan(dest...)
	}
	var read func(pgx.Rows) error
	if len(dest) > 0 {
		read = func(rows pgx.Rows) error {
			if !rows.Next() {
				if err := rows.Err(); err != nil {
					return err
				}
				return pgx.ErrNoRows
			}
			return rows.Scan(dest...)
		}
	}
	return s.do(ctx, func() error { return s.group.run(ctx, sql, args, read) })
}

// client runs a client's call; with group commit the committers hold
// their next batch back while it is in flight (committer.client).
func (s *Store) client(fn func() error) error {
	if s.group == nil {
		return fn()
	}
	return s.group.client(fn)
}

// GroupCommitStats returns what the handle's committer did so far (zero
// without group commit).
func (s *Store) GroupCommitStats() GroupCommitStats {
	if s.group == nil {
		return GroupCommitStats{}
	}
	s.group.statsMu.Lock()
	defer s.group.statsMu.Unlock()
	return s.group.stats
}

// queryRow is pool.QueryRow run through do when scanned.
func (s *Store) queryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return retryRow{s: s, ctx: ctx, sql: sql, args: args}
}

type retryRow struct {
	s    *Store
	ctx  context.Context
	sql  string
	args []any
}

func (r retryRow) Scan(dest ...any) error {
	return r.s.do(r.ctx, func() error { return r.s.pool.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...) })
}

func ms(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	m := d.Milliseconds()
	if m == 0 {
		m = 1 // round sub-millisecond durations up
	}
	return m
}

func lockMs(d time.Duration) int64 {
	if m := ms(d); m > 0 {
		return m
	}
	return 1
}

func toMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMs(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

// parentOf returns the parent recorded with a queued message: set for
// sub-orchestration starts only.
func parentOf(item *duroxide.WorkItem) string {
	if item.Kind == duroxide.WorkStartOrchestration {
		return item.ParentInstance
	}
	return ""
}

// EnqueueOrchestratorItem implements duroxide.Store.
func (s *Store) EnqueueOrchestratorItem(ctx context.Context, item duroxide.WorkItem, delay time.Duration) error {
	const op = "EnqueueOrchestratorItem"
	data, err := json.Marshal(item)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	err = s.client(func() error {
		return s.exec(ctx, "SELECT "+s.fn("enqueue_orchestrator")+"($1, $2, $3, $4)",
			item.Instance, string(data), ms(delay), parentOf(&item))
	})
	if err == nil {
		s.announce(bitOrch)
	}
	return wrap(op, err)
}

// EnqueueStarts implements duroxide.Starter in one INSERT … SELECT that
// skips instances that exist.
func (s *Store) EnqueueStarts(ctx context.Context, items []duroxide.WorkItem) error {
	const op = "EnqueueStarts"
	n := len(items)
	inst, data, parent := make([]string, n), make([]string, n), make([]string, n)
	for i := range items {
		b, err := json.Marshal(&items[i])
		if err != nil {
			return &Error{Op: op, Err: err}
		}
		inst[i], data[i], parent[i] = items[i].Instance, string(b), parentOf(&items[i])
	}
	err := s.client(func() error {
		return s.exec(ctx, `INSERT INTO `+s.q+`.orchestrator_queue (instance_id, work_item, visible_at, parent_instance_id, created_at)
		SELECT x.inst, x.data, n.now, nullif(x.parent, ''), n.now
		FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(inst, data, parent, ord)
		CROSS JOIN (SELECT `+s.fn("now_ms")+`() AS now) n
		WHERE NOT EXISTS (SELECT 1 FROM `+s.q+`.instances i WHERE i.instance_id = x.inst)
		ORDER BY x.ord`, inst, data, parent)
	})
	if err == nil {
		s.announce(bitOrch)
	}
	return wrap(op, err)
}

// EnqueueWorkItem implements duroxide.Store.
func (s *Store) EnqueueWorkItem(ctx context.Context, item duroxide.WorkItem) error {
	const op = "EnqueueWorkItem"
	data, err := json.Marshal(item)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	err = s.write(ctx, "SELECT "+s.fn("enqueue_worker")+"($1, $2, $3, $4)",
		[]any{item.Instance, item.ExecutionID, item.ID, string(data)})
	if err == nil {
		s.announce(bitWorker)
	}
	return wrap(op, err)
}

// FetchOrchestrationItem implements duroxide.Store. It is one call of the
// fetch_orchestration_item function; see the migration for the algorithm.
// For an instance that has never been acked, Exists is false and the
// metadata fields are zero: the runtime takes them from the start message.
func (s *Store) FetchOrchestrationItem(ctx context.Context, lockTimeout time.Duration) (*duroxide.OrchestrationItem, error) {
	const op = "FetchOrchestrationItem"
	var (
		it     duroxide.OrchestrationItem
		msgs   []string
		status string
	)
	var more bool
	err := s.queryRow(ctx, s.fetchSQL("fetch_orchestration_item2"), lockMs(lockTimeout), s.owner).Scan(
		&it.Instance, &it.LockToken, &it.AttemptCount, &msgs, &it.Exists,
		&it.OrchestrationName, &it.OrchestrationVersion, &it.ExecutionID, &status,
		&it.LastEventID, &it.CreatedAtMs, &more)
	it.NoMoreVisible = !more
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap(op, err)
	}
	it.ExecutionStatus = duroxide.Status(status)
	it.Messages = make([]duroxide.WorkItem, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal([]byte(m), &it.Messages[i]); err != nil {
			// Leave the lock to expire: the attempt count keeps growing, as
			// for any message that cannot be processed.
			return nil, &Error{Op: op, Err: fmt.Errorf("decode message of instance %s: %w", it.Instance, err)}
		}
	}
	return &it, nil
}

// AckOrchestrationItem implements duroxide.Store in one call of the
// ack_turn function, which runs in one transaction (the KeepExecutions prune
// included). A commit with ExecutionID 0 discards the batch. Name and
// version update the instance when not empty; the parent is only ever set
// once.
func (s *Store) AckOrchestrationItem(ctx context.Context, lockToken string, c *duroxide.TurnCommit) error {
	_, err := s.AckOrchestrationItemLocal(ctx, lockToken, c, duroxide.LocalLease{Workers: 0, Timeout: 0})
	return err
}

// AckOrchestrationItemLocal implements duroxide.LocalDispatcher.
func (s *Store) AckOrchestrationItemLocal(ctx context.Context, lockToken string, c *duroxide.TurnCommit, lease duroxide.LocalLease) ([]duroxide.WorkItemLease, error) {
	lockWorkers, lockTimeout := lease.Workers, lease.Timeout
	const op = "AckOrchestrationItem"
	if c == nil {
		c = &duroxide.TurnCommit{}
	}
	if c.ExecutionID == 0 {
		lockWorkers = 0
	}
	vals, leases, sc, err := s.turnArgs(c, lockWorkers, lockTimeout, lockToken)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	var pending bool
	err = s.write(ctx, s.turnCall("ack_turn", "token"), vals, &pending)
	putScratch(sc)
	if err != nil {
		return nil, wrap(op, err)
	}
	s.announceTurn(c, pending, len(leases))
	return leases, nil
}

// CommitActivityTurn implements duroxide.LocalDispatcher in one call of the
// commit_activity_turn function.
func (s *Store) CommitActivityTurn(ctx context.Context, p duroxide.ActivityTurnParams) ([]duroxide.WorkItemLease, error) {
	instance, workTokens, timers, lastEventID, c, lockWorkers, lockTimeout := p.Instance, p.WorkTokens, p.Timers, p.LastEventID, p.Commit, p.Lease.Workers, p.Lease.Timeout
	const op = "CommitActivityTurn"
	if c == nil || c.ExecutionID == 0 {
		return nil, &Error{Op: op, Err: errors.New("a turn commit with an execution id is required")}
	}
	if workTokens == nil {
		workTokens = []string{}
	}
	if timers == nil {
		timers = []int64{}
	}
	vals, leases, sc, err := s.turnArgs(c, lockWorkers, lockTimeout, instance, workTokens, timers, lastEventID)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	var pending bool
	err = s.write(ctx, s.turnCall("commit_activity_turn2", "instance", "tokens", "timers", "last_event"), vals, &pending)
	putScratch(sc)
	if err != nil {
		return nil, wrap(op, err)
	}
	s.announceTurn(c, pending, len(leases))
	return leases, nil
}

// StartTurn implements duroxide.LocalDispatcher in one call of the
// start_turn function.
func (s *Store) StartTurn(ctx context.Context, instance string, c *duroxide.TurnCommit, lease duroxide.LocalLease) (duroxide.StartTurnResult, error) {
	leases, created, err := s.startTurn(ctx, instance, c, lease.Workers, lease.Timeout)
	return duroxide.StartTurnResult{Leases: leases, Created: created}, err
}

func (s *Store) startTurn(ctx context.Context, instance string, c *duroxide.TurnCommit, lockWorkers int, lockTimeout time.Duration) ([]duroxide.WorkItemLease, bool, error) {
	const op = "StartTurn"
	if c == nil || c.ExecutionID != 1 {
		return nil, false, &Error{Op: op, Err: errors.New("the first turn of execution 1 is required")}
	}
	vals, leases, sc, err := s.turnArgs(c, lockWorkers, lockTimeout, instance)
	if err != nil {
		return nil, false, &Error{Op: op, Err: err}
	}
	var created bool
	// A start is a client's call, on its own connection (see WithGroupCommit).
	err = s.client(func() error {
		return s.queryRow(ctx, s.turnCall("start_turn2", "instance"), vals...).Scan(&created)
	})
	putScratch(sc)
	if err != nil {
		return nil, false, wrap(op, err)
	}
	if !created {
		return nil, false, nil
	}
	s.announceTurn(c, false, len(leases))
	return leases, true, nil
}

// ReleaseTimer implements duroxide.LocalDispatcher.
func (s *Store) ReleaseTimer(ctx context.Context, instance string, executionID, timerID int64) error {
	err := s.exec(ctx, `UPDATE `+s.q+`.orchestrator_queue q SET visible_at = least(q.visible_at, `+s.fn("now_ms")+`())
		WHERE q.instance_id = $1 AND q.lock_token IS NULL
		  AND q.work_item::jsonb ->> 'kind' = 'TimerFired'
		  AND (q.work_item::jsonb ->> 'exec')::bigint = $2 AND (q.work_item::jsonb ->> 'id')::bigint = $3`,
		instance, executionID, timerID)
	if err == nil {
		s.announce(bitOrch)
	}
	return wrap("ReleaseTimer", err)
}

// turnArgNames are the parameters of the turn functions (ack_turn,
// commit_activity_turn, start_turn) that turnArgs fills, in its order;
// turnCall passes them in named notation (p_name => $n), so the call sites
// never depend on the functions' parameter order.
var turnArgNames = []string{"execution", "name", "version", "parent", "status", "output", "set_custom", "custom",
	"ev_ids", "ev_types", "ev_data", "w_instance", "w_execution", "w_activity", "w_data", "w_token", "lock_ms", "owner",
	"o_instance", "o_data", "o_visible_at", "o_parent", "c_instance", "c_execution", "c_activity", "ct_ids", "keep"}

// turnCall returns the call of turn function fn with the parameters lead…
// then turnArgNames, numbered ($1, $2, …; pgx would rewrite @name
// placeholders on every call): the values turnArgs returns, given lead's.
// The statement text is built once per function and handle.
func (s *Store) turnCall(fn string, lead ...string) string {
	if v, ok := s.turnSQL.Load(fn); ok {
		return v.(string)
	}
	names := append(append(make([]string, 0, len(lead)+len(turnArgNames)), lead...), turnArgNames...)
	p := make([]string, len(names))
	for i, n := range names {
		p[i] = "p_" + n + " => $" + strconv.Itoa(i+1)
	}
	v, _ := s.turnSQL.LoadOrStore(fn, "SELECT "+s.fn(fn)+"("+strings.Join(p, ", ")+")")
	return v.(string)
}

// turnArgs returns the values of a turn function's parameters (see
// turnCall): lead, then c's in turnArgNames order; the leases of the
// worker items it leases (the first lockWorkers); and the scratch buffer its
// arrays are encoded into (see arrays.go), which the caller gives back with
// putScratch once the statement was sent. A []string or []int64 in lead is
// passed as an array of the same kind.
func (s *Store) turnArgs(c *duroxide.TurnCommit, lockWorkers int, lockTimeout time.Duration, lead ...any) ([]any, []duroxide.WorkItemLease, *turnScratch, error) {
	evData, err := wire.Events(c.HistoryDelta)
	if err != nil {
		return nil, nil, nil, err
	}
	wData, err := wire.WorkItems(c.WorkerItems)
	if err != nil {
		return nil, nil, nil, err
	}
	oData, err := wire.WorkItems(c.OrchestratorItems)
	if err != nil {
		return nil, nil, nil, err
	}
	n := len(c.HistoryDelta)
	evIDs, evTypes := make([]int64, n), make([]string, n)
	for i := range c.HistoryDelta {
		evIDs[i], evTypes[i] = c.HistoryDelta[i].EventID, string(c.HistoryDelta[i].Kind)
	}
	n = len(c.WorkerItems)
	lockWorkers = min(max(lockWorkers, 0), n)
	wInst, wExec, wAct, wTok := make([]string, n), make([]int64, n), make([]int64, n), make([]*string, n)
	var leases []duroxide.WorkItemLease
	if lockWorkers > 0 {
		leases = make([]duroxide.WorkItemLease, lockWorkers)
	}
	for i := range c.WorkerItems {
		w := &c.WorkerItems[i]
		wInst[i], wExec[i], wAct[i] = w.Instance, w.ExecutionID, w.ID
		if i < lockWorkers {
			tok := uuid()
			wTok[i] = &tok
			leases[i] = duroxide.WorkItemLease{Item: *w, LockToken: tok, AttemptCount: 1}
		}
	}
	n = len(c.OrchestratorItems)
	oInst, oVis, oParent := make([]string, n), make([]int64, n), make([]string, n)
	for i := range c.OrchestratorItems {
		w := &c.OrchestratorItems[i]
		oInst[i], oParent[i] = w.Instance, parentOf(w)
		if w.Kind == duroxide.WorkTimerFired {
			oVis[i] = w.FireAtMs + c.TimerBackstop.Milliseconds()
		}
	}
	n = len(c.CancelledActivities)
	cInst, cExec, cAct := make([]string, n), make([]int64, n), make([]int64, n)
	for i, a := range c.CancelledActivities {
		cInst[i], cExec[i], cAct[i] = a.Instance, a.ExecutionID, a.ActivityID
	}
	keep := 0
	if c.ExecutionID != 0 {
		keep = max(c.KeepExecutions, 0)
	}
	// The arrays live in two slices (one allocation each, never regrown:
	// vals points into them); a pointer boxes into an any without an
	// allocation. need is the room for all of them and the scalars, so
	// that the call's parameters are encoded without regrowing the buffer.
	texts := make([]textArray, 0, 9+len(lead))
	ints := make([]int8Array, 0, 7+len(lead))
	need := 256 + len(c.OrchestrationName) + len(c.OrchestrationVersion) + len(c.ParentInstance) + len(c.Output) + len(s.owner)
	if c.CustomStatus != nil {
		need += len(*c.CustomStatus)
	}
	array := func(a textArray) *textArray {
		texts = append(texts, a)
		need += a.encodedLen()
		return &texts[len(texts)-1]
	}
	text := func(v []string) *textArray { return array(textArray{s: v}) }
	int8s := func(v []int64) *int8Array {
		ints = append(ints, int8Array{v: v})
		need += ints[len(ints)-1].encodedLen()
		return &ints[len(ints)-1]
	}
	vals := make([]any, 0, len(lead)+len(turnArgNames))
	for _, v := range lead {
		switch v := v.(type) {
		case []string:
			vals = append(vals, text(v))
		case []int64:
			vals = append(vals, int8s(v))
		case string:
			need += len(v)
			vals = append(vals, v)
		default:
			vals = append(vals, v)
		}
	}
	vals = append(vals, c.ExecutionID, c.OrchestrationName, c.OrchestrationVersion,
		c.ParentInstance, string(c.Status), c.Output, c.SetCustomStatus, c.CustomStatus,
		int8s(evIDs), text(evTypes), text(evData),
		text(wInst), int8s(wExec), int8s(wAct), text(wData), array(textArray{p: wTok}),
		lockMs(lockTimeout), s.owner,
		text(oInst), text(oData), int8s(oVis), text(oParent),
		text(cInst), int8s(cExec), int8s(cAct), int8s(c.CancelledTimers),
		keep)
	sc := getScratch(need)
	for i := range texts {
		texts[i].sc = sc
	}
	for i := range ints {
		ints[i].sc = sc
	}
	return vals, leases, sc, nil
}

// announceTurn tells watchers what a committed turn made fetchable:
// messages that arrived while the instance was locked (pending), new
// messages visible now (future timers are the runtime's to wake up for),
// worker messages not leased locally, and a terminal status.
func (s *Store) announceTurn(c *duroxide.TurnCommit, pending bool, leased int) {
	var bits uint32
	if pending {
		bits |= bitOrch
	}
	now := time.Now().UnixMilli()
	for i := range c.OrchestratorItems {
		if w := &c.OrchestratorItems[i]; w.Kind != duroxide.WorkTimerFired || w.FireAtMs <= now {
			bits |= bitOrch
			break
		}
	}
	if len(c.WorkerItems) > leased {
		bits |= bitWorker
	}
	if c.Status.IsTerminal() {
		bits |= bitStatus
	}
	if bits != 0 {
		s.announce(bits)
	}
}

// AbandonOrchestrationItem implements duroxide.Store. A token whose lock
// expired but was not taken over is still accepted.
func (s *Store) AbandonOrchestrationItem(ctx context.Context, lockToken string, p duroxide.AbandonParams) error {
	delay, ignoreAttempt := p.Delay, p.IgnoreAttempt
	err := s.exec(ctx, "SELECT "+s.fn("abandon_orchestration_item")+"($1, $2, $3)", lockToken, ms(delay), ignoreAttempt)
	if err == nil {
		s.announce(bitOrch)
	}
	return wrap("AbandonOrchestrationItem", err)
}

// RenewOrchestrationItemLock implements duroxide.Store.
func (s *Store) RenewOrchestrationItemLock(ctx context.Context, lockToken string, extend time.Duration) error {
	err := s.exec(ctx, "SELECT "+s.fn("renew_orchestration_item_lock")+"($1, $2)", lockToken, lockMs(extend))
	return wrap("RenewOrchestrationItemLock", err)
}

// FetchWorkItem implements duroxide.Store.
func (s *Store) FetchWorkItem(ctx context.Context, lockTimeout time.Duration) (*duroxide.WorkItemLease, error) {
	const op = "FetchWorkItem"
	var (
		lease duroxide.WorkItemLease
		data  string
	)
	err := s.queryRow(ctx, s.fetchSQL("fetch_work_item2"), lockMs(lockTimeout), s.owner).Scan(
		&data, &lease.LockToken, &lease.AttemptCount)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap(op, err)
	}
	if err := json.Unmarshal([]byte(data), &lease.Item); err != nil {
		return nil, &Error{Op: op, Err: fmt.Errorf("decode work item: %w", err)}
	}
	return &lease, nil
}

// AckWorkItem implements duroxide.Store.
func (s *Store) AckWorkItem(ctx context.Context, lockToken string, completion *duroxide.WorkItem) error {
	const op = "AckWorkItem"
	var inst, data *string
	if completion != nil {
		b, err := wire.AppendWorkItem(nil, completion)
		if err != nil {
			return &Error{Op: op, Err: err}
		}
		d := string(b)
		inst, data = &completion.Instance, &d
	}
	err := s.write(ctx, "SELECT "+s.fn("ack_work_item")+"($1, $2, $3)", []any{lockToken, inst, data})
	if err == nil && completion != nil {
		s.announce(bitOrch)
	}
	return wrap(op, err)
}

// RenewWorkItemLock implements duroxide.Store.
func (s *Store) RenewWorkItemLock(ctx context.Context, lockToken string, extend time.Duration) error {
	err := s.exec(ctx, "SELECT "+s.fn("renew_work_item_lock")+"($1, $2)", lockToken, lockMs(extend))
	return wrap("RenewWorkItemLock", err)
}

// AbandonWorkItem implements duroxide.Store. An unknown token fails with
// duroxide.ErrLockLost; a token whose lock expired but was not taken over
// is still accepted.
func (s *Store) AbandonWorkItem(ctx context.Context, lockToken string, p duroxide.AbandonParams) error {
	delay, ignoreAttempt := p.Delay, p.IgnoreAttempt
	err := s.exec(ctx, "SELECT "+s.fn("abandon_work_item")+"($1, $2, $3)", lockToken, ms(delay), ignoreAttempt)
	if err == nil {
		s.announce(bitWorker)
	}
	return wrap("AbandonWorkItem", err)
}

// NextVisibleAt implements duroxide.Store. One statement reads the database
// clock and the earliest future visible_at together. The round trip bounds
// how far the two clocks can be told apart: when the database's reading lies
// within it (plus the clock's 1 ms grain), the clocks agree as far as can be
// measured and visible_at is returned as it is, exact to the millisecond;
// otherwise the clocks are skewed and the result is visible_at's distance
// from the database's now, counted from the middle of the round trip.
func (s *Store) NextVisibleAt(ctx context.Context, q duroxide.Queue) (time.Time, bool, error) {
	var table string
	switch q {
	case duroxide.QueueOrchestrator:
		table = "orchestrator_queue"
	case duroxide.QueueWorker:
		table = "worker_queue"
	default:
		return time.Time{}, false, nil
	}
	sql := `SELECT t.n, (SELECT min(q.visible_at) FROM ` + s.q + `.` + table + ` q WHERE q.visible_at > t.n)
		FROM (SELECT ` + s.fn("now_ms") + `() AS n) t`
	var (
		dbNow  int64
		at     *int64
		t0, t1 time.Time
	)
	err := s.do(ctx, func() error {
		t0 = time.Now()
		err := s.pool.QueryRow(ctx, sql).Scan(&dbNow, &at)
		t1 = time.Now()
		return err
	})
	if err != nil {
		return time.Time{}, false, wrap("NextVisibleAt", err)
	}
	if at == nil {
		return time.Time{}, false, nil
	}
	return visibleAt(*at, dbNow, t0, t1), true, nil
}

// visibleAt maps a database time at (ms) to the local clock, given the
// database's now (ms) read between the local instants t0 and t1.
func visibleAt(at, dbNow int64, t0, t1 time.Time) time.Time {
	half := t1.Sub(t0) / 2
	mid := t0.Add(half)
	skew := time.Duration(dbNow-mid.UnixMilli()) * time.Millisecond
	if skew.Abs() <= half+time.Millisecond {
		return time.UnixMilli(at)
	}
	return mid.Add(time.Duration(at-dbNow) * time.Millisecond)
}

// ReadHistory implements duroxide.Store.
func (s *Store) ReadHistory(ctx context.Context, instance string, executionID int64) ([]duroxide.Event, error) {
	const op = "ReadHistory"
	var events []duroxide.Event
	err := s.query(ctx, `SELECT h.event_data FROM `+s.q+`.history h
		WHERE h.instance_id = $1
		  AND h.execution_id = CASE WHEN $2::bigint > 0 THEN $2::bigint
		      ELSE (SELECT i.current_execution_id FROM `+s.q+`.instances i WHERE i.instance_id = $1) END
		ORDER BY h.event_id`, []any{instance, executionID},
		func() { events = []duroxide.Event{} },
		func(rows pgx.Rows) error {
			var data string
			if err := rows.Scan(&data); err != nil {
				return err
			}
			var e duroxide.Event
			if err := json.Unmarshal([]byte(data), &e); err != nil {
				return fmt.Errorf("decode event of %s: %w", instance, err)
			}
			events = append(events, e)
			return nil
		})
	if err != nil {
		return nil, wrap(op, err)
	}
	return events, nil
}

const instanceColumns = `i.instance_id, i.orchestration_name, i.orchestration_version, i.current_execution_id,
	coalesce(e.status, 'Running'), coalesce(e.output, ''), coalesce(i.parent_instance_id, ''),
	i.custom_status, i.custom_status_version, i.created_at, i.updated_at`

func scanInstance(row pgx.Row) (*duroxide.InstanceInfo, int64, error) {
	var (
		info             duroxide.InstanceInfo
		status           string
		created, updated int64
	)
	if err := row.Scan(&info.Instance, &info.OrchestrationName, &info.OrchestrationVersion, &info.ExecutionID,
		&status, &info.Output, &info.ParentInstance, &info.CustomStatus, &info.CustomStatusVersion,
		&created, &updated); err != nil {
		return nil, 0, err
	}
	info.Status = duroxide.Status(status)
	if !info.Status.IsTerminal() {
		info.Output = ""
	}
	info.CreatedAt, info.UpdatedAt = fromMs(created), fromMs(updated)
	return &info, created, nil
}

// GetInstance implements duroxide.Store.
func (s *Store) GetInstance(ctx context.Context, instance string) (*duroxide.InstanceInfo, error) {
	row := s.queryRow(ctx, `SELECT `+instanceColumns+` FROM `+s.q+`.instances i
		LEFT JOIN `+s.q+`.executions e ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
		WHERE i.instance_id = $1`, instance)
	info, _, err := scanInstance(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, &Error{Op: "GetInstance", Err: fmt.Errorf("%w: instance %q", duroxide.ErrNotFound, instance)}
	}
	if err != nil {
		return nil, wrap("GetInstance", err)
	}
	return info, nil
}

// ListInstances implements duroxide.Store. Instances are ordered by
// creation time, newest first (ties by id, descending); the cursor is
// opaque.
func (s *Store) ListInstances(ctx context.Context, f duroxide.ListFilter) (*duroxide.InstancePage, error) {
	const op = "ListInstances"
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(f.Statuses) > 0 {
		st := make([]string, len(f.Statuses))
		for i, x := range f.Statuses {
			st[i] = string(x)
		}
		where = append(where, "coalesce(e.status, 'Running') = ANY ("+arg(st)+"::text[])")
	}
	if f.OrchestrationName != "" {
		where = append(where, "i.orchestration_name = "+arg(f.OrchestrationName))
	}
	if f.InstancePrefix != "" {
		where = append(where, "starts_with(i.instance_id, "+arg(f.InstancePrefix)+")")
	}
	if f.Cursor != "" {
		created, id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, &Error{Op: op, Err: err}
		}
		where = append(where, "(i.created_at, i.instance_id) < ("+arg(created)+"::bigint, "+arg(id)+"::text)")
	}
	sql := `SELECT ` + instanceColumns + ` FROM ` + s.q + `.instances i
		LEFT JOIN ` + s.q + `.executions e ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY i.created_at DESC, i.instance_id DESC LIMIT " + arg(limit+1)
	var (
		list    []duroxide.InstanceInfo
		created []int64
	)
	err := s.query(ctx, sql, args,
		func() { list, created = nil, nil },
		func(rows pgx.Rows) error {
			info, c, err := scanInstance(rows)
			if err != nil {
				return err
			}
			list, created = append(list, *info), append(created, c)
			return nil
		})
	if err != nil {
		return nil, wrap(op, err)
	}
	page := &duroxide.InstancePage{Instances: []duroxide.InstanceInfo{}}
	if len(list) > limit {
		list = list[:limit]
		page.NextCursor = encodeCursor(created[limit-1], list[limit-1].Instance)
	}
	page.Instances = append(page.Instances, list...)
	return page, nil
}

func encodeCursor(created int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(created, 10) + ":" + id))
}

func decodeCursor(c string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		num, id, ok := strings.Cut(string(b), ":")
		if ok {
			if created, err := strconv.ParseInt(num, 10, 64); err == nil {
				return created, id, nil
			}
		}
	}
	return 0, "", fmt.Errorf("invalid cursor %q", c)
}

// ListExecutions implements duroxide.Store.
func (s *Store) ListExecutions(ctx context.Context, instance string) ([]duroxide.ExecutionInfo, error) {
	const op = "ListExecutions"
	var out []duroxide.ExecutionInfo
	err := s.query(ctx, `SELECT e.execution_id, e.status, e.output, e.started_at, coalesce(e.completed_at, 0),
			(SELECT count(*) FROM `+s.q+`.history h WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id)
		FROM `+s.q+`.executions e WHERE e.instance_id = $1 ORDER BY e.execution_id`, []any{instance},
		func() { out = []duroxide.ExecutionInfo{} },
		func(rows pgx.Rows) error {
			var (
				x                  duroxide.ExecutionInfo
				status             string
				started, completed int64
			)
			if err := rows.Scan(&x.ExecutionID, &status, &x.Output, &started, &completed, &x.EventCount); err != nil {
				return err
			}
			x.Status = duroxide.Status(status)
			x.StartedAt, x.CompletedAt = fromMs(started), fromMs(completed)
			out = append(out, x)
			return nil
		})
	if err != nil {
		return nil, wrap(op, err)
	}
	if len(out) == 0 {
		var exists bool
		if err := s.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+s.q+`.instances WHERE instance_id = $1)`, instance).Scan(&exists); err != nil {
			return nil, wrap(op, err)
		}
		if !exists {
			return nil, &Error{Op: op, Err: fmt.Errorf("%w: instance %q", duroxide.ErrNotFound, instance)}
		}
	}
	return out, nil
}

// ListChildren implements duroxide.Store: the direct sub-orchestrations
// that have run at least one turn, oldest first.
func (s *Store) ListChildren(ctx context.Context, instance string) ([]string, error) {
	var ids []string
	err := s.query(ctx, `SELECT instance_id FROM `+s.q+`.instances
		WHERE parent_instance_id = $1 ORDER BY created_at, instance_id`, []any{instance},
		func() { ids = []string{} },
		func(rows pgx.Rows) error {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
			return nil
		})
	if err != nil {
		return nil, wrap("ListChildren", err)
	}
	return ids, nil
}

func scanDeleteResult(row pgx.Row) (duroxide.DeleteResult, error) {
	var i, e, h, q int64
	err := row.Scan(&i, &e, &h, &q)
	return duroxide.DeleteResult{InstancesDeleted: int(i), ExecutionsDeleted: int(e), EventsDeleted: int(h), QueueMessagesDeleted: int(q)}, err
}

// DeleteInstances implements duroxide.Store. A sub-orchestration may be
// listed together with an ancestor (it is deleted with the tree); listed on
// its own it fails with duroxide.ErrIsSubOrchestration, unless its parent no
// longer exists (an orphan can always be deleted). Sub-orchestrations whose
// start is queued but which never ran a turn are deleted with their parent.
// In-flight turns of deleted instances fail their ack with ErrLockLost.
func (s *Store) DeleteInstances(ctx context.Context, p duroxide.DeleteParams) (duroxide.DeleteResult, error) {
	ids, force := p.IDs, p.Force
	if len(ids) == 0 {
		return duroxide.DeleteResult{}, nil
	}
	res, err := scanDeleteResult(s.queryRow(ctx, "SELECT * FROM "+s.fn("delete_instances")+"($1, $2)", ids, force))
	if err != nil {
		return duroxide.DeleteResult{}, wrap("DeleteInstances", err)
	}
	s.announce(bitStatus)
	return res, nil
}

// DeleteInstancesBulk implements duroxide.Store. Matching roots are taken
// oldest first; their whole trees are deleted, running descendants included.
func (s *Store) DeleteInstancesBulk(ctx context.Context, f duroxide.BulkDeleteFilter) (duroxide.DeleteResult, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	ids := f.InstanceIDs
	if ids == nil {
		ids = []string{}
	}
	res, err := scanDeleteResult(s.queryRow(ctx, "SELECT * FROM "+s.fn("delete_instances_bulk")+"($1, $2, $3)",
		ids, toMs(f.CompletedBefore), limit))
	if err != nil {
		return duroxide.DeleteResult{}, wrap("DeleteInstancesBulk", err)
	}
	s.announce(bitStatus)
	return res, nil
}

// PruneExecutions implements duroxide.Store.
func (s *Store) PruneExecutions(ctx context.Context, instance string, o duroxide.PruneOptions) (duroxide.PruneResult, error) {
	var e, h int64
	err := s.queryRow(ctx, "SELECT * FROM "+s.fn("prune_executions")+"($1, $2, $3)",
		instance, o.KeepLast, toMs(o.CompletedBefore)).Scan(&e, &h)
	if err != nil {
		return duroxide.PruneResult{}, wrap("PruneExecutions", err)
	}
	return duroxide.PruneResult{ExecutionsDeleted: int(e), EventsDeleted: int(h)}, nil
}

// GetCustomStatus implements duroxide.Store.
func (s *Store) GetCustomStatus(ctx context.Context, instance string, lastSeenVersion int64) (duroxide.CustomStatus, error) {
	status, version, changed, err := s.getCustomStatus(ctx, instance, lastSeenVersion)
	return duroxide.CustomStatus{Value: status, Version: version, Changed: changed}, err
}

func (s *Store) getCustomStatus(ctx context.Context, instance string, lastSeenVersion int64) (*string, int64, bool, error) {
	var (
		status  *string
		version int64
	)
	err := s.queryRow(ctx, `SELECT custom_status, custom_status_version FROM `+s.q+`.instances
		WHERE instance_id = $1`, instance).Scan(&status, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, wrap("GetCustomStatus", err)
	}
	if version <= lastSeenVersion {
		return nil, version, false, nil
	}
	return status, version, true, nil
}

// Stats implements duroxide.Store.
func (s *Store) Stats(ctx context.Context) (*duroxide.StoreStats, error) {
	var (
		st     duroxide.StoreStats
		counts map[string]int
	)
	err := s.queryRow(ctx, `SELECT
		(SELECT count(*) FROM `+s.q+`.orchestrator_queue),
		(SELECT count(*) FROM `+s.q+`.worker_queue),
		(SELECT coalesce(json_object_agg(x.status, x.n), '{}') FROM (
			SELECT coalesce(e.status, 'Running') AS status, count(*) AS n
			FROM `+s.q+`.instances i
			LEFT JOIN `+s.q+`.executions e ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
			GROUP BY 1) x)`).Scan(&st.OrchestratorQueue, &st.WorkerQueue, &counts)
	if err != nil {
		return nil, wrap("Stats", err)
	}
	st.Instances = make(map[duroxide.Status]int, len(counts))
	for k, v := range counts {
		st.Instances[duroxide.Status(k)] = v
	}
	return &st, nil
}
