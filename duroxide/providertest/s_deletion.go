package providertest

import (
	"sort"
	"strings"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("deletion", map[string]func(h *H){
		"terminal_instances_with_counts":           delTerminal,
		"running_rejected_without_force":           delRunningRejected,
		"running_deleted_with_force":               delRunningForce,
		"unknown_instance_not_found":               delUnknown,
		"cleans_queues_and_locks":                  delCleansQueuesAndLocks,
		"id_reusable_after_delete":                 delIDReusable,
		"cascade_hierarchy":                        delCascade,
		"sub_orchestration_rejected":               delSubOrchRejected,
		"running_descendant_needs_force":           delRunningDescendant,
		"force_delete_prevents_ack_recreation":     delForcePreventsRecreation,
		"force_delete_removes_worker_items":        delRemovesWorkerItems,
		"stale_activity_after_recreate_fails":      delStaleActivityAfterRecreate,
		"list_children":                            delListChildren,
		"multiple_ids_all_or_nothing_running":      delAtomicRunning,
		"multiple_ids_all_or_nothing_unknown":      delAtomicUnknown,
		"multiple_ids_aggregate_counts":            delAggregate,
		"does_not_touch_other_instances":           delIsolation,
		"recreated_instance_has_new_creation_time": delRecreatedCreatedAt,
	})
}

func (h *H) del(force bool, ids ...string) duroxide.DeleteResult {
	h.t.Helper()
	r, err := h.s.DeleteInstances(h.ctx, duroxide.DeleteParams{IDs: ids, Force: force})
	h.check(err, "DeleteInstances("+strings.Join(ids, ",")+")")
	return r
}

// gone checks that nothing of instance remains visible through the API.
func (h *H) gone(instance string) {
	h.t.Helper()
	h.notFound(instance)
	h.historyLen(instance, 0, 0)
	h.historyLen(instance, 1, 0)
	_, err := h.s.ListExecutions(h.ctx, instance)
	h.wantErr(err, duroxide.ErrNotFound, "ListExecutions("+instance+") after delete")
	if _, _, ch := h.customStatus(instance, 0); ch {
		h.fatalf("custom status of deleted %q still readable", instance)
	}
}

func delTerminal(h *H) {
	a := h.orch("a")
	a.createWithActivities(1) // Started, Scheduled
	a.step(a.turn().customStatus(ptr("s")))
	a.completeNow("ok") // + Completed: 4 events
	h.drainWork()
	b := h.orch("b").create()
	b.failNow("boom") // 2 events
	h.enqueue(raised("a", "late", ""))
	h.enqueueDelayed(raised("b", "later", ""), time.Hour)

	r := h.del(false, "a", "b")
	h.sameJSON(r, duroxide.DeleteResult{InstancesDeleted: 2, ExecutionsDeleted: 2, EventsDeleted: 6, QueueMessagesDeleted: 2}, "DeleteResult")
	h.gone("a")
	h.gone("b")
	h.noFetch("orchestrator queue after delete")
	if _, ok := h.nextVisible(duroxide.QueueOrchestrator); ok {
		h.fatalf("NextVisibleAt reports the deleted instance's delayed message")
	}
	st := h.stats()
	h.equal(st.OrchestratorQueue, 0, "Stats.OrchestratorQueue")
	if n := st.Instances[duroxide.StatusCompleted] + st.Instances[duroxide.StatusFailed]; n != 0 {
		h.fatalf("Stats still counts %d terminal instances", n)
	}
}

func delRunningRejected(h *H) {
	h.orch("r").createWithActivities(1)
	_, err := h.s.DeleteInstances(h.ctx, duroxide.DeleteParams{IDs: []string{"r"}, Force: false})
	h.wantErr(err, duroxide.ErrInstanceRunning, "DeleteInstances(running, force=false)")
	h.equal(h.info("r").Status, duroxide.StatusRunning, "status")
	h.historyLen("r", 1, 2)
	h.mustFetchWork()
}

func delRunningForce(h *H) {
	h.orch("r").createWithActivities(2)
	r := h.del(true, "r")
	h.sameJSON(r, duroxide.DeleteResult{InstancesDeleted: 1, ExecutionsDeleted: 1, EventsDeleted: 3, QueueMessagesDeleted: 2}, "DeleteResult")
	h.gone("r")
	h.noWork("worker items of force-deleted instance")
}

func delUnknown(h *H) {
	_, err := h.s.DeleteInstances(h.ctx, duroxide.DeleteParams{IDs: []string{"nope"}, Force: false})
	h.wantErr(err, duroxide.ErrNotFound, "DeleteInstances(unknown)")
	_, err = h.s.DeleteInstances(h.ctx, duroxide.DeleteParams{IDs: []string{"nope"}, Force: true})
	h.wantErr(err, duroxide.ErrNotFound, "DeleteInstances(unknown, force)")
}

// Force-deleting a locked instance removes its messages and its lock: a new
// start of the same id is fetchable at once.
func delCleansQueuesAndLocks(h *H) {
	o := h.orch("x").create()
	o.poke()
	h.mustFetch("x") // locked, long lock
	o.poke()         // arrives during the lock
	r := h.del(true, "x")
	h.equal(r.QueueMessagesDeleted, 2, "QueueMessagesDeleted")
	h.noFetch("queue after force delete")
	h.equal(h.stats().OrchestratorQueue, 0, "Stats.OrchestratorQueue")
	o2 := h.orch("x")
	o2.start()
	it := h.mustFetch("x")
	if it.Exists {
		h.fatalf("recreated instance reports Exists before its first ack")
	}
	h.equal(msgKinds(it.Messages), "StartOrchestration(Orch)", "batch of recreated instance")
}

func delIDReusable(h *H) {
	o := h.orch("x").create()
	o.continueAsNew("n")
	o.completeNow("first life")
	h.del(false, "x")
	h.orch("x").create()
	inf := h.info("x")
	h.equal(inf.ExecutionID, 1, "execution of recreated instance")
	h.equal(inf.Status, duroxide.StatusRunning, "status of recreated instance")
	h.equal(inf.Output, "", "output of recreated instance")
	h.equal(execIDs(h.executions("x")), []int64{1}, "executions of recreated instance")
	h.historyLen("x", 0, 1)
}

func delCascade(h *H) {
	root := h.orch("root").create()
	c1 := root.spawn("root::c1")
	c2 := root.spawn("root::c2")
	g1 := c1.spawn("root::c1::g1")
	g2 := c1.spawn("root::c1::g2")
	gg := g1.spawn("root::c1::g1::gg")
	for _, o := range []*orch{gg, g1, g2, c1, c2, root} {
		o.completeNow("done")
	}
	// events: root 1+2 spawns+1 = 4, c1 1+2+1 = 4, c2 2, g1 1+1+1 = 3, g2 2, gg 2 → 17
	r := h.del(false, "root")
	h.sameJSON(r, duroxide.DeleteResult{InstancesDeleted: 6, ExecutionsDeleted: 6, EventsDeleted: 17}, "DeleteResult")
	for _, id := range []string{"root", "root::c1", "root::c2", "root::c1::g1", "root::c1::g2", "root::c1::g1::gg"} {
		h.gone(id)
	}
}

func delSubOrchRejected(h *H) {
	root := h.orch("root").create()
	c := root.spawn("root::c")
	c.completeNow("ok")
	root.completeNow("ok")
	for _, force := range []bool{false, true} {
		_, err := h.s.DeleteInstances(h.ctx, duroxide.DeleteParams{IDs: []string{"root::c"}, Force: force})
		h.wantErr(err, duroxide.ErrIsSubOrchestration, "DeleteInstances(child)")
	}
	h.info("root::c")
	h.info("root")
}

func delRunningDescendant(h *H) {
	root := h.orch("root").create()
	root.spawn("root::c") // still running
	root.completeNow("ok")
	_, err := h.s.DeleteInstances(h.ctx, duroxide.DeleteParams{IDs: []string{"root"}, Force: false})
	h.wantErr(err, duroxide.ErrInstanceRunning, "DeleteInstances(root with running child)")
	h.info("root")
	h.info("root::c")
	r := h.del(true, "root")
	h.equal(r.InstancesDeleted, 2, "InstancesDeleted with force")
	h.gone("root::c")
}

// A force delete during an in-flight turn makes the turn's ack fail, so the
// instance is not recreated by a zombie runtime.
func delForcePreventsRecreation(h *H) {
	o := h.orch("z").create()
	o.poke()
	it := h.mustFetch("z")
	h.del(true, "z")
	tn := o.turn().activity("A").timer(time.Now().Add(-time.Second)).customStatus(ptr("zombie"))
	err := h.s.AckOrchestrationItem(h.ctx, it.LockToken, tn.commit())
	h.wantErr(err, duroxide.ErrLockLost, "ack after force delete")
	h.gone("z")
	h.noWork("worker items of zombie ack")
	h.noFetch("orchestrator items of zombie ack")
}

func delRemovesWorkerItems(h *H) {
	h.orch("a").createWithActivities(2)
	h.orch("b").createWithActivities(1)
	l := h.mustFetchWork() // a's first activity is in flight
	h.del(true, "a")
	h.wantErr(h.s.RenewWorkItemLock(h.ctx, l.LockToken, longLock), duroxide.ErrLockLost, "renew of deleted instance's activity")
	h.wantErr(h.s.AckWorkItem(h.ctx, l.LockToken, completion(l.Item, "r")), duroxide.ErrLockLost, "ack of deleted instance's activity")
	work := h.drainWork()
	if len(work) != 1 || work[0].Instance != "b" {
		h.fatalf("worker queue after deleting a: %+v, want only b's activity", work)
	}
	h.noFetch("no completion enqueued")
}

// A worker still holding an activity of a force-deleted instance must not be
// able to complete the recreated instance's identically numbered activity.
func delStaleActivityAfterRecreate(h *H) {
	h.orch("x").createWithActivities(1)
	old := h.mustFetchWork()
	h.del(true, "x")
	h.orch("x").createWithActivities(1) // same instance, exec 1, activity 2
	err := h.s.AckWorkItem(h.ctx, old.LockToken, completion(old.Item, "stale"))
	h.wantErr(err, duroxide.ErrLockLost, "stale AckWorkItem after delete and recreate")
	h.noFetch("stale completion must not reach the recreated instance")
	fresh := h.mustFetchWork()
	if fresh.LockToken == old.LockToken {
		h.fatalf("new activity row reuses the old lock token")
	}
	h.equal(fresh.AttemptCount, 1, "attempt count of the recreated activity")
}

func delListChildren(h *H) {
	root := h.orch("root").create()
	c1 := root.spawn("root::c1")
	root.spawn("root::c2")
	c1.spawn("root::c1::g")
	h.orch("other").create()
	children := func(id string) string {
		h.t.Helper()
		ids, err := h.s.ListChildren(h.ctx, id)
		h.check(err, "ListChildren("+id+")")
		sort.Strings(ids)
		return strings.Join(ids, ",")
	}
	h.equal(children("root"), "root::c1,root::c2", "children of root")
	h.equal(children("root::c1"), "root::c1::g", "children of c1")
	h.equal(children("root::c2"), "", "children of leaf")
	h.equal(children("other"), "", "children of a standalone instance")
	h.equal(h.info("root::c1::g").ParentInstance, "root::c1", "ParentInstance of grandchild")
	h.equal(h.info("root").ParentInstance, "", "ParentInstance of root")
}

func delAtomicRunning(h *H) {
	h.completed("done")
	h.orch("busy").create()
	_, err := h.s.DeleteInstances(h.ctx, duroxide.DeleteParams{IDs: []string{"done", "busy"}, Force: false})
	h.wantErr(err, duroxide.ErrInstanceRunning, "DeleteInstances(done, busy)")
	h.equal(h.info("done").Status, duroxide.StatusCompleted, "terminal instance survives the failed call")
	h.historyLen("done", 1, 2)
	r := h.del(true, "done", "busy")
	h.equal(r.InstancesDeleted, 2, "InstancesDeleted with force")
}

func delAtomicUnknown(h *H) {
	h.completed("done")
	_, err := h.s.DeleteInstances(h.ctx, duroxide.DeleteParams{IDs: []string{"done", "nope"}, Force: true})
	h.wantErr(err, duroxide.ErrNotFound, "DeleteInstances(done, nope)")
	h.info("done")
	h.historyLen("done", 1, 2)
}

func delAggregate(h *H) {
	a := h.orch("a").create()
	a.continueAsNew("n")
	a.completeNow("ok") // 2 executions, 4 events
	b := h.orch("b").create()
	b.spawn("b::c").completeNow("c") // child: 2 events
	b.completeNow("ok")              // b: 3 events
	r := h.del(false, "a", "b")
	h.sameJSON(r, duroxide.DeleteResult{InstancesDeleted: 3, ExecutionsDeleted: 4, EventsDeleted: 9}, "DeleteResult")
	h.equal(h.remaining(), "", "remaining instances")
}

func delIsolation(h *H) {
	h.completed("x", "xy", "x2")
	h.orch("x").start() // a fresh start message for x after it completed is deleted too
	h.enqueue(raised("xy", "e", ""))
	h.del(false, "x")
	h.equal(h.remaining(), "x2,xy", "remaining instances")
	h.historyLen("xy", 1, 2)
	it := h.mustFetch("xy")
	h.equal(msgKinds(it.Messages), "ExternalRaised(e)", "xy's message survives")
}

// CreatedAtMs (with LastEventID) lets a runtime notice that a cached instance
// was deleted and recreated.
func delRecreatedCreatedAt(h *H) {
	h.completed("x")
	first := h.info("x").CreatedAt
	h.del(false, "x")
	time.Sleep(20 * time.Millisecond)
	o := h.orch("x").create()
	second := h.info("x").CreatedAt
	if !second.After(first) {
		h.fatalf("recreated instance CreatedAt %v is not after the deleted one's %v", second, first)
	}
	o.poke()
	it := h.mustFetch("x")
	h.equal(it.CreatedAtMs, second.UnixMilli(), "OrchestrationItem.CreatedAtMs vs InstanceInfo.CreatedAt")
}
