package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/internal/wire"
)

// EnqueueOrchestratorItem implements duroxide.Store.
func (s *Store) EnqueueOrchestratorItem(ctx context.Context, item duroxide.WorkItem, delay time.Duration) error {
	const op = "enqueue orchestrator item"
	if item.Instance == "" {
		return wrap(op, errors.New("work item has no instance"))
	}
	data, err := json.Marshal(&item)
	if err != nil {
		return wrap(op, err)
	}
	err = s.write1(ctx, func(c context.Context, ns *notes) error {
		err := s.enqueueOrch(c, item.Instance, string(data), nowMs()+max(delay.Milliseconds(), 0))
		*ns |= noteOrch
		return err
	})
	return wrap(op, err)
}

// EnqueueStarts implements duroxide.Starter: one write that queues the
// starts of instances that do not exist.
func (s *Store) EnqueueStarts(ctx context.Context, items []duroxide.WorkItem) error {
	const op = "enqueue starts"
	data := make([]string, len(items))
	for i := range items {
		if items[i].Instance == "" {
			return wrap(op, errors.New("work item has no instance"))
		}
		b, err := json.Marshal(&items[i])
		if err != nil {
			return wrap(op, err)
		}
		data[i] = string(b)
	}
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		now := nowMs()
		for i := range items {
			var exists bool
			if err := s.ws.instanceExists.QueryRowContext(c, items[i].Instance).Scan(&exists); err != nil {
				return err
			}
			if exists {
				continue
			}
			if err := s.enqueueOrch(c, items[i].Instance, data[i], now); err != nil {
				return err
			}
			*ns |= noteOrch
		}
		return nil
	})
	return wrap(op, err)
}

// FetchOrchestrationItem implements duroxide.Store. The candidate is the
// oldest visible message whose instance is not locked, "oldest" meaning
// earliest visibility time, then queue (enqueue) order: a timer that fired
// an hour ago goes before a message enqueued a second ago, and pending
// future messages are never scanned. For an instance that was never acked
// (Exists false) ExecutionID is 1 and OrchestrationName/Version come from
// the StartOrchestration (or ContinueAsNew) message of the batch;
// ExecutionStatus is empty.
func (s *Store) FetchOrchestrationItem(ctx context.Context, lockTimeout time.Duration) (*duroxide.OrchestrationItem, error) {
	const op = "fetch orchestration item"
	random := newToken()
	var (
		item *duroxide.OrchestrationItem
		msgs []rawMsg
	)
	// One UPDATE … RETURNING picks and locks; the metadata read that
	// follows needs no transaction around it (the lock is held).
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		item, msgs = nil, msgs[:0]
		now := nowMs()
		rows, err := s.ws.fetchTag.QueryContext(c, random, now+lockTimeout.Milliseconds(), now, s.owner)
		if err != nil {
			return err
		}
		var instance string
		attempts := 0
		for rows.Next() {
			var m rawMsg
			var a int
			if err := rows.Scan(&instance, &m.id, &m.data, &a); err != nil {
				rows.Close()
				return err
			}
			attempts = max(attempts, a)
			msgs = append(msgs, m)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(msgs) == 0 {
			return nil
		}
		it := &duroxide.OrchestrationItem{Instance: instance, LockToken: orchToken(random, instance), AttemptCount: attempts}
		var status string
		err = s.ws.fetchMeta.QueryRowContext(c, instance).Scan(&it.OrchestrationName, &it.OrchestrationVersion,
			&it.ExecutionID, &status, &it.CreatedAtMs, &it.LastEventID)
		switch {
		case err == nil:
			it.Exists = true
			it.ExecutionStatus = duroxide.Status(status)
		case errors.Is(err, sql.ErrNoRows):
		default:
			return err
		}
		item = it
		return nil
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	if item == nil {
		return nil, nil
	}
	// Decode after the commit, outside the write lock. A message that does
	// not decode fails this fetch only; the instance stays locked until the
	// lock expires (counting the attempt), other instances are unaffected.
	slices.SortFunc(msgs, func(a, b rawMsg) int { return cmp.Compare(a.id, b.id) })
	item.Messages = make([]duroxide.WorkItem, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.data, &item.Messages[i]); err != nil {
			return nil, wrap(op, fmt.Errorf("decode orchestrator message %d of %q: %w", m.id, item.Instance, err))
		}
	}
	if !item.Exists {
		// Never acked: describe the instance from its start message.
		item.ExecutionID = 1
		for i := range item.Messages {
			m := &item.Messages[i]
			if m.Kind == duroxide.WorkStartOrchestration || m.Kind == duroxide.WorkContinueAsNew {
				item.OrchestrationName, item.OrchestrationVersion = m.Name, m.Version
				break
			}
		}
	}
	return item, nil
}

// enqueueOrch inserts an orchestrator message with the next queue id. Ids
// come from a per-file counter of this process; another process sharing
// the file could, in theory, pick the same id for the same instance, which
// is retried with a fresh id.
func (s *Store) enqueueOrch(c context.Context, instance, data string, visibleAt int64) error {
	var err error
	for range 3 {
		_, err = s.ws.enqOrch.ExecContext(c, instance, s.hub.nextID(), data, visibleAt)
		if err == nil || !isPrimaryKeyViolation(err) {
			return err
		}
	}
	return err
}

type rawMsg struct {
	id   int64
	data []byte
}

// AckOrchestrationItem implements duroxide.Store.
//
// Details: the instance row is created by the first ack that carries an
// OrchestrationName; later acks of the current (or a newer) execution
// update name and version when given, and current_execution_id becomes
// max(current, ExecutionID). The instance's status and output mirror its
// current execution: a commit with Status set updates both the execution
// and, if it is the current one, the instance; a newer execution id starts
// as Running. ExecutionID 0 means the current execution. An ack without
// OrchestrationName for an instance that does not exist only consumes its
// messages (and enqueues its items); it fails if it carries history, a
// status or a custom status. Worker items and cancelled activities with an
// empty Instance (or ExecutionID 0) default to the acked instance (and
// execution). QueueStatus is notified when the current execution becomes
// terminal.
func (s *Store) AckOrchestrationItem(ctx context.Context, lockToken string, commit *duroxide.TurnCommit) error {
	_, err := s.AckOrchestrationItemLocal(ctx, lockToken, commit, duroxide.LocalLease{Workers: 0, Timeout: 0})
	return err
}

// AckOrchestrationItemLocal implements duroxide.LocalDispatcher.
func (s *Store) AckOrchestrationItemLocal(ctx context.Context, lockToken string, commit *duroxide.TurnCommit, lease duroxide.LocalLease) ([]duroxide.WorkItemLease, error) {
	lockWorkers, lockTimeout := lease.Workers, lease.Timeout
	const op = "ack orchestration item"
	random, instance, ok := parseOrchToken(lockToken)
	if !ok {
		return nil, wrap(op, errLockLost)
	}
	if commit == nil {
		commit = &duroxide.TurnCommit{}
	}
	enc, err := encodeTurn(commit)
	if err != nil {
		return nil, wrap(op, err)
	}
	var leases []duroxide.WorkItemLease
	err = s.write(ctx, func(c context.Context, ns *notes) error {
		now := nowMs()
		// Delete the tagged messages first: it validates the lock, and
		// messages this ack enqueues for the same instance are untagged.
		err := lockedExec(s.ws.ackDeleteTagged.ExecContext(c, instance, random, now))
		if err != nil {
			return err
		}
		leases, err = s.writeTurn(c, ns, now, instance, commit, enc, lockWorkers, lockTimeout, known{})
		return err
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return leases, nil
}

// CommitActivityTurn implements duroxide.LocalDispatcher. The single
// writer serializes it with fetches, so the checks and the writes see one
// state.
func (s *Store) CommitActivityTurn(ctx context.Context, p duroxide.ActivityTurnParams) ([]duroxide.WorkItemLease, error) {
	instance, workTokens, timers, lastEventID, commit, lockWorkers, lockTimeout := p.Instance, p.WorkTokens, p.Timers, p.LastEventID, p.Commit, p.Lease.Workers, p.Lease.Timeout
	const op = "commit activity turn"
	if commit == nil || commit.ExecutionID <= 0 || commit.OrchestrationName == "" {
		return nil, wrap(op, errors.New("a turn commit with an execution id and orchestration name is required"))
	}
	type tok struct {
		id     int64
		random string
	}
	toks := make([]tok, len(workTokens))
	for i, t := range workTokens {
		id, random, ok := parseWorkerToken(t)
		if !ok {
			return nil, wrap(op, errLockLost)
		}
		toks[i] = tok{id, random}
	}
	enc, err := encodeTurn(commit)
	if err != nil {
		return nil, wrap(op, err)
	}
	// The completed activity's row is reused for the first activity the
	// turn leases, when that is one of the instance's (the usual step of a
	// sequence).
	reuse := len(toks) == 1 && lockWorkers > 0 && len(commit.WorkerItems) > 0 &&
		(commit.WorkerItems[0].Instance == "" || commit.WorkerItems[0].Instance == instance) &&
		(commit.WorkerItems[0].ExecutionID == 0 || commit.WorkerItems[0].ExecutionID == commit.ExecutionID)
	var leases []duroxide.WorkItemLease
	err = s.write(ctx, func(c context.Context, ns *notes) error {
		now := nowMs()
		k := known{running: true}
		if reuse {
			t, w := toks[0], &commit.WorkerItems[0]
			random := newToken()
			if err := lockedExec(s.ws.reuseWorker.ExecContext(c, t.id, t.random, now, instance, commit.ExecutionID, w.ID, enc.workers[0].data,
				random, now+lockTimeout.Milliseconds(), s.owner)); err != nil {
				return err
			}
			k.leased = &duroxide.WorkItemLease{Item: *w, LockToken: workerToken(t.id, random), AttemptCount: 1}
		} else {
			for _, t := range toks {
				if err := s.ackWork(c, t.id, t.random); err != nil {
					return err
				}
			}
		}
		var visible bool
		err := s.ws.turnUpdate.QueryRowContext(c, append(instArgs(instance, commit, commit.ExecutionID, now), lastEventID)...).Scan(&visible)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: instance %q", duroxide.ErrTurnConflict, instance)
		}
		if err != nil {
			return err
		}
		for _, id := range timers {
			if err := lockedExec(s.ws.deleteTimer.ExecContext(c, instance, commit.ExecutionID, id)); err != nil {
				return fmt.Errorf("%w: fired timer %d of instance %q is not queued", duroxide.ErrTurnConflict, id, instance)
			}
		}
		if len(timers) == 0 && commit.KeepExecutions == 0 {
			// No message of the instance is deleted below (no fired timer,
			// no prune): what was visible at the check stays visible.
			k.visible = &visible
		}
		leases, err = s.writeTurn(c, ns, now, instance, commit, enc, lockWorkers, lockTimeout, k)
		return err
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return leases, nil
}

// StartTurn implements duroxide.LocalDispatcher.
func (s *Store) StartTurn(ctx context.Context, instance string, commit *duroxide.TurnCommit, lease duroxide.LocalLease) (duroxide.StartTurnResult, error) {
	leases, created, err := s.startTurn(ctx, instance, commit, lease.Workers, lease.Timeout)
	return duroxide.StartTurnResult{Leases: leases, Created: created}, err
}

func (s *Store) startTurn(ctx context.Context, instance string, commit *duroxide.TurnCommit, lockWorkers int, lockTimeout time.Duration) ([]duroxide.WorkItemLease, bool, error) {
	const op = "start turn"
	if commit == nil || commit.ExecutionID != 1 || commit.OrchestrationName == "" {
		return nil, false, wrap(op, errors.New("the first turn of execution 1, with its orchestration name, is required"))
	}
	enc, err := encodeTurn(commit)
	if err != nil {
		return nil, false, wrap(op, err)
	}
	var (
		leases  []duroxide.WorkItemLease
		created bool
	)
	err = s.write(ctx, func(c context.Context, ns *notes) error {
		leases, created = nil, false
		now := nowMs()
		var exists bool
		if err := s.ws.instanceExists.QueryRowContext(c, instance).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		var locked bool
		if err := s.ws.instanceLocked.QueryRowContext(c, instance, now).Scan(&locked); err != nil {
			return err
		}
		if locked {
			return fmt.Errorf("%w: a start of instance %q is being processed", duroxide.ErrTurnConflict, instance)
		}
		leases, err = s.writeTurn(c, ns, now, instance, commit, enc, lockWorkers, lockTimeout, known{})
		created = err == nil
		return err
	})
	if err != nil {
		return nil, false, wrap(op, err)
	}
	return leases, created, nil
}

// ReleaseTimer implements duroxide.LocalDispatcher.
func (s *Store) ReleaseTimer(ctx context.Context, instance string, executionID, timerID int64) error {
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		if _, err := s.ws.releaseTimer.ExecContext(c, instance, executionID, timerID, nowMs()); err != nil {
			return err
		}
		*ns |= noteOrch
		return nil
	})
	return wrap("release timer", err)
}

type encoded struct {
	data string
	aux  int64
}

type encodedTurn struct{ hist, workers, orchs []encoded }

// encodeTurn encodes a commit's rows outside the write lock.
func encodeTurn(commit *duroxide.TurnCommit) (*encodedTurn, error) {
	for i := range commit.OrchestratorItems {
		if w := &commit.OrchestratorItems[i]; w.Instance == "" {
			return nil, fmt.Errorf("orchestrator item %d (%s) has no instance", i, w.Kind)
		}
	}
	histData, err := wire.Events(commit.HistoryDelta)
	if err != nil {
		return nil, err
	}
	workerData, err := wire.WorkItems(commit.WorkerItems)
	if err != nil {
		return nil, err
	}
	orchData, err := wire.WorkItems(commit.OrchestratorItems)
	if err != nil {
		return nil, err
	}
	hist := make([]encoded, len(histData))
	for i, d := range histData {
		hist[i] = encoded{data: d}
	}
	workers := make([]encoded, len(workerData))
	for i, d := range workerData {
		workers[i] = encoded{data: d}
	}
	backstop := commit.TimerBackstop.Milliseconds()
	orchs := make([]encoded, len(orchData))
	for i, d := range orchData {
		orchs[i] = encoded{data: d}
		if w := &commit.OrchestratorItems[i]; w.Kind == duroxide.WorkTimerFired && w.FireAtMs > 0 {
			orchs[i].aux = w.FireAtMs + backstop
		}
	}
	return &encodedTurn{hist, workers, orchs}, nil
}

// known is what the caller of writeTurn read of the instance earlier in
// the same transaction.
type known struct {
	// running: the turn's execution is the instance's current one and is
	// running (its executions row exists), and the instance row is updated
	// already (turnUpdate).
	running bool
	// visible, when not nil, says whether the instance has visible
	// orchestrator messages that the turn's writes leave in place.
	visible *bool
	// leased, when not nil, is the lease of the turn's first worker
	// message, written already (reuseWorker).
	leased *duroxide.WorkItemLease
}

// instArgs are the parameters of the instance statements of a turn (see
// ackInstSet), with room for turnUpdate's twelfth.
func instArgs(instance string, commit *duroxide.TurnCommit, exec, now int64) []any {
	args := make([]any, 11, 12)
	args[0], args[1], args[2], args[3] = instance, commit.OrchestrationName, commit.OrchestrationVersion, exec
	args[4], args[5], args[6], args[7] = boolInt(commit.Status != ""), string(commit.Status), nullString(commit.Output), nullString(commit.ParentInstance)
	args[8], args[9], args[10] = now, boolInt(commit.SetCustomStatus), commit.CustomStatus
	return args
}

// writeTurn writes a validated turn of instance (see AckOrchestrationItem)
// and returns leases of its first lockWorkers worker messages, taken for
// this handle; k spares it reads and writes whose outcome the caller knows.
func (s *Store) writeTurn(c context.Context, ns *notes, now int64, instance string, commit *duroxide.TurnCommit, enc *encodedTurn, lockWorkers int, lockTimeout time.Duration, k known) ([]duroxide.WorkItemLease, error) {
	hist, workers, orchs := enc.hist, enc.workers, enc.orchs
	statusSet := commit.Status != ""
	terminal := commit.Status.IsTerminal()
	var leases []duroxide.WorkItemLease
	var err error
	exec := commit.ExecutionID
	if exec <= 0 {
		// No execution id given: the turn belongs to the current one.
		err := s.wconn.QueryRowContext(c, `SELECT current_execution_id FROM instances WHERE instance = ?`, instance).Scan(&exec)
		if errors.Is(err, sql.ErrNoRows) {
			exec = 1
		} else if err != nil {
			return nil, err
		}
	}
	var current int64
	args := instArgs(instance, commit, exec, now)
	prune := commit.KeepExecutions > 0 && commit.ExecutionID > 0
	switch {
	case k.running:
		current = exec
	case commit.OrchestrationName != "" && !prune && !terminal:
		// current is read only by a prune and by the end of a terminal
		// turn: an Exec costs less than a query in database/sql.
		_, err = s.ws.ackInstUpsertExec.ExecContext(c, args...)
	case commit.OrchestrationName != "":
		err = s.ws.ackInstUpsert.QueryRowContext(c, args...).Scan(&current)
	default:
		err = s.ws.ackInstUpdate.QueryRowContext(c, args...).Scan(&current)
	}
	exists := true
	if errors.Is(err, sql.ErrNoRows) {
		// Unknown instance and no metadata: nothing to record about it.
		exists = false
		if len(hist) > 0 || statusSet || commit.SetCustomStatus {
			return nil, errors.New("commit for an instance that does not exist carries no OrchestrationName")
		}
	} else if err != nil {
		return nil, err
	}

	if exists {
		switch {
		case k.running && commit.Status == duroxide.StatusRunning && commit.Output == "":
			// The execution's row exists and says Running already.
		case statusSet:
			var completed any
			if terminal {
				completed = now
			}
			_, err = s.ws.ackExecUpsert.ExecContext(c, instance, exec, string(commit.Status), nullString(commit.Output), now, completed)
		case !k.running:
			_, err = s.ws.ackExecInsert.ExecContext(c, instance, exec, now)
		}
		if err != nil {
			return nil, err
		}
		if err := s.insertHistory(c, instance, exec, commit.HistoryDelta, hist); err != nil {
			return nil, err
		}
		if prune {
			if _, err := s.prune(c, instance, max(current, exec), duroxide.PruneOptions{KeepLast: commit.KeepExecutions}); err != nil {
				return nil, fmt.Errorf("prune executions: %w", err)
			}
		}
	}

	first := 0
	if k.leased != nil {
		leases = append(leases, *k.leased)
		first = 1
	}
	for i := first; i < len(workers); i++ {
		w := &commit.WorkerItems[i]
		wi, we := w.Instance, w.ExecutionID
		if wi == "" {
			wi = instance
		}
		if we == 0 {
			we = exec
		}
		if i < lockWorkers {
			random := newToken()
			res, err := s.ws.enqWorkerLocked.ExecContext(c, wi, we, w.ID, workers[i].data, now, random, now+lockTimeout.Milliseconds(), s.owner)
			if err != nil {
				return nil, err
			}
			id, err := res.LastInsertId() // the id column is the rowid
			if err != nil {
				return nil, err
			}
			leases = append(leases, duroxide.WorkItemLease{Item: *w, LockToken: workerToken(id, random), AttemptCount: 1})
			continue
		}
		if _, err := s.ws.enqWorker.ExecContext(c, wi, we, w.ID, workers[i].data, now); err != nil {
			return nil, err
		}
	}
	for _, id := range commit.CancelledTimers {
		if _, err := s.ws.deleteTimer.ExecContext(c, instance, exec, id); err != nil {
			return nil, err
		}
	}
	for _, ref := range commit.CancelledActivities {
		ri := ref.Instance
		if ri == "" {
			ri = instance
		}
		if _, err := s.ws.ackCancel.ExecContext(c, ri, ref.ExecutionID, ref.ActivityID); err != nil {
			return nil, err
		}
	}
	for i := range orchs {
		vis := orchs[i].aux
		if vis == 0 {
			vis = now
		}
		if err := s.enqueueOrch(c, commit.OrchestratorItems[i].Instance, orchs[i].data, vis); err != nil {
			return nil, err
		}
	}

	if len(workers) > len(leases) {
		*ns |= noteWorker
	}
	if len(orchs) > 0 {
		*ns |= noteOrch
	} else {
		// Messages that arrived while the instance was locked are
		// fetchable now; their enqueue notification found it locked.
		var more bool
		if k.visible != nil {
			more = *k.visible
		} else if err := s.ws.ackHasVisible.QueryRowContext(c, instance, now).Scan(&more); err != nil {
			return nil, err
		}
		if more {
			*ns |= noteOrch
		}
	}
	if terminal && exists && exec >= current {
		*ns |= noteStatus
	}
	return leases, nil
}

// AbandonOrchestrationItem implements duroxide.Store. With delay zero the
// messages keep their place in the queue. A lock that expired but was not
// taken over can still be abandoned.
func (s *Store) AbandonOrchestrationItem(ctx context.Context, lockToken string, p duroxide.AbandonParams) error {
	delay, ignoreAttempt := p.Delay, p.IgnoreAttempt
	const op = "abandon orchestration item"
	random, instance, ok := parseOrchToken(lockToken)
	if !ok {
		return wrap(op, errLockLost)
	}
	var vis int64
	if delay > 0 {
		vis = nowMs() + delay.Milliseconds()
	}
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		if err := lockedExec(s.ws.abandonOrch.ExecContext(c, instance, random, vis, boolInt(ignoreAttempt))); err != nil {
			return err
		}
		*ns |= noteOrch
		return nil
	})
	return wrap(op, err)
}

// RenewOrchestrationItemLock implements duroxide.Store.
func (s *Store) RenewOrchestrationItemLock(ctx context.Context, lockToken string, extend time.Duration) error {
	const op = "renew orchestration item lock"
	random, instance, ok := parseOrchToken(lockToken)
	if !ok {
		return wrap(op, errLockLost)
	}
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		now := nowMs()
		if err := lockedExec(s.ws.renewOrch.ExecContext(c, now+extend.Milliseconds(), instance, random, now)); err != nil {
			return err
		}
		return nil
	})
	return wrap(op, err)
}

// NextVisibleAt implements duroxide.Store. It considers delayed messages
// (timers, delayed enqueues, abandons with delay), not lock expiry.
func (s *Store) NextVisibleAt(ctx context.Context, q duroxide.Queue) (time.Time, bool, error) {
	const op = "next visible at"
	if q != duroxide.QueueOrchestrator && q != duroxide.QueueWorker {
		return time.Time{}, false, nil
	}
	var at sql.NullInt64
	err := s.readHot(ctx, func(_ querier, rs *readStmts) error {
		st := rs.nextOrch
		if q == duroxide.QueueWorker {
			st = rs.nextWorker
		}
		return st.QueryRowContext(ctx, nowMs()).Scan(&at)
	})
	if err != nil {
		return time.Time{}, false, wrap(op, err)
	}
	if !at.Valid {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(at.Int64), true, nil
}

// insertHistory inserts a turn's events, two to a statement (a turn
// usually records two: a completion and the next schedule). A statement
// that fails changes nothing (SQLite undoes it alone), so on a duplicate
// the pair is inserted again one by one to name the event that collides.
func (s *Store) insertHistory(c context.Context, instance string, exec int64, evs []duroxide.Event, data []encoded) error {
	one := func(i int) error {
		ev := &evs[i]
		if _, err := s.ws.ackHistory.ExecContext(c, instance, exec, ev.EventID, string(ev.Kind), data[i].data); err != nil {
			if isPrimaryKeyViolation(err) {
				return fmt.Errorf("%w: instance %q execution %d event %d", duroxide.ErrDuplicateEvent, instance, exec, ev.EventID)
			}
			return err
		}
		return nil
	}
	i := 0
	for ; i+1 < len(evs); i += 2 {
		a, b := &evs[i], &evs[i+1]
		_, err := s.ws.ackHistory2.ExecContext(c, instance, exec, a.EventID, string(a.Kind), data[i].data,
			instance, exec, b.EventID, string(b.Kind), data[i+1].data)
		if err == nil {
			continue
		}
		if !isPrimaryKeyViolation(err) {
			return err
		}
		if err := one(i); err != nil {
			return err
		}
		if err := one(i + 1); err != nil {
			return err
		}
	}
	if i < len(evs) {
		return one(i)
	}
	return nil
}
