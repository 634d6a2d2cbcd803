package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/toygres/toygres/duroxide"
)

// Compile-time checks.
var (
	_ duroxide.Store           = (*Store)(nil)
	_ duroxide.Notifier        = (*Store)(nil)
	_ duroxide.LeaseReclaimer  = (*Store)(nil)
	_ duroxide.LocalDispatcher = (*Store)(nil)
	_ duroxide.Starter         = (*Store)(nil)
)

// MemoryPath opens an in-memory database when passed to Open as path.
const MemoryPath = ":memory:"

// SyncMode is SQLite's synchronous setting for the write connection.
type SyncMode int

// Synchronous modes.
const (
	// SyncNormal (the default) syncs the WAL at checkpoints only: a commit
	// survives a crash of the process but may be lost on power failure.
	SyncNormal SyncMode = iota
	// SyncFull syncs the WAL at every commit.
	SyncFull
	// SyncOff never syncs; for tests and benchmarks only.
	SyncOff
)

func (m SyncMode) pragma() string {
	switch m {
	case SyncFull:
		return "FULL"
	case SyncOff:
		return "OFF"
	default:
		return "NORMAL"
	}
}

// Option configures Open.
type Option func(*config)

type config struct {
	sync        SyncMode
	busyTimeout time.Duration
	readConns   int
	memory      bool
	cacheKiB    int
	privateHub  bool // tests: behave like another process (no shared lock/notifications)
	heartbeat   time.Duration
	deadAfter   time.Duration
}

// Default liveness settings (see WithLiveness).
const (
	DefaultHeartbeat = time.Second
	DefaultDeadAfter = 5 * time.Second
)

// WithLiveness sets how often the store handle proves it is alive
// (heartbeat, default 1s) and after how long without a heartbeat other
// handles sharing the file consider it dead and take over its leases
// (deadAfter, default 5s). deadAfter should span several heartbeats: a
// live handle wrongly found dead loses its leases (its work runs again).
func WithLiveness(heartbeat, deadAfter time.Duration) Option {
	return func(c *config) {
		if heartbeat > 0 {
			c.heartbeat = heartbeat
		}
		if deadAfter > 0 {
			c.deadAfter = deadAfter
		}
	}
}

// WithSynchronous sets the synchronous mode (default SyncNormal).
func WithSynchronous(m SyncMode) Option { return func(c *config) { c.sync = m } }

// WithBusyTimeout sets how long a connection waits for a lock held by
// another process before failing with a retryable error (default 10s).
func WithBusyTimeout(d time.Duration) Option { return func(c *config) { c.busyTimeout = d } }

// WithReadConns sets the size of the read connection pool (default 4).
// In-memory stores have no read pool.
func WithReadConns(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.readConns = n
		}
	}
}

// WithCacheSize sets the page cache of the write connection in KiB
// (default 32768; each read connection gets a quarter of it).
func WithCacheSize(kib int) Option {
	return func(c *config) {
		if kib > 0 {
			c.cacheKiB = kib
		}
	}
}

// InMemory makes Open ignore path and use a private in-memory database,
// the same as passing MemoryPath.
func InMemory() Option { return func(c *config) { c.memory = true } }

// Store is a duroxide.Store backed by SQLite. It is safe for concurrent use.
type Store struct {
	cfg   config
	path  string // absolute path, or MemoryPath
	hub   *hub
	wdb   *sql.DB   // write pool (one connection)
	wconn *sql.Conn // the write connection, held for the store's lifetime
	rdb   *sql.DB   // read pool; nil for in-memory stores

	ckptDB    *sql.DB       // background checkpoint connection; nil in memory
	ckpt      chan struct{} // wakes the checkpointer
	ckptStop  chan struct{}
	ckptDone  chan struct{}
	ckptDirty int // committed batches since the last wake-up (under hub.sem)
	ws        writeStmts
	rs        readStmts // on the read pool (in memory: the write connection)
	hrs       readStmts // on the write connection, for readHot

	bmu     sync.Mutex // group commit state
	pending []*wop
	leading bool
	closing bool
	closed  sync.Once
	cerr    error

	watchMu  sync.Mutex
	watchers map[uint64]struct{} // ids registered on hub by this store

	owner  string        // lease owner id of this handle
	hbStop chan struct{} // stops the heartbeat; nil in memory
	hbDone chan struct{}
	hbOnce sync.Once
}

// Open opens (creating if needed) the database at path. The file is put in
// WAL mode and its schema is created or migrated. Pass MemoryPath (or "",
// or the InMemory option) for a private in-memory database. path must not
// contain '?' or '#'.
//
// Several stores may be open on the same file, in this process (they share
// a write lock and notifications) or in others (they wait for each other on
// SQLite's lock, up to the busy timeout).
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	cfg := config{busyTimeout: 10 * time.Second, readConns: 4, cacheKiB: 32768,
		heartbeat: DefaultHeartbeat, deadAfter: DefaultDeadAfter}
	for _, o := range opts {
		o(&cfg)
	}
	if path == MemoryPath || path == "" {
		cfg.memory = true
	}
	s := &Store{cfg: cfg, watchers: map[uint64]struct{}{}, owner: newToken()}
	if cfg.memory {
		s.path = MemoryPath
		s.hub = newHub()
	} else {
		if strings.ContainsAny(path, "?#") {
			return nil, fmt.Errorf("sqlite: open: path %q must not contain '?' or '#'", path)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("sqlite: open: %w", err)
		}
		if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
			abs = filepath.Join(dir, filepath.Base(abs))
		}
		if fi, err := os.Lstat(abs); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if real, err := filepath.EvalSymlinks(abs); err == nil {
				abs = real
			}
		}
		s.path = abs
		if cfg.privateHub {
			s.hub = newHub()
		} else {
			s.hub = acquireHub(abs)
		}
	}
	if err := s.open(ctx); err != nil {
		s.closeDBs()
		if !cfg.memory && !cfg.privateHub {
			releaseHub(s.path)
		}
		return nil, err
	}
	return s, nil
}

// Path returns the absolute path of the database file, or MemoryPath.
func (s *Store) Path() string { return s.path }

func (s *Store) open(ctx context.Context) error {
	busyMs := s.cfg.busyTimeout.Milliseconds()
	wdsn := fmt.Sprintf("%s?_mutex=no&_busy_timeout=%d&_txlock=immediate&_foreign_keys=0", s.path, busyMs)
	wpragmas := []string{
		fmt.Sprintf("PRAGMA cache_size = -%d", s.cfg.cacheKiB),
		"PRAGMA temp_store = MEMORY",
	}
	if s.cfg.memory {
		wdsn = fmt.Sprintf("%s?_mutex=no&_foreign_keys=0", MemoryPath)
		wpragmas = append(wpragmas, "PRAGMA journal_mode = MEMORY", "PRAGMA synchronous = OFF")
	} else {
		wpragmas = append(wpragmas,
			"PRAGMA journal_mode = WAL",
			"PRAGMA synchronous = "+s.cfg.sync.pragma(),
			"PRAGMA mmap_size = 268435456",
			// Checkpoints normally run on a background connection (see
			// checkpointer); this is only a safety net.
			"PRAGMA wal_autocheckpoint = 16000",
		)
	}
	s.wdb = sql.OpenDB(&connector{dsn: wdsn, pragmas: wpragmas})
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)
	var err error
	s.wconn, err = s.wdb.Conn(ctx)
	if err != nil {
		return wrap("open", err)
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if err := s.ws.prepare(ctx, s.wconn); err != nil {
		return wrap("open: prepare", err)
	}
	var rq preparer = s.wconn
	if !s.cfg.memory {
		rdsn := fmt.Sprintf("%s?_mutex=no&_busy_timeout=%d&_query_only=1", s.path, busyMs)
		s.rdb = sql.OpenDB(&connector{dsn: rdsn, pragmas: []string{
			fmt.Sprintf("PRAGMA cache_size = -%d", max(s.cfg.cacheKiB/4, 2048)),
			"PRAGMA temp_store = MEMORY",
			"PRAGMA mmap_size = 268435456",
		}})
		s.rdb.SetMaxOpenConns(s.cfg.readConns)
		s.rdb.SetMaxIdleConns(s.cfg.readConns)
		s.rdb.SetConnMaxLifetime(0)
		s.rdb.SetConnMaxIdleTime(0)
		rq = s.rdb
	}
	if err := s.rs.prepare(ctx, rq); err != nil {
		return wrap("open: prepare", err)
	}
	if s.rdb != nil {
		if err := s.hrs.prepare(ctx, s.wconn); err != nil {
			return wrap("open: prepare", err)
		}
		s.ckptDB = sql.OpenDB(&connector{dsn: wdsn, pragmas: []string{
			"PRAGMA synchronous = " + s.cfg.sync.pragma(),
		}})
		s.ckptDB.SetMaxOpenConns(1)
		s.ckpt = make(chan struct{}, 1)
		s.ckptStop = make(chan struct{})
		s.ckptDone = make(chan struct{})
		go s.checkpointer()
	}
	return s.startLiveness(ctx)
}

// OwnerID returns the lease owner id of this handle (see duroxide.LeaseReclaimer).
func (s *Store) OwnerID() string { return s.owner }

// startLiveness registers the handle as a lease owner and starts its
// heartbeat. An in-memory store has no other handles: its owner never dies.
func (s *Store) startLiveness(ctx context.Context) error {
	aliveUntil := int64(math.MaxInt64)
	if !s.cfg.memory {
		aliveUntil = nowMs() + s.cfg.deadAfter.Milliseconds()
	}
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		_, err := s.ws.heartbeat.ExecContext(c, s.owner, nowMs(), aliveUntil)
		return err
	})
	if err != nil {
		return wrap("open: register owner", err)
	}
	s.hub.addOwner(s.owner)
	if s.cfg.memory {
		return nil
	}
	s.hbStop, s.hbDone = make(chan struct{}), make(chan struct{})
	go s.heartbeatLoop()
	return nil
}

// ownerGCAge is how long a dead owner's row is kept. Leases of a missing
// owner count as lost to a dead owner, so removing it changes nothing but
// the table's size.
const ownerGCAge = time.Hour

// heartbeatLoop extends the handle's liveness every heartbeat. When it sees
// that another owner died since its previous beat, it wakes this process's
// watchers: the dead owner's work just became fetchable, and no write
// announces it.
func (s *Store) heartbeatLoop() {
	defer close(s.hbDone)
	t := time.NewTicker(s.cfg.heartbeat)
	defer t.Stop()
	last := nowMs()
	for beat := 0; ; beat++ {
		select {
		case <-s.hbStop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.deadAfter)
		var died bool
		err := s.write(ctx, func(c context.Context, ns *notes) error {
			now := nowMs()
			if _, err := s.ws.heartbeat.ExecContext(c, s.owner, now, now+s.cfg.deadAfter.Milliseconds()); err != nil {
				return err
			}
			if beat%64 == 0 {
				if _, err := s.ws.gcOwners.ExecContext(c, now-ownerGCAge.Milliseconds()); err != nil {
					return err
				}
			}
			if err := s.ws.deaths.QueryRowContext(c, last, now).Scan(&died); err != nil {
				return err
			}
			last = now
			if died {
				*ns |= noteOrch | noteWorker
			}
			return nil
		})
		cancel()
		if err != nil && !errors.Is(err, errClosed) {
			slog.Warn("sqlite store: heartbeat failed", "path", s.path, "error", err)
		}
	}
}

// stopHeartbeat stops the heartbeat goroutine; safe to call more than once.
func (s *Store) stopHeartbeat() {
	if s.hbStop == nil {
		return
	}
	s.hbOnce.Do(func() {
		close(s.hbStop)
		<-s.hbDone
	})
}

// ReclaimLeases implements duroxide.LeaseReclaimer: every owner other than
// the Stores of this process open on the same file is declared dead, so
// its leases can be fetched at once, without counting the lost attempts.
// Use it only when this process is the database's sole user.
func (s *Store) ReclaimLeases(ctx context.Context) (int, error) {
	keep, err := json.Marshal(s.hub.ownerList())
	if err != nil {
		return 0, wrap("reclaim leases", err)
	}
	var n int64
	err = s.write(ctx, func(c context.Context, ns *notes) error {
		res, err := s.ws.reclaim.ExecContext(c, string(keep))
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		// Another process's reclaim may have dropped this handle's row
		// (it comes back at the next heartbeat): restore it now, or this
		// handle's own leases would look lost too.
		now := nowMs()
		aliveUntil := int64(math.MaxInt64)
		if !s.cfg.memory {
			aliveUntil = now + s.cfg.deadAfter.Milliseconds()
		}
		if _, err := s.ws.heartbeat.ExecContext(c, s.owner, now, aliveUntil); err != nil {
			return err
		}
		if n > 0 {
			*ns |= noteOrch | noteWorker
		}
		return nil
	})
	if err != nil {
		return 0, wrap("reclaim leases", err)
	}
	return int(n), nil
}

// Close releases the store's connections and unregisters its watchers. Its
// lease owner is dropped first: leases it still holds are free for other
// handles at once (uncounted). It is safe to call more than once.
func (s *Store) Close() error {
	s.stopHeartbeat()
	s.closed.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.busyTimeout)
		_ = s.write1(ctx, func(c context.Context, ns *notes) error {
			_, err := s.ws.dropOwner.ExecContext(c, s.owner)
			*ns |= noteOrch | noteWorker
			return err
		})
		cancel()
		s.closeNow()
	})
	return s.cerr
}

func (s *Store) closeNow() {
	s.watchMu.Lock()
	for id := range s.watchers {
		s.hub.unwatch(id)
	}
	s.watchers = nil
	s.watchMu.Unlock()
	// Refuse new writes and wait for queued ones to finish.
	s.bmu.Lock()
	s.closing = true
	for s.leading {
		s.bmu.Unlock()
		time.Sleep(time.Millisecond)
		s.bmu.Lock()
	}
	s.bmu.Unlock()
	if s.ckptStop != nil {
		close(s.ckptStop)
		<-s.ckptDone
	}
	s.hub.sem <- struct{}{}
	s.cerr = s.closeDBs()
	<-s.hub.sem
	s.hub.removeOwner(s.owner)
	if !s.cfg.memory && !s.cfg.privateHub {
		releaseHub(s.path)
	}
}

func (s *Store) closeDBs() error {
	var errs []error
	s.ws.close()
	s.rs.close()
	s.hrs.close()
	if s.wconn != nil {
		errs = append(errs, s.wconn.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.ckptDB != nil {
		errs = append(errs, s.ckptDB.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return wrap("close", err)
	}
	return nil
}

// connector opens mattn/go-sqlite3 connections and applies pragmas.
type connector struct {
	dsn     string
	pragmas []string
}

func (c *connector) Connect(context.Context) (driver.Conn, error) {
	return c.Driver().Open(c.dsn)
}

func (c *connector) Driver() driver.Driver {
	return &sqlite3.SQLiteDriver{ConnectHook: func(conn *sqlite3.SQLiteConn) error {
		for _, p := range c.pragmas {
			if _, err := conn.Exec(p, nil); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	}}
}

// ---- write helpers ----

// Writes are group-committed. A caller queues its operation; if no other
// caller of this store is committing, it becomes the leader and runs every
// queued operation (up to maxBatch) in one BEGIN IMMEDIATE transaction,
// each inside its own savepoint so that a failing operation rolls back
// alone. After the commit the leader releases the followers, hands
// leadership to the oldest operation still queued, and finally fires the
// batch's notifications. A lone single-statement operation runs in
// autocommit mode. Under concurrency this turns many small commits (each a
// WAL append with its page writes and lock traffic) into few larger ones.

const maxBatch = 64

// txFn is one write operation. It adds the notifications its effects
// warrant to ns; they are fired only if the operation commits.
type txFn func(c context.Context, ns *notes) error

type wop struct {
	fn        txFn
	single    bool
	ns        notes
	err       error
	completed bool
	done      chan struct{} // receives once: completed, or "lead now"
}

// write runs fn in a transaction (possibly shared with other operations).
func (s *Store) write(ctx context.Context, fn txFn) error { return s.submit(ctx, fn, false) }

// write1 runs fn, a single statement, in autocommit mode when alone.
func (s *Store) write1(ctx context.Context, fn txFn) error { return s.submit(ctx, fn, true) }

func (s *Store) submit(ctx context.Context, fn txFn, single bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &wop{fn: fn, single: single, done: make(chan struct{}, 1)}
	s.bmu.Lock()
	if s.closing {
		s.bmu.Unlock()
		return errClosed
	}
	s.pending = append(s.pending, o)
	if s.leading {
		s.bmu.Unlock()
		// Operations are short; a queued one is not abandoned on ctx
		// cancellation, so that it cannot be half-accounted.
		<-o.done
		if o.completed {
			return o.err
		}
	} else {
		s.leading = true
		s.bmu.Unlock()
	}
	// Leader: o is the oldest queued operation.
	s.bmu.Lock()
	n := min(len(s.pending), maxBatch)
	batch := make([]*wop, n)
	copy(batch, s.pending)
	s.pending = append(s.pending[:0], s.pending[n:]...)
	s.bmu.Unlock()

	ns := s.runBatch(batch)
	for _, b := range batch {
		b.completed = true
		if b != o {
			b.done <- struct{}{}
		}
	}

	s.bmu.Lock()
	if len(s.pending) > 0 {
		next := s.pending[0]
		s.bmu.Unlock()
		next.done <- struct{}{} // next leads
	} else {
		s.leading = false
		s.bmu.Unlock()
	}
	// Notify last, when this goroutine holds nothing: a watcher that calls
	// back into the store cannot deadlock it.
	s.hub.notify(ns)
	return o.err
}

// runBatch executes ops under the file's write lock and returns the
// notifications of the committed ones.
func (s *Store) runBatch(ops []*wop) notes {
	s.hub.sem <- struct{}{}
	defer func() { <-s.hub.sem }()
	c := context.Background()
	ws := &s.ws

	if len(ops) == 1 && ops[0].single {
		o := ops[0]
		o.run(c)
		if o.err != nil {
			return 0
		}
		s.committed()
		return o.ns
	}
	fail := func(err error) notes {
		_, _ = ws.rollback.ExecContext(c)
		for _, o := range ops {
			if o.err == nil {
				o.err = err
			}
		}
		return 0
	}
	if _, err := ws.begin.ExecContext(c); err != nil {
		return fail(err)
	}
	if len(ops) == 1 {
		o := ops[0]
		if o.run(c); o.err != nil {
			_, _ = ws.rollback.ExecContext(c)
			return 0
		}
	} else {
		for _, o := range ops {
			if _, err := ws.savepoint.ExecContext(c); err != nil {
				return fail(err)
			}
			if o.run(c); o.err != nil {
				o.ns = 0
				if _, err := ws.rollbackTo.ExecContext(c); err != nil {
					// The transaction itself is gone (SQLite rolls back
					// on some I/O errors): nothing of the batch committed.
					return fail(err)
				}
			}
			if _, err := ws.release.ExecContext(c); err != nil {
				return fail(err)
			}
		}
	}
	if _, err := ws.commit.ExecContext(c); err != nil {
		return fail(err)
	}
	s.committed()
	var ns notes
	for _, o := range ops {
		if o.err == nil {
			ns |= o.ns
		}
	}
	return ns
}

// ckptEvery is how many committed write batches wake the checkpointer.
const ckptEvery = 32

// committed counts a committed batch (called under the write lock).
func (s *Store) committed() {
	if s.ckpt == nil {
		return
	}
	s.ckptDirty++
	if s.ckptDirty >= ckptEvery {
		s.ckptDirty = 0
		select {
		case s.ckpt <- struct{}{}:
		default:
		}
	}
}

// checkpointer copies WAL frames back into the database file on its own
// connection (a PASSIVE checkpoint runs concurrently with the writer), so
// that commits never stall on a checkpoint and the WAL stays small. A
// ticker catches writes that stop short of ckptEvery batches.
func (s *Store) checkpointer() {
	defer close(s.ckptDone)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	ctx := context.Background()
	for {
		select {
		case <-s.ckptStop:
			return
		case <-s.ckpt:
		case <-tick.C:
		}
		// Errors (busy: another checkpoint is running) are harmless.
		_, _ = s.ckptDB.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
	}
}

// run executes the operation, turning a panic into its error so that the
// leader (which may be another caller's goroutine) survives it.
func (o *wop) run(c context.Context) {
	defer func() {
		if r := recover(); r != nil {
			o.err = fmt.Errorf("panic in store operation: %v", r)
		}
	}()
	o.err = o.fn(c, &o.ns)
}

var errClosed = errors.New("store is closed")

// read runs fn against the read pool (or, in memory, the write connection
// under the write lock).
func (s *Store) read(ctx context.Context, fn func(q querier, rs *readStmts) error) error {
	if s.rdb != nil {
		return fn(s.rdb, &s.rs)
	}
	if err := s.lockWriter(ctx); err != nil {
		return err
	}
	defer s.unlockWriter()
	return fn(s.wconn, &s.rs)
}

// readHot runs a short point read. When no write is in progress it uses
// the write connection, whose page cache is always warm (a read connection
// must drop its cache after every write); otherwise the read pool.
func (s *Store) readHot(ctx context.Context, fn func(q querier, rs *readStmts) error) error {
	if s.rdb == nil {
		return s.read(ctx, fn)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.hub.sem <- struct{}{}:
		defer func() { <-s.hub.sem }()
		return fn(s.wconn, &s.hrs)
	default:
		return fn(s.rdb, &s.rs)
	}
}

// lockWriter takes the per-file write lock, honoring ctx while waiting.
func (s *Store) lockWriter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case s.hub.sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case s.hub.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) unlockWriter() { <-s.hub.sem }

type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// ---- errors ----

// Error is the error type of the store's failures. Retryable reports
// whether the failure is transient (database busy or locked by another
// process, I/O hiccup); it implements duroxide.Retryable. Sentinel errors of
// package duroxide (ErrLockLost, ErrNotFound, …) are wrapped and match with
// errors.Is.
type Error struct {
	Op        string // the failed operation, e.g. "ack orchestration item"
	Err       error
	Transient bool
}

func (e *Error) Error() string { return "sqlite: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the operation may succeed when retried.
func (e *Error) Retryable() bool { return e.Transient }

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var own *Error
	if errors.As(err, &own) {
		return err
	}
	return &Error{Op: op, Err: err, Transient: isTransient(err)}
}

func isTransient(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrIoErr, sqlite3.ErrProtocol:
			return true
		}
		return false
	}
	if errors.Is(err, driver.ErrBadConn) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "database is locked") || strings.Contains(msg, "database table is locked")
}

func isPrimaryKeyViolation(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrConstraint &&
		(se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey || se.ExtendedCode == sqlite3.ErrConstraintUnique)
}

var errLockLost = fmt.Errorf("invalid lock_token: %w", duroxide.ErrLockLost)

// ---- misc helpers ----

func nowMs() int64 { return time.Now().UnixMilli() }

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Orchestration lock tokens are "<32 hex random><instance>", so that the
// lock row is found by its primary key.
func orchToken(random, instance string) string { return random + instance }

func parseOrchToken(tok string) (random, instance string, ok bool) {
	if len(tok) <= tokenLen {
		return "", "", false
	}
	return tok[:tokenLen], tok[tokenLen:], true
}

const tokenLen = 32

// Worker lock tokens carry the row id so that lookups need no token index:
// "<id>.<random hex>".
func workerToken(id int64, random string) string {
	return strconv.FormatInt(id, 10) + "." + random
}

func parseWorkerToken(tok string) (int64, string, bool) {
	i := strings.IndexByte(tok, '.')
	if i <= 0 || i == len(tok)-1 {
		return 0, "", false
	}
	id, err := strconv.ParseInt(tok[:i], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return id, tok[i+1:], true
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
