package providertest

import (
	"time"

	"github.com/toygres/toygres/duroxide"
)

// orch models one orchestration instance the way a runtime drives it: it
// knows the current execution and the last committed event id, and builds
// realistic turns on top of them.
type orch struct {
	h       *H
	id      string
	name    string
	version string
	parent  string
	exec    int64
	last    int64 // last event id committed in exec
}

// orch returns a model of a root instance named "Orch" version "1.0.0" in
// execution 1, with nothing stored yet.
func (h *H) orch(id string) *orch {
	return &orch{h: h, id: id, name: "Orch", version: "1.0.0", exec: 1}
}

// startItem is the StartOrchestration message a client enqueues.
func (o *orch) startItem() duroxide.WorkItem {
	it := duroxide.WorkItem{
		Kind:        duroxide.WorkStartOrchestration,
		Instance:    o.id,
		ExecutionID: 1,
		Name:        o.name,
		Version:     o.version,
		Input:       `{"start":"` + o.id + `"}`,
	}
	if o.parent != "" {
		it.ParentInstance = o.parent
		it.ParentExecutionID = 1
		it.ParentID = 2
	}
	return it
}

// start enqueues the start message (the client's StartOrchestration).
func (o *orch) start() {
	o.h.t.Helper()
	o.h.enqueue(o.startItem())
}

// poke enqueues an external event so that the instance has something to fetch.
func (o *orch) poke() {
	o.h.t.Helper()
	o.h.enqueue(raised(o.id, "poke", ""))
}

func raised(instance, name, data string) duroxide.WorkItem {
	return duroxide.WorkItem{Kind: duroxide.WorkExternalRaised, Instance: instance, Name: name, Data: data}
}

// turn is a TurnCommit under construction for o.
type turn struct {
	o    *orch
	c    duroxide.TurnCommit
	next int64
}

// turn starts a Running turn of o's current execution.
func (o *orch) turn() *turn {
	return &turn{o: o, next: o.last + 1, c: duroxide.TurnCommit{
		ExecutionID:          o.exec,
		OrchestrationName:    o.name,
		OrchestrationVersion: o.version,
		ParentInstance:       o.parent,
		Status:               duroxide.StatusRunning,
	}}
}

// ev appends an event with the next event id.
func (tn *turn) ev(e duroxide.Event) *turn {
	e.EventID = tn.next
	tn.next++
	if e.TimestampMs == 0 {
		e.TimestampMs = time.Now().UnixMilli()
	}
	tn.c.HistoryDelta = append(tn.c.HistoryDelta, e)
	return tn
}

// lastID is the event id of the most recently added event.
func (tn *turn) lastID() int64 { return tn.next - 1 }

func (tn *turn) started() *turn {
	o := tn.o
	e := duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: o.name, Version: o.version, Input: `{"start":"` + o.id + `"}`}
	if o.parent != "" {
		e.ParentInstance, e.ParentExecutionID, e.ParentID = o.parent, 1, 2
	}
	return tn.ev(e)
}

// activity schedules an activity: ActivityScheduled plus its worker item.
func (tn *turn) activity(name string) *turn {
	tn.ev(duroxide.Event{Kind: duroxide.EventActivityScheduled, Name: name, Input: `"in-` + name + `"`})
	tn.c.WorkerItems = append(tn.c.WorkerItems, duroxide.WorkItem{
		Kind:              duroxide.WorkActivityExecute,
		Instance:          tn.o.id,
		ExecutionID:       tn.o.exec,
		ID:                tn.lastID(),
		Name:              name,
		Input:             `"in-` + name + `"`,
		OrchestrationName: tn.o.name,
	})
	return tn
}

// activityDone records an ActivityCompleted for schedule event src.
func (tn *turn) activityDone(src int64, result string) *turn {
	return tn.ev(duroxide.Event{Kind: duroxide.EventActivityCompleted, SourceEventID: src, Result: result})
}

// timer creates a durable timer: TimerCreated plus a TimerFired message
// visible at fireAt.
func (tn *turn) timer(fireAt time.Time) *turn {
	ms := fireAt.UnixMilli()
	tn.ev(duroxide.Event{Kind: duroxide.EventTimerCreated, FireAtMs: ms})
	tn.c.OrchestratorItems = append(tn.c.OrchestratorItems, duroxide.WorkItem{
		Kind: duroxide.WorkTimerFired, Instance: tn.o.id, ExecutionID: tn.o.exec, ID: tn.lastID(), FireAtMs: ms,
	})
	return tn
}

// send adds an orchestrator-queue message.
func (tn *turn) send(items ...duroxide.WorkItem) *turn {
	tn.c.OrchestratorItems = append(tn.c.OrchestratorItems, items...)
	return tn
}

// cancel cancels activities of o's current execution by schedule id.
func (tn *turn) cancel(ids ...int64) *turn {
	for _, id := range ids {
		tn.ev(duroxide.Event{Kind: duroxide.EventActivityCancelRequested, SourceEventID: id, Reason: "dropped"})
		tn.c.CancelledActivities = append(tn.c.CancelledActivities, duroxide.ActivityRef{Instance: tn.o.id, ExecutionID: tn.o.exec, ActivityID: id})
	}
	return tn
}

// subOrch schedules a child instance: SubOrchestrationScheduled plus the
// child's StartOrchestration message. It returns the child's model.
func (tn *turn) subOrch(childID string) *orch {
	tn.ev(duroxide.Event{Kind: duroxide.EventSubOrchestrationScheduled, Name: "Child", Instance: childID})
	child := &orch{h: tn.o.h, id: childID, name: "Child", version: "1.0.0", parent: tn.o.id, exec: 1}
	st := child.startItem()
	st.ParentExecutionID, st.ParentID = tn.o.exec, tn.lastID()
	tn.c.OrchestratorItems = append(tn.c.OrchestratorItems, st)
	return child
}

func (tn *turn) customStatus(s *string) *turn {
	tn.ev(duroxide.Event{Kind: duroxide.EventCustomStatusUpdated, CustomStatus: s})
	tn.c.SetCustomStatus = true
	tn.c.CustomStatus = s
	return tn
}

func (tn *turn) complete(output string) *turn {
	tn.ev(duroxide.Event{Kind: duroxide.EventOrchestrationCompleted, Result: output})
	tn.c.Status, tn.c.Output = duroxide.StatusCompleted, output
	return tn
}

func (tn *turn) fail(msg string) *turn {
	tn.ev(duroxide.Event{Kind: duroxide.EventOrchestrationFailed, Error: &duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: msg}})
	tn.c.Status, tn.c.Output = duroxide.StatusFailed, msg
	return tn
}

func (tn *turn) cancelled(reason string) *turn {
	tn.ev(duroxide.Event{Kind: duroxide.EventOrchestrationCancelRequested, Reason: reason})
	tn.ev(duroxide.Event{Kind: duroxide.EventOrchestrationFailed, Error: &duroxide.ErrorDetails{Category: duroxide.CategoryCancelled, Message: reason}})
	tn.c.Status, tn.c.Output = duroxide.StatusCancelled, "canceled: "+reason
	return tn
}

// continueAsNew ends the execution with ContinuedAsNew and enqueues the
// ContinueAsNew message that starts the next one.
func (tn *turn) continueAsNew(input string) *turn {
	tn.ev(duroxide.Event{Kind: duroxide.EventOrchestrationContinuedAsNew, Input: input})
	tn.c.Status, tn.c.Output = duroxide.StatusContinuedAsNew, input
	tn.c.OrchestratorItems = append(tn.c.OrchestratorItems, duroxide.WorkItem{
		Kind: duroxide.WorkContinueAsNew, Instance: tn.o.id, ExecutionID: tn.o.exec,
		Name: tn.o.name, Version: tn.o.version, Input: input,
	})
	return tn
}

func (tn *turn) commit() *duroxide.TurnCommit {
	c := tn.c
	return &c
}

// committed records that the turn was acked.
func (tn *turn) committed() {
	if tn.next-1 > tn.o.last {
		tn.o.last = tn.next - 1
	}
}

// run fetches o's next batch (long lock), acks it with tn and returns the
// fetched item.
func (o *orch) run(tn *turn) *duroxide.OrchestrationItem {
	o.h.t.Helper()
	it := o.h.mustFetch(o.id)
	o.h.ack(it.LockToken, tn.commit())
	tn.committed()
	return it
}

// step pokes o and runs tn.
func (o *orch) step(tn *turn) *duroxide.OrchestrationItem {
	o.h.t.Helper()
	o.poke()
	return o.run(tn)
}

// create starts o and runs its first turn (OrchestrationStarted only).
func (o *orch) create() *orch {
	o.h.t.Helper()
	o.start()
	o.run(o.turn().started())
	return o
}

// createWithActivities starts o with a first turn that schedules n
// activities; it returns their schedule ids.
func (o *orch) createWithActivities(n int) []int64 {
	o.h.t.Helper()
	o.start()
	tn := o.turn().started()
	var ids []int64
	for i := range n {
		tn.activity("Act" + string(rune('A'+i)))
		ids = append(ids, tn.lastID())
	}
	o.run(tn)
	return ids
}

func (o *orch) completeNow(output string) {
	o.h.t.Helper()
	o.step(o.turn().complete(output))
}

func (o *orch) failNow(msg string) {
	o.h.t.Helper()
	o.step(o.turn().fail(msg))
}

// continueAsNew runs the ContinuedAsNew turn of the current execution and
// then the first turn of the next one.
func (o *orch) continueAsNew(input string) {
	o.h.t.Helper()
	o.step(o.turn().continueAsNew(input))
	it := o.h.mustFetch(o.id)
	if len(it.Messages) != 1 || it.Messages[0].Kind != duroxide.WorkContinueAsNew {
		o.h.fatalf("after continue-as-new: batch %s, want one ContinueAsNew", msgKinds(it.Messages))
	}
	o.exec++
	o.last = 0
	tn := o.turn()
	tn.ev(duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: o.name, Version: o.version, Input: input})
	o.h.ack(it.LockToken, tn.commit())
	tn.committed()
}

// spawn runs a turn of o that schedules a sub-orchestration childID, then the
// child's first turn, and returns the child's model.
func (o *orch) spawn(childID string) *orch {
	o.h.t.Helper()
	tn := o.turn()
	child := tn.subOrch(childID)
	o.step(tn)
	child.run(child.turn().started())
	return child
}

// completion is the worker's ActivityCompleted for a leased activity.
func completion(item duroxide.WorkItem, result string) *duroxide.WorkItem {
	return &duroxide.WorkItem{
		Kind:        duroxide.WorkActivityCompleted,
		Instance:    item.Instance,
		ExecutionID: item.ExecutionID,
		ID:          item.ID,
		Result:      result,
	}
}

// activityItem is a standalone worker item (as EnqueueWorkItem takes it).
func activityItem(instance string, id int64, name string) duroxide.WorkItem {
	return duroxide.WorkItem{
		Kind: duroxide.WorkActivityExecute, Instance: instance, ExecutionID: 1, ID: id,
		Name: name, Input: `"` + name + `"`, OrchestrationName: "Orch",
	}
}

// newInstanceCommit is a hand-made first turn for tests that need a commit
// outside the orch model.
func newInstanceCommit(events ...duroxide.Event) *duroxide.TurnCommit {
	return &duroxide.TurnCommit{
		ExecutionID: 1, OrchestrationName: "Orch", OrchestrationVersion: "1.0.0",
		Status: duroxide.StatusRunning, HistoryDelta: events,
	}
}

func startedEvent(id int64) duroxide.Event {
	return duroxide.Event{EventID: id, Kind: duroxide.EventOrchestrationStarted, Name: "Orch", Version: "1.0.0", TimestampMs: time.Now().UnixMilli()}
}
