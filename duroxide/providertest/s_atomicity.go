package providertest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("atomicity", map[string]func(h *H){
		"duplicate_event_rolls_back":          atomicityDuplicateEventRollsBack,
		"duplicate_in_first_ack_creates_none": atomicityDuplicateInFirstAck,
		"failed_ack_keeps_lock_for_retry":     atomicityFailedAckKeepsLock,
		"multi_operation_ack":                 atomicityMultiOperationAck,
		"invalid_token_keeps_lock":            atomicityInvalidTokenKeepsLock,
		"concurrent_acks_one_token":           atomicityConcurrentAcks,
		"concurrent_ack_and_abandon":          atomicityConcurrentAckAbandon,
	})
}

// A turn whose delta repeats an existing event id fails as a whole: no
// history, status, custom status, worker or orchestrator item, and the
// tagged messages and the lock stay (until the lock expires).
func atomicityDuplicateEventRollsBack(h *H) {
	o := h.orch("dup").create()
	o.poke()
	it := h.mustFetchLock(o.id, h.lock)

	c := o.turn().activity("A").activity("B").customStatus(ptr("half")).
		send(raised("other", "x", "")).complete("done").commit()
	// Append a duplicate of event 1 (OrchestrationStarted) at the end.
	c.HistoryDelta = append(c.HistoryDelta, startedEvent(1))
	err := h.s.AckOrchestrationItem(h.ctx, it.LockToken, c)
	h.wantErr(err, duroxide.ErrDuplicateEvent, "ack with duplicate event id")
	if duroxide.IsRetryable(err) {
		h.fatalf("duplicate event error is retryable: %v", err)
	}

	h.historyLen(o.id, 1, 1)
	inf := h.info(o.id)
	h.equal(inf.Status, duroxide.StatusRunning, "status after failed ack")
	h.equal(inf.CustomStatusVersion, 0, "custom status version after failed ack")
	h.noWork("worker items of a failed ack")
	h.noFetch("instance still locked after failed ack")
	_, err = h.s.GetInstance(h.ctx, "other")
	h.wantErr(err, duroxide.ErrNotFound, "GetInstance(other)")

	// The lock is still held; after it expires the poke comes back.
	sleepUntil(time.Now().Add(h.lock))
	again := h.fetchEventually(o.id, longLock)
	h.equal(msgKinds(again.Messages), "ExternalRaised(poke)", "batch after expiry")
	if again.LockToken == it.LockToken {
		h.fatalf("refetch after expiry reused lock token %q", it.LockToken)
	}
	// Only the poke is on the orchestrator queue: "other" got nothing.
	h.ack(again.LockToken, emptyCommit(again))
	h.noFetch("orchestrator queue after failed ack")
}

// The first ack of a new instance fails on a duplicate id inside its own
// delta; the instance is not created.
func atomicityDuplicateInFirstAck(h *H) {
	o := h.orch("dup-first")
	o.start()
	it := h.mustFetch(o.id)
	c := o.turn().started().activity("A").commit()
	c.HistoryDelta = append(c.HistoryDelta, duroxide.Event{EventID: 2, Kind: duroxide.EventTimerCreated, FireAtMs: 1})
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, it.LockToken, c), duroxide.ErrDuplicateEvent, "first ack with duplicate ids")
	h.notFound(o.id)
	h.historyLen(o.id, 0, 0)
	h.historyLen(o.id, 1, 0)
	h.noWork("worker item of failed first ack")
	if n := len(h.list(duroxide.ListFilter{}).Instances); n != 0 {
		h.fatalf("ListInstances after failed first ack: %d instances, want 0", n)
	}
}

// After a failed ack (duplicate event) the same token can still commit a
// corrected turn, as a runtime does when it records an infrastructure failure.
func atomicityFailedAckKeepsLock(h *H) {
	o := h.orch("retry").create()
	o.poke()
	it := h.mustFetch(o.id)
	bad := o.turn().complete("x").commit()
	bad.HistoryDelta = append(bad.HistoryDelta, startedEvent(1))
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, it.LockToken, bad), duroxide.ErrDuplicateEvent, "bad ack")

	good := o.turn().fail("infrastructure: duplicate event")
	h.ack(it.LockToken, good.commit())
	evs := h.historyLen(o.id, 1, 2)
	h.equal(evs[1].Kind, duroxide.EventOrchestrationFailed, "event 2")
	h.equal(h.info(o.id).Status, duroxide.StatusFailed, "status")
	h.noFetch("batch consumed by the retried ack")
}

// One ack writes events, several worker items and orchestrator items
// together.
func atomicityMultiOperationAck(h *H) {
	o := h.orch("multi")
	o.start()
	tn := o.turn().started().activity("A").activity("B").activity("C").
		ev(duroxide.Event{Kind: duroxide.EventExternalSubscribed, Name: "go"})
	child := tn.subOrch("multi::child")
	tn.send(raised("peer", "hello", "1"))
	if got := len(tn.c.HistoryDelta); got != 6 {
		h.fatalf("test setup: %d events", got)
	}
	o.run(tn)

	evs := h.historyLen(o.id, 1, 6)
	h.equal(kinds(evs), "1:OrchestrationStarted 2:ActivityScheduled 3:ActivityScheduled 4:ActivityScheduled 5:ExternalSubscribed 6:SubOrchestrationScheduled", "history")
	work := h.drainWork()
	h.equal(msgKinds(work), "ActivityExecute(A) ActivityExecute(B) ActivityExecute(C)", "worker items")
	batches := h.drainOrch()
	got := map[string]string{}
	for _, b := range batches {
		got[b.Instance] = msgKinds(b.Messages)
	}
	h.equal(len(batches), 2, "orchestrator batches")
	h.equal(got[child.id], "StartOrchestration(Child)", "child batch")
	h.equal(got["peer"], "ExternalRaised(hello)", "peer batch")
}

// An ack with an unknown token fails and leaves the real lock in place.
func atomicityInvalidTokenKeepsLock(h *H) {
	o := h.orch("inv").create()
	o.poke()
	it := h.mustFetch(o.id)
	err := h.s.AckOrchestrationItem(h.ctx, "no-such-token", o.turn().complete("x").commit())
	h.wantErr(err, duroxide.ErrLockLost, "ack with unknown token")
	h.historyLen(o.id, 1, 1)
	h.noFetch("instance still locked")
	h.ack(it.LockToken, o.turn().complete("ok").commit())
	h.equal(h.info(o.id).Status, duroxide.StatusCompleted, "status after real ack")
}

// Concurrent acks with one token: exactly one commits; the history holds
// exactly the winner's delta.
func atomicityConcurrentAcks(h *H) {
	o := h.orch("race").create()
	o.poke()
	it := h.mustFetch(o.id)
	n := h.f.Workers
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("W%d", i)
			tn := o.turn().activity(name).ev(duroxide.Event{Kind: duroxide.EventTimerCreated, Name: name, FireAtMs: 1})
			<-start
			errs[i] = h.s.AckOrchestrationItem(h.ctx, it.LockToken, tn.commit())
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				h.fatalf("acks %d and %d both succeeded with one token", winner, i)
			}
			winner = i
		case errors.Is(err, duroxide.ErrLockLost) || duroxide.IsRetryable(err):
		default:
			h.fatalf("losing ack %d: error %v, want ErrLockLost", i, err)
		}
	}
	if winner < 0 {
		h.fatalf("no concurrent ack succeeded: %v", errs)
	}
	name := fmt.Sprintf("W%d", winner)
	evs := h.historyLen(o.id, 1, 3)
	if evs[1].Name != name || evs[2].Name != name {
		h.fatalf("history mixes deltas: %v / %v, winner %s", evs[1].Name, evs[2].Name, name)
	}
	work := h.drainWork()
	h.equal(msgKinds(work), "ActivityExecute("+name+")", "worker items")
}

// Ack and abandon racing on one token: exactly one succeeds, and the store
// ends in the state that one implies.
func atomicityConcurrentAckAbandon(h *H) {
	o := h.orch("ackab").create()
	o.poke()
	it := h.mustFetch(o.id)
	var ackErr, abErr error
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-start
		ackErr = h.s.AckOrchestrationItem(h.ctx, it.LockToken, o.turn().complete("done").commit())
	}()
	go func() {
		defer wg.Done()
		<-start
		abErr = h.s.AbandonOrchestrationItem(h.ctx, it.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false})
	}()
	close(start)
	wg.Wait()
	switch {
	case ackErr == nil && abErr == nil:
		h.fatalf("both ack and abandon succeeded with one token")
	case ackErr == nil:
		h.wantErr(abErr, duroxide.ErrLockLost, "losing abandon")
		h.equal(h.info(o.id).Status, duroxide.StatusCompleted, "status after winning ack")
		h.noFetch("batch consumed by ack")
	case abErr == nil:
		h.wantErr(ackErr, duroxide.ErrLockLost, "losing ack")
		h.historyLen(o.id, 1, 1)
		again := h.mustFetch(o.id)
		h.equal(msgKinds(again.Messages), "ExternalRaised(poke)", "batch after winning abandon")
	default:
		h.fatalf("neither ack (%v) nor abandon (%v) succeeded", ackErr, abErr)
	}
}
