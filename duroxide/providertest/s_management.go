package providertest

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("management", map[string]func(h *H){
		"list_all_instances":            mgmtListAll,
		"list_newest_first":             mgmtNewestFirst,
		"filter_by_status":              mgmtFilterStatus,
		"filter_by_name":                mgmtFilterName,
		"filter_by_prefix_literal":      mgmtFilterPrefix,
		"filters_combine":               mgmtFiltersCombine,
		"paginate":                      mgmtPaginate,
		"paginate_with_filter":          mgmtPaginateFilter,
		"cursor_stable_under_changes":   mgmtCursorStable,
		"default_page_size_100":         mgmtDefaultLimit,
		"instance_info":                 mgmtInstanceInfo,
		"instance_info_terminal_output": mgmtTerminalOutput,
		"cancelled_status":              mgmtCancelled,
		"list_executions":               mgmtListExecutions,
		"stats_instances_by_status":     mgmtStatsInstances,
		"stats_queue_depths":            mgmtStatsQueues,
	})
}

func ids(p *duroxide.InstancePage) string {
	var s []string
	for _, in := range p.Instances {
		s = append(s, in.Instance)
	}
	return strings.Join(s, ",")
}

func sortedIDs(list []string) string {
	l := append([]string(nil), list...)
	sort.Strings(l)
	return strings.Join(l, ",")
}

func mgmtListAll(h *H) {
	h.completed("c1")
	h.orch("r1").create()
	h.orch("f1").create().failNow("x")
	h.orch("pending").start() // not an instance yet
	h.equal(sortedIDs(h.listAll(duroxide.ListFilter{})), "c1,f1,r1", "listed instances")
	for _, in := range h.list(duroxide.ListFilter{}).Instances {
		h.sameInfo(in, *h.info(in.Instance), "ListInstances entry of "+in.Instance+" vs GetInstance")
	}
}

func mgmtNewestFirst(h *H) {
	var first *orch
	for _, id := range []string{"first", "second", "third"} {
		o := h.orch(id).create()
		if first == nil {
			first = o
		}
		time.Sleep(15 * time.Millisecond)
	}
	h.equal(ids(h.list(duroxide.ListFilter{})), "third,second,first", "order")
	// Updating an old instance does not move it: order is by creation.
	first.completeNow("done")
	h.equal(ids(h.list(duroxide.ListFilter{})), "third,second,first", "order after updating the oldest")
}

func mgmtFilterStatus(h *H) {
	h.completed("c1", "c2")
	h.orch("r1").create()
	h.orch("f1").create().failNow("x")
	got := func(st ...duroxide.Status) string {
		return sortedIDs(h.listAll(duroxide.ListFilter{Statuses: st}))
	}
	h.equal(got(duroxide.StatusCompleted), "c1,c2", "Completed")
	h.equal(got(duroxide.StatusRunning), "r1", "Running")
	h.equal(got(duroxide.StatusFailed), "f1", "Failed")
	h.equal(got(duroxide.StatusCompleted, duroxide.StatusFailed), "c1,c2,f1", "Completed or Failed")
	h.equal(got(duroxide.StatusCancelled), "", "Cancelled")
}

func mgmtFilterName(h *H) {
	for _, x := range []struct{ id, name string }{{"a1", "Alpha"}, {"a2", "Alpha"}, {"b1", "Beta"}, {"ab", "AlphaBeta"}} {
		o := h.orch(x.id)
		o.name = x.name
		o.create()
	}
	h.equal(sortedIDs(h.listAll(duroxide.ListFilter{OrchestrationName: "Alpha"})), "a1,a2", "name Alpha (exact match)")
	h.equal(sortedIDs(h.listAll(duroxide.ListFilter{OrchestrationName: "Beta"})), "b1", "name Beta")
	h.equal(sortedIDs(h.listAll(duroxide.ListFilter{OrchestrationName: "Gamma"})), "", "name Gamma")
}

// The prefix is literal: SQL LIKE wildcards in it match only themselves.
func mgmtFilterPrefix(h *H) {
	for _, id := range []string{"job-1", "job-2", "jobs", "a_1", "ab1", "a%x", "abx", "Job-3"} {
		h.orch(id).create()
	}
	got := func(p string) string { return sortedIDs(h.listAll(duroxide.ListFilter{InstancePrefix: p})) }
	h.equal(got("job-"), "job-1,job-2", "prefix job-")
	h.equal(got("job"), "job-1,job-2,jobs", "prefix job")
	h.equal(got("a_"), "a_1", "prefix a_ (underscore is literal)")
	h.equal(got("a%"), "a%x", "prefix a% (percent is literal)")
	h.equal(got("zzz"), "", "prefix zzz")
}

func mgmtFiltersCombine(h *H) {
	mk := func(id, name string, done bool) {
		o := h.orch(id)
		o.name = name
		o.create()
		if done {
			o.completeNow("ok")
		}
	}
	mk("x-1", "A", true)
	mk("x-2", "A", false)
	mk("x-3", "B", true)
	mk("y-1", "A", true)
	got := h.listAll(duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusCompleted}, OrchestrationName: "A", InstancePrefix: "x-"})
	h.equal(sortedIDs(got), "x-1", "Completed AND name A AND prefix x-")
}

// Pages are disjoint, cover everything, end with an empty cursor, and keep
// the newest-first order across pages, also when creation times tie.
func mgmtPaginate(h *H) {
	var all []string
	for i := range 7 {
		id := fmt.Sprintf("p%d", i)
		h.orch(id).create()
		all = append(all, id)
	}
	var pages []int
	var got []string
	f := duroxide.ListFilter{Limit: 3}
	for {
		p := h.list(f)
		pages = append(pages, len(p.Instances))
		for _, in := range p.Instances {
			got = append(got, in.Instance)
		}
		if p.NextCursor == "" {
			break
		}
		if len(pages) > 10 {
			h.fatalf("pagination does not end")
		}
		f.Cursor = p.NextCursor
	}
	h.equal(pages, []int{3, 3, 1}, "page sizes")
	h.equal(sortedIDs(got), sortedIDs(all), "instances across pages")
	unpaged := h.list(duroxide.ListFilter{})
	h.equal(strings.Join(got, ","), ids(unpaged), "paged order vs unpaged order")
}

func mgmtPaginateFilter(h *H) {
	for i := range 5 {
		o := h.orch(fmt.Sprintf("d%d", i)).create()
		o.completeNow("ok")
		h.orch(fmt.Sprintf("r%d", i)).create()
	}
	got := h.listAll(duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusRunning}, Limit: 2})
	h.equal(sortedIDs(got), "r0,r1,r2,r3,r4", "running instances across pages")
}

func mgmtDefaultLimit(h *H) {
	const n = 103
	for i := range n {
		h.orch(fmt.Sprintf("i%03d", i)).create()
	}
	p := h.list(duroxide.ListFilter{})
	h.equal(len(p.Instances), 100, "default page size")
	if p.NextCursor == "" {
		h.fatalf("first page of %d instances has no NextCursor", n)
	}
	rest := h.list(duroxide.ListFilter{Cursor: p.NextCursor})
	h.equal(len(rest.Instances), 3, "second page")
	h.equal(rest.NextCursor, "", "NextCursor of the last page")
}

func mgmtInstanceInfo(h *H) {
	before := time.Now().Add(-time.Second)
	o := h.orch("info")
	o.name, o.version = "InfoOrch", "2.0.0"
	o.create()
	created := h.info("info")
	time.Sleep(15 * time.Millisecond)
	o.step(o.turn().activity("A"))
	inf := h.info("info")
	h.equal(inf.OrchestrationName, "InfoOrch", "OrchestrationName")
	h.equal(inf.OrchestrationVersion, "2.0.0", "OrchestrationVersion")
	h.equal(inf.ExecutionID, 1, "ExecutionID")
	h.equal(inf.Status, duroxide.StatusRunning, "Status")
	if !inf.CreatedAt.Equal(created.CreatedAt) {
		h.fatalf("CreatedAt changed from %v to %v by a later turn", created.CreatedAt, inf.CreatedAt)
	}
	if inf.CreatedAt.Before(before) || inf.CreatedAt.After(time.Now().Add(time.Second)) {
		h.fatalf("CreatedAt %v outside the test's time window", inf.CreatedAt)
	}
	if !inf.UpdatedAt.After(created.UpdatedAt) {
		h.fatalf("UpdatedAt %v not advanced by a later turn (was %v)", inf.UpdatedAt, created.UpdatedAt)
	}
}

func mgmtTerminalOutput(h *H) {
	h.orch("ok").create().completeNow(`{"answer":42}`)
	h.orch("bad").create().failNow("activity exploded")
	okI := h.info("ok")
	h.equal(okI.Status, duroxide.StatusCompleted, "status of completed")
	h.equal(okI.Output, `{"answer":42}`, "output of completed")
	bad := h.info("bad")
	h.equal(bad.Status, duroxide.StatusFailed, "status of failed")
	h.equal(bad.Output, "activity exploded", "output of failed")
	if !bad.Status.IsTerminal() {
		h.fatalf("Failed is not terminal")
	}
}

// Cancelled is a terminal status of its own: reported, listed, counted and
// deletable like the others.
func mgmtCancelled(h *H) {
	o := h.orch("c").create()
	o.step(o.turn().cancelled("user request"))
	inf := h.info("c")
	h.equal(inf.Status, duroxide.StatusCancelled, "status")
	h.equal(inf.Output, "canceled: user request", "output")
	h.equal(sortedIDs(h.listAll(duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusCancelled}})), "c", "listed as Cancelled")
	h.equal(h.stats().Instances[duroxide.StatusCancelled], 1, "Stats.Instances[Cancelled]")
	ex := h.executions("c")
	h.equal(ex[0].Status, duroxide.StatusCancelled, "execution status")
	if ex[0].CompletedAt.IsZero() {
		h.fatalf("cancelled execution has no CompletedAt")
	}
	h.equal(h.del(false, "c").InstancesDeleted, 1, "deleted without force")
}

func mgmtListExecutions(h *H) {
	o := h.orch("i")
	o.createWithActivities(1) // exec 1: 2 events
	o.continueAsNew("gen2")   // exec 1: +CAN = 3; exec 2: Started
	o.step(o.turn().activity("B"))
	ex := h.executions("i")
	h.equal(execIDs(ex), []int64{1, 2}, "execution ids")
	e1, e2 := ex[0], ex[1]
	h.equal(e1.Status, duroxide.StatusContinuedAsNew, "exec 1 status")
	h.equal(e1.Output, "gen2", "exec 1 output (continue-as-new input)")
	h.equal(e1.EventCount, 3, "exec 1 event count")
	if e1.StartedAt.IsZero() || e1.CompletedAt.IsZero() || e1.CompletedAt.Before(e1.StartedAt) {
		h.fatalf("exec 1 times: started %v completed %v", e1.StartedAt, e1.CompletedAt)
	}
	h.equal(e2.Status, duroxide.StatusRunning, "exec 2 status")
	h.equal(e2.Output, "", "exec 2 output")
	h.equal(e2.EventCount, 2, "exec 2 event count")
	if e2.StartedAt.IsZero() || !e2.CompletedAt.IsZero() {
		h.fatalf("exec 2 times: started %v completed %v (want zero while running)", e2.StartedAt, e2.CompletedAt)
	}
	if e2.StartedAt.Before(e1.StartedAt) {
		h.fatalf("exec 2 started %v before exec 1 %v", e2.StartedAt, e1.StartedAt)
	}
	o.completeNow("end")
	ex = h.executions("i")
	h.equal(ex[1].Status, duroxide.StatusCompleted, "exec 2 status after completion")
	h.equal(ex[1].Output, "end", "exec 2 output")
	if ex[1].CompletedAt.IsZero() {
		h.fatalf("completed exec 2 has no CompletedAt")
	}
}

func mgmtStatsInstances(h *H) {
	h.completed("c1", "c2", "c3")
	h.orch("r1").create()
	h.orch("r2").create()
	h.orch("f1").create().failNow("x")
	can := h.orch("can").create()
	can.continueAsNew("n") // counted by its current execution: Running
	st := h.stats()
	h.equal(st.Instances[duroxide.StatusCompleted], 3, "Completed")
	h.equal(st.Instances[duroxide.StatusRunning], 3, "Running")
	h.equal(st.Instances[duroxide.StatusFailed], 1, "Failed")
	h.equal(st.Instances[duroxide.StatusContinuedAsNew], 0, "ContinuedAsNew")
	h.del(false, "c1")
	h.equal(h.stats().Instances[duroxide.StatusCompleted], 2, "Completed after delete")
}

func mgmtStatsQueues(h *H) {
	h.enqueue(raised("a", "1", ""))
	h.enqueue(raised("b", "2", ""))
	h.enqueueDelayed(raised("c", "3", ""), time.Hour)
	h.enqueueWork(activityItem("a", 2, "A"))
	h.enqueueWork(activityItem("a", 3, "B"))
	st := h.stats()
	h.equal(st.OrchestratorQueue, 3, "OrchestratorQueue (visible and pending)")
	h.equal(st.WorkerQueue, 2, "WorkerQueue")
	it := h.mustFetch("a")
	h.ack(it.LockToken, emptyCommit(it))
	l := h.mustFetchWork()
	h.ackWork(l.LockToken, nil)
	st = h.stats()
	h.equal(st.OrchestratorQueue, 2, "OrchestratorQueue after an ack")
	h.equal(st.WorkerQueue, 1, "WorkerQueue after an ack")
}

// sameInfo compares two InstanceInfos, times by instant.
func (h *H) sameInfo(got, want duroxide.InstanceInfo, what string) {
	h.t.Helper()
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		h.fatalf("%s: times differ: created %v/%v updated %v/%v", what, got.CreatedAt, want.CreatedAt, got.UpdatedAt, want.UpdatedAt)
	}
	got.CreatedAt, got.UpdatedAt, want.CreatedAt, want.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	h.sameJSON(got, want, what)
}

// A cursor keeps its place when instances are created or deleted between
// pages: no instance is skipped or repeated.
func mgmtCursorStable(h *H) {
	var all []string
	for i := range 6 {
		id := fmt.Sprintf("p%d", i)
		h.orch(id).create().completeNow("ok")
		all = append(all, id)
	}
	first := h.list(duroxide.ListFilter{Limit: 2})
	if len(first.Instances) != 2 || first.NextCursor == "" {
		h.fatalf("first page: %d instances, cursor %q", len(first.Instances), first.NextCursor)
	}
	time.Sleep(15 * time.Millisecond) // strictly newer than everything listed
	h.orch("new1").create()
	h.orch("new2").create()
	h.del(false, first.Instances[0].Instance) // already seen
	rest := h.listAll(duroxide.ListFilter{Limit: 2, Cursor: first.NextCursor})
	got := append([]string{first.Instances[0].Instance, first.Instances[1].Instance}, rest...)
	h.equal(sortedIDs(got), sortedIDs(all), "instances seen across pages")
}
