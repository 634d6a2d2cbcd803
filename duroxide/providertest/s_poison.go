package providertest

import (
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("poison", map[string]func(h *H){
		"orchestration_attempt_starts_at_one":           poOrchStartsAtOne,
		"orchestration_attempt_increments_on_abandon":   poOrchIncrementsAbandon,
		"orchestration_attempt_increments_on_expiry":    poOrchIncrementsExpiry,
		"worker_attempt_starts_at_one":                  poWorkerStartsAtOne,
		"worker_attempt_increments_on_abandon":          poWorkerIncrementsAbandon,
		"worker_attempt_increments_on_expiry":           poWorkerIncrementsExpiry,
		"worker_attempt_count_is_per_message":           poWorkerPerMessage,
		"orchestration_attempt_count_is_per_message":    poOrchPerMessage,
		"worker_ignore_attempt_decrements":              poWorkerIgnore,
		"orchestration_ignore_attempt_decrements":       poOrchIgnore,
		"worker_ignore_attempt_never_below_zero":        poWorkerNeverNegative,
		"orchestration_ignore_attempt_never_below_zero": poOrchNeverNegative,
		"max_attempt_count_across_batch":                poMaxAcrossBatch,
		"attempt_count_survives_delayed_abandon":        poDelayedAbandon,
	})
}

func poOrchStartsAtOne(h *H) {
	h.orch("i").start()
	h.equal(h.mustFetch("i").AttemptCount, 1, "first fetch")
}

func poOrchIncrementsAbandon(h *H) {
	h.orch("i").start()
	for want := 1; want <= 3; want++ {
		it := h.mustFetch("i")
		h.equal(it.AttemptCount, want, "attempt count")
		h.abandon(it.LockToken, 0, false)
	}
}

func poOrchIncrementsExpiry(h *H) {
	h.orch("i").start()
	it := h.mustFetchLock("i", h.lock)
	h.equal(it.AttemptCount, 1, "first fetch")
	sleepUntil(time.Now().Add(h.lock))
	again := h.fetchEventually("i", longLock)
	h.equal(again.AttemptCount, 2, "fetch after expiry")
}

func poWorkerStartsAtOne(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	h.equal(h.mustFetchWork().AttemptCount, 1, "first fetch")
}

func poWorkerIncrementsAbandon(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	for want := 1; want <= 3; want++ {
		l := h.mustFetchWork()
		h.equal(l.AttemptCount, want, "attempt count")
		h.check(h.s.AbandonWorkItem(h.ctx, l.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), "AbandonWorkItem")
	}
}

func poWorkerIncrementsExpiry(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWorkLock(h.lock)
	h.equal(l.AttemptCount, 1, "first fetch")
	sleepUntil(time.Now().Add(h.lock))
	again := h.fetchWorkEventually(longLock)
	h.equal(again.AttemptCount, 2, "fetch after expiry")
}

func poWorkerPerMessage(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	h.enqueueWork(activityItem("i", 3, "B"))
	a := h.mustFetchWork()
	h.equal(a.Item.Name, "A", "first item")
	h.check(h.s.AbandonWorkItem(h.ctx, a.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), "abandon A")
	a = h.mustFetchWork() // A again, attempt 2
	h.equal(a.AttemptCount, 2, "A's second attempt")
	b := h.mustFetchWork()
	h.equal(b.Item.Name, "B", "second item")
	h.equal(b.AttemptCount, 1, "B's first attempt")
}

func poOrchPerMessage(h *H) {
	h.orch("a").start()
	h.orch("b").start()
	a := h.mustFetch("a")
	h.abandon(a.LockToken, time.Hour, false)
	b := h.mustFetch("b")
	h.equal(b.AttemptCount, 1, "b's attempt count is independent of a's")
}

func poWorkerIgnore(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	h.equal(l.AttemptCount, 1, "first fetch")
	h.check(h.s.AbandonWorkItem(h.ctx, l.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), "abandon")
	l = h.mustFetchWork()
	h.equal(l.AttemptCount, 2, "second fetch")
	h.check(h.s.AbandonWorkItem(h.ctx, l.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: true}), "abandon ignoring the attempt")
	l = h.mustFetchWork()
	h.equal(l.AttemptCount, 2, "fetch after an ignored attempt")
}

func poOrchIgnore(h *H) {
	h.orch("i").start()
	it := h.mustFetch("i")
	h.abandon(it.LockToken, 0, false)
	it = h.mustFetch("i")
	h.equal(it.AttemptCount, 2, "second fetch")
	h.abandon(it.LockToken, 0, true)
	it = h.mustFetch("i")
	h.equal(it.AttemptCount, 2, "fetch after an ignored attempt")
}

func poWorkerNeverNegative(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	for range 4 {
		l := h.mustFetchWork()
		h.equal(l.AttemptCount, 1, "attempt count with every attempt ignored")
		h.check(h.s.AbandonWorkItem(h.ctx, l.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: true}), "abandon ignoring the attempt")
	}
}

func poOrchNeverNegative(h *H) {
	h.orch("i").start()
	for range 4 {
		it := h.mustFetch("i")
		h.equal(it.AttemptCount, 1, "attempt count with every attempt ignored")
		h.abandon(it.LockToken, 0, true)
	}
}

// The batch reports the highest attempt count of its messages.
func poMaxAcrossBatch(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	h.abandon(it.LockToken, 0, false)
	it = h.mustFetch("i")
	h.abandon(it.LockToken, 0, false) // start message at 2
	h.enqueue(raised("i", "new", ""))
	it = h.mustFetch("i")
	h.equal(len(it.Messages), 2, "batch size")
	h.equal(it.AttemptCount, 3, "AttemptCount = max(3, 1)")
	// After the ack the old message is gone; a new one starts at 1.
	h.ack(it.LockToken, o.turn().started().commit())
	o.poke()
	h.equal(h.mustFetch("i").AttemptCount, 1, "attempt count of a new batch")
}

func poDelayedAbandon(h *H) {
	h.orch("i").start()
	it := h.mustFetch("i")
	h.abandon(it.LockToken, h.lock, false)
	h.noFetch("abandoned with a delay")
	again := h.fetchEventually("i", longLock)
	h.equal(again.AttemptCount, 2, "attempt count after a delayed abandon")
}
