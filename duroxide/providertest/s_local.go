package providertest

import (
	"errors"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// The local scenarios check duroxide.LocalDispatcher, for stores that
// implement it: worker messages leased in the ack that schedules them, and
// activity completions committed together with the turn they cause.
func init() {
	register("local", map[string]func(h *H){
		"ack_leases_first_workers":           lcAckLeases,
		"commit_activity_turn":               lcCommitTurn,
		"commit_activity_turn_locked":        lcCommitLocked,
		"commit_activity_turn_stale":         lcCommitStale,
		"commit_activity_turn_lost_token":    lcCommitLostToken,
		"commit_activity_turn_sequence":      lcCommitSequence,
		"dead_owner_local_leases_taken_over": lcDeadOwner,
		"timer_backstop_and_release":         lcTimerRelease,
		"commit_activity_turn_fires_timer":   lcTimerInline,
		"start_turn_creates_once":            lcStartTurn,
		"start_turn_conflicts_with_fetch":    lcStartTurnFetched,
	})
}

func (h *H) local() duroxide.LocalDispatcher {
	h.t.Helper()
	ld, ok := h.s.(duroxide.LocalDispatcher)
	if !ok {
		h.t.Skip("the store does not implement duroxide.LocalDispatcher")
	}
	return ld
}

// localStart runs the first turn of o, scheduling the named activities and
// leasing the first lockWorkers of them locally.
func (h *H) localStart(o *orch, lockWorkers int, activities ...string) []duroxide.WorkItemLease {
	h.t.Helper()
	o.start()
	it := h.mustFetch(o.id)
	tn := o.turn().started()
	for _, a := range activities {
		tn.activity(a)
	}
	leases, err := h.local().AckOrchestrationItemLocal(h.ctx, it.LockToken, tn.commit(), duroxide.LocalLease{Workers: lockWorkers, Timeout: longLock})
	h.check(err, "AckOrchestrationItemLocal")
	o.last = tn.lastID()
	return leases
}

func lcAckLeases(h *H) {
	o := h.orch("local-ack")
	leases := h.localStart(o, 1, "A", "B")
	h.equal(len(leases), 1, "leases returned")
	h.equal(leases[0].Item.Name, "A", "leased activity")
	h.equal(leases[0].AttemptCount, 1, "attempt count of a local lease")
	if leases[0].LockToken == "" {
		h.fatalf("local lease without a lock token")
	}
	// Only the unleased message is fetchable.
	l := h.mustFetchWork()
	h.equal(l.Item.Name, "B", "fetched activity")
	h.noWork("A is leased locally, B fetched")
	// The local lease is a real lease: renew and ack work.
	h.check(h.s.RenewWorkItemLock(h.ctx, leases[0].LockToken, longLock), "RenewWorkItemLock of a local lease")
	h.ackWork(leases[0].LockToken, &duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: o.id, ExecutionID: 1, ID: leases[0].Item.ID, Result: `"a"`})
	it := h.mustFetch(o.id)
	h.equal(msgKinds(it.Messages), "ActivityCompleted", "completion of the local lease")
}

func lcCommitTurn(h *H) {
	o := h.orch("local-turn")
	leases := h.localStart(o, 1, "A")
	a := leases[0]
	tn := o.turn().activityDone(a.Item.ID, `"a"`).activity("B")
	got, err := h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: []string{a.LockToken}, Timers: nil, LastEventID: o.last, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 1, Timeout: longLock}})
	h.check(err, "CommitActivityTurn")
	o.last = tn.lastID()
	h.equal(len(got), 1, "leases of the inline turn")
	h.equal(got[0].Item.Name, "B", "leased activity")
	h.noFetch("the completion went into the turn, not the orchestrator queue")
	h.noWork("A acked, B leased")
	h.equal(kinds(h.history(o.id, 1)), "1:OrchestrationStarted 2:ActivityScheduled 3:ActivityCompleted 4:ActivityScheduled", "history")
	// A's token is spent.
	h.wantErr(h.s.AckWorkItem(h.ctx, a.LockToken, nil), duroxide.ErrLockLost, "ack of the committed token")

	// Completing the instance inline.
	tn = o.turn().activityDone(got[0].Item.ID, `"b"`).complete(`"done"`)
	_, err = h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: []string{got[0].LockToken}, Timers: nil, LastEventID: o.last, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 0, Timeout: longLock}})
	h.check(err, "CommitActivityTurn (final)")
	h.equal(h.info(o.id).Status, duroxide.StatusCompleted, "status")
	h.equal(h.stats().WorkerQueue, 0, "worker queue")
}

// lcCommitSequence runs the steps of a sequence as a runtime with local
// dispatch does: each commit completes the activity the previous one
// leased and leases the next (a store may reuse the completed activity's
// message for it). Every committed token is spent, the newest lease is a
// real one, a refused commit changes nothing, and the activity can still
// be given back, fetched and cancelled.
func lcCommitSequence(h *H) {
	o := h.orch("local-seq")
	cur := h.localStart(o, 1, "A")[0]
	var spent []string
	for _, name := range []string{"B", "C"} {
		tn := o.turn().activityDone(cur.Item.ID, `"r"`).activity(name)
		got, err := h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: []string{cur.LockToken}, LastEventID: o.last, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 1, Timeout: longLock}})
		h.check(err, "CommitActivityTurn leasing "+name)
		o.last = tn.lastID()
		h.equal(len(got), 1, "leases of the turn scheduling "+name)
		h.equal(got[0].Item.Name, name, "leased activity")
		h.equal(got[0].Item.ID, tn.lastID(), "leased activity id")
		h.equal(got[0].AttemptCount, 1, "attempt count of the new lease")
		spent = append(spent, cur.LockToken)
		cur = got[0]
	}
	for i, t := range spent {
		if t == cur.LockToken {
			h.fatalf("the lease of step %d has the token of the current one", i)
		}
		h.wantErr(h.s.RenewWorkItemLock(h.ctx, t, longLock), duroxide.ErrLockLost, "renew of a committed token")
		h.wantErr(h.s.AbandonWorkItem(h.ctx, t, duroxide.AbandonParams{}), duroxide.ErrLockLost, "abandon of a committed token")
		h.wantErr(h.s.AckWorkItem(h.ctx, t, nil), duroxide.ErrLockLost, "ack of a committed token")
	}
	h.noWork("C is leased")
	h.equal(h.stats().WorkerQueue, 1, "worker queue: C")

	// Refused (stale history): C's lease and message stay as they were.
	tn := o.turn().activityDone(cur.Item.ID, `"c"`).activity("D")
	_, err := h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: []string{cur.LockToken}, LastEventID: o.last - 1, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 1, Timeout: longLock}})
	h.wantErr(err, duroxide.ErrTurnConflict, "CommitActivityTurn on a stale history")
	h.equal(len(h.history(o.id, 1)), int(o.last), "history unchanged")
	h.check(h.s.RenewWorkItemLock(h.ctx, cur.LockToken, longLock), "C's lease survives the refused commit")

	// Given back, C is fetched as itself; then cancelled, it is gone.
	h.check(h.s.AbandonWorkItem(h.ctx, cur.LockToken, duroxide.AbandonParams{IgnoreAttempt: true}), "abandon C")
	l := h.mustFetchWork()
	h.equal(l.Item.Name, "C", "fetched activity")
	h.equal(l.Item.ID, cur.Item.ID, "fetched activity id")
	o.poke()
	it := h.mustFetch(o.id)
	h.ack(it.LockToken, o.turn().cancel(cur.Item.ID).commit())
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), duroxide.ErrLockLost, "renew of a cancelled activity")
	h.equal(h.stats().WorkerQueue, 0, "worker queue after the cancellation")
}

func lcCommitLocked(h *H) {
	o := h.orch("local-locked")
	a := h.localStart(o, 1, "A")[0]
	o.poke()
	it := h.mustFetch(o.id) // a turn is in progress
	tn := o.turn().activityDone(a.Item.ID, `"a"`)
	_, err := h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: []string{a.LockToken}, Timers: nil, LastEventID: o.last, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 0, Timeout: longLock}})
	h.wantErr(err, duroxide.ErrTurnConflict, "CommitActivityTurn while the instance is locked")
	h.equal(len(h.history(o.id, 1)), int(o.last), "history unchanged")
	// The worker message is still held: the completion can go through the queue.
	h.ack(it.LockToken, emptyCommit(it))
	h.ackWork(a.LockToken, &duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: o.id, ExecutionID: 1, ID: a.Item.ID, Result: `"a"`})
	h.equal(msgKinds(h.mustFetch(o.id).Messages), "ActivityCompleted", "completion through the queue")
}

func lcCommitStale(h *H) {
	o := h.orch("local-stale")
	a := h.localStart(o, 1, "A")[0]
	// Another runtime committed a turn meanwhile.
	o.poke()
	it := h.mustFetch(o.id)
	moved := o.turn().ev(duroxide.Event{Kind: duroxide.EventExternalEvent, Name: "poke"})
	h.ack(it.LockToken, moved.commit())
	tn := o.turn().activityDone(a.Item.ID, `"a"`) // built on the old history
	_, err := h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: []string{a.LockToken}, Timers: nil, LastEventID: o.last, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 0, Timeout: longLock}})
	h.wantErr(err, duroxide.ErrTurnConflict, "CommitActivityTurn on a stale history")
	h.equal(len(h.history(o.id, 1)), int(moved.lastID()), "history unchanged")
	h.check(h.s.AckWorkItem(h.ctx, a.LockToken, nil), "the lease survives the refused commit")
}

func lcCommitLostToken(h *H) {
	o := h.orch("local-lost")
	leases := h.localStart(o, 2, "A", "B")
	h.check(h.s.AckWorkItem(h.ctx, leases[1].LockToken, nil), "ack B") // B's token is spent
	tn := o.turn().activityDone(leases[0].Item.ID, `"a"`).activityDone(leases[1].Item.ID, `"b"`)
	_, err := h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: []string{leases[0].LockToken, leases[1].LockToken}, Timers: nil, LastEventID: o.last, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 0, Timeout: longLock}})
	h.wantErr(err, duroxide.ErrLockLost, "CommitActivityTurn with a spent token")
	h.equal(len(h.history(o.id, 1)), int(o.last), "history unchanged")
	h.check(h.s.RenewWorkItemLock(h.ctx, leases[0].LockToken, longLock), "A's lease survives the refused commit")
}

func lcDeadOwner(h *H) {
	h.local()
	b, freeze := h.liveness()
	o := h.orch("local-dead")
	a := h.localStart(o, 1, "A")[0]
	freeze(h)
	l := b.fetchWorkWithin(h.takeoverWithin())
	h.equal(l.Item.ID, a.Item.ID, "taken-over activity")
	h.equal(l.AttemptCount, 1, "a delivery lost with its owner is not counted")
	tn := o.turn().activityDone(a.Item.ID, `"a"`)
	_, err := h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: []string{a.LockToken}, Timers: nil, LastEventID: o.last, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 0, Timeout: longLock}})
	if !errors.Is(err, duroxide.ErrLockLost) {
		h.fatalf("CommitActivityTurn by the dead owner: got %v, want ErrLockLost", err)
	}
}

// The starts scenarios check duroxide.Starter, for stores that implement it.
func init() {
	register("starts", map[string]func(h *H){
		"enqueue_starts_queues_new_instances": stQueuesNew,
		"enqueue_starts_skips_existing":       stSkipsExisting,
	})
}

func (h *H) starter() duroxide.Starter {
	h.t.Helper()
	st, ok := h.s.(duroxide.Starter)
	if !ok {
		h.t.Skip("the store does not implement duroxide.Starter")
	}
	return st
}

func stQueuesNew(h *H) {
	a, b, c := h.orch("start-a"), h.orch("start-b"), h.orch("start-c")
	h.check(h.starter().EnqueueStarts(h.ctx, []duroxide.WorkItem{a.startItem(), b.startItem(), c.startItem()}), "EnqueueStarts")
	got := map[string]string{}
	for _, it := range h.drainOrch() {
		got[it.Instance] = msgKinds(it.Messages)
	}
	h.equal(len(got), 3, "instances fetched")
	for _, o := range []*orch{a, b, c} {
		h.equal(got[o.id], "StartOrchestration(Orch)", "messages of "+o.id)
	}
}

func stSkipsExisting(h *H) {
	old := h.orch("start-old")
	old.start()
	it := h.mustFetch(old.id)
	h.ack(it.LockToken, old.turn().started().commit())
	fresh := h.orch("start-new")
	h.check(h.starter().EnqueueStarts(h.ctx, []duroxide.WorkItem{old.startItem(), fresh.startItem()}), "EnqueueStarts")
	items := h.drainOrch()
	h.equal(len(items), 1, "instances fetched")
	h.equal(items[0].Instance, fresh.id, "fetched instance")
}

// localTimerTurn runs the first turn of o creating a timer due now whose
// message the queue delivers only after a backstop of an hour.
func (h *H) localTimerTurn(o *orch) int64 {
	h.t.Helper()
	o.start()
	it := h.mustFetch(o.id)
	tn := o.turn().started().timer(time.Now())
	c := tn.commit()
	c.TimerBackstop = time.Hour
	_, err := h.local().AckOrchestrationItemLocal(h.ctx, it.LockToken, c, duroxide.LocalLease{Workers: 0, Timeout: longLock})
	h.check(err, "AckOrchestrationItemLocal")
	o.last = tn.lastID()
	return tn.lastID()
}

func lcTimerRelease(h *H) {
	o := h.orch("local-timer-release")
	id := h.localTimerTurn(o)
	h.noFetch("the timer is held back by its backstop")
	h.check(h.local().ReleaseTimer(h.ctx, o.id, 1, id), "ReleaseTimer")
	it := h.fetchEventually(o.id, longLock)
	h.equal(msgKinds(it.Messages), "TimerFired", "released timer")
	h.check(h.local().ReleaseTimer(h.ctx, o.id, 1, id), "ReleaseTimer of a tagged timer")
}

func lcTimerInline(h *H) {
	o := h.orch("local-timer-inline")
	id := h.localTimerTurn(o)
	tn := o.turn().ev(duroxide.Event{Kind: duroxide.EventTimerFired, SourceEventID: id}).complete(`"done"`)
	_, err := h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o.id, WorkTokens: nil, Timers: []int64{id}, LastEventID: o.last, Commit: tn.commit(), Lease: duroxide.LocalLease{Workers: 0, Timeout: longLock}})
	h.check(err, "CommitActivityTurn with a fired timer")
	h.equal(h.info(o.id).Status, duroxide.StatusCompleted, "status")
	h.equal(h.stats().OrchestratorQueue, 0, "orchestrator queue (the timer message is gone)")

	// A timer whose message is gone cannot be fired again.
	o2 := h.orch("local-timer-gone")
	id2 := h.localTimerTurn(o2)
	h.check(h.local().ReleaseTimer(h.ctx, o2.id, 1, id2), "ReleaseTimer")
	h.ack(h.fetchEventually(o2.id, longLock).LockToken, o2.turn().ev(duroxide.Event{Kind: duroxide.EventTimerFired, SourceEventID: id2}).commit())
	tn2 := o2.turn().ev(duroxide.Event{Kind: duroxide.EventTimerFired, SourceEventID: id2})
	_, err = h.local().CommitActivityTurn(h.ctx, duroxide.ActivityTurnParams{Instance: o2.id, WorkTokens: nil, Timers: []int64{id2}, LastEventID: o2.last + 1, Commit: tn2.commit(), Lease: duroxide.LocalLease{Workers: 0, Timeout: longLock}})
	h.wantErr(err, duroxide.ErrTurnConflict, "CommitActivityTurn with a timer no longer queued")
}

// The cancelled-timer scenario checks TurnCommit.CancelledTimers (every
// store).
func init() {
	register("history", map[string]func(h *H){
		"cancelled_timer_message_deleted": hsCancelledTimer,
	})
}

func hsCancelledTimer(h *H) {
	o := h.orch("cancelled-timer")
	o.start()
	it := h.mustFetch(o.id)
	tn := o.turn().started().timer(time.Now().Add(time.Hour)).timer(time.Now().Add(time.Hour))
	h.ack(it.LockToken, tn.commit())
	loser, other := tn.lastID()-1, tn.lastID()
	o.last = tn.lastID()
	h.equal(h.stats().OrchestratorQueue, 2, "queued timers")
	o.poke()
	it = h.mustFetch(o.id)
	tn = o.turn().ev(duroxide.Event{Kind: duroxide.EventExternalEvent, Name: "poke"})
	c := tn.commit()
	c.CancelledTimers = []int64{loser}
	h.ack(it.LockToken, c)
	h.equal(h.stats().OrchestratorQueue, 1, "queued timers after cancelling one")
	at, ok := h.nextVisible(duroxide.QueueOrchestrator)
	if !ok || at.Before(time.Now().Add(50*time.Minute)) {
		h.fatalf("the other timer (%d) is not pending any more: next visible %v %v", other, at, ok)
	}
}

func lcStartTurn(h *H) {
	o := h.orch("local-start")
	tn := o.turn().started().activity("A")
	res, err := h.local().StartTurn(h.ctx, o.id, tn.commit(), duroxide.LocalLease{Workers: 1, Timeout: longLock})
	h.check(err, "StartTurn")
	h.equal(res.Created, true, "created")
	h.equal(len(res.Leases), 1, "leases")
	h.equal(kinds(h.history(o.id, 1)), "1:OrchestrationStarted 2:ActivityScheduled", "history")
	h.equal(h.info(o.id).Status, duroxide.StatusRunning, "status")
	h.noFetch("no start message was queued")
	h.noWork("the activity is leased")
	// Again: the instance exists, nothing is written.
	res, err = h.local().StartTurn(h.ctx, o.id, o.turn().started().commit(), duroxide.LocalLease{Workers: 1, Timeout: longLock})
	h.check(err, "StartTurn of an existing instance")
	h.equal(res.Created, false, "created again")
	h.equal(len(res.Leases), 0, "leases of a start that wrote nothing")
	h.equal(len(h.history(o.id, 1)), 2, "history unchanged")
}

func lcStartTurnFetched(h *H) {
	o := h.orch("local-start-queued")
	o.start()
	it := h.mustFetch(o.id) // another runtime is running the queued start
	_, err := h.local().StartTurn(h.ctx, o.id, o.turn().started().commit(), duroxide.LocalLease{Workers: 0, Timeout: longLock})
	h.wantErr(err, duroxide.ErrTurnConflict, "StartTurn while a queued start is processed")
	h.ack(it.LockToken, o.turn().started().commit())
	res, err := h.local().StartTurn(h.ctx, o.id, o.turn().started().commit(), duroxide.LocalLease{Workers: 0, Timeout: longLock})
	h.check(err, "StartTurn after the queued start ran")
	h.equal(res.Created, false, "created")
}
