package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// writeStmts are prepared once on the write connection.
type writeStmts struct {
	all []*sql.Stmt

	begin, commit, rollback        *sql.Stmt
	savepoint, release, rollbackTo *sql.Stmt

	enqOrch, enqWorker, enqWorkerLocked *sql.Stmt
	turnUpdate, instanceExists          *sql.Stmt
	reuseWorker                         *sql.Stmt
	deleteTimer, releaseTimer           *sql.Stmt
	instanceLocked                      *sql.Stmt

	fetchTag, fetchMeta *sql.Stmt

	ackDeleteTagged, ackInstUpsert, ackInstUpdate *sql.Stmt
	ackInstUpsertExec                             *sql.Stmt
	ackExecInsert, ackExecUpsert                  *sql.Stmt
	ackHistory, ackHistory2, ackCancel            *sql.Stmt
	ackHasVisible                                 *sql.Stmt

	abandonOrch, renewOrch *sql.Stmt

	fetchWork, ackWork, renewWork, abandonWork *sql.Stmt

	heartbeat, deaths, dropOwner, reclaim, gcOwners *sql.Stmt
}

// Lease liveness (see the Store doc). A lock of row r is live while
// r.locked_until > now and its owner is alive (a lock without owner, written
// before owners existed, lives by its timeout alone). lostLock is true for a
// locked row whose owner died while the lock was still valid: the delivery
// was lost with the process and is not counted as an attempt. ?3 is now.
const (
	ownerAlive = `EXISTS (SELECT 1 FROM owners o WHERE o.owner_id = %[1]s.lock_owner AND o.alive_until > ?3)`
	liveLock   = `(coalesce(%[1]s.locked_until, 0) > ?3 AND (%[1]s.lock_owner IS NULL OR ` + ownerAlive + `))`
	lostLock   = `(lock_owner IS NOT NULL AND locked_until IS NOT NULL AND NOT EXISTS (SELECT 1 FROM owners o
		WHERE o.owner_id = lock_owner AND (o.alive_until > ?3 OR locked_until <= o.heartbeat_at)))`
)

// Instance upsert of an ack. Parameters:
//
//	?1 instance, ?2 name, ?3 version, ?4 execution id, ?5 status set (0/1),
//	?6 status, ?7 output, ?8 parent, ?9 now, ?10 custom status set (0/1),
//	?11 custom status
//
// Expressions in DO UPDATE see the old row unqualified, so the CASEs compare
// the committed execution with the previous current one: the instance
// mirrors its current execution (a newer execution id starts Running).
const ackInstSet = `
	current_execution_id = max(current_execution_id, ?4),
	orchestration_name = CASE WHEN ?4 >= current_execution_id AND ?2 <> '' THEN ?2 ELSE orchestration_name END,
	orchestration_version = CASE WHEN ?4 >= current_execution_id AND ?2 <> '' THEN ?3 ELSE orchestration_version END,
	status = CASE WHEN ?5 AND ?4 >= current_execution_id THEN ?6 WHEN ?4 > current_execution_id THEN 'Running' ELSE status END,
	output = CASE WHEN ?5 AND ?4 >= current_execution_id THEN ?7 WHEN ?4 > current_execution_id THEN NULL ELSE output END,
	parent_instance = coalesce(parent_instance, ?8),
	custom_status = CASE WHEN ?10 THEN ?11 ELSE custom_status END,
	custom_status_version = custom_status_version + ?10,
	updated_at = ?9`

// ackInstUpsertSQL creates or updates the instance row of a turn (see
// ackInstSet).
const ackInstUpsertSQL = `INSERT INTO instances(instance, orchestration_name, orchestration_version, current_execution_id,
		status, output, parent_instance, custom_status, custom_status_version, created_at, updated_at)
	VALUES (?1, ?2, ?3, ?4, CASE WHEN ?5 THEN ?6 ELSE 'Running' END, CASE WHEN ?5 THEN ?7 END, ?8,
		CASE WHEN ?10 THEN ?11 END, ?10, ?9, ?9)
	ON CONFLICT(instance) DO UPDATE SET ` + ackInstSet

type stmtDef struct {
	dst **sql.Stmt
	sql string
}

func prepareAll(ctx context.Context, p preparer, list []stmtDef) ([]*sql.Stmt, error) {
	var all []*sql.Stmt
	for _, e := range list {
		st, err := p.PrepareContext(ctx, e.sql)
		if err != nil {
			for _, st := range all {
				_ = st.Close()
			}
			return nil, fmt.Errorf("%w\n%s", err, e.sql)
		}
		*e.dst = st
		all = append(all, st)
	}
	return all, nil
}

func (w *writeStmts) prepare(ctx context.Context, p preparer) (err error) {
	w.all, err = prepareAll(ctx, p, w.defs())
	return err
}

// Note on parameters: SQLite (3.5x) re-prepares, on every execution, a
// statement that combines "column = ?" with ORDER BY. Such parameters are
// written CAST(? AS TEXT/INTEGER), which keeps index use and avoids it
// (TestNoReprepare guards this).

func (w *writeStmts) defs() []stmtDef {
	return []stmtDef{
		{&w.begin, `BEGIN IMMEDIATE`},
		{&w.commit, `COMMIT`},
		{&w.rollback, `ROLLBACK`},
		{&w.savepoint, `SAVEPOINT op`},
		{&w.release, `RELEASE op`},
		{&w.rollbackTo, `ROLLBACK TO op`},

		{&w.enqOrch, `INSERT INTO orchestrator_queue(instance, id, work_item, visible_at) VALUES (?, ?, ?, ?)`},
		{&w.enqWorker, `INSERT INTO worker_queue(instance, execution_id, activity_id, work_item, visible_at) VALUES (?, ?, ?, ?, ?)`},
		{&w.instanceExists, `SELECT EXISTS (SELECT 1 FROM instances WHERE instance = ?)`},
		// ?1 instance, ?2 now.
		{&w.instanceLocked, `SELECT EXISTS (SELECT 1 FROM orchestrator_queue WHERE instance = ?1 AND locked_until > ?2)`},
		// The untagged TimerFired message of a timer (local timers).
		// ?1 instance, ?2 execution, ?3 timer id (, ?4 now).
		{&w.deleteTimer, `DELETE FROM orchestrator_queue WHERE instance = ?1 AND lock_token IS NULL
			AND json_extract(work_item, '$.kind') = 'TimerFired'
			AND json_extract(work_item, '$.exec') = ?2 AND json_extract(work_item, '$.id') = ?3`},
		{&w.releaseTimer, `UPDATE orchestrator_queue SET visible_at = min(visible_at, ?4) WHERE instance = ?1 AND lock_token IS NULL
			AND json_extract(work_item, '$.kind') = 'TimerFired'
			AND json_extract(work_item, '$.exec') = ?2 AND json_extract(work_item, '$.id') = ?3`},
		// A worker message leased at once to this handle (local dispatch).
		{&w.enqWorkerLocked, `INSERT INTO worker_queue(instance, execution_id, activity_id, work_item, visible_at,
				lock_token, locked_until, lock_owner, attempt_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)`},
		// The instance update of an activity turn (see ackInstSet), done
		// only if the turn computed on the instance's history may still be
		// committed: its execution is the current one and running, the last
		// event id of that execution is the one the turn saw (?12), and
		// the instance is not locked. It returns whether the instance has
		// visible messages (for the notification after the commit, see
		// writeTurn); no row: the turn conflicts.
		{&w.turnUpdate, `UPDATE instances SET ` + ackInstSet + `
			WHERE instance = ?1 AND current_execution_id = ?4 AND status = 'Running'
			  AND coalesce((SELECT max(h.event_id) FROM history h
					WHERE h.instance = instances.instance AND h.execution_id = instances.current_execution_id), 0) = ?12
			  AND NOT EXISTS (SELECT 1 FROM orchestrator_queue q WHERE q.instance = ?1 AND q.locked_until > ?9)
			RETURNING EXISTS (SELECT 1 FROM orchestrator_queue q WHERE q.instance = ?1 AND q.visible_at <= ?9)`},
		// The completed activity's leased row, reused for the next activity
		// of the same execution that the turn leases to this handle (a new
		// lock token, so the old one is spent): one update instead of a
		// delete and an insert, which leaves the (instance, execution_id)
		// index alone (migration 3).
		// ?1 id, ?2 old token, ?3 now, ?4 instance, ?5 execution, ?6
		// activity id, ?7 work item, ?8 new token, ?9 locked_until, ?10 owner.
		{&w.reuseWorker, `UPDATE worker_queue SET activity_id = ?6, work_item = ?7,
				visible_at = ?3, lock_token = ?8, locked_until = ?9, lock_owner = ?10, attempt_count = 1
			WHERE id = ?1 AND lock_token = ?2 AND locked_until > ?3 AND instance = ?4 AND execution_id = ?5`},

		// Lock the instance of the oldest visible message whose instance is
		// not locked (or locked by a dead owner), by tagging all its
		// visible messages.
		// ?1 random token, ?2 locked_until, ?3 now, ?4 owner.
		{&w.fetchTag, `UPDATE orchestrator_queue SET lock_token = ?1, locked_until = ?2, lock_owner = ?4,
				attempt_count = attempt_count + CASE WHEN ` + lostLock + ` THEN 0 ELSE 1 END
			WHERE instance = (
				SELECT q.instance FROM orchestrator_queue q
				WHERE q.visible_at <= ?3
				  AND NOT EXISTS (SELECT 1 FROM orchestrator_queue l WHERE l.instance = q.instance AND ` + fmt.Sprintf(liveLock, "l") + `)
				ORDER BY q.visible_at, q.id LIMIT 1)
			  AND visible_at <= ?3
			RETURNING instance, id, work_item, attempt_count`},
		{&w.fetchMeta, `SELECT orchestration_name, orchestration_version, current_execution_id, status, created_at,
			coalesce((SELECT max(h.event_id) FROM history h WHERE h.instance = i.instance AND h.execution_id = i.current_execution_id), 0)
			FROM instances i WHERE instance = ?`},

		// Deleting the tagged messages also validates the lock.
		{&w.ackDeleteTagged, `DELETE FROM orchestrator_queue WHERE instance = ? AND lock_token = ? AND locked_until > ?`},
		{&w.ackInstUpsert, ackInstUpsertSQL + ` RETURNING current_execution_id`},
		// The same without the row back, for a turn that needs no current
		// execution id (see writeTurn).
		{&w.ackInstUpsertExec, ackInstUpsertSQL},
		{&w.ackInstUpdate, `UPDATE instances SET ` + ackInstSet + ` WHERE instance = ?1 RETURNING current_execution_id`},
		{&w.ackExecInsert, `INSERT OR IGNORE INTO executions(instance, execution_id, status, started_at) VALUES (?, ?, 'Running', ?)`},
		{&w.ackExecUpsert, `INSERT INTO executions(instance, execution_id, status, output, started_at, completed_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6)
			ON CONFLICT(instance, execution_id) DO UPDATE SET status = ?3, output = ?4, completed_at = ?6
			WHERE status IS NOT ?3 OR output IS NOT ?4 OR (completed_at IS NULL) <> (?6 IS NULL)`},
		{&w.ackHistory, `INSERT INTO history(instance, execution_id, event_id, kind, data) VALUES (?, ?, ?, ?, ?)`},
		{&w.ackHistory2, `INSERT INTO history(instance, execution_id, event_id, kind, data) VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)`},
		{&w.ackCancel, `DELETE FROM worker_queue WHERE instance = ? AND execution_id = ? AND activity_id = ?`},
		{&w.ackHasVisible, `SELECT EXISTS (SELECT 1 FROM orchestrator_queue WHERE instance = ? AND visible_at <= ?)`},

		// ?1 instance, ?2 token, ?3 new visible_at (0: unchanged), ?4 ignore attempt
		{&w.abandonOrch, `UPDATE orchestrator_queue SET lock_token = NULL, locked_until = NULL, lock_owner = NULL,
				visible_at = CASE WHEN ?3 > 0 THEN ?3 ELSE visible_at END,
				attempt_count = CASE WHEN ?4 THEN max(attempt_count - 1, 0) ELSE attempt_count END
			WHERE instance = ?1 AND lock_token = ?2`},
		{&w.renewOrch, `UPDATE orchestrator_queue SET locked_until = ? WHERE instance = ? AND lock_token = ? AND locked_until > ?`},

		// Oldest visible, unlocked or lock-expired worker message, by id.
		// The unary + keeps the planner on the rowid order.
		// ?1 token, ?2 locked_until, ?3 now, ?4 owner.
		{&w.fetchWork, `UPDATE worker_queue SET lock_token = ?1, locked_until = ?2, lock_owner = ?4,
				attempt_count = attempt_count + CASE WHEN ` + lostLock + ` THEN 0 ELSE 1 END
			WHERE id = (SELECT id FROM worker_queue w
				WHERE +w.visible_at <= ?3 AND NOT ` + fmt.Sprintf(liveLock, "w") + `
				ORDER BY id LIMIT 1)
			RETURNING id, work_item, attempt_count`},
		{&w.ackWork, `DELETE FROM worker_queue WHERE id = ? AND lock_token = ? AND locked_until > ?`},
		{&w.renewWork, `UPDATE worker_queue SET locked_until = ? WHERE id = ? AND lock_token = ? AND locked_until > ?`},
		// ?1 id, ?2 token, ?3 visible_at, ?4 ignore attempt
		{&w.abandonWork, `UPDATE worker_queue SET lock_token = NULL, locked_until = NULL, lock_owner = NULL, visible_at = ?3,
				attempt_count = CASE WHEN ?4 THEN max(attempt_count - 1, 0) ELSE attempt_count END
			WHERE id = ?1 AND lock_token = ?2`},

		// Liveness. ?1 owner, ?2 now, ?3 alive until.
		{&w.heartbeat, `INSERT INTO owners(owner_id, heartbeat_at, alive_until) VALUES (?1, ?2, ?3)
			ON CONFLICT(owner_id) DO UPDATE SET heartbeat_at = ?2, alive_until = ?3`},
		// Whether an owner died in (?1, ?2]: its work just became fetchable.
		{&w.deaths, `SELECT EXISTS (SELECT 1 FROM owners WHERE alive_until > ?1 AND alive_until <= ?2)`},
		{&w.dropOwner, `DELETE FROM owners WHERE owner_id = ?`},
		// ?1 JSON array of the owners to keep.
		{&w.reclaim, `DELETE FROM owners WHERE owner_id NOT IN (SELECT value FROM json_each(?1))`},
		// Owners dead for long: their leases stay lost (a missing owner is dead).
		{&w.gcOwners, `DELETE FROM owners WHERE alive_until < ?`},
	}
}

func (w *writeStmts) close() {
	for _, st := range w.all {
		_ = st.Close()
	}
	w.all = nil
}

// readStmts are prepared on the read pool (in memory: the write connection).
type readStmts struct {
	all []*sql.Stmt

	history, historyCurrent *sql.Stmt
	instance                *sql.Stmt
	customStatus            *sql.Stmt
	executions              *sql.Stmt
	children                *sql.Stmt
	nextOrch, nextWorker    *sql.Stmt
}

const instanceCols = `instance, orchestration_name, orchestration_version, current_execution_id, status,
	coalesce(output, ''), coalesce(parent_instance, ''), custom_status, custom_status_version, created_at, updated_at`

func (r *readStmts) prepare(ctx context.Context, p preparer) (err error) {
	r.all, err = prepareAll(ctx, p, r.defs())
	return err
}

func (r *readStmts) defs() []stmtDef {
	return []stmtDef{
		{&r.history, `SELECT data FROM history WHERE instance = CAST(? AS TEXT) AND execution_id = CAST(? AS INTEGER) ORDER BY event_id`},
		{&r.historyCurrent, `SELECT h.data FROM instances i JOIN history h
			ON h.instance = i.instance AND h.execution_id = i.current_execution_id
			WHERE i.instance = CAST(? AS TEXT) ORDER BY h.event_id`},
		{&r.instance, `SELECT ` + instanceCols + ` FROM instances WHERE instance = ?`},
		{&r.customStatus, `SELECT custom_status, custom_status_version FROM instances WHERE instance = ?`},
		{&r.executions, `SELECT e.execution_id, e.status, coalesce(e.output, ''), e.started_at, coalesce(e.completed_at, 0),
			(SELECT count(*) FROM history h WHERE h.instance = e.instance AND h.execution_id = e.execution_id)
			FROM executions e WHERE e.instance = CAST(? AS TEXT) ORDER BY e.execution_id`},
		{&r.children, `SELECT instance FROM instances WHERE parent_instance = CAST(? AS TEXT) ORDER BY created_at, instance`},
		{&r.nextOrch, `SELECT min(visible_at) FROM orchestrator_queue WHERE visible_at > ?`},
		{&r.nextWorker, `SELECT min(visible_at) FROM worker_queue WHERE visible_at > ?`},
	}
}

func (r *readStmts) close() {
	for _, st := range r.all {
		_ = st.Close()
	}
	r.all = nil
}
