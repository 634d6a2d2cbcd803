package providertest

import (
	"sort"
	"strings"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("bulk_deletion", map[string]func(h *H){
		"by_ids":                          bulkByIDs,
		"completed_before":                bulkCompletedBefore,
		"ids_and_completed_before":        bulkIDsAndCompletedBefore,
		"empty_filter_deletes_terminal":   bulkEmptyFilter,
		"unknown_ids_delete_nothing":      bulkUnknownIDs,
		"skips_running":                   bulkSkipsRunning,
		"limit_deletes_in_batches":        bulkLimit,
		"cascades_to_children":            bulkCascades,
		"skips_sub_orchestrations":        bulkSkipsSubOrchestrations,
		"deletes_cancelled_and_failed":    bulkDeletesCancelledAndFailed,
		"counts_executions_events_queues": bulkCounts,
	})
}

func (h *H) bulk(f duroxide.BulkDeleteFilter) duroxide.DeleteResult {
	h.t.Helper()
	r, err := h.s.DeleteInstancesBulk(h.ctx, f)
	h.check(err, "DeleteInstancesBulk")
	return r
}

// remaining lists all instance ids, sorted.
func (h *H) remaining() string {
	h.t.Helper()
	ids := h.listAll(duroxide.ListFilter{})
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// completed creates instances and completes each.
func (h *H) completed(ids ...string) {
	h.t.Helper()
	for _, id := range ids {
		h.orch(id).create().completeNow("ok")
	}
}

// cutoff returns a time strictly between everything done before and
// everything done after it, at millisecond resolution.
func cutoff() time.Time {
	time.Sleep(15 * time.Millisecond)
	c := time.Now()
	time.Sleep(15 * time.Millisecond)
	return c
}

func bulkByIDs(h *H) {
	h.completed("a", "b", "c")
	r := h.bulk(duroxide.BulkDeleteFilter{InstanceIDs: []string{"a", "c"}})
	h.equal(r.InstancesDeleted, 2, "InstancesDeleted")
	h.equal(h.remaining(), "b", "remaining instances")
	h.notFound("a")
	h.historyLen("a", 0, 0)
}

func bulkCompletedBefore(h *H) {
	h.completed("old1", "old2")
	cut := cutoff()
	h.completed("new1")
	r := h.bulk(duroxide.BulkDeleteFilter{CompletedBefore: cut})
	h.equal(r.InstancesDeleted, 2, "InstancesDeleted")
	h.equal(h.remaining(), "new1", "remaining instances")
}

func bulkIDsAndCompletedBefore(h *H) {
	h.completed("old1", "old2")
	cut := cutoff()
	h.completed("new1", "new2")
	r := h.bulk(duroxide.BulkDeleteFilter{InstanceIDs: []string{"old1", "new1"}, CompletedBefore: cut})
	h.equal(r.InstancesDeleted, 1, "InstancesDeleted")
	h.equal(h.remaining(), "new1,new2,old2", "remaining instances")
}

func bulkEmptyFilter(h *H) {
	h.completed("t1", "t2")
	h.orch("f1").create().failNow("boom")
	h.orch("run").create()
	r := h.bulk(duroxide.BulkDeleteFilter{})
	h.equal(r.InstancesDeleted, 3, "InstancesDeleted")
	h.equal(h.remaining(), "run", "remaining instances")
}

func bulkUnknownIDs(h *H) {
	h.completed("keep")
	r := h.bulk(duroxide.BulkDeleteFilter{InstanceIDs: []string{"nope1", "nope2"}})
	h.sameJSON(r, duroxide.DeleteResult{}, "result for unknown ids")
	h.equal(h.remaining(), "keep", "remaining instances")
}

func bulkSkipsRunning(h *H) {
	h.completed("done")
	h.orch("busy").createWithActivities(1)
	r := h.bulk(duroxide.BulkDeleteFilter{InstanceIDs: []string{"done", "busy"}})
	h.equal(r.InstancesDeleted, 1, "InstancesDeleted")
	h.equal(h.remaining(), "busy", "remaining instances")
	h.equal(h.info("busy").Status, duroxide.StatusRunning, "running instance status")
	h.historyLen("busy", 1, 2)
	if l := h.mustFetchWork(); l.Item.Instance != "busy" {
		h.fatalf("worker item of running instance: %+v", l.Item)
	}
}

func bulkLimit(h *H) {
	h.completed("i1", "i2", "i3", "i4", "i5")
	var got []int
	for range 4 {
		got = append(got, h.bulk(duroxide.BulkDeleteFilter{Limit: 2}).InstancesDeleted)
	}
	h.equal(got, []int{2, 2, 1, 0}, "instances deleted per limited call")
	h.equal(h.remaining(), "", "remaining instances")
}

func bulkCascades(h *H) {
	root := h.orch("root").create()
	c1 := root.spawn("root::c1")
	c2 := root.spawn("root::c2")
	g := c1.spawn("root::c1::g")
	g.completeNow("g")
	c1.completeNow("c1")
	c2.completeNow("c2")
	root.completeNow("root")
	h.completed("solo")
	h.orch("other").create()

	r := h.bulk(duroxide.BulkDeleteFilter{InstanceIDs: []string{"root", "solo"}})
	h.equal(r.InstancesDeleted, 5, "InstancesDeleted (root, 2 children, grandchild, solo)")
	h.equal(h.remaining(), "other", "remaining instances")
	for _, id := range []string{"root::c1", "root::c2", "root::c1::g"} {
		h.notFound(id)
		h.historyLen(id, 0, 0)
	}
}

func bulkSkipsSubOrchestrations(h *H) {
	root := h.orch("root").create()
	c := root.spawn("root::c")
	c.completeNow("c")
	// root is still running; the child is terminal but not a root.
	r := h.bulk(duroxide.BulkDeleteFilter{})
	h.equal(r.InstancesDeleted, 0, "InstancesDeleted")
	r = h.bulk(duroxide.BulkDeleteFilter{InstanceIDs: []string{"root::c"}})
	h.equal(r.InstancesDeleted, 0, "InstancesDeleted by child id")
	h.equal(h.info("root::c").Status, duroxide.StatusCompleted, "child status")
	h.equal(h.remaining(), "root,root::c", "remaining instances")
}

func bulkDeletesCancelledAndFailed(h *H) {
	h.orch("f").create().failNow("x")
	c := h.orch("c").create()
	c.step(c.turn().cancelled("user"))
	h.orch("r").create()
	r := h.bulk(duroxide.BulkDeleteFilter{InstanceIDs: []string{"f", "c", "r"}})
	h.equal(r.InstancesDeleted, 2, "InstancesDeleted")
	h.equal(h.remaining(), "r", "remaining instances")
}

func bulkCounts(h *H) {
	a := h.orch("a").create()
	a.continueAsNew("n")               // exec 1: Started, CAN (2 events); exec 2: Started
	a.completeNow("ok")                // exec 2: Started, Completed (2 events)
	h.enqueue(raised("a", "late", "")) // a message for a terminal instance
	h.enqueueWork(activityItem("a", 9, "Late"))
	r := h.bulk(duroxide.BulkDeleteFilter{InstanceIDs: []string{"a"}})
	h.sameJSON(r, duroxide.DeleteResult{InstancesDeleted: 1, ExecutionsDeleted: 2, EventsDeleted: 4, QueueMessagesDeleted: 2}, "DeleteResult")
	h.noFetch("orchestrator queue after bulk delete")
	h.noWork("worker queue after bulk delete")
}
