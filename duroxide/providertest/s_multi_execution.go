package providertest

import (
	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("multi_execution", map[string]func(h *H){
		"execution_isolation":                  meIsolation,
		"read_history_zero_is_latest":          meLatest,
		"fetch_reports_current_execution":      meFetchReports,
		"continue_as_new_sets_current":         meCANSetsCurrent,
		"three_executions_persist":             meThree,
		"event_ids_scoped_per_execution":       meEventIDsScoped,
		"instance_output_is_current_execution": meOutputCurrent,
	})
}

func meIsolation(h *H) {
	o := h.orch("i")
	o.createWithActivities(1) // exec 1: Started, Scheduled
	o.continueAsNew("next")   // exec 1: + CAN; exec 2: Started
	o.step(o.turn().ev(duroxide.Event{Kind: duroxide.EventExternalEvent, Name: "e2"}))
	e1 := h.historyLen("i", 1, 3)
	e2 := h.historyLen("i", 2, 2)
	h.equal(kinds(e1), "1:OrchestrationStarted 2:ActivityScheduled 3:OrchestrationContinuedAsNew", "exec 1")
	h.equal(kinds(e2), "1:OrchestrationStarted 2:ExternalEvent", "exec 2")
	h.equal(e2[0].Input, "next", "exec 2 OrchestrationStarted input")
}

func meLatest(h *H) {
	o := h.orch("i").create()
	o.continueAsNew("2")
	o.step(o.turn().activity("X"))
	latest := h.history("i", 0)
	h.sameJSON(latest, h.history("i", 2), "ReadHistory(i, 0) vs ReadHistory(i, 2)")
	h.equal(kinds(h.history("i", 1)), "1:OrchestrationStarted 2:OrchestrationContinuedAsNew", "ReadHistory(i, 1)")
}

func meFetchReports(h *H) {
	o := h.orch("i").create()
	o.poke()
	it := h.mustFetch("i")
	h.equal(it.ExecutionID, 1, "ExecutionID before continue-as-new")
	h.ack(it.LockToken, o.turn().continueAsNew("n").commit())
	o.last++
	can := h.mustFetch("i")
	h.equal(can.ExecutionID, 1, "ExecutionID with the ContinueAsNew message pending")
	h.equal(can.ExecutionStatus, duroxide.StatusContinuedAsNew, "ExecutionStatus of the continued execution")
	h.equal(can.LastEventID, 2, "LastEventID of exec 1")
	o.exec, o.last = 2, 0
	h.ack(can.LockToken, o.turn().started().activity("A").commit())
	o.poke()
	it = h.mustFetch("i")
	h.equal(it.ExecutionID, 2, "ExecutionID after continue-as-new")
	h.equal(it.ExecutionStatus, duroxide.StatusRunning, "ExecutionStatus")
	h.equal(it.LastEventID, 2, "LastEventID of exec 2")
}

func meCANSetsCurrent(h *H) {
	o := h.orch("i").create()
	o.continueAsNew("n")
	inf := h.info("i")
	h.equal(inf.ExecutionID, 2, "current execution")
	h.equal(inf.Status, duroxide.StatusRunning, "status of the instance")
	ex := h.executions("i")
	h.equal(execIDs(ex), []int64{1, 2}, "executions")
	h.equal(ex[0].Status, duroxide.StatusContinuedAsNew, "exec 1 status")
}

func meThree(h *H) {
	o := h.orch("i").create()
	o.step(o.turn().activity("A"))
	o.continueAsNew("2")
	o.continueAsNew("3")
	o.step(o.turn().activity("C").activity("D"))
	h.historyLen("i", 1, 3)
	h.historyLen("i", 2, 2)
	h.historyLen("i", 3, 3)
	h.sameJSON(h.history("i", 0), h.history("i", 3), "latest = exec 3")
	h.equal(h.info("i").ExecutionID, 3, "current execution")
	h.equal(execIDs(h.executions("i")), []int64{1, 2, 3}, "executions")
}

// Event id 1 exists in every execution; duplicate detection is per
// execution, so it does not collide across executions.
func meEventIDsScoped(h *H) {
	o := h.orch("i").create()
	o.continueAsNew("2")
	o.poke()
	it := h.mustFetch("i")
	c := o.turn().commit()
	c.HistoryDelta = []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}}
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, it.LockToken, c), duroxide.ErrDuplicateEvent, "duplicate event 1 in exec 2")
	h.historyLen("i", 1, 2)
	h.historyLen("i", 2, 1)
}

func meOutputCurrent(h *H) {
	o := h.orch("i").create()
	o.continueAsNew("carried-input")
	inf := h.info("i")
	h.equal(inf.Output, "", "output of the running current execution")
	o.completeNow("final")
	h.equal(h.info("i").Output, "final", "output after completion")
	h.equal(h.executions("i")[0].Output, "carried-input", "exec 1 output")
}
