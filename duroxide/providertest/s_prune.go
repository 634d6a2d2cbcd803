package providertest

import (
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("prune", map[string]func(h *H){
		"keep_last":                         prKeepLast,
		"completed_before":                  prCompletedBefore,
		"keep_last_and_completed_before":    prAnd,
		"zero_options_keep_only_current":    prZeroOptions,
		"keep_last_zero_and_one_equivalent": prZeroOne,
		"keep_last_beyond_count":            prBeyond,
		"never_deletes_running_execution":   prNeverRunning,
		"unknown_instance":                  prUnknown,
		"other_instances_untouched":         prIsolation,
	})
}

// chain creates an instance with n executions (n-1 continue-as-new); the
// last one is running. Each earlier execution has 2 events, the last 1.
func (h *H) chain(id string, n int) *orch {
	h.t.Helper()
	o := h.orch(id).create()
	for range n - 1 {
		o.continueAsNew("x")
	}
	return o
}

func (h *H) prune(id string, opts duroxide.PruneOptions) duroxide.PruneResult {
	h.t.Helper()
	r, err := h.s.PruneExecutions(h.ctx, id, opts)
	h.check(err, "PruneExecutions("+id+")")
	return r
}

func prKeepLast(h *H) {
	h.chain("i", 4)
	r := h.prune("i", duroxide.PruneOptions{KeepLast: 2})
	h.sameJSON(r, duroxide.PruneResult{ExecutionsDeleted: 2, EventsDeleted: 4}, "PruneResult")
	h.equal(execIDs(h.executions("i")), []int64{3, 4}, "remaining executions")
	h.historyLen("i", 1, 0)
	h.historyLen("i", 2, 0)
	h.historyLen("i", 3, 2)
	h.historyLen("i", 0, 1)
	inf := h.info("i")
	h.equal(inf.ExecutionID, 4, "current execution")
	h.equal(inf.Status, duroxide.StatusRunning, "status")
	// The instance keeps working after a prune.
	o := h.orch("i")
	o.exec, o.last = 4, 1
	o.completeNow("ok")
	h.equal(h.info("i").Status, duroxide.StatusCompleted, "status after a later turn")
}

func prCompletedBefore(h *H) {
	o := h.chain("i", 3) // execs 1, 2 completed
	cut := cutoff()
	o.continueAsNew("late") // exec 3 completed after the cutoff; exec 4 current
	r := h.prune("i", duroxide.PruneOptions{CompletedBefore: cut})
	h.equal(r.ExecutionsDeleted, 2, "ExecutionsDeleted")
	h.equal(execIDs(h.executions("i")), []int64{3, 4}, "remaining executions")
}

func prAnd(h *H) {
	o := h.chain("i", 3)
	cut := cutoff()
	o.continueAsNew("late")
	// KeepLast 3 protects 2, 3, 4; the cutoff protects 3, 4: only 1 goes.
	r := h.prune("i", duroxide.PruneOptions{KeepLast: 3, CompletedBefore: cut})
	h.sameJSON(r, duroxide.PruneResult{ExecutionsDeleted: 1, EventsDeleted: 2}, "PruneResult")
	h.equal(execIDs(h.executions("i")), []int64{2, 3, 4}, "remaining executions")
}

// With zero options only the current execution survives, even when it is
// terminal.
func prZeroOptions(h *H) {
	o := h.chain("i", 3)
	o.completeNow("done")
	r := h.prune("i", duroxide.PruneOptions{})
	h.sameJSON(r, duroxide.PruneResult{ExecutionsDeleted: 2, EventsDeleted: 4}, "PruneResult")
	ex := h.executions("i")
	h.equal(execIDs(ex), []int64{3}, "remaining executions")
	h.equal(ex[0].Status, duroxide.StatusCompleted, "current execution status")
	inf := h.info("i")
	h.equal(inf.Status, duroxide.StatusCompleted, "instance status")
	h.equal(inf.Output, "done", "instance output")
	h.historyLen("i", 0, 2)
	again := h.prune("i", duroxide.PruneOptions{})
	h.equal(again.ExecutionsDeleted, 0, "second prune")
}

func prZeroOne(h *H) {
	h.chain("a", 3)
	h.chain("b", 3)
	ra := h.prune("a", duroxide.PruneOptions{KeepLast: 0})
	rb := h.prune("b", duroxide.PruneOptions{KeepLast: 1})
	h.sameJSON(ra, rb, "KeepLast 0 vs 1")
	h.equal(execIDs(h.executions("a")), []int64{3}, "a's executions")
	h.equal(execIDs(h.executions("b")), []int64{3}, "b's executions")
}

func prBeyond(h *H) {
	h.chain("i", 3)
	r := h.prune("i", duroxide.PruneOptions{KeepLast: 10})
	h.sameJSON(r, duroxide.PruneResult{}, "PruneResult")
	h.equal(execIDs(h.executions("i")), []int64{1, 2, 3}, "executions")
	r = h.prune("i", duroxide.PruneOptions{CompletedBefore: time.Now().Add(-time.Hour)})
	h.sameJSON(r, duroxide.PruneResult{}, "PruneResult with an old cutoff")
}

// An old execution that is somehow still Running (its terminal turn never
// committed) is never pruned.
func prNeverRunning(h *H) {
	o := h.orch("i").create() // exec 1 running
	o.poke()
	it := h.mustFetch("i")
	o.exec, o.last = 2, 0
	h.ack(it.LockToken, o.turn().started().commit()) // exec 2 current; exec 1 still Running
	o.last = 1
	o.continueAsNew("3") // exec 2 ContinuedAsNew; exec 3 current
	r := h.prune("i", duroxide.PruneOptions{})
	h.equal(r.ExecutionsDeleted, 1, "ExecutionsDeleted (only exec 2)")
	h.equal(execIDs(h.executions("i")), []int64{1, 3}, "remaining executions")
	h.historyLen("i", 1, 1)
}

func prUnknown(h *H) {
	_, err := h.s.PruneExecutions(h.ctx, "nope", duroxide.PruneOptions{KeepLast: 1})
	h.wantErr(err, duroxide.ErrNotFound, "PruneExecutions(unknown)")
}

func prIsolation(h *H) {
	h.chain("a", 3)
	h.chain("ab", 3)
	h.prune("a", duroxide.PruneOptions{})
	h.equal(execIDs(h.executions("ab")), []int64{1, 2, 3}, "other instance's executions")
	h.historyLen("ab", 1, 2)
}
