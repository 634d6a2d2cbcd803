package providertest

import (
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("instance_creation", map[string]func(h *H){
		"not_created_on_enqueue":                icNotOnEnqueue,
		"created_on_first_ack":                  icCreatedOnAck,
		"fetch_reports_metadata_after_ack":      icFetchMetadata,
		"abandoned_first_turn_creates_nothing":  icAbandonCreatesNothing,
		"version_updated_by_later_ack":          icVersionUpdated,
		"sub_orchestration_created_with_parent": icSubOrch,
		"not_created_by_worker_completion":      icNotByCompletion,
		"discard_commit_creates_nothing":        icDiscardCreatesNothing,
	})
}

func icNotOnEnqueue(h *H) {
	o := h.orch("new")
	o.start()
	h.enqueue(raised("new", "early", ""))
	h.notFound("new")
	h.historyLen("new", 0, 0)
	if p := h.list(duroxide.ListFilter{}); len(p.Instances) != 0 {
		h.fatalf("ListInstances after enqueue: %+v", p.Instances)
	}
	for s, n := range h.stats().Instances {
		if n != 0 {
			h.fatalf("Stats.Instances[%s] = %d after enqueue only", s, n)
		}
	}
	it := h.mustFetch("new")
	if it.Exists {
		h.fatalf("first fetch of a never-acked instance reports Exists")
	}
	h.equal(it.LastEventID, 0, "LastEventID before first ack")
	h.equal(msgKinds(it.Messages), "StartOrchestration(Orch) ExternalRaised(early)", "batch")
	h.sameJSON(it.Messages[0], o.startItem(), "start message")
	h.notFound("new")
}

func icCreatedOnAck(h *H) {
	before := time.Now().Add(-time.Second)
	o := h.orch("new")
	o.name, o.version = "InfoOrch", "2.0.0"
	o.create()
	after := time.Now().Add(time.Second)
	inf := h.info("new")
	h.equal(inf.OrchestrationName, "InfoOrch", "OrchestrationName")
	h.equal(inf.OrchestrationVersion, "2.0.0", "OrchestrationVersion")
	h.equal(inf.ExecutionID, 1, "ExecutionID")
	h.equal(inf.Status, duroxide.StatusRunning, "Status")
	h.equal(inf.Output, "", "Output")
	h.equal(inf.ParentInstance, "", "ParentInstance")
	if inf.CreatedAt.Before(before) || inf.CreatedAt.After(after) {
		h.fatalf("CreatedAt %v not within the test's time window", inf.CreatedAt)
	}
	if inf.UpdatedAt.Before(inf.CreatedAt.Add(-time.Millisecond)) {
		h.fatalf("UpdatedAt %v before CreatedAt %v", inf.UpdatedAt, inf.CreatedAt)
	}
	ex := h.executions("new")
	if len(ex) != 1 || ex[0].ExecutionID != 1 || ex[0].Status != duroxide.StatusRunning || ex[0].EventCount != 1 {
		h.fatalf("ListExecutions: %+v", ex)
	}
}

func icFetchMetadata(h *H) {
	o := h.orch("i")
	o.name, o.version = "Meta", "3.0.0"
	o.createWithActivities(2) // events 1..3
	o.poke()
	it := h.mustFetch("i")
	if !it.Exists {
		h.fatalf("fetch after first ack: Exists=false")
	}
	h.equal(it.OrchestrationName, "Meta", "OrchestrationName")
	h.equal(it.OrchestrationVersion, "3.0.0", "OrchestrationVersion")
	h.equal(it.ExecutionID, 1, "ExecutionID")
	h.equal(it.ExecutionStatus, duroxide.StatusRunning, "ExecutionStatus")
	h.equal(it.LastEventID, 3, "LastEventID")
	h.equal(it.AttemptCount, 1, "AttemptCount")
	h.equal(it.CreatedAtMs, h.info("i").CreatedAt.UnixMilli(), "CreatedAtMs")
}

func icAbandonCreatesNothing(h *H) {
	h.orch("i").start()
	it := h.mustFetch("i")
	h.abandon(it.LockToken, 0, false)
	h.notFound("i")
	again := h.mustFetch("i")
	if again.Exists {
		h.fatalf("abandoned first turn: refetch reports Exists")
	}
}

// Metadata is inserted by the first ack and updated by later ones (a
// continue-as-new may move an instance to a new version).
func icVersionUpdated(h *H) {
	o := h.orch("i").create()
	h.equal(h.info("i").OrchestrationVersion, "1.0.0", "version after first ack")
	o.step(o.turn().continueAsNew("n"))
	it := h.mustFetch("i")
	o.exec, o.last, o.version = 2, 0, "2.0.0"
	h.ack(it.LockToken, o.turn().started().commit())
	h.equal(h.info("i").OrchestrationVersion, "2.0.0", "version after upgrade")
	o.poke()
	h.equal(h.mustFetch("i").OrchestrationVersion, "2.0.0", "fetched version after upgrade")
}

func icSubOrch(h *H) {
	p := h.orch("parent").create()
	tn := p.turn()
	child := tn.subOrch("parent::child")
	child.version = "1.5.0"
	p.step(tn)
	h.notFound("parent::child")
	it := h.mustFetch("parent::child")
	if it.Exists {
		h.fatalf("child reports Exists before its first ack")
	}
	h.equal(it.Messages[0].ParentInstance, "parent", "start message ParentInstance")
	h.ack(it.LockToken, child.turn().started().commit())
	inf := h.info("parent::child")
	h.equal(inf.ParentInstance, "parent", "ParentInstance")
	h.equal(inf.OrchestrationName, "Child", "OrchestrationName")
	h.equal(inf.OrchestrationVersion, "1.5.0", "OrchestrationVersion")
	ids, err := h.s.ListChildren(h.ctx, "parent")
	h.check(err, "ListChildren")
	h.equal(ids, []string{"parent::child"}, "children of parent")
}

func icNotByCompletion(h *H) {
	h.enqueueWork(activityItem("ghost", 2, "A"))
	l := h.mustFetchWork()
	h.ackWork(l.LockToken, completion(l.Item, "r"))
	h.notFound("ghost")
	h.enqueueDelayed(raised("ghost2", "later", ""), time.Hour)
	h.notFound("ghost2")
}

// Stray messages for an instance that does not exist are discarded with a
// zero TurnCommit; that creates nothing and frees the instance id.
func icDiscardCreatesNothing(h *H) {
	h.enqueue(duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: "ghost", ExecutionID: 1, ID: 2})
	h.enqueue(raised("ghost", "e", ""))
	it := h.mustFetch("ghost")
	h.equal(len(it.Messages), 2, "stray batch")
	h.ack(it.LockToken, &duroxide.TurnCommit{})
	h.notFound("ghost")
	h.historyLen("ghost", 0, 0)
	h.noFetch("discarded batch")
	if n := len(h.list(duroxide.ListFilter{}).Instances); n != 0 {
		h.fatalf("discard created %d instance(s)", n)
	}
	// The id is free and unlocked: a real start creates it normally.
	h.orch("ghost").create()
	h.equal(h.info("ghost").Status, duroxide.StatusRunning, "status after a real start")
}
