package duroxide

import (
	"context"
	"errors"
	"time"
)

// Local dispatch: with a store that implements LocalDispatcher, the runtime
// keeps the work of its own instances off the queues.
//
//   - A turn's commit leases the activities it schedules to this runtime
//     (as many as it has free activity slots) and hands them to its workers
//     in memory: no fetch, no wake-up.
//   - An activity whose instance is in this runtime's cache completes by
//     applying its result to the cached instance, running the next turn and
//     committing the ack of the activity, the history and the next
//     schedule in one transaction (CommitActivityTurn). Completions of one
//     instance that arrive while such a commit is in flight are batched into
//     the next one. The store refuses the commit when the instance is
//     locked or its history moved on (another process took it over, a turn
//     runs elsewhere); the completions then go through the orchestrator
//     queue as usual and the cached instance is dropped.
//
// Both shortcuts only change who delivers the work: the leases belong to
// the store handle as fetched ones do (a dead process's activities are taken
// over), turns of an instance still never run concurrently (the store checks
// the instance lock and the history the turn was computed from), and every
// activity runs at least once.

// inlineBatch collects completions of one instance for the next inline turn.
type inlineBatch struct {
	leases []*WorkItemLease
	comps  []*WorkItem
}

// reserveLocal takes up to n free activity slots for leased messages.
func (rt *Runtime) reserveLocal(n int) int {
	for {
		cur := rt.localFree.Load()
		k := min(int64(n), cur)
		if k <= 0 {
			return 0
		}
		if rt.localFree.CompareAndSwap(cur, cur-k) {
			return int(k)
		}
	}
}

// dispatchLocal hands leased activities to this runtime's workers; each
// holds a slot taken by reserveLocal.
func (rt *Runtime) dispatchLocal(leases []WorkItemLease) {
	for i := range leases {
		select {
		case rt.localWork <- &leases[i]:
		default:
			// Cannot happen (the channel holds every free slot); release
			// the lease rather than block a turn.
			rt.localFree.Add(1)
			_ = rt.store.AbandonWorkItem(rt.ctx, leases[i].LockToken, 0, true)
		}
	}
}

// runLocal runs an activity handed over by dispatchLocal and frees its slot.
func (rt *Runtime) runLocal(l *WorkItemLease) {
	defer rt.localFree.Add(1)
	rt.runActivity(l)
}

// releaseLocal gives back leased activities no worker took (at shutdown),
// without counting the delivery as an attempt.
func (rt *Runtime) releaseLocal() {
	for {
		select {
		case l := <-rt.localWork:
			rt.localFree.Add(1)
			if err := rt.store.AbandonWorkItem(context.Background(), l.LockToken, 0, true); err != nil && !errors.Is(err, ErrLockLost) {
				rt.logger.Warn("release leased activity failed", "instance_id", l.Item.Instance, "activity", l.Item.Name, "error", err)
			}
		default:
			return
		}
	}
}

// ackTurn commits a turn, leasing its activities to this runtime where it
// can; the returned leases are for dispatchLocal.
func (rt *Runtime) ackTurn(token string, c *TurnCommit) ([]WorkItemLease, error) {
	if rt.local == nil || len(c.WorkerItems) == 0 || rt.stopping() {
		return nil, rt.ackWithRetry(token, c)
	}
	n := rt.reserveLocal(len(c.WorkerItems))
	if n == 0 {
		return nil, rt.ackWithRetry(token, c)
	}
	var (
		leases []WorkItemLease
		err    error
	)
	for i := 0; i < 5; i++ {
		leases, err = rt.local.AckOrchestrationItemLocal(rt.ctx, token, c, n, rt.opts.ActivityLockTimeout)
		if err == nil || !IsRetryable(err) {
			break
		}
		time.Sleep(time.Duration(10<<i) * time.Millisecond)
	}
	if err != nil {
		leases = nil
	}
	if len(leases) < n {
		rt.localFree.Add(int64(n - len(leases)))
	}
	return leases, err
}

// complete reports an activity's outcome: inline with the next turn when
// possible, else through the orchestrator queue.
func (rt *Runtime) complete(lease *WorkItemLease, comp *WorkItem) {
	if rt.local == nil || rt.stopping() {
		rt.ackWork(lease, comp)
		return
	}
	inst := comp.Instance
	rt.inlineMu.Lock()
	if b := rt.inline[inst]; b != nil {
		// An inline turn of the instance is being committed: its committer
		// takes this completion into the next one.
		b.leases, b.comps = append(b.leases, lease), append(b.comps, comp)
		rt.inlineMu.Unlock()
		return
	}
	rt.inline[inst] = &inlineBatch{}
	rt.inlineMu.Unlock()
	leases, comps := []*WorkItemLease{lease}, []*WorkItem{comp}
	for {
		rt.commitInline(inst, leases, comps)
		rt.inlineMu.Lock()
		b := rt.inline[inst]
		if len(b.leases) == 0 {
			delete(rt.inline, inst)
			rt.inlineMu.Unlock()
			return
		}
		leases, comps = b.leases, b.comps
		b.leases, b.comps = nil, nil
		rt.inlineMu.Unlock()
	}
}

// commitInline runs the turn of cached instance inst caused by comps and
// commits it with the acks of their leases; on any failure the completions
// go through the queue.
func (rt *Runtime) commitInline(inst string, leases []*WorkItemLease, comps []*WorkItem) {
	viaQueue := func() {
		for i := range leases {
			rt.ackWork(leases[i], comps[i])
		}
	}
	eng := rt.cache.take(inst)
	if eng == nil {
		viaQueue()
		return
	}
	usable := !eng.terminal && eng.failure == nil && !rt.stopping()
	for _, c := range comps {
		usable = usable && c.ExecutionID == eng.executionID
	}
	if !usable {
		if evicted := rt.cache.put(inst, eng); evicted != nil {
			evicted.close()
		}
		viaQueue()
		return
	}
	reserved := 0
	defer func() {
		if r := recover(); r != nil {
			rt.logger.Error("inline orchestration turn panicked; completing through the queue", "instance_id", inst, "panic", r)
			rt.localFree.Add(int64(reserved))
			eng.close()
			viaQueue()
		}
	}()
	last := eng.nextID - 1
	eng.beginTurn()
	for _, c := range comps {
		eng.applyMessage(c)
	}
	eng.flush()
	c := eng.commit()
	tokens := make([]string, len(leases))
	for i, l := range leases {
		tokens[i] = l.LockToken
	}
	if len(c.WorkerItems) > 0 {
		reserved = rt.reserveLocal(len(c.WorkerItems))
	}
	var (
		got []WorkItemLease
		err error
	)
	for i := 0; i < 5; i++ {
		got, err = rt.local.CommitActivityTurn(rt.ctx, inst, tokens, last, c, reserved, rt.opts.ActivityLockTimeout)
		if err == nil || !IsRetryable(err) {
			break
		}
		time.Sleep(time.Duration(10<<i) * time.Millisecond)
	}
	if err != nil {
		rt.localFree.Add(int64(reserved))
		reserved = 0
		eng.close()
		if !errors.Is(err, ErrTurnConflict) && !errors.Is(err, ErrLockLost) {
			rt.logger.Warn("inline turn commit failed; completing through the queue", "instance_id", inst, "error", err)
		}
		viaQueue()
		return
	}
	if len(got) < reserved {
		rt.localFree.Add(int64(reserved - len(got)))
	}
	reserved = 0
	rt.afterCommit(&OrchestrationItem{Instance: inst}, eng, c)
	rt.dispatchLocal(got)
}
