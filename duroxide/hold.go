package duroxide

import "time"

// Held failures: an activity attempt that failed, when the only thing its
// turn decided is to wait a short while (a retry's backoff, or the
// orchestration's own sleep before it tries again), is not committed on
// its own. The runtime keeps the turn in memory, fires the timer itself
// and commits both turns together: the failure, TimerCreated, TimerFired
// and whatever the second turn decides (the next attempt, usually) in one
// transaction instead of two. History is the same event for event; only
// the intermediate state is never stored.
//
// What a held turn risks is what DBOS's in-memory retries risk: if the
// process dies during the wait, the failure was never recorded, so the
// failed attempt runs again once its lease expires (activities run at
// least once anyway). A success is never held, so no completed step ever
// runs twice because of this.
//
// A held turn is committed (or given to the queue) as soon as anything
// else happens to the instance: another completion of it in this process
// is applied on top and committed with it, a turn that runs elsewhere makes
// the held commit fail its history check (the failures then go through the
// orchestrator queue as usual), and Shutdown gives held failures to the
// queue.

// holdMax bounds the wait a held turn may cover; the failed attempt's
// lease must also outlast it by a wide margin (see canHold).
const holdMax = time.Second

// heldTurn is a turn (or several) of an instance computed but not
// committed; the engine is out of the cache meanwhile.
type heldTurn struct {
	eng   *engine
	items []inlineItem // the failures it applied, committed with it
	last  int64        // the instance's last stored event id
	timer timerKey     // the timer it waits for (no queue message exists)
}

// canHold reports whether the turn that items caused in eng may be held:
// items are activity failures only, and the turn's only effect beyond
// history is one timer of the instance due within holdMax (and a third of
// the activity lock timeout, so the failures' leases stay valid).
func (rt *Runtime) canHold(eng *engine, items []inlineItem) bool {
	if eng.terminal || eng.failure != nil || eng.status != StatusRunning || eng.setCS ||
		len(eng.workItems) > 0 || len(eng.cancelled) > 0 || len(eng.cancelledTimers) > 0 || len(eng.orchItems) != 1 {
		return false
	}
	for _, it := range items {
		if it.lease == nil || it.msg.Kind != WorkActivityFailed {
			return false
		}
	}
	t := &eng.orchItems[0]
	wait := time.Until(time.UnixMilli(t.FireAtMs))
	return t.Kind == WorkTimerFired && t.Instance == eng.instance && wait <= min(holdMax, rt.opts.ActivityLockTimeout/3)
}

// hold keeps eng's turn in memory and arms its timer; false when the
// runtime is stopping (the turn is then committed as usual).
func (rt *Runtime) hold(inst string, eng *engine, items []inlineItem, last int64) bool {
	t := eng.orchItems[0]
	h := &heldTurn{eng: eng, items: items, last: last, timer: timerKey{inst, t.ExecutionID, t.ID}}
	rt.timersMu.Lock()
	defer rt.timersMu.Unlock()
	if rt.timersStopped {
		return false
	}
	rt.inlineMu.Lock()
	rt.held[inst] = h
	rt.inlineMu.Unlock()
	rt.armTimerLocked(t)
	return true
}

// takeHeld removes and returns the held turn of inst, if any.
func (rt *Runtime) takeHeld(inst string) *heldTurn {
	rt.inlineMu.Lock()
	defer rt.inlineMu.Unlock()
	h := rt.held[inst]
	delete(rt.held, inst)
	return h
}

// releaseHeld gives the failures of every held turn to the orchestrator
// queue (at shutdown, after the local timers stopped).
func (rt *Runtime) releaseHeld() {
	rt.inlineMu.Lock()
	hs := rt.held
	rt.held = map[string]*heldTurn{}
	rt.inlineMu.Unlock()
	for _, h := range hs {
		h.eng.close()
		rt.viaQueue(h.items)
	}
}

// withoutFired returns c's orchestrator items without the TimerFired of
// the held timer k, which fired in this process before its message was
// ever written.
func withoutFired(items []WorkItem, k timerKey) []WorkItem {
	out := items[:0:0]
	for _, w := range items {
		if w.Kind == WorkTimerFired && w.Instance == k.instance && w.ExecutionID == k.exec && w.ID == k.id {
			continue
		}
		out = append(out, w)
	}
	return out
}
