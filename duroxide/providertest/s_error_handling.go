package providertest

import (
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("error_handling", map[string]func(h *H){
		"ack_unknown_token":                        errAckUnknown,
		"abandon_unknown_token":                    errAbandonUnknown,
		"renew_unknown_token":                      errRenewUnknown,
		"worker_ack_unknown_token":                 errWorkerAckUnknown,
		"worker_renew_unknown_token":               errWorkerRenewUnknown,
		"worker_abandon_unknown_token":             errWorkerAbandonUnknown,
		"token_not_reusable_after_ack":             errTokenReuse,
		"worker_token_not_reusable":                errWorkerTokenReuse,
		"ack_after_lock_expiry":                    errAckAfterExpiry,
		"duplicate_event_across_turns":             errDuplicateAcrossTurns,
		"reads_of_unknown_instance":                errReadsUnknown,
		"empty_store":                              errEmptyStore,
		"orchestration_token_not_valid_for_worker": errTokenKinds,
	})
}

func errAckUnknown(h *H) {
	err := h.s.AckOrchestrationItem(h.ctx, "bogus", newInstanceCommit(startedEvent(1)))
	h.wantErr(err, duroxide.ErrLockLost, "AckOrchestrationItem(bogus)")
	if duroxide.IsRetryable(err) {
		h.fatalf("ErrLockLost is reported as retryable: %v", err)
	}
	h.notFound("Orch")
	if n := len(h.list(duroxide.ListFilter{}).Instances); n != 0 {
		h.fatalf("ack with unknown token created %d instances", n)
	}
}

func errAbandonUnknown(h *H) {
	h.orch("i").start()
	it := h.mustFetch("i")
	h.wantErr(h.s.AbandonOrchestrationItem(h.ctx, "bogus", duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), duroxide.ErrLockLost, "AbandonOrchestrationItem(bogus)")
	h.noFetch("real lock survives a bogus abandon")
	h.abandon(it.LockToken, 0, false)
	h.mustFetch("i")
}

func errRenewUnknown(h *H) {
	h.wantErr(h.s.RenewOrchestrationItemLock(h.ctx, "bogus", time.Second), duroxide.ErrLockLost, "RenewOrchestrationItemLock(bogus)")
}

func errWorkerAckUnknown(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	h.mustFetchWork()
	h.wantErr(h.s.AckWorkItem(h.ctx, "bogus", completion(activityItem("i", 2, "A"), "r")), duroxide.ErrLockLost, "AckWorkItem(bogus)")
	h.noFetch("completion of a bogus worker ack")
	h.equal(h.stats().WorkerQueue, 1, "Stats.WorkerQueue")
}

func errWorkerRenewUnknown(h *H) {
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, "bogus", time.Second), duroxide.ErrLockLost, "RenewWorkItemLock(bogus)")
}

func errWorkerAbandonUnknown(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	h.mustFetchWork()
	h.wantErr(h.s.AbandonWorkItem(h.ctx, "bogus", duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), duroxide.ErrLockLost, "AbandonWorkItem(bogus)")
	h.noWork("real worker lock survives a bogus abandon")
}

func errTokenReuse(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	h.ack(it.LockToken, o.turn().started().commit())
	err := h.s.AckOrchestrationItem(h.ctx, it.LockToken, o.turn().started().commit())
	h.wantErr(err, duroxide.ErrLockLost, "second ack with the same token")
	h.wantErr(h.s.AbandonOrchestrationItem(h.ctx, it.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), duroxide.ErrLockLost, "abandon after ack")
	h.historyLen("i", 1, 1)
}

func errWorkerTokenReuse(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	h.ackWork(l.LockToken, completion(l.Item, "r"))
	h.wantErr(h.s.AckWorkItem(h.ctx, l.LockToken, completion(l.Item, "r")), duroxide.ErrLockLost, "second worker ack")
	batches := h.drainOrch()
	if len(batches) != 1 || len(batches[0].Messages) != 1 {
		h.fatalf("completions enqueued: %d batches, want exactly one completion", len(batches))
	}
}

// An ack after the lock expired fails even if nobody refetched the instance,
// and changes nothing.
func errAckAfterExpiry(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetchLock("i", h.lock)
	sleepUntil(time.Now().Add(h.lock + margin))
	err := h.s.AckOrchestrationItem(h.ctx, it.LockToken, o.turn().started().commit())
	h.wantErr(err, duroxide.ErrLockLost, "ack after lock expiry")
	h.notFound("i")
	again := h.mustFetch("i")
	h.equal(msgKinds(again.Messages), "StartOrchestration(Orch)", "start message after failed ack")
}

func errDuplicateAcrossTurns(h *H) {
	o := h.orch("i").create()
	o.poke()
	it := h.mustFetch("i")
	c := o.turn().commit()
	c.HistoryDelta = []duroxide.Event{startedEvent(1)}
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, it.LockToken, c), duroxide.ErrDuplicateEvent, "re-ack of event 1")
	evs := h.historyLen("i", 1, 1)
	h.equal(evs[0].Kind, duroxide.EventOrchestrationStarted, "event 1")
}

func errReadsUnknown(h *H) {
	h.historyLen("nope", 0, 0)
	h.historyLen("nope", 3, 0)
	h.orch("known").create()
	h.historyLen("known", 2, 0)
	h.historyLen("known", 99, 0)
	h.notFound("nope")
	_, err := h.s.ListExecutions(h.ctx, "nope")
	h.wantErr(err, duroxide.ErrNotFound, "ListExecutions(unknown)")
	_, err = h.s.PruneExecutions(h.ctx, "nope", duroxide.PruneOptions{})
	h.wantErr(err, duroxide.ErrNotFound, "PruneExecutions(unknown)")
}

func errEmptyStore(h *H) {
	h.noFetch("empty store")
	h.noWork("empty store")
	for _, q := range []duroxide.Queue{duroxide.QueueOrchestrator, duroxide.QueueWorker} {
		if at, ok := h.nextVisible(q); ok {
			h.fatalf("NextVisibleAt(%d) on an empty store: %v", q, at)
		}
	}
	st := h.stats()
	h.equal(st.OrchestratorQueue, 0, "Stats.OrchestratorQueue")
	h.equal(st.WorkerQueue, 0, "Stats.WorkerQueue")
	for s, n := range st.Instances {
		if n != 0 {
			h.fatalf("Stats.Instances[%s] = %d on an empty store", s, n)
		}
	}
	p := h.list(duroxide.ListFilter{})
	if len(p.Instances) != 0 || p.NextCursor != "" {
		h.fatalf("ListInstances on an empty store: %+v", p)
	}
	r, err := h.s.DeleteInstancesBulk(h.ctx, duroxide.BulkDeleteFilter{})
	h.check(err, "DeleteInstancesBulk on an empty store")
	h.equal(r.InstancesDeleted, 0, "InstancesDeleted")
}

// Lock tokens of one queue are not accepted by the other.
func errTokenKinds(h *H) {
	h.orch("i").start()
	h.enqueueWork(activityItem("i", 2, "A"))
	it := h.mustFetch("i")
	l := h.mustFetchWork()
	h.wantErr(h.s.AckWorkItem(h.ctx, it.LockToken, nil), duroxide.ErrLockLost, "AckWorkItem with an orchestration token")
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, it.LockToken, time.Second), duroxide.ErrLockLost, "RenewWorkItemLock with an orchestration token")
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, l.LockToken, newInstanceCommit(startedEvent(1))), duroxide.ErrLockLost, "AckOrchestrationItem with a worker token")
	h.wantErr(h.s.RenewOrchestrationItemLock(h.ctx, l.LockToken, time.Second), duroxide.ErrLockLost, "RenewOrchestrationItemLock with a worker token")
	h.notFound("i")
	h.ackWork(l.LockToken, nil)
	h.abandon(it.LockToken, 0, false)
}
