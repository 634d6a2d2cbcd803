package providertest

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("lock_expiration", map[string]func(h *H){
		"orchestration_lock_expires":                 leOrchExpires,
		"abandon_releases_immediately":               leAbandonReleases,
		"ack_releases_lock":                          leAckReleases,
		"concurrent_fetchers_respect_expiration":     leConcurrentRespect,
		"orchestration_renewal_extends":              leOrchRenewExtends,
		"orchestration_renewal_after_expiry_fails":   leOrchRenewAfterExpiry,
		"orchestration_renewal_after_ack_fails":      leOrchRenewAfterAck,
		"stale_abandon_does_not_release_new_lock":    leStaleAbandon,
		"stale_renew_does_not_extend_new_lock":       leStaleRenew,
		"worker_renewal_keeps_lock":                  leWorkerRenew,
		"worker_renewal_after_expiry_fails":          leWorkerRenewAfterExpiry,
		"worker_renewal_extends":                     leWorkerRenewExtends,
		"worker_renewal_after_ack_fails":             leWorkerRenewAfterAck,
		"worker_abandon_releases_immediately":        leWorkerAbandon,
		"worker_abandon_with_delay":                  leWorkerAbandonDelay,
		"worker_ack_after_expiry_fails":              leWorkerAckAfterExpiry,
		"worker_lock_expiry_redelivers":              leWorkerRedeliver,
		"orchestration_renewal_sets_now_plus_extend": leOrchRenewSets,
		"worker_renewal_sets_now_plus_extend":        leWorkerRenewSets,
	})
}

func leOrchExpires(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetchLock("i", h.lock)
	sleepUntil(time.Now().Add(h.lock))
	again := h.fetchEventually("i", longLock)
	if again.LockToken == it.LockToken {
		h.fatalf("token reused after expiry")
	}
	h.equal(again.AttemptCount, 2, "attempt count after expiry")
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, it.LockToken, o.turn().started().commit()), duroxide.ErrLockLost, "ack with expired token")
	h.ack(again.LockToken, o.turn().started().commit())
	h.historyLen("i", 1, 1)
}

func leAbandonReleases(h *H) {
	h.orch("i").start()
	it := h.mustFetch("i")
	h.abandon(it.LockToken, 0, false)
	again := h.mustFetch("i")
	if again.LockToken == it.LockToken {
		h.fatalf("token reused after abandon")
	}
}

func leAckReleases(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	o.poke()
	h.ack(it.LockToken, o.turn().started().commit())
	next := h.mustFetch("i") // immediately, no expiry needed
	h.equal(msgKinds(next.Messages), "ExternalRaised(poke)", "batch after ack")
}

func leConcurrentRespect(h *H) {
	h.orch("i").start()
	earliest := time.Now().Add(h.lock)
	h.mustFetchLock("i", h.lock)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range h.f.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Before expiry nobody gets it.
			it, err := h.s.FetchOrchestrationItem(h.ctx, longLock)
			if err != nil && !duroxide.IsRetryable(err) {
				h.t.Errorf("fetch: %v", err)
				return
			}
			if it != nil && time.Now().Before(earliest.Add(-5*time.Millisecond)) {
				h.t.Errorf("fetched a locked instance before its lock expired")
			}
			if it != nil {
				wins.Add(1)
				return
			}
			sleepUntil(earliest.Add(margin))
			for range 100 {
				it, err = h.s.FetchOrchestrationItem(h.ctx, longLock)
				if err != nil && !duroxide.IsRetryable(err) {
					h.t.Errorf("fetch: %v", err)
					return
				}
				if it != nil {
					wins.Add(1)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	h.equal(wins.Load(), 1, "fetchers that acquired the expired lock")
}

// A renewal before expiry extends the lock past its original expiry: the
// instance is still locked then, and the holder can renew again and ack.
func leOrchRenewExtends(h *H) {
	o := h.orch("i")
	o.start()
	t0 := time.Now()
	it := h.mustFetchLock("i", h.lock)
	t1 := time.Now()
	sleepUntil(t0.Add(h.lock / 2))
	h.check(h.s.RenewOrchestrationItemLock(h.ctx, it.LockToken, 2*h.lock), "renew at half the lock timeout")
	// Original expiry is at most t1+lock; the renewed one at least t0+2.5*lock.
	sleepUntil(t1.Add(h.lock + h.lock/5))
	h.noFetch("renewed lock past its original expiry")
	h.check(h.s.RenewOrchestrationItemLock(h.ctx, it.LockToken, longLock), "second renewal (proves the lock was still held)")
	h.ack(it.LockToken, o.turn().started().commit())
	h.historyLen("i", 1, 1)
}

func leOrchRenewAfterExpiry(h *H) {
	h.orch("i").start()
	it := h.mustFetchLock("i", h.lock)
	sleepUntil(time.Now().Add(h.lock + margin))
	h.wantErr(h.s.RenewOrchestrationItemLock(h.ctx, it.LockToken, longLock), duroxide.ErrLockLost, "renew after expiry")
	h.mustFetch("i") // the failed renewal did not re-acquire it
}

func leOrchRenewAfterAck(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	h.ack(it.LockToken, o.turn().started().commit())
	h.wantErr(h.s.RenewOrchestrationItemLock(h.ctx, it.LockToken, longLock), duroxide.ErrLockLost, "renew after ack")
	o.poke()
	h.mustFetch("i")
}

// A holder whose lock expired and was taken over cannot abandon the new
// holder's lock.
func leStaleAbandon(h *H) {
	o := h.orch("i")
	o.start()
	old := h.mustFetchLock("i", h.lock)
	sleepUntil(time.Now().Add(h.lock))
	cur := h.fetchEventually("i", longLock)
	h.wantErr(h.s.AbandonOrchestrationItem(h.ctx, old.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), duroxide.ErrLockLost, "abandon with the stale token")
	h.noFetch("new holder's lock survives a stale abandon")
	h.ack(cur.LockToken, o.turn().started().commit())
}

func leStaleRenew(h *H) {
	h.orch("i").start()
	old := h.mustFetchLock("i", h.lock)
	sleepUntil(time.Now().Add(h.lock))
	cur := h.fetchEventually("i", h.lock)
	h.wantErr(h.s.RenewOrchestrationItemLock(h.ctx, old.LockToken, longLock), duroxide.ErrLockLost, "renew with the stale token")
	// The stale renewal must not have extended the new lock: it still expires.
	sleepUntil(time.Now().Add(h.lock))
	third := h.fetchEventually("i", longLock)
	if third.LockToken == cur.LockToken || third.LockToken == old.LockToken {
		h.fatalf("token reused")
	}
}

func leWorkerRenew(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWorkLock(h.lock)
	h.check(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), "RenewWorkItemLock")
	sleepUntil(time.Now().Add(h.lock + margin))
	h.noWork("renewed worker item")
	h.ackWork(l.LockToken, nil)
}

func leWorkerRenewAfterExpiry(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWorkLock(h.lock)
	sleepUntil(time.Now().Add(h.lock + margin))
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), duroxide.ErrLockLost, "worker renew after expiry")
	h.mustFetchWork()
}

func leWorkerRenewExtends(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	t0 := time.Now()
	l := h.mustFetchWorkLock(h.lock)
	t1 := time.Now()
	sleepUntil(t0.Add(h.lock / 2))
	h.check(h.s.RenewWorkItemLock(h.ctx, l.LockToken, 2*h.lock), "renew at half the lock timeout")
	sleepUntil(t1.Add(h.lock + h.lock/5))
	h.noWork("renewed worker item past its original expiry")
	h.check(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), "second renewal")
	h.ackWork(l.LockToken, completion(l.Item, "r"))
	h.mustFetch("i")
}

func leWorkerRenewAfterAck(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	h.ackWork(l.LockToken, nil)
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), duroxide.ErrLockLost, "worker renew after ack")
}

func leWorkerAbandon(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	h.check(h.s.AbandonWorkItem(h.ctx, l.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), "AbandonWorkItem")
	again := h.mustFetchWork()
	if again.LockToken == l.LockToken {
		h.fatalf("token reused after abandon")
	}
	h.wantErr(h.s.AckWorkItem(h.ctx, l.LockToken, nil), duroxide.ErrLockLost, "ack with the abandoned token")
	h.ackWork(again.LockToken, nil)
}

func leWorkerAbandonDelay(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	delay := h.lock
	before := time.Now()
	h.check(h.s.AbandonWorkItem(h.ctx, l.LockToken, duroxide.AbandonParams{Delay: delay, IgnoreAttempt: false}), "AbandonWorkItem with delay")
	after := time.Now()
	h.noWork("item abandoned with a delay")
	at, ok := h.nextVisible(duroxide.QueueWorker)
	if !ok {
		h.fatalf("NextVisibleAt(worker): nothing pending after a delayed abandon")
	}
	if at.Before(before.Add(delay-5*time.Millisecond)) || at.After(after.Add(delay+5*time.Millisecond)) {
		h.fatalf("NextVisibleAt(worker) = %v, want within [%v, %v]", at, before.Add(delay), after.Add(delay))
	}
	got := h.fetchWorkEventually(longLock)
	if time.Now().Before(before.Add(delay - 5*time.Millisecond)) {
		h.fatalf("delayed item fetched before its delay")
	}
	h.equal(got.AttemptCount, 2, "attempt count")
}

func leWorkerAckAfterExpiry(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWorkLock(h.lock)
	sleepUntil(time.Now().Add(h.lock + margin))
	h.wantErr(h.s.AckWorkItem(h.ctx, l.LockToken, completion(l.Item, "late")), duroxide.ErrLockLost, "worker ack after expiry")
	h.noFetch("completion of an expired ack")
	again := h.mustFetchWork()
	h.equal(again.Item.ID, 2, "item still queued")
	h.equal(again.AttemptCount, 2, "attempt count")
}

func leWorkerRedeliver(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	first := h.mustFetchWorkLock(h.lock)
	h.noWork("locked worker item")
	sleepUntil(time.Now().Add(h.lock))
	second := h.fetchWorkEventually(longLock)
	if second.LockToken == first.LockToken {
		h.fatalf("token reused after expiry")
	}
	h.wantErr(h.s.AckWorkItem(h.ctx, first.LockToken, completion(first.Item, "stale")), duroxide.ErrLockLost, "stale worker ack")
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, first.LockToken, longLock), duroxide.ErrLockLost, "stale worker renew")
	h.ackWork(second.LockToken, completion(second.Item, "fresh"))
	batches := h.drainOrch()
	if len(batches) != 1 || len(batches[0].Messages) != 1 || batches[0].Messages[0].Result != "fresh" {
		h.fatalf("completions: want exactly the fresh one")
	}
}

// Renewal sets the expiry to now+extend, also when that is sooner than the
// current expiry.
func leOrchRenewSets(h *H) {
	h.orch("i").start()
	it := h.mustFetch("i") // long lock
	h.check(h.s.RenewOrchestrationItemLock(h.ctx, it.LockToken, h.lock), "renew to a shorter lock")
	sleepUntil(time.Now().Add(h.lock))
	again := h.fetchEventually("i", longLock)
	if again.LockToken == it.LockToken {
		h.fatalf("token reused")
	}
	h.equal(again.AttemptCount, 2, "attempt count after the shortened lock expired")
}

func leWorkerRenewSets(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork() // long lock
	h.check(h.s.RenewWorkItemLock(h.ctx, l.LockToken, h.lock), "renew to a shorter lock")
	sleepUntil(time.Now().Add(h.lock))
	again := h.fetchWorkEventually(longLock)
	h.equal(again.AttemptCount, 2, "attempt count after the shortened lock expired")
}
