package providertest

import (
	"github.com/toygres/toygres/duroxide"
)

// TurnCommit.KeepExecutions: the ack prunes old executions of a
// continue-as-new chain in the same transaction as the turn.
func init() {
	register("keep_executions", map[string]func(h *H){
		"prunes_in_start_turn":            keStartTurn,
		"zero_keeps_all":                  keZero,
		"long_chain_stays_bounded":        keLongChain,
		"never_deletes_running_execution": keNeverRunning,
		"failed_ack_prunes_nothing":       keFailedAck,
		"lost_lock_prunes_nothing":        keLostLock,
		"discarding_commit_ignores_it":    keDiscard,
		"on_a_running_turn":               keRunningTurn,
		"other_instances_untouched":       keIsolation,
	})
}

// continueAsNewKeep is orch.continueAsNew whose second turn (the first turn
// of the new execution) carries KeepExecutions keep.
func (o *orch) continueAsNewKeep(input string, keep int) {
	o.h.t.Helper()
	o.step(o.turn().continueAsNew(input))
	it := o.h.mustFetch(o.id)
	o.exec++
	o.last = 0
	tn := o.turn()
	tn.ev(duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: o.name, Version: o.version, Input: input})
	c := tn.commit()
	c.KeepExecutions = keep
	o.h.ack(it.LockToken, c)
	tn.committed()
}

// canStart runs the ContinuedAsNew turn of o and fetches the batch that
// starts the next execution, returning it unacked with the start commit.
func (o *orch) canStart(input string) (*duroxide.OrchestrationItem, *duroxide.TurnCommit) {
	o.h.t.Helper()
	o.step(o.turn().continueAsNew(input))
	it := o.h.mustFetch(o.id)
	next := &orch{h: o.h, id: o.id, name: o.name, version: o.version, exec: o.exec + 1}
	tn := next.turn()
	tn.ev(duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: o.name, Version: o.version, Input: input})
	return it, tn.commit()
}

func keStartTurn(h *H) {
	o := h.chain("i", 4) // execs 1-3 ContinuedAsNew (2 events each), 4 running
	o.continueAsNewKeep("x", 2)
	ex := h.executions("i")
	h.equal(execIDs(ex), []int64{4, 5}, "executions after a start turn keeping 2")
	h.equal(ex[0].Status, duroxide.StatusContinuedAsNew, "exec 4 status")
	for id := int64(1); id <= 3; id++ {
		h.historyLen("i", id, 0) // pruned executions read as empty
	}
	h.historyLen("i", 4, 2)
	h.historyLen("i", 0, 1)
	inf := h.info("i")
	h.equal(inf.ExecutionID, 5, "current execution")
	h.equal(inf.Status, duroxide.StatusRunning, "status")
	o.completeNow("done")
	h.equal(h.info("i").Status, duroxide.StatusCompleted, "status after a later turn")
	h.equal(h.info("i").Output, "done", "output after a later turn")
}

func keZero(h *H) {
	o := h.chain("i", 3)
	o.continueAsNewKeep("x", 0)
	h.equal(execIDs(h.executions("i")), []int64{1, 2, 3, 4}, "executions")
}

func keLongChain(h *H) {
	o := h.orch("i").create()
	for n := range 20 {
		o.continueAsNewKeep("x", 3)
		ex := h.executions("i")
		if len(ex) > 3 {
			h.fatalf("after %d continue-as-new: %d executions %v, want at most 3", n+1, len(ex), execIDs(ex))
		}
		events := 0
		for _, e := range ex {
			events += e.EventCount
		}
		if events > 5 { // 2 per continued execution, 1 in the current
			h.fatalf("after %d continue-as-new: %d events stored, want at most 5", n+1, events)
		}
	}
	h.equal(execIDs(h.executions("i")), []int64{19, 20, 21}, "executions")
	h.historyLen("i", 18, 0)
	h.historyLen("i", 20, 2)
}

// An old execution that is still Running (its terminal turn never
// committed) survives any KeepExecutions.
func keNeverRunning(h *H) {
	o := h.orch("i").create() // exec 1 running
	o.poke()
	it := h.mustFetch("i")
	o.exec, o.last = 2, 0
	h.ack(it.LockToken, o.turn().started().commit()) // exec 2 current; exec 1 still Running
	o.last = 1
	o.continueAsNewKeep("3", 1) // exec 2 ContinuedAsNew; exec 3 current
	h.equal(execIDs(h.executions("i")), []int64{1, 3}, "remaining executions")
	h.historyLen("i", 1, 1)
	h.historyLen("i", 2, 0)
}

// A start turn whose ack fails (duplicate event id) prunes nothing.
func keFailedAck(h *H) {
	o := h.chain("i", 3)
	it, c := o.canStart("x")
	c.KeepExecutions = 1
	c.HistoryDelta = append(c.HistoryDelta, c.HistoryDelta[0]) // event 1 twice
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, it.LockToken, c), duroxide.ErrDuplicateEvent, "ack with a duplicate event")
	h.equal(execIDs(h.executions("i")), []int64{1, 2, 3}, "executions after the failed ack")
	h.historyLen("i", 1, 2)
	h.equal(h.info("i").ExecutionID, 3, "current execution")
}

// An ack with a lock token that is not held prunes nothing.
func keLostLock(h *H) {
	o := h.chain("i", 3)
	it, c := o.canStart("x")
	c.KeepExecutions = 1
	h.abandon(it.LockToken, 0, false)
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, it.LockToken, c), duroxide.ErrLockLost, "ack after abandon")
	h.equal(execIDs(h.executions("i")), []int64{1, 2, 3}, "executions after the refused ack")
}

// A discarding commit (ExecutionID 0) writes nothing, pruning included.
func keDiscard(h *H) {
	o := h.chain("i", 3)
	o.poke()
	it := h.mustFetch("i")
	h.ack(it.LockToken, &duroxide.TurnCommit{KeepExecutions: 1})
	h.equal(execIDs(h.executions("i")), []int64{1, 2, 3}, "executions after a discard")
}

// KeepExecutions is honoured on any turn, not only a start turn.
func keRunningTurn(h *H) {
	o := h.chain("i", 3)
	o.poke()
	it := h.mustFetch("i")
	tn := o.turn().activity("A")
	c := tn.commit()
	c.KeepExecutions = 2
	h.ack(it.LockToken, c)
	tn.committed()
	h.equal(execIDs(h.executions("i")), []int64{2, 3}, "executions")
	h.historyLen("i", 0, 2)
}

func keIsolation(h *H) {
	h.chain("ab", 3)
	o := h.chain("a", 3)
	o.continueAsNewKeep("x", 1)
	h.equal(execIDs(h.executions("a")), []int64{4}, "a's executions")
	h.equal(execIDs(h.executions("ab")), []int64{1, 2, 3}, "other instance's executions")
	h.historyLen("ab", 1, 2)
}
