package duroxide

import (
	"context"
	"errors"
	"slices"
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
//   - A durable timer created by a turn of this runtime is fired in process
//     at its time, the same way (its TimerFired message, delayed by a short
//     backstop, is deleted by the commit); the queue delivers it only if
//     this process died or could not fire it.
//
// Both shortcuts only change who delivers the work: the leases belong to
// the store handle as fetched ones do (a dead process's activities are taken
// over), turns of an instance still never run concurrently (the store checks
// the instance lock and the history the turn was computed from), and every
// activity runs at least once.

// inlineBatch collects messages of one instance for the next inline turn.
// interrupted is set when a turn of the instance started from the queue
// meanwhile: the inline turns then do not hold (see hold.go).
type inlineBatch struct {
	items       []inlineItem
	interrupted bool
}

// inlineItem is an activity completion (with the lease of its worker
// message) or a local timer's TimerFired (lease nil; chain is the held
// chain whose unwritten timer it is, see hold.go, or 0).
type inlineItem struct {
	lease *WorkItemLease
	msg   *WorkItem
	chain uint64
}

// localTimerBackstop is how long after its fire time the queue delivers a
// timer that this runtime fires itself (TurnCommit.TimerBackstop). It is
// how late a timer fires when its process died (or restarted) before, and
// how long the local firing has to commit before the queue's delivery races
// it (the loser of that race fails with ErrTurnConflict or finds the
// message gone; nothing is applied twice).
const localTimerBackstop = 200 * time.Millisecond

type timerKey struct {
	instance string
	exec, id int64
}

// armTimers schedules the local firing of the timers of a committed turn
// that set TimerBackstop.
func (rt *Runtime) armTimers(instance string, c *TurnCommit) {
	rt.timersMu.Lock()
	defer rt.timersMu.Unlock()
	if rt.timersStopped {
		return
	}
	for i := range c.OrchestratorItems {
		if w := c.OrchestratorItems[i]; w.Kind == WorkTimerFired && w.Instance == instance {
			rt.armTimerLocked(w, 0)
		}
	}
}

// armTimerLocked arms the local firing of timer w unless it is armed
// already; chain, when not 0, is the held chain whose unwritten timer it
// is (its firing means nothing to any other engine). timersMu is held,
// timers not stopped.
func (rt *Runtime) armTimerLocked(w WorkItem, chain uint64) {
	key := timerKey{w.Instance, w.ExecutionID, w.ID}
	if _, armed := rt.timers[key]; armed {
		return
	}
	rt.timersWG.Add(1)
	rt.timers[key] = localTimer{fireAtMs: w.FireAtMs, t: time.AfterFunc(time.Until(time.UnixMilli(w.FireAtMs)), func() {
		defer rt.timersWG.Done()
		rt.timersMu.Lock()
		delete(rt.timers, key)
		rt.timersMu.Unlock()
		rt.dispatchLocal(rt.submitInline(inlineItem{msg: &w, chain: chain}))
	})}
}

// disarmTimers cancels local timers whose firing the orchestration no
// longer wants (their queued messages went with the turn's commit).
func (rt *Runtime) disarmTimers(instance string, exec int64, ids []int64) {
	rt.timersMu.Lock()
	defer rt.timersMu.Unlock()
	for _, id := range ids {
		k := timerKey{instance, exec, id}
		if lt, ok := rt.timers[k]; ok {
			if lt.t.Stop() {
				rt.timersWG.Done()
			}
			delete(rt.timers, k)
		}
	}
}

// localTimer is a timer armed by armTimers.
type localTimer struct {
	t        *time.Timer
	fireAtMs int64
}

// stopTimers cancels the local timers not fired yet and gives the due
// ones back to the queue, and waits for those firing. A timer not due yet
// is left to the queue, which delivers it at its fire time plus the
// backstop: releasing it would make it visible now, firing it early.
func (rt *Runtime) stopTimers() {
	rt.timersMu.Lock()
	rt.timersStopped = true
	var keys []timerKey
	now := time.Now().UnixMilli()
	for k, lt := range rt.timers {
		if lt.t.Stop() {
			if lt.fireAtMs <= now {
				keys = append(keys, k)
			}
			rt.timersWG.Done()
		}
	}
	rt.timers = map[timerKey]localTimer{}
	rt.timersMu.Unlock()
	for _, k := range keys {
		if err := rt.local.ReleaseTimer(context.Background(), k.instance, k.exec, k.id); err != nil {
			rt.logger.Warn("release local timer failed; the queue delivers it after its backstop", "instance_id", k.instance, "error", err)
		}
	}
	rt.timersWG.Wait()
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

// localLease is a leased activity waiting for a worker of this runtime.
type localLease struct {
	lease *WorkItemLease
	at    time.Time // when the lease was taken
}

// dispatchLocal hands leased activities to this runtime's workers; each
// holds a slot taken by reserveLocal.
func (rt *Runtime) dispatchLocal(leases []WorkItemLease) {
	now := time.Now()
	for i := range leases {
		select {
		case rt.localWork <- &localLease{lease: &leases[i], at: now}:
		default:
			// Cannot happen (the channel holds every free slot); release
			// the lease rather than block a turn.
			rt.localFree.Add(1)
			_ = rt.store.AbandonWorkItem(rt.ctx, leases[i].LockToken, AbandonParams{Delay: 0, IgnoreAttempt: true})
		}
	}
}

// runLocal runs an activity handed over by dispatchLocal and frees its slot
// (see slot). A lease that waited for a third of its lock timeout is renewed
// first (the running activity renews it from then on); one lost meanwhile is
// dropped: another worker has the activity. It returns the leases the
// activity's completion took (see complete).
func (rt *Runtime) runLocal(l *localLease, w *workerState) []WorkItemLease {
	sl := &slot{rt: rt, w: w}
	defer sl.release()
	if time.Since(l.at) > rt.opts.ActivityLockTimeout/3 {
		begin := time.Now()
		err := rt.store.RenewWorkItemLock(rt.ctx, l.lease.LockToken, rt.opts.ActivityLockTimeout)
		rt.metrics.storeCall(opRenewWorkItemLock, begin, err)
		if errors.Is(err, ErrLockLost) {
			return nil
		}
		if err != nil {
			rt.logger.Warn("renew waiting activity lease failed; running it anyway", "instance_id", l.lease.Item.Instance, "activity", l.lease.Item.Name, "error", err)
		}
	}
	return rt.runActivity(l.lease, sl)
}

// releaseLocal gives back leased activities no worker took (at shutdown),
// without counting the delivery as an attempt.
func (rt *Runtime) releaseLocal() {
	for {
		select {
		case l := <-rt.localWork:
			rt.localFree.Add(1)
			if err := rt.store.AbandonWorkItem(context.Background(), l.lease.LockToken, AbandonParams{Delay: 0, IgnoreAttempt: true}); err != nil && !errors.Is(err, ErrLockLost) {
				rt.logger.Warn("release leased activity failed", "instance_id", l.lease.Item.Instance, "activity", l.lease.Item.Name, "error", err)
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
		begin := time.Now()
		leases, err = rt.local.AckOrchestrationItemLocal(rt.ctx, token, c, LocalLease{Workers: n, Timeout: rt.opts.ActivityLockTimeout})
		rt.metrics.storeCall(opAckOrchestrationItemLocal, begin, err)
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
// possible, else through the orchestrator queue. It returns the leases of
// the activities that turn scheduled for this runtime, for the calling
// worker to run (the first) and hand over (the rest): a worker that goes on
// with the next step of its own instance saves a hand-over to another.
func (rt *Runtime) complete(lease *WorkItemLease, comp *WorkItem) []WorkItemLease {
	if rt.local == nil {
		rt.ackWork(lease, comp)
		return nil
	}
	return rt.submitInline(inlineItem{lease: lease, msg: comp})
}

// submitInline commits it in an inline turn of its instance, together with
// whatever else arrives for the instance meanwhile, and returns the leases
// those turns took for this runtime (to run or dispatchLocal).
func (rt *Runtime) submitInline(it inlineItem) []WorkItemLease {
	if rt.stopping() {
		rt.viaQueue([]inlineItem{it})
		return nil
	}
	inst := it.msg.Instance
	rt.inlineMu.Lock()
	if b := rt.inline[inst]; b != nil {
		// An inline turn of the instance is being committed: its committer
		// takes this item into the next one.
		b.items = append(b.items, it)
		rt.inlineMu.Unlock()
		return nil
	}
	rt.inline[inst] = &inlineBatch{}
	rt.inlineMu.Unlock()
	items := []inlineItem{it}
	var leases []WorkItemLease
	for {
		leases = append(leases, rt.commitInline(inst, items)...)
		rt.inlineMu.Lock()
		b := rt.inline[inst]
		if len(b.items) == 0 {
			delete(rt.inline, inst)
			rt.inlineMu.Unlock()
			return leases
		}
		items = b.items
		b.items = nil
		rt.inlineMu.Unlock()
	}
}

// dropStray removes what belongs to a held chain other than h (one given
// up meanwhile): outcomes of attempts it ran in memory and firings of its
// unwritten timer. Neither means anything to another engine.
func dropStray(items []inlineItem, h *heldTurn) []inlineItem {
	return slices.DeleteFunc(items, func(it inlineItem) bool {
		if it.lease != nil && it.lease.memRun != 0 {
			return h == nil || h.wait != nil || h.id != it.lease.memRun
		}
		if it.chain != 0 {
			return h == nil || h.id != it.chain || h.wait == nil ||
				*h.wait != (timerKey{it.msg.Instance, it.msg.ExecutionID, it.msg.ID})
		}
		return false
	})
}

// viaQueue delivers inline items the usual way: completions through the
// orchestrator queue, timers by making their queued message visible.
func (rt *Runtime) viaQueue(items []inlineItem) {
	for _, it := range items {
		if it.lease != nil && it.lease.memRun != 0 {
			continue // an attempt run in memory: its schedule was never written
		}
		if it.lease != nil {
			rt.ackWork(it.lease, it.msg)
			continue
		}
		if err := rt.local.ReleaseTimer(rt.ctx, it.msg.Instance, it.msg.ExecutionID, it.msg.ID); err != nil {
			rt.logger.Warn("release local timer failed; the queue delivers it after its backstop", "instance_id", it.msg.Instance, "error", err)
		}
	}
}

// commitInline runs the turn of cached instance inst caused by items and
// commits it with the acks of their leases and the removal of their timer
// messages, or holds it (see hold.go); on any failure the items go through
// the queue. It returns the leases the turn took for this runtime (each
// holds a slot of reserveLocal).
func (rt *Runtime) commitInline(inst string, items []inlineItem) (leases []WorkItemLease) {
	h := rt.takeHeld(inst)
	items = dropStray(items, h)
	if h != nil && h.wait == nil {
		// An attempt runs in memory: what else arrives waits for its outcome.
		if slices.ContainsFunc(items, func(it inlineItem) bool { return it.lease != nil && it.lease.memRun != 0 }) {
			items, h.pending = append(h.pending, items...), nil
		} else {
			h.pending, items = append(h.pending, items...), nil
		}
	}
	if len(items) == 0 {
		if h != nil && !rt.hold(inst, h, nil) {
			rt.dropHeld(h)
		}
		return nil
	}
	var eng *engine
	if h != nil {
		eng = h.eng
	} else if eng = rt.cache.take(inst); eng == nil {
		rt.viaQueue(items)
		return nil
	}
	usable := !eng.terminal && eng.failure == nil && !rt.stopping()
	for _, it := range items {
		usable = usable && it.msg.ExecutionID == eng.executionID
	}
	if !usable {
		if h != nil {
			rt.dropHeld(h)
		} else if evicted := rt.cache.put(inst, eng); evicted != nil {
			evicted.close()
		}
		rt.viaQueue(items)
		return nil
	}
	reserved := 0
	defer func() {
		if r := recover(); r != nil {
			rt.logger.Error("inline orchestration turn panicked; delivering through the queue", "instance_id", inst, "panic", r)
			rt.localFree.Add(int64(reserved))
			if h != nil {
				rt.dropHeld(h)
			} else {
				eng.close()
			}
			rt.viaQueue(items)
			leases = nil
		}
	}()
	var (
		tokens   []string
		timers   []int64
		last     int64
		firedNow bool // the held chain's timer is among items
	)
	if h != nil {
		// Go on from the held chain: its history delta and effects are
		// still pending in eng, and commit with this turn's.
		last = h.last
		for _, it := range h.items {
			tokens = append(tokens, it.lease.LockToken)
		}
	} else {
		last = eng.nextID - 1
		eng.beginTurn()
		if rt.tracer != nil {
			eng.turnStart = time.Now()
		}
	}
	for _, it := range items {
		eng.applyMessage(it.msg)
		k := timerKey{inst, it.msg.ExecutionID, it.msg.ID}
		switch {
		case it.lease != nil:
			if it.lease.memRun == 0 { // an attempt run in memory has the chain's first failure's lease
				tokens = append(tokens, it.lease.LockToken)
			}
		case it.chain != 0: // the held chain's timer (dropStray checked)
			h.fired = append(h.fired, k) // never queued
			firedNow = true
		default:
			timers = append(timers, it.msg.ID)
		}
	}
	eng.flush()
	if t, ok := rt.holdTimer(eng, h, items); ok {
		hn := h
		if hn == nil {
			hn = &heldTurn{eng: eng, id: rt.chains.Add(1), since: time.Now(), last: last}
		}
		n := len(hn.items)
		for _, it := range items {
			if it.lease.memRun == 0 {
				hn.items = append(hn.items, it)
			}
		}
		if rt.hold(inst, hn, &t) {
			return nil
		}
		hn.items = hn.items[:n] // stopping: commit as usual
	}
	if firedNow && len(items) == 1 {
		if l, ok := rt.runInMemory(inst, h); ok {
			return l
		}
	}
	c := eng.commit()
	c.WorkerItems, c.OrchestratorItems = h.strip(c.WorkerItems, c.OrchestratorItems)
	c.TimerBackstop = localTimerBackstop
	if len(c.WorkerItems) > 0 {
		reserved = rt.reserveLocal(len(c.WorkerItems))
	}
	var (
		got []WorkItemLease
		err error
	)
	for i := 0; i < 5; i++ {
		begin := time.Now()
		got, err = rt.local.CommitActivityTurn(rt.ctx, ActivityTurnParams{Instance: inst, WorkTokens: tokens, Timers: timers, LastEventID: last, Commit: c, Lease: LocalLease{Workers: reserved, Timeout: rt.opts.ActivityLockTimeout}})
		rt.metrics.storeCall(opCommitActivityTurn, begin, err)
		if err == nil || !IsRetryable(err) {
			break
		}
		time.Sleep(time.Duration(10<<i) * time.Millisecond)
	}
	if err != nil {
		rt.localFree.Add(int64(reserved))
		reserved = 0
		if h != nil {
			rt.dropHeld(h)
		} else {
			eng.close()
		}
		if !errors.Is(err, ErrTurnConflict) && !errors.Is(err, ErrLockLost) {
			rt.logger.Warn("inline turn commit failed; delivering through the queue", "instance_id", inst, "error", err)
		}
		rt.viaQueue(items)
		return nil
	}
	if len(got) < reserved {
		rt.localFree.Add(int64(reserved - len(got)))
	}
	reserved = 0
	if h != nil && h.wait != nil && !slices.Contains(h.fired, *h.wait) {
		// The chain's timer is written now: fire it as any other
		// (afterCommit arms it), not as the chain's.
		rt.disarmTimers(inst, h.wait.exec, []int64{h.wait.id})
	}
	rt.afterCommit(&OrchestrationItem{Instance: inst}, eng, c)
	return got
}

// startLocal runs the first turn of a new instance in the caller's
// goroutine and commits it together with the instance's creation
// (LocalDispatcher.StartTurn), instead of queueing a start message for a
// dispatcher to fetch. handled is false when the start should go through
// the queue instead (no local dispatch, shutting down, orchestration not
// registered here, a conflicting start in progress, or a store error);
// nothing was written then.
func (rt *Runtime) startLocal(ctx context.Context, item WorkItem) (handled bool) {
	if rt.local == nil || rt.stopping() || item.ParentInstance != "" {
		return false
	}
	fn, version, ok := rt.reg.orchestration(item.Name, item.Version)
	if !ok {
		return false
	}
	eng := newEngine(rt, item.Instance, 1, fn)
	reserved := 0
	defer func() {
		if r := recover(); r != nil {
			rt.logger.Error("first orchestration turn panicked; starting through the queue", "instance_id", item.Instance, "panic", r)
			rt.localFree.Add(int64(reserved))
			eng.close()
			handled = false
		}
	}()
	eng.beginTurn()
	started := Event{Kind: EventOrchestrationStarted, Name: item.Name, Version: version, Input: item.Input, TraceContext: item.TraceContext}
	if rt.tracer != nil {
		eng.turnStart = time.Now()
		started.TraceContext = eng.startOrchSpan(parseTraceparent(item.TraceContext), item.Name, version, "client")
	}
	eng.record(started)
	name := item.Name
	eng.post = append(eng.post, func() { rt.metrics.start(name, version, "client") })
	eng.flush()
	c := eng.commit()
	c.TimerBackstop = localTimerBackstop
	if len(c.WorkerItems) > 0 {
		reserved = rt.reserveLocal(len(c.WorkerItems))
	}
	begin := time.Now()
	res, err := rt.local.StartTurn(ctx, item.Instance, c, LocalLease{Workers: reserved, Timeout: rt.opts.ActivityLockTimeout})
	rt.metrics.storeCall(opStartTurn, begin, err)
	leases := res.Leases
	if err != nil || !res.Created {
		rt.localFree.Add(int64(reserved))
		reserved = 0
		eng.close()
		if err != nil && !errors.Is(err, ErrTurnConflict) {
			rt.logger.Warn("local start failed; starting through the queue", "instance_id", item.Instance, "error", err)
		}
		return err == nil // exists: an idempotent no-op
	}
	if len(leases) < reserved {
		rt.localFree.Add(int64(reserved - len(leases)))
	}
	reserved = 0
	if old := rt.cache.take(item.Instance); old != nil {
		old.close()
	}
	rt.afterCommit(&OrchestrationItem{Instance: item.Instance}, eng, c)
	rt.dispatchLocal(leases)
	return true
}
