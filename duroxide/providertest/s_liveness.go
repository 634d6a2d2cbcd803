package providertest

import (
	"time"

	"github.com/toygres/toygres/duroxide"
)

// The liveness scenarios check lease ownership (see duroxide.LeaseReclaimer
// and the Store contract): the leases of a dead handle are taken over before
// their locks expire, without counting the lost delivery as an attempt, and
// the old owner cannot commit anything afterwards. They need Factory.Reopen
// (a second handle, as another process) and Factory.Freeze (a dead one).
func init() {
	register("liveness", map[string]func(h *H){
		"dead_owner_orchestration_lock_taken_over": lvOrchTakeover,
		"dead_owner_worker_lock_taken_over":        lvWorkerTakeover,
		"dead_owner_lost_deliveries_not_counted":   lvNotCounted,
		"live_owner_expired_lock_counts":           lvLiveExpiredCounts,
		"closed_handle_leases_free_at_once":        lvClosedHandle,
		"reclaim_takes_leases_at_once":             lvReclaim,
	})
}

// pair returns a second handle b and a function that kills a handle.
func (h *H) liveness() (b *H, freeze func(x *H)) {
	h.t.Helper()
	if h.f.Freeze == nil {
		h.t.Skip("Factory.Freeze is not set")
	}
	b = h.reopen()
	return b, func(x *H) { h.f.Freeze(h.t, x.s) }
}

// takeoverWithin bounds how long a frozen handle's leases stay locked.
func (h *H) takeoverWithin() time.Duration { return h.f.DeadAfter + 2*time.Second }

// fetchWithin polls fetch until it returns an item of instance, failing after d.
func (h *H) fetchWithin(instance string, d time.Duration) *duroxide.OrchestrationItem {
	h.t.Helper()
	var it *duroxide.OrchestrationItem
	h.eventually(d, "takeover of "+instance, func() bool {
		it = h.fetch(longLock)
		return it != nil
	})
	if it.Instance != instance {
		h.fatalf("FetchOrchestrationItem: got instance %q, want %q", it.Instance, instance)
	}
	return it
}

func (h *H) fetchWorkWithin(d time.Duration) *duroxide.WorkItemLease {
	h.t.Helper()
	var l *duroxide.WorkItemLease
	h.eventually(d, "takeover of the work item", func() bool {
		l = h.fetchWork(longLock)
		return l != nil
	})
	return l
}

// A dead owner's instance lock is taken over long before it expires; the
// old owner's ack, renew and abandon then fail, and the new owner commits.
func lvOrchTakeover(h *H) {
	b, freeze := h.liveness()
	o := h.orch("i")
	o.start()
	old := h.mustFetch("i") // long lock: only the owner's death frees it
	b.noFetch("instance locked by a live owner")
	t0 := time.Now()
	freeze(h)
	it := b.fetchWithin("i", h.takeoverWithin())
	h.t.Logf("taken over %v after the owner stopped", time.Since(t0).Round(time.Millisecond))
	if it.LockToken == old.LockToken {
		h.fatalf("takeover reused the dead owner's token")
	}
	h.equal(msgKinds(it.Messages), "StartOrchestration(Orch)", "batch taken over")
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, old.LockToken, o.turn().started().commit()), duroxide.ErrLockLost, "ack by the old owner after takeover")
	h.wantErr(h.s.RenewOrchestrationItemLock(h.ctx, old.LockToken, longLock), duroxide.ErrLockLost, "renew by the old owner after takeover")
	h.wantErr(h.s.AbandonOrchestrationItem(h.ctx, old.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), duroxide.ErrLockLost, "abandon by the old owner after takeover")
	b.noFetch("new owner's lock survives the old owner's calls")
	b.ack(it.LockToken, o.turn().started().commit())
	b.historyLen("i", 1, 1)
}

// A dead owner's worker lock is taken over long before it expires; the old
// owner's late completion is refused and enqueues nothing.
func lvWorkerTakeover(h *H) {
	b, freeze := h.liveness()
	h.enqueueWork(activityItem("i", 2, "A"))
	old := h.mustFetchWork()
	b.noWork("worker item locked by a live owner")
	freeze(h)
	l := b.fetchWorkWithin(h.takeoverWithin())
	if l.LockToken == old.LockToken {
		h.fatalf("takeover reused the dead owner's token")
	}
	h.equal(l.Item.Name, "A", "item taken over")
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, old.LockToken, longLock), duroxide.ErrLockLost, "renew by the old owner after takeover")
	h.wantErr(h.s.AckWorkItem(h.ctx, old.LockToken, completion(old.Item, "stale")), duroxide.ErrLockLost, "ack by the old owner after takeover")
	h.wantErr(h.s.AbandonWorkItem(h.ctx, old.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), duroxide.ErrLockLost, "abandon by the old owner after takeover")
	b.noFetch("the old owner's completion was not enqueued")
	b.noWork("new owner's lock survives the old owner's calls")
	b.ackWork(l.LockToken, completion(l.Item, "fresh"))
	it := b.mustFetch("i")
	if len(it.Messages) != 1 || it.Messages[0].Result != "fresh" {
		h.fatalf("completions: got %s, want exactly the fresh one", msgKinds(it.Messages))
	}
}

// Deliveries lost with their dead owners do not count: after two owners died
// holding them, a third gets the messages with attempt count 1. Messages
// that arrived meanwhile (not part of the lost delivery) count as usual.
func lvNotCounted(h *H) {
	b, freeze := h.liveness()
	c := h.reopen()
	o := h.orch("i")
	o.start()
	h.enqueueWork(activityItem("i", 2, "A"))
	h.mustFetch("i")
	h.mustFetchWork()
	o.poke() // arrives while locked: not part of the first delivery
	freeze(h)
	it := b.fetchWithin("i", h.takeoverWithin())
	h.equal(it.AttemptCount, 1, "orchestration attempt count after the first owner died")
	h.equal(msgKinds(it.Messages), "StartOrchestration(Orch) ExternalRaised(poke)", "batch taken over")
	l := b.fetchWorkWithin(h.takeoverWithin())
	h.equal(l.AttemptCount, 1, "worker attempt count after the first owner died")
	freeze(b)
	it = c.fetchWithin("i", h.takeoverWithin())
	h.equal(it.AttemptCount, 1, "orchestration attempt count after the second owner died")
	l = c.fetchWorkWithin(h.takeoverWithin())
	h.equal(l.AttemptCount, 1, "worker attempt count after the second owner died")
	// A live owner's abandon still counts.
	c.abandon(it.LockToken, 0, false)
	h.equal(c.mustFetch("i").AttemptCount, 2, "attempt count after an abandon by a live owner")
}

// A lock that expires while its owner is alive counts as an attempt, on
// both queues, also when another handle takes it over.
func lvLiveExpiredCounts(h *H) {
	b, _ := h.liveness()
	h.orch("i").start()
	h.enqueueWork(activityItem("i", 2, "A"))
	h.mustFetchLock("i", h.lock)
	h.mustFetchWorkLock(h.lock)
	sleepUntil(time.Now().Add(h.lock))
	it := b.fetchEventually("i", longLock)
	h.equal(it.AttemptCount, 2, "orchestration attempt count after expiry under a live owner")
	l := b.fetchWorkEventually(longLock)
	h.equal(l.AttemptCount, 2, "worker attempt count after expiry under a live owner")
}

// Closing a handle frees its leases at once, uncounted.
func lvClosedHandle(h *H) {
	b, _ := h.liveness()
	h.orch("i").start()
	h.enqueueWork(activityItem("i", 2, "A"))
	b.mustFetch("i")
	b.mustFetchWork()
	h.noFetch("locked by the other handle")
	h.check(b.s.Close(), "Close of the holding handle")
	it := h.fetchWithin("i", 2*time.Second)
	h.equal(it.AttemptCount, 1, "orchestration attempt count after the holder closed")
	l := h.fetchWorkWithin(2 * time.Second)
	h.equal(l.AttemptCount, 1, "worker attempt count after the holder closed")
}

// ReclaimLeases (stores that implement duroxide.LeaseReclaimer) makes every
// lease of other handles fetchable at once, uncounted, and the old owner's
// acks fail.
func lvReclaim(h *H) {
	b, _ := h.liveness()
	r, ok := h.s.(duroxide.LeaseReclaimer)
	if !ok {
		h.t.Skip("store does not implement duroxide.LeaseReclaimer")
	}
	o := h.orch("i")
	o.start()
	h.enqueueWork(activityItem("i", 2, "A"))
	old := b.mustFetch("i")
	oldW := b.mustFetchWork()
	h.noFetch("locked by the other handle")
	n, err := r.ReclaimLeases(h.ctx)
	h.check(err, "ReclaimLeases")
	if n < 1 {
		h.fatalf("ReclaimLeases declared %d owners dead, want at least 1", n)
	}
	it := h.mustFetch("i") // at once, no waiting
	h.equal(it.AttemptCount, 1, "orchestration attempt count after reclaim")
	l := h.mustFetchWork()
	h.equal(l.AttemptCount, 1, "worker attempt count after reclaim")
	h.wantErr(b.s.AckOrchestrationItem(h.ctx, old.LockToken, o.turn().started().commit()), duroxide.ErrLockLost, "ack by the reclaimed owner")
	h.wantErr(b.s.AckWorkItem(h.ctx, oldW.LockToken, completion(oldW.Item, "stale")), duroxide.ErrLockLost, "worker ack by the reclaimed owner")
	h.ack(it.LockToken, o.turn().started().commit())
	h.ackWork(l.LockToken, completion(l.Item, "fresh"))
}
