package providertest

import (
	"errors"
	"sync"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("cancellation", map[string]func(h *H){
		"activity_fetchable_while_running":               func(h *H) { cancelFetchableAfter(h, "") },
		"activity_fetchable_after_completed":             func(h *H) { cancelFetchableAfter(h, duroxide.StatusCompleted) },
		"activity_fetchable_after_failed":                func(h *H) { cancelFetchableAfter(h, duroxide.StatusFailed) },
		"activity_fetchable_after_cancelled":             func(h *H) { cancelFetchableAfter(h, duroxide.StatusCancelled) },
		"activity_fetchable_after_continued_as_new":      func(h *H) { cancelFetchableAfter(h, duroxide.StatusContinuedAsNew) },
		"activity_of_unknown_instance_renew_and_ack":     cancelUnknownInstanceActivity,
		"ack_without_completion_enqueues_nothing":        cancelAckWithoutCompletion,
		"cancelled_activities_deleted":                   cancelDeletesRows,
		"worker_ack_fails_after_cancel":                  cancelWorkerAckFails,
		"worker_renew_fails_after_cancel":                cancelWorkerRenewFails,
		"worker_abandon_after_cancel_does_not_resurrect": cancelAbandonNoResurrect,
		"unknown_cancelled_activities_ignored":           cancelUnknownIgnored,
		"batch_cancellation":                             cancelBatch,
		"schedule_and_cancel_in_one_turn_leaves_no_row":  cancelSameTurn,
		"cancel_matches_execution_id":                    cancelMatchesExecution,
		"cancel_matches_instance":                        cancelMatchesInstance,
		"cancel_races_worker_ack":                        cancelRacesWorkerAck,
	})
}

// The store does not gate worker fetches, renewals or acks on the
// orchestration's status: an activity stays fetchable until it is cancelled.
func cancelFetchableAfter(h *H, st duroxide.Status) {
	o := h.orch("inst")
	o.createWithActivities(1)
	switch st {
	case duroxide.StatusCompleted:
		o.completeNow("ok")
	case duroxide.StatusFailed:
		o.failNow("bad")
	case duroxide.StatusCancelled:
		o.step(o.turn().cancelled("user"))
	case duroxide.StatusContinuedAsNew:
		o.continueAsNew("next")
	}
	l := h.mustFetchWork()
	h.equal(l.Item.Instance, "inst", "activity instance")
	h.equal(l.Item.ID, 2, "activity id")
	h.check(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), "RenewWorkItemLock")
	h.ackWork(l.LockToken, completion(l.Item, "r"))
	it := h.mustFetch("inst")
	h.equal(msgKinds(it.Messages), "ActivityCompleted", "completion delivered")
}

func cancelUnknownInstanceActivity(h *H) {
	h.enqueueWork(activityItem("ghost", 2, "A"))
	l := h.mustFetchWork()
	h.check(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), "RenewWorkItemLock")
	h.ackWork(l.LockToken, completion(l.Item, "r"))
	h.notFound("ghost")
	it := h.mustFetch("ghost")
	if it.Exists {
		h.fatalf("completion for unknown instance: item reports Exists")
	}
}

func cancelAckWithoutCompletion(h *H) {
	h.orch("i").createWithActivities(1)
	l := h.mustFetchWork()
	h.ackWork(l.LockToken, nil)
	h.noWork("worker queue after ack")
	h.noFetch("orchestrator queue after ack without completion")
	st := h.stats()
	h.equal(st.WorkerQueue, 0, "Stats.WorkerQueue")
	h.equal(st.OrchestratorQueue, 0, "Stats.OrchestratorQueue")
}

// An ack's CancelledActivities deletes exactly the matching worker rows.
func cancelDeletesRows(h *H) {
	o := h.orch("i")
	ids := o.createWithActivities(3)
	o.step(o.turn().cancel(ids[1]))
	work := h.drainWork()
	h.equal(msgKinds(work), "ActivityExecute(ActA) ActivityExecute(ActC)", "surviving worker items")
}

func cancelWorkerAckFails(h *H) {
	o := h.orch("i")
	ids := o.createWithActivities(1)
	l := h.mustFetchWork()
	o.step(o.turn().cancel(ids[0]))
	err := h.s.AckWorkItem(h.ctx, l.LockToken, completion(l.Item, "late"))
	h.wantErr(err, duroxide.ErrLockLost, "AckWorkItem of a cancelled activity")
	if duroxide.IsRetryable(err) {
		h.fatalf("AckWorkItem of a cancelled activity: error is retryable: %v", err)
	}
	h.noFetch("completion of a cancelled activity must not be enqueued")
	h.noWork("worker queue")
}

func cancelWorkerRenewFails(h *H) {
	o := h.orch("i")
	ids := o.createWithActivities(2)
	l := h.mustFetchWork()
	h.check(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), "renew before cancel")
	o.step(o.turn().cancel(ids[0]))
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), duroxide.ErrLockLost, "renew after cancel")
	// The other activity is untouched.
	l2 := h.mustFetchWork()
	h.equal(l2.Item.ID, ids[1], "remaining activity")
}

// Abandoning a lease whose row was cancelled must not put the activity back.
func cancelAbandonNoResurrect(h *H) {
	o := h.orch("i")
	ids := o.createWithActivities(1)
	l := h.mustFetchWork()
	o.step(o.turn().cancel(ids[0]))
	err := h.s.AbandonWorkItem(h.ctx, l.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false})
	h.wantErr(err, duroxide.ErrLockLost, "AbandonWorkItem after cancel")
	h.noWork("cancelled activity after abandon")
	h.equal(h.stats().WorkerQueue, 0, "Stats.WorkerQueue")
}

func cancelUnknownIgnored(h *H) {
	o := h.orch("i")
	o.createWithActivities(1)
	tn := o.turn()
	tn.c.CancelledActivities = []duroxide.ActivityRef{
		{Instance: "i", ExecutionID: 1, ActivityID: 77},
		{Instance: "nobody", ExecutionID: 1, ActivityID: 2},
	}
	tn.ev(duroxide.Event{Kind: duroxide.EventExternalEvent, Name: "poke"})
	o.step(tn)
	h.historyLen("i", 1, 3)
	h.equal(h.mustFetchWork().Item.ID, 2, "untouched activity")
}

func cancelBatch(h *H) {
	o := h.orch("i")
	ids := o.createWithActivities(4)
	l := h.mustFetchWork() // one of them is in flight
	o.step(o.turn().cancel(ids...))
	h.noWork("all activities cancelled")
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), duroxide.ErrLockLost, "renew of in-flight cancelled activity")
	h.equal(h.stats().WorkerQueue, 0, "Stats.WorkerQueue")
}

// Inserts happen before cancellations: scheduling and cancelling one
// activity in the same turn leaves nothing on the worker queue.
func cancelSameTurn(h *H) {
	o := h.orch("i")
	o.start()
	tn := o.turn().started().activity("Keep").activity("Drop")
	tn.cancel(tn.lastID())
	o.run(tn)
	work := h.drainWork()
	h.equal(msgKinds(work), "ActivityExecute(Keep)", "worker items")
}

func cancelMatchesExecution(h *H) {
	o := h.orch("i")
	o.createWithActivities(1) // exec 1, activity 2
	o.continueAsNew("n")
	tn := o.turn() // exec 2
	tn.activity("Exec2")
	tn.ev(duroxide.Event{Kind: duroxide.EventExternalEvent, Name: "x"})
	o.step(tn) // exec 2 activity id 2
	o.step(o.turn().cancel(2))
	work := h.drainWork()
	if len(work) != 1 || work[0].ExecutionID != 1 || work[0].ID != 2 {
		h.fatalf("after cancelling (i, exec 2, 2): worker items %s %+v, want only exec 1's activity 2", msgKinds(work), work)
	}
}

func cancelMatchesInstance(h *H) {
	a := h.orch("a")
	a.createWithActivities(1)
	b := h.orch("b")
	b.createWithActivities(1)
	a.step(a.turn().cancel(2))
	work := h.drainWork()
	if len(work) != 1 || work[0].Instance != "b" {
		h.fatalf("after cancelling a's activity 2: worker items %+v, want only b's", work)
	}
}

// A cancellation racing with the worker's ack: either the ack wins (the
// completion is enqueued) or the cancel wins (the ack fails and nothing is
// enqueued); never both or neither.
func cancelRacesWorkerAck(h *H) {
	const rounds = 10
	for r := range rounds {
		o := h.orch("race" + string(rune('a'+r)))
		ids := o.createWithActivities(1)
		l := h.mustFetchWork()
		o.poke()
		it := h.mustFetch(o.id)
		var ackErr, cancelErr error
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			ackErr = h.s.AckWorkItem(h.ctx, l.LockToken, completion(l.Item, "r"))
		}()
		go func() {
			defer wg.Done()
			<-start
			cancelErr = h.s.AckOrchestrationItem(h.ctx, it.LockToken, o.turn().cancel(ids[0]).commit())
		}()
		close(start)
		wg.Wait()
		h.check(cancelErr, "cancelling ack")
		batches := h.drainOrch()
		switch {
		case ackErr == nil:
			if len(batches) != 1 || msgKinds(batches[0].Messages) != "ActivityCompleted" {
				h.fatalf("worker ack won but the orchestrator queue holds %d batches", len(batches))
			}
		case errors.Is(ackErr, duroxide.ErrLockLost):
			if len(batches) != 0 {
				h.fatalf("worker ack lost (%v) but a completion was enqueued", ackErr)
			}
		default:
			h.fatalf("worker ack: %v", ackErr)
		}
		h.noWork("worker queue after race")
	}
}
