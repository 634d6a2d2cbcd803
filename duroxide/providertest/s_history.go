package providertest

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("history", map[string]func(h *H){
		"append_only_across_turns":      hiAppendOnly,
		"read_in_event_id_order":        hiOrder,
		"empty_delta_ack":               hiEmptyDelta,
		"event_ids_stored_verbatim":     hiVerbatimIDs,
		"event_round_trip":              hiRoundTrip,
		"large_payload":                 hiLargePayload,
		"last_event_id_tracks_history":  hiLastEventID,
		"discard_commit_consumes_batch": hiDiscard,
	})
}

func hiAppendOnly(h *H) {
	o := h.orch("i")
	o.createWithActivities(1)
	first := h.history("i", 1)
	o.step(o.turn().activityDone(2, "r").activity("B"))
	o.step(o.turn().complete("ok"))
	all := h.historyLen("i", 1, 5)
	h.sameJSON(all[:2], first, "earlier events unchanged by later turns")
	h.equal(kinds(all), "1:OrchestrationStarted 2:ActivityScheduled 3:ActivityCompleted 4:ActivityScheduled 5:OrchestrationCompleted", "history")
}

// ReadHistory orders by event id, not by insertion order.
func hiOrder(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	c := newInstanceCommit(
		duroxide.Event{EventID: 3, Kind: duroxide.EventTimerCreated, FireAtMs: 3},
		startedEvent(1),
		duroxide.Event{EventID: 2, Kind: duroxide.EventExternalSubscribed, Name: "x"},
	)
	h.ack(it.LockToken, c)
	o.poke()
	it = h.mustFetch("i")
	c = newInstanceCommit(
		duroxide.Event{EventID: 12, Kind: duroxide.EventExternalEvent, Name: "b"},
		duroxide.Event{EventID: 10, Kind: duroxide.EventExternalEvent, Name: "a"},
	)
	h.ack(it.LockToken, c)
	h.equal(kinds(h.history("i", 1)), "1:OrchestrationStarted 2:ExternalSubscribed 3:TimerCreated 10:ExternalEvent 12:ExternalEvent", "history order")
}

func hiEmptyDelta(h *H) {
	o := h.orch("i").create()
	o.poke()
	o.poke()
	it := h.mustFetch("i")
	h.equal(len(it.Messages), 2, "batch")
	h.ack(it.LockToken, o.turn().commit())
	h.historyLen("i", 1, 1)
	h.noFetch("batch consumed by an empty ack")
	h.equal(h.info("i").Status, duroxide.StatusRunning, "status")
}

// The store never assigns or renumbers event ids.
func hiVerbatimIDs(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	h.ack(it.LockToken, newInstanceCommit(startedEvent(1), duroxide.Event{EventID: 5, Kind: duroxide.EventTimerCreated, FireAtMs: 9}, duroxide.Event{EventID: 99999, Kind: duroxide.EventSystemCall, Name: "s"}))
	h.equal(kinds(h.history("i", 1)), "1:OrchestrationStarted 5:TimerCreated 99999:SystemCall", "history")
	o.poke()
	h.equal(h.mustFetch("i").LastEventID, 99999, "LastEventID")
}

// Every field of an Event survives storage verbatim.
func hiRoundTrip(h *H) {
	evs := []duroxide.Event{
		{EventID: 1, Kind: duroxide.EventOrchestrationStarted, TimestampMs: 1700000000123, Name: "Orch", Version: "1.0.0",
			Input: `{"a":[1,2,{"b":null}]}`, ParentInstance: "p", ParentExecutionID: 2, ParentID: 9,
			CustomStatus: ptr("carried"), CarryForward: []duroxide.ExternalArrival{{Name: "e", Data: "d"}, {Name: "f"}}},
		{EventID: 2, Kind: duroxide.EventActivityFailed, SourceEventID: 1, TimestampMs: 1,
			Error: &duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: "boom \u00e9\U0001F600", Type: "*main.MyErr",
				Payload: json.RawMessage(`{"code":42,"list":["x"]}`), NonRetryable: true, Timeout: true}},
		{EventID: 3, Kind: duroxide.EventCustomStatusUpdated, CustomStatus: ptr("")},
		{EventID: 4, Kind: duroxide.EventCustomStatusUpdated},
		{EventID: 5, Kind: duroxide.EventSubOrchestrationScheduled, Name: "Child", Instance: "p::sub::5", Input: "\"in\""},
		{EventID: 6, Kind: duroxide.EventExternalEvent, Name: "ev", Data: "line1\nline2\t\"quoted\" \\"},
		{EventID: 7, Kind: duroxide.EventOrchestrationCancelRequested, Reason: "r"},
		{EventID: 8, Kind: duroxide.EventTimerFired, SourceEventID: 3, FireAtMs: 1700000000999},
		{EventID: 9, Kind: duroxide.EventSystemCall, Name: "guid", Result: "0f0e"},
		{EventID: 10, Kind: duroxide.EventKind("FutureKind"), Name: "unknown kinds are stored too"},
	}
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	h.ack(it.LockToken, newInstanceCommit(evs...))
	h.sameJSON(h.history("i", 1), evs, "history round trip")
	h.sameJSON(h.history("i", 0), evs, "history round trip (latest)")
}

func hiLargePayload(h *H) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	e := startedEvent(1)
	e.Input = big
	h.ack(it.LockToken, newInstanceCommit(e))
	got := h.historyLen("i", 1, 1)
	if got[0].Input != big {
		h.fatalf("1 MiB input not preserved (got %d bytes)", len(got[0].Input))
	}
	w := activityItem("i", 2, "Big")
	w.Input = big
	h.enqueueWork(w)
	if l := h.mustFetchWork(); l.Item.Input != big {
		h.fatalf("1 MiB worker input not preserved (got %d bytes)", len(l.Item.Input))
	}
}

func hiLastEventID(h *H) {
	o := h.orch("i").create()
	for want := int64(2); want <= 4; want++ {
		o.step(o.turn().ev(duroxide.Event{Kind: duroxide.EventExternalEvent, Name: "e", TimestampMs: time.Now().UnixMilli()}))
		o.poke()
		it := h.mustFetch("i")
		h.equal(it.LastEventID, want, "LastEventID")
		h.abandon(it.LockToken, 0, false)
		h.drainOrch()
	}
}

// A zero TurnCommit (the runtime's discard of late or stray messages)
// consumes the batch and releases the lock without touching the instance,
// running or terminal.
func hiDiscard(h *H) {
	o := h.orch("run")
	o.createWithActivities(1)
	o.step(o.turn().customStatus(ptr("s")))
	o.poke()
	it := h.mustFetch("run")
	h.ack(it.LockToken, &duroxide.TurnCommit{})
	h.noFetch("discarded batch")
	inf := h.info("run")
	h.equal(inf.Status, duroxide.StatusRunning, "status after discard")
	h.equal(inf.ExecutionID, 1, "execution after discard")
	h.equal(inf.CustomStatusVersion, 1, "custom status version after discard")
	h.historyLen("run", 1, 3)
	o.poke()
	h.equal(h.mustFetch("run").LastEventID, 3, "LastEventID after discard")

	d := h.orch("done").create()
	d.continueAsNew("n")
	d.completeNow("final")
	h.enqueue(duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: "done", ExecutionID: 1, ID: 2, Result: "late"})
	it = h.mustFetch("done")
	h.ack(it.LockToken, &duroxide.TurnCommit{})
	inf = h.info("done")
	h.equal(inf.Status, duroxide.StatusCompleted, "terminal status after discard")
	h.equal(inf.Output, "final", "output after discard")
	h.equal(inf.ExecutionID, 2, "execution after discard")
	h.historyLen("done", 2, 2)
	h.noFetch("discarded late completion")
}
