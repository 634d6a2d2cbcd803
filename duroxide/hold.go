package duroxide

import (
	"slices"
	"time"
)

// Held failures: an activity attempt that failed, when the only thing its
// turn decided is to wait a short while (a retry's backoff, or the
// orchestration's own sleep before it tries again), is not committed on
// its own. The runtime keeps the turn in memory and fires the timer
// itself; if the next turn then only schedules one more attempt, that
// attempt runs in memory too (on a worker of this runtime, under the
// failed attempt's lease), and so on until an attempt succeeds or the
// orchestration does anything else. Then everything is committed in one
// transaction: the failures, every TimerCreated and TimerFired, every
// ActivityScheduled and the outcome. History is the same event for event;
// only the intermediate states are never stored. A retry sequence of three
// attempts thus costs one commit after its first schedule instead of five.
//
// What a held chain risks is what DBOS's in-memory retries risk: if the
// process dies before the commit, the failures were never recorded, so
// the first failed attempt runs again once its lease expires (activities
// run at least once anyway), and the sequence starts over. A success is
// never held, so no completed step ever runs twice because of this.
//
// Anything else that happens to the instance ends the chain. A completion
// of another activity of it in this process is applied on top and
// committed with the chain (after the running attempt, if one runs). A
// message from the queue (an event, a cancellation) that this runtime
// fetches gives the chain's failures to the queue before its turn runs;
// one that another process fetches makes the chain's commit fail its
// history check, and the failures then go through the queue the same way.
// Either way an attempt that ran in memory meanwhile is forgotten and runs
// again when the orchestration schedules it. Shutdown gives the failures
// to the queue too.

// holdMax bounds the time a chain may stay uncommitted, from its first
// failure to the end of the last wait or the start of the last attempt it
// covers: what history does not show yet, and what a crash would make run
// again. A wait must also end within a third of the activity lock timeout
// (the failures' leases stay valid).
const holdMax = time.Second

// heldTurn is the chain of turns of an instance computed but not
// committed; its engine is out of the cache meanwhile.
type heldTurn struct {
	eng     *engine
	id      uint64       // tags its timer's firing and its attempts' leases (WorkItemLease.memRun)
	since   time.Time    // the chain's first failure
	last    int64        // the instance's last stored event id
	items   []inlineItem // the failures with a lease of their own, committed with the chain
	pending []inlineItem // messages that arrived while an attempt ran in memory
	wait    *timerKey    // the timer it waits for (no queue message exists); nil: an attempt runs in memory
	fired   []timerKey   // held timers that fired: their messages are never written
	ran     []int64      // attempts run in memory: their work items are never written
}

// effects counts the work and timer items eng's uncommitted turns
// produced, without those a held chain h already handled in memory (h may
// be nil), and returns the last of each (nil when there is none). It
// allocates nothing: a chain asks at each of its turns.
func effects(eng *engine, h *heldTurn) (nWork int, work *WorkItem, nOrch int, orch *WorkItem) {
	for i := range eng.workItems {
		if w := &eng.workItems[i]; !h.ranItem(w) {
			nWork, work = nWork+1, w
		}
	}
	for i := range eng.orchItems {
		if w := &eng.orchItems[i]; !h.firedItem(w) {
			nOrch, orch = nOrch+1, w
		}
	}
	return nWork, work, nOrch, orch
}

// strip returns work and orch without the items held chain h handled in
// memory (its attempts run and its timers fired); h may be nil. The slices
// are copied only when something is removed.
func (h *heldTurn) strip(work, orch []WorkItem) ([]WorkItem, []WorkItem) {
	return without(work, h.ranItem), without(orch, h.firedItem)
}

// ranItem reports whether w is an attempt chain h ran in memory (its work
// item is never written); false when h is nil.
func (h *heldTurn) ranItem(w *WorkItem) bool {
	return h != nil && slices.Contains(h.ran, w.ID)
}

// firedItem reports whether w is the TimerFired message of a timer of chain
// h that fired in this process before its message was ever written; false
// when h is nil.
func (h *heldTurn) firedItem(w *WorkItem) bool {
	return h != nil && w.Kind == WorkTimerFired && slices.Contains(h.fired, timerKey{w.Instance, w.ExecutionID, w.ID})
}

// settled reports whether eng's uncommitted turns leave the instance
// running with no effect a hold could not carry (custom status, cancelled
// activities); cancelled timers are fine (their messages go with the commit).
func settled(eng *engine) bool {
	return !eng.terminal && eng.failure == nil && eng.status == StatusRunning && !eng.setCS && len(eng.cancelled) == 0
}

// holdTimer returns the timer the turn that items caused may be held for:
// items are activity failures only, and the turn's only new effect is one
// timer of the instance, due within the chain's holdMax.
func (rt *Runtime) holdTimer(eng *engine, h *heldTurn, items []inlineItem) (WorkItem, bool) {
	if !settled(eng) {
		return WorkItem{}, false
	}
	for _, it := range items {
		if it.lease == nil || it.msg.Kind != WorkActivityFailed {
			return WorkItem{}, false
		}
	}
	nWork, _, nOrch, orch := effects(eng, h)
	if nWork > 0 || nOrch != 1 {
		return WorkItem{}, false
	}
	t := *orch
	end := time.UnixMilli(t.FireAtMs)
	since := time.Now()
	if h != nil {
		since = h.since
	}
	ok := t.Kind == WorkTimerFired && t.Instance == eng.instance &&
		end.Sub(since) <= holdMax && time.Until(end) <= rt.opts.ActivityLockTimeout/3
	return t, ok
}

// hold registers h, waiting for timer t (or, when t is nil, for its
// attempt running in memory); false when the runtime is stopping or a turn
// of the instance from the queue started (the chain must then be committed
// or given to the queue).
func (rt *Runtime) hold(inst string, h *heldTurn, t *WorkItem) bool {
	rt.timersMu.Lock()
	defer rt.timersMu.Unlock()
	if rt.timersStopped {
		return false
	}
	rt.inlineMu.Lock()
	if b := rt.inline[inst]; b != nil && b.interrupted {
		// A turn from the queue started meanwhile, on the stored history.
		rt.inlineMu.Unlock()
		return false
	}
	if t != nil {
		h.wait = &timerKey{inst, t.ExecutionID, t.ID}
	}
	rt.held[inst] = h
	rt.inlineMu.Unlock()
	if t != nil {
		rt.armTimerLocked(*t, h.id)
	}
	return true
}

// runInMemory starts the one attempt the chain's last turn scheduled on a
// worker of this runtime, under the lease of the chain's failure, without
// writing it; it returns the lease for the caller to run, or false when
// the attempt must be committed as usual.
func (rt *Runtime) runInMemory(inst string, h *heldTurn) ([]WorkItemLease, bool) {
	if !settled(h.eng) || len(h.items) != 1 || len(h.pending) > 0 || time.Since(h.since) > holdMax {
		return nil, false
	}
	nWork, work, nOrch, _ := effects(h.eng, h)
	if nWork != 1 || nOrch > 0 {
		return nil, false
	}
	if _, ok := rt.reg.activity(work.Name); !ok || rt.reserveLocal(1) == 0 {
		return nil, false
	}
	h.wait = nil
	h.ran = append(h.ran, work.ID)
	if !rt.hold(inst, h, nil) {
		rt.localFree.Add(1)
		h.ran = h.ran[:len(h.ran)-1]
		return nil, false
	}
	return []WorkItemLease{{Item: *work, LockToken: h.items[0].lease.LockToken, AttemptCount: 1, memRun: h.id}}, true
}

// interruptHeld is called when a turn of inst from the queue starts: it
// removes and returns the held chain of inst, if any, and keeps an inline
// turn of inst in progress from holding.
func (rt *Runtime) interruptHeld(inst string) *heldTurn {
	rt.inlineMu.Lock()
	defer rt.inlineMu.Unlock()
	if b := rt.inline[inst]; b != nil {
		b.interrupted = true
	}
	h := rt.held[inst]
	delete(rt.held, inst)
	return h
}

// takeHeld removes and returns the held chain of inst, if any.
func (rt *Runtime) takeHeld(inst string) *heldTurn {
	rt.inlineMu.Lock()
	defer rt.inlineMu.Unlock()
	h := rt.held[inst]
	delete(rt.held, inst)
	return h
}

// releaseHeld gives the failures of every held chain to the orchestrator
// queue (at shutdown, after the local timers stopped).
func (rt *Runtime) releaseHeld() {
	rt.inlineMu.Lock()
	hs := rt.held
	rt.held = map[string]*heldTurn{}
	rt.inlineMu.Unlock()
	for _, h := range hs {
		rt.dropHeld(h)
	}
}

// dropHeld gives up chain h without committing it: its failures, and what
// waited for the chain, go to the queue, and its timer, never written, is
// disarmed (fired into another engine, its id would mean nothing there).
func (rt *Runtime) dropHeld(h *heldTurn) {
	h.eng.close()
	if h.wait != nil && !slices.Contains(h.fired, *h.wait) {
		rt.disarmTimers(h.wait.instance, h.wait.exec, []int64{h.wait.id})
	}
	rt.viaQueue(h.items)
	rt.viaQueue(h.pending)
}

// without returns items without those drop reports, copying items only
// when there is one.
func without(items []WorkItem, drop func(*WorkItem) bool) []WorkItem {
	for i := range items {
		if drop(&items[i]) {
			return slices.DeleteFunc(slices.Clone(items), func(w WorkItem) bool { return drop(&w) })
		}
	}
	return items
}
