package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Group commit.
//
// With synchronous_commit on, every write transaction waits for a WAL
// flush. The store's write calls (turn commits, acks, enqueues) are single
// statements, so concurrent calls of one handle can share a transaction,
// and with it one commit record and one flush: the committer runs whatever
// calls are pending as one transaction on one connection, each call inside
// its own savepoint, so that a call that fails (a lost lock, a turn
// conflict, a duplicate event) is rolled back alone and reports its own
// error, while the others commit. A call's result is delivered only after
// the shared COMMIT succeeded; if the COMMIT (or the connection) fails,
// every call of the batch gets that error.
//
// There is no delay: up to groupWorkers batches run at once, and a call
// that finds a committer idle goes out at once, alone, as an ordinary
// autocommit statement. Calls queue only while every committer is busy;
// a committer that finishes takes everything queued meanwhile (at most
// groupMaxBatch calls).
//
// Savepoints are pipelined: one round trip sends BEGIN, then SAVEPOINT,
// call, RELEASE for every call, then COMMIT. When a call fails, PostgreSQL
// skips the rest until the pipeline's end; the committer then rolls back to
// that call's savepoint (keeping the calls before it) and sends the rest
// again, so a batch with f failures takes 2f+1 round trips.
//
// A client's call (a start, an enqueue) runs on its own connection, and
// the client usually waits for it before it makes the next. A batch that
// commits while such a call is in flight slows it twice: the call waits for
// the batch's WAL flush before its own (PostgreSQL flushes one at a time),
// and the two sessions' statements share the machine's cores. So a committer
// about to send a batch while a client call is in flight waits until that
// call returns (client), up to clientWaitCap, and then sends everything
// queued meanwhile as one batch. It waits for one call at most, so a stream
// of client calls cannot hold the runtime's writes back for longer than one
// of them takes. Measured with the benchmark's 200 starts in a row from one
// goroutine (bench/README.md, "Client calls before group commits"): the
// durable-timer workload at three times its size 0.439 → 0.413 s, less
// server CPU (fewer, larger transactions); at the benchmark's own size up
// to 9 % faster in most sets of alternating runs, inside this machine's noise.
//
// Ordering: calls of one batch run in the order they were submitted, so
// the batch is equivalent to running them one after the other; calls in
// different batches are concurrent transactions, as separate calls were
// before. A turn of one instance is never concurrent with another turn of
// it (the runtime's guarantee), so no two calls of a batch write the same
// instance's turn.

const (
	// groupMaxBatch bounds the calls of one transaction: every call's
	// savepoint that writes takes a subtransaction id, and PostgreSQL
	// tracks up to 64 of them per backend before other sessions' snapshots
	// get slower.
	groupMaxBatch = 32
	// groupTimeout bounds one batch (all its round trips and the commit).
	groupTimeout = 30 * time.Second
	// clientWaitCap bounds how long a committer defers a batch to a client
	// call in flight (a start takes 0.3–1 ms; one that waits for a lock
	// should not hold the runtime's writes back).
	clientWaitCap = 2 * time.Millisecond
)

// errStoreClosed fails calls submitted after Close.
var errStoreClosed = errors.New("store is closed")

// groupCall is one statement waiting for a group commit.
type groupCall struct {
	ctx  context.Context
	sql  string
	args []any
	// read consumes the statement's rows (nil: they are discarded). It runs
	// on the committer's goroutine before done is signalled; its error is
	// the call's error, although the statement took effect (a decoding
	// problem, which the callers' types rule out).
	read func(pgx.Rows) error
	err  error
	done chan struct{}
}

// committer runs group commits for one Store.
type committer struct {
	pool    *pgxpool.Pool
	workers int

	mu      sync.Mutex
	pending []*groupCall
	closed  bool

	wake     chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
	inflight atomic.Int32 // batches running

	// Client calls in flight (see client) and a signal that one returned.
	clients    atomic.Int32
	clientDone chan struct{}
	clientCap  time.Duration // clientWaitCap; tests change it
	onDefer    func()        // test hook: a committer starts deferring to a client call

	// stats (tests and diagnostics)
	statsMu sync.Mutex
	stats   GroupCommitStats
}

// GroupCommitStats counts what the committer did.
type GroupCommitStats struct {
	Calls        int // calls run (alone or batched)
	Transactions int // transactions (batches and lone calls)
	Batched      int // calls that shared a transaction with others
	MaxBatch     int // largest batch
	Failed       int // calls of a batch that failed alone (rolled back to their savepoint)
	Deferred     int // batches held back until a client call in flight returned (or clientWaitCap passed)
}

func newCommitter(pool *pgxpool.Pool, workers int) *committer {
	c := &committer{pool: pool, workers: workers, wake: make(chan struct{}, workers), stop: make(chan struct{}),
		clientDone: make(chan struct{}, 1), clientCap: clientWaitCap}
	for range workers {
		c.wg.Add(1)
		go c.loop()
	}
	return c
}

// close stops the committers after the batches in flight; calls still
// queued fail with errStoreClosed.
func (c *committer) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	c.wg.Wait()
	c.mu.Lock()
	rest := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, call := range rest {
		call.err = errStoreClosed
		close(call.done)
	}
}

// run submits one statement and waits for its outcome. Once a committer
// took the call, the caller waits for the transaction to end (bounded by
// groupTimeout) even if ctx ends meanwhile: by then the outcome is no
// longer the caller's to abandon.
func (c *committer) run(ctx context.Context, sql string, args []any, read func(pgx.Rows) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	call := &groupCall{ctx: ctx, sql: sql, args: args, read: read, done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errStoreClosed
	}
	c.pending = append(c.pending, call)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // every committer has a wake-up pending or is busy and will look again
	}
	<-call.done
	return call.err
}

// client runs a client's call (fn, on a connection of its own) and tells
// the committers while it is in flight, so that they do not commit a batch
// meanwhile (see the package comment on group commit).
func (c *committer) client(fn func() error) error {
	select {
	case <-c.clientDone: // a signal no committer took: it is stale now
	default:
	}
	c.clients.Add(1)
	defer func() {
		c.clients.Add(-1)
		select {
		case c.clientDone <- struct{}{}:
		default:
		}
	}()
	return fn()
}

// deferToClient waits, when a client call is in flight, until one returns
// or clientCap passes; it reports false when the store is closing.
func (c *committer) deferToClient(timer *time.Timer) bool {
	if c.clients.Load() == 0 {
		return true
	}
	c.statsMu.Lock()
	c.stats.Deferred++
	c.statsMu.Unlock()
	if c.onDefer != nil {
		c.onDefer()
	}
	timer.Reset(c.clientCap)
	defer timer.Stop()
	select {
	case <-c.clientDone:
	case <-timer.C:
	case <-c.stop:
		return false
	}
	return true
}

func (c *committer) loop() {
	defer c.wg.Done()
	var conn *pgxpool.Conn
	defer func() {
		if conn != nil {
			conn.Release()
		}
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			queued := len(c.pending) > 0
			c.mu.Unlock()
			if queued && !c.deferToClient(timer) {
				return
			}
			c.mu.Lock()
			n := min(len(c.pending), groupMaxBatch)
			batch := make([]*groupCall, n)
			copy(batch, c.pending)
			c.pending = c.pending[n:]
			if len(c.pending) == 0 {
				c.pending = nil
			}
			c.mu.Unlock()
			if n == 0 {
				// Idle: give the connection back, so that a committer
				// holds one only while it has work, as any caller would.
				if conn != nil {
					conn.Release()
					conn = nil
				}
				break
			}
			c.inflight.Add(1)
			conn = c.runBatch(conn, batch)
			c.inflight.Add(-1)
		}
	}
}

// runBatch runs the calls as one transaction and signals each; it returns
// the connection to keep for the next batch (nil when it was dropped).
func (c *committer) runBatch(conn *pgxpool.Conn, batch []*groupCall) *pgxpool.Conn {
	live := batch[:0]
	for _, call := range batch {
		if err := call.ctx.Err(); err != nil {
			call.err = err
			close(call.done)
			continue
		}
		live = append(live, call)
	}
	if len(live) == 0 {
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	if conn == nil {
		var err error
		if conn, err = c.pool.Acquire(ctx); err != nil {
			for _, call := range live {
				call.err = err
				close(call.done)
			}
			return nil
		}
	}
	var err error
	if len(live) == 1 {
		err = runAlone(ctx, conn, live[0])
	} else {
		err = c.runTogether(ctx, conn, live)
	}
	c.statsMu.Lock()
	c.stats.Calls += len(live)
	c.stats.Transactions++
	if len(live) > 1 {
		c.stats.Batched += len(live)
	}
	c.stats.MaxBatch = max(c.stats.MaxBatch, len(live))
	c.statsMu.Unlock()
	for _, call := range live {
		close(call.done)
	}
	if err != nil || conn.Conn().PgConn().TxStatus() != 'I' {
		// A broken connection, or one left in a transaction: drop it.
		conn.Conn().Close(context.Background())
		conn.Release()
		return nil
	}
	return conn
}

// runAlone runs one call as its own (autocommit) statement. The returned
// error concerns the connection; the call's outcome is in call.err.
func runAlone(ctx context.Context, conn *pgxpool.Conn, call *groupCall) error {
	rows, err := conn.Query(ctx, call.sql, call.args...)
	if err != nil {
		call.err = err
		return connErr(err)
	}
	call.err = readRows(call, rows)
	return connErr(call.err)
}

// readRows hands the rows to the call's reader and returns the statement's
// error (server or connection) or else the reader's.
func readRows(call *groupCall, rows pgx.Rows) error {
	var readErr error
	if call.read != nil {
		readErr = call.read(rows)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	return readErr
}

// connErr returns err unless it is an error the server reported for a
// statement (after which the session is usable), or nil.
func connErr(err error) error {
	var pgErr *pgconn.PgError
	if err == nil || errors.As(err, &pgErr) {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	return err
}

// runTogether runs several calls in one transaction, one savepoint each.
// It returns an error when the transaction as a whole failed (every call's
// err is then set to it).
func (c *committer) runTogether(ctx context.Context, conn *pgxpool.Conn, calls []*groupCall) error {
	alone := make([]bool, len(calls)) // failed and rolled back alone: the error is final
	failAll := func(err error) error {
		for i, call := range calls {
			if !alone[i] {
				call.err = err
			}
		}
		return err
	}
	next := 0 // first call not yet run
	for {
		b := &pgx.Batch{}
		if next == 0 {
			b.Queue("BEGIN")
		} else {
			// The previous call failed: undo it alone. (Before the batch:
			// pgx may prepare its statements first, which an aborted
			// transaction refuses.)
			if _, err := conn.Exec(ctx, "ROLLBACK TO SAVEPOINT g; RELEASE SAVEPOINT g"); err != nil {
				return failAll(fmt.Errorf("group commit of %d calls: %w", len(calls), err))
			}
		}
		for _, call := range calls[next:] {
			b.Queue("SAVEPOINT g")
			b.Queue(call.sql, call.args...)
			b.Queue("RELEASE SAVEPOINT g")
		}
		b.Queue("COMMIT")
		br := conn.SendBatch(ctx, b)
		control := func() error {
			_, err := br.Exec()
			return err
		}
		var stepErr error
		if next == 0 {
			stepErr = control() // BEGIN
		}
		failedAt := -1
		for i := next; stepErr == nil && i < len(calls); i++ {
			if stepErr = control(); stepErr != nil { // SAVEPOINT
				break
			}
			call := calls[i]
			rows, err := br.Query()
			if err == nil {
				err = readRows(call, rows)
			}
			var pgErr *pgconn.PgError
			if err != nil && errors.As(err, &pgErr) {
				// The call failed on the server: the transaction is
				// aborted up to its savepoint; the rest was skipped.
				call.err = err
				alone[i] = true
				failedAt = i
				break
			}
			if err != nil && connErr(err) != nil {
				stepErr = err
				break
			}
			call.err = err                           // nil, or a reader's error after the statement took effect
			if stepErr = control(); stepErr != nil { // RELEASE
				break
			}
		}
		var tag pgconn.CommandTag
		if stepErr == nil && failedAt < 0 {
			tag, stepErr = br.Exec() // COMMIT
		}
		closeErr := br.Close()
		if stepErr == nil && failedAt < 0 {
			stepErr = closeErr
		}
		if stepErr != nil {
			return failAll(fmt.Errorf("group commit of %d calls: %w", len(calls), stepErr))
		}
		if failedAt >= 0 {
			c.statsMu.Lock()
			c.stats.Failed++
			c.statsMu.Unlock()
			// Keep the failed call's error; the next round trip undoes it
			// and runs the calls after it (none: it just commits).
			next = failedAt + 1
			continue
		}
		if tag.String() != "COMMIT" {
			return failAll(fmt.Errorf("group commit of %d calls: transaction ended with %q", len(calls), tag.String()))
		}
		return nil
	}
}
