package providertest

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("queue_semantics", map[string]func(h *H){
		"worker_fifo":      qsWorkerFIFO,
		"worker_peek_lock": qsWorkerPeekLock,
		"worker_ack_enqueues_completion_atomically": qsWorkerAckAtomic,
		"worker_item_immediately_visible":           qsWorkerImmediate,
		"worker_delayed_item_skipped":               qsWorkerDelayedSkipped,
		"orchestrator_fifo_across_instances":        qsOrchFIFO,
		"orchestrator_enqueue_delay":                qsOrchDelay,
		"delayed_message_not_in_batch":              qsDelayedNotInBatch,
		"timer_fired_visible_at_fire_at":            qsTimerVisibleAt,
		"past_timer_visible_immediately":            qsPastTimer,
		"non_timer_items_visible_immediately":       qsNonTimerImmediate,
		"abandon_with_delay":                        qsAbandonDelay,
		"lost_token_redelivered":                    qsLostToken,
		"next_visible_at_earliest_pending":          qsNextVisibleEarliest,
		"work_item_round_trip":                      qsWorkItemRoundTrip,
		"worker_items_from_ack_round_trip":          qsWorkerItemsFromAck,
		"empty_fetch_returns_immediately":           qsEmptyFetchFast,
	})
}

func qsWorkerFIFO(h *H) {
	for i := range 5 {
		h.enqueueWork(activityItem("i", int64(i+2), fmt.Sprintf("A%d", i)))
	}
	for i := range 5 {
		l := h.mustFetchWork()
		h.equal(l.Item.Name, fmt.Sprintf("A%d", i), "FIFO position")
		h.ackWork(l.LockToken, nil)
	}
	h.noWork("drained worker queue")
}

func qsWorkerPeekLock(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	h.noWork("locked item")
	h.equal(h.stats().WorkerQueue, 1, "locked item still counted")
	h.ackWork(l.LockToken, nil)
	h.equal(h.stats().WorkerQueue, 0, "acked item removed")
}

func qsWorkerAckAtomic(h *H) {
	o := h.orch("i")
	o.createWithActivities(1)
	l := h.mustFetchWork()
	done := completion(l.Item, `{"v":1}`)
	h.ackWork(l.LockToken, done)
	h.noWork("worker queue after ack")
	it := h.mustFetch("i")
	if len(it.Messages) != 1 {
		h.fatalf("batch %s, want the completion", msgKinds(it.Messages))
	}
	h.sameJSON(it.Messages[0], *done, "completion message")
}

func qsWorkerImmediate(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	h.mustFetchWork()
	h.enqueueWork(activityItem("i", 3, "B"))
	l := h.mustFetchWork()
	h.equal(l.Item.Name, "B", "second item")
}

func qsWorkerDelayedSkipped(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	h.enqueueWork(activityItem("i", 3, "B"))
	a := h.mustFetchWork()
	h.equal(a.Item.Name, "A", "first item")
	h.check(h.s.AbandonWorkItem(h.ctx, a.LockToken, duroxide.AbandonParams{Delay: time.Hour, IgnoreAttempt: false}), "abandon A for an hour")
	b := h.mustFetchWork()
	h.equal(b.Item.Name, "B", "item returned while A is delayed")
	h.noWork("A is delayed")
}

func qsOrchFIFO(h *H) {
	for _, id := range []string{"c", "a", "b"} {
		h.orch(id).start()
	}
	var order []string
	for range 3 {
		it := h.fetch(longLock)
		if it == nil {
			h.fatalf("fetch returned nothing")
		}
		order = append(order, it.Instance)
	}
	h.equal(order, []string{"c", "a", "b"}, "fetch order follows enqueue order")
}

func qsOrchDelay(h *H) {
	delay := h.lock
	before := time.Now()
	h.enqueueDelayed(raised("i", "later", ""), delay)
	h.noFetch("delayed message")
	at, ok := h.nextVisible(duroxide.QueueOrchestrator)
	if !ok {
		h.fatalf("NextVisibleAt: nothing pending")
	}
	if at.Before(before.Add(delay - 5*time.Millisecond)) {
		h.fatalf("NextVisibleAt %v before enqueue time + delay %v", at, before.Add(delay))
	}
	it := h.fetchEventually("i", longLock)
	if time.Now().Before(before.Add(delay - 5*time.Millisecond)) {
		h.fatalf("delayed message fetched %v early", before.Add(delay).Sub(time.Now()))
	}
	h.equal(msgKinds(it.Messages), "ExternalRaised(later)", "batch")
	if _, ok := h.nextVisible(duroxide.QueueOrchestrator); ok {
		h.fatalf("NextVisibleAt still reports a pending message")
	}
}

func qsDelayedNotInBatch(h *H) {
	h.enqueue(raised("i", "now", ""))
	h.enqueueDelayed(raised("i", "later", ""), time.Hour)
	it := h.mustFetch("i")
	h.equal(msgKinds(it.Messages), "ExternalRaised(now)", "batch")
	h.ack(it.LockToken, emptyCommit(it))
	h.noFetch("delayed message after the ack")
	h.equal(h.stats().OrchestratorQueue, 1, "delayed message survives the ack")
}

// A TimerFired message from an ack becomes visible at FireAtMs, not before.
func qsTimerVisibleAt(h *H) {
	o := h.orch("i")
	o.start()
	fireAt := time.Now().Add(h.lock)
	tn := o.turn().started().timer(fireAt)
	o.run(tn)
	ms := fireAt.UnixMilli()
	h.noFetch("timer before FireAtMs")
	at, ok := h.nextVisible(duroxide.QueueOrchestrator)
	if !ok {
		h.fatalf("NextVisibleAt: no pending timer")
	}
	if d := at.UnixMilli() - ms; d < -1 || d > 1 {
		h.fatalf("NextVisibleAt = %d ms, want FireAtMs %d", at.UnixMilli(), ms)
	}
	it := h.fetchEventually("i", longLock)
	if now := time.Now().UnixMilli(); now < ms-1 {
		h.fatalf("timer fetched %d ms before FireAtMs", ms-now)
	}
	if len(it.Messages) != 1 || it.Messages[0].Kind != duroxide.WorkTimerFired || it.Messages[0].FireAtMs != ms || it.Messages[0].ID != 2 {
		h.fatalf("timer batch %+v", it.Messages)
	}
}

func qsPastTimer(h *H) {
	o := h.orch("i")
	o.start()
	o.run(o.turn().started().timer(time.Now().Add(-time.Minute)))
	it := h.mustFetch("i")
	h.equal(msgKinds(it.Messages), "TimerFired", "past timer")
}

// Only TimerFired items are delayed; a FireAtMs on another kind is ignored.
func qsNonTimerImmediate(h *H) {
	o := h.orch("i")
	o.start()
	odd := raised("peer", "hello", "")
	odd.FireAtMs = time.Now().Add(time.Hour).UnixMilli()
	o.run(o.turn().started().send(odd, raised("i", "self", "")))
	first := h.fetch(longLock)
	second := h.fetch(longLock)
	if first == nil || second == nil {
		h.fatalf("non-timer items from an ack are not visible at once")
	}
	got := map[string]bool{first.Instance: true, second.Instance: true}
	if !got["peer"] || !got["i"] {
		h.fatalf("fetched %q and %q, want peer and i", first.Instance, second.Instance)
	}
}

func qsAbandonDelay(h *H) {
	h.orch("i").start()
	h.orch("j").start()
	it := h.mustFetch("i")
	before := time.Now()
	h.abandon(it.LockToken, h.lock, false)
	h.mustFetch("j") // i is delayed; j is next
	h.noFetch("i is delayed")
	at, ok := h.nextVisible(duroxide.QueueOrchestrator)
	if !ok || at.Before(before.Add(h.lock-5*time.Millisecond)) {
		h.fatalf("NextVisibleAt = %v, %v; want about %v", at, ok, before.Add(h.lock))
	}
	h.fetchEventually("i", longLock)
}

func qsLostToken(h *H) {
	h.orch("i").start()
	h.mustFetchLock("i", h.lock) // token dropped on the floor
	h.enqueueWork(activityItem("i", 2, "A"))
	h.mustFetchWorkLock(h.lock) // token dropped on the floor
	sleepUntil(time.Now().Add(h.lock))
	it := h.fetchEventually("i", longLock)
	h.equal(msgKinds(it.Messages), "StartOrchestration(Orch)", "redelivered batch")
	l := h.fetchWorkEventually(longLock)
	h.equal(l.Item.Name, "A", "redelivered work item")
}

func qsNextVisibleEarliest(h *H) {
	now := time.Now()
	h.enqueue(raised("v", "visible", "")) // visible messages are not reported
	h.enqueueDelayed(raised("a", "late", ""), 3*time.Hour)
	h.enqueueDelayed(raised("b", "early", ""), time.Hour)
	h.enqueueDelayed(raised("c", "mid", ""), 2*time.Hour)
	at, ok := h.nextVisible(duroxide.QueueOrchestrator)
	if !ok {
		h.fatalf("NextVisibleAt: nothing pending")
	}
	if at.Before(now.Add(time.Hour-time.Second)) || at.After(time.Now().Add(time.Hour+time.Second)) {
		h.fatalf("NextVisibleAt = %v, want about an hour from now", at)
	}
	if _, ok := h.nextVisible(duroxide.QueueWorker); ok {
		h.fatalf("NextVisibleAt(worker) reports orchestrator messages")
	}
}

// Every field of a WorkItem survives the orchestrator queue and the worker
// queue verbatim.
func qsWorkItemRoundTrip(h *H) {
	full := duroxide.WorkItem{
		Kind: duroxide.WorkSubOrchFailed, Instance: "parent", ExecutionID: 3, ID: 7,
		Name: "n", Version: "1.2.3", Input: `{"in":[1,2]}`, Result: "r", Data: "d \u00e9\U0001F600 \"q\" \\", Reason: "why",
		Error: &duroxide.ErrorDetails{
			Category: duroxide.CategoryApplication, Message: "m", Type: "*errors.errorString",
			Payload: json.RawMessage(`{"code":7,"nested":{"a":[true,null]}}`), NonRetryable: true, Timeout: true,
		},
		FireAtMs: 1234567890123, ParentInstance: "grand", ParentExecutionID: 2, ParentID: 5,
		OrchestrationName: "Orch", CarryForward: []duroxide.ExternalArrival{{Name: "e1", Data: "x"}, {Name: "e2"}},
		CustomStatus: ptr(""),
	}
	h.enqueue(full)
	it := h.mustFetch("parent")
	h.sameJSON(it.Messages[0], full, "orchestrator round trip")

	w := full
	w.Kind = duroxide.WorkActivityExecute
	w.Error = nil
	h.enqueueWork(w)
	l := h.mustFetchWork()
	h.sameJSON(l.Item, w, "worker round trip")
}

func qsWorkerItemsFromAck(h *H) {
	o := h.orch("i")
	o.start()
	tn := o.turn().started()
	var want []duroxide.WorkItem
	for i := range 4 {
		tn.activity(fmt.Sprintf("Act%d", i))
	}
	want = append(want, tn.c.WorkerItems...)
	o.run(tn)
	var got []duroxide.WorkItem
	for range 4 {
		l := h.mustFetchWork()
		got = append(got, l.Item)
	}
	h.sameJSON(got, want, "worker items in insertion order")
}

// Fetches never wait for work: an empty or fully locked queue answers at once.
func qsEmptyFetchFast(h *H) {
	const limit = 250 * time.Millisecond
	h.orch("i").start()
	h.mustFetch("i") // the only message is now locked
	h.enqueueDelayed(raised("j", "later", ""), time.Hour)
	for range 3 {
		t0 := time.Now()
		h.noFetch("locked and delayed messages only")
		if d := time.Since(t0); d > limit {
			h.fatalf("empty FetchOrchestrationItem took %v", d)
		}
		t0 = time.Now()
		h.noWork("empty worker queue")
		if d := time.Since(t0); d > limit {
			h.fatalf("empty FetchWorkItem took %v", d)
		}
	}
}
