package providertest

import (
	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("custom_status", map[string]func(h *H){
		"set":                         csSet,
		"set_on_creating_ack":         csSetOnCreate,
		"clear":                       csClear,
		"unchanged_without_set":       csUnchanged,
		"not_derived_from_history":    csNotFromHistory,
		"version_increments":          csVersionIncrements,
		"poll_reports_only_newer":     csPoll,
		"unknown_instance":            csUnknown,
		"default_on_new_instance":     csDefault,
		"kept_across_continue_as_new": csAcrossCAN,
		"independent_per_instance":    csPerInstance,
	})
}

func (h *H) wantCustom(instance string, want *string, version int64) {
	h.t.Helper()
	s, v, ch := h.customStatus(instance, version-1)
	if !ch {
		h.fatalf("GetCustomStatus(%q, %d): changed=false, want true", instance, version-1)
	}
	h.equal(v, version, "custom status version")
	h.sameJSON(s, want, "custom status")
	inf := h.info(instance)
	h.equal(inf.CustomStatusVersion, version, "InstanceInfo.CustomStatusVersion")
	h.sameJSON(inf.CustomStatus, want, "InstanceInfo.CustomStatus")
}

func csSet(h *H) {
	o := h.orch("i").create()
	o.step(o.turn().customStatus(ptr("progress")))
	h.wantCustom("i", ptr("progress"), 1)
}

func csSetOnCreate(h *H) {
	o := h.orch("i")
	o.start()
	o.run(o.turn().started().customStatus(ptr(`{"step":1}`)))
	h.wantCustom("i", ptr(`{"step":1}`), 1)
}

func csClear(h *H) {
	o := h.orch("i").create()
	o.step(o.turn().customStatus(ptr("progress")))
	o.step(o.turn().customStatus(nil))
	h.wantCustom("i", nil, 2)
}

func csUnchanged(h *H) {
	o := h.orch("i").create()
	o.step(o.turn().customStatus(ptr("kept")))
	o.step(o.turn().activity("A"))
	o.completeNow("done")
	h.wantCustom("i", ptr("kept"), 1)
	if _, _, ch := h.customStatus("i", 1); ch {
		h.fatalf("GetCustomStatus(i, 1) reports a change after turns that did not set it")
	}
}

// The store does not interpret history: a CustomStatusUpdated event without
// SetCustomStatus changes nothing, and SetCustomStatus applies even when the
// delta carries no such event.
func csNotFromHistory(h *H) {
	o := h.orch("i").create()
	o.step(o.turn().ev(duroxide.Event{Kind: duroxide.EventCustomStatusUpdated, CustomStatus: ptr("from-event")}))
	if s, v, ch := h.customStatus("i", 0); ch {
		h.fatalf("custom status derived from history: %v version %d", s, v)
	}
	tn := o.turn().ev(duroxide.Event{Kind: duroxide.EventExternalEvent, Name: "e"})
	tn.c.SetCustomStatus, tn.c.CustomStatus = true, ptr("explicit")
	o.step(tn)
	h.wantCustom("i", ptr("explicit"), 1)
}

func csVersionIncrements(h *H) {
	o := h.orch("i").create()
	o.step(o.turn().customStatus(ptr("a")))
	h.wantCustom("i", ptr("a"), 1)
	o.step(o.turn().customStatus(ptr("a"))) // same value still counts
	h.wantCustom("i", ptr("a"), 2)
	o.step(o.turn().customStatus(nil))
	h.wantCustom("i", nil, 3)
	o.step(o.turn().customStatus(ptr("")))
	h.wantCustom("i", ptr(""), 4)
}

func csPoll(h *H) {
	o := h.orch("i").create()
	o.step(o.turn().customStatus(ptr("p")))
	if _, _, ch := h.customStatus("i", 1); ch {
		h.fatalf("GetCustomStatus(i, 1): changed at version 1")
	}
	if _, _, ch := h.customStatus("i", 5); ch {
		h.fatalf("GetCustomStatus(i, 5): changed at version 1")
	}
	s, v, ch := h.customStatus("i", 0)
	if !ch || v != 1 || s == nil || *s != "p" {
		h.fatalf("GetCustomStatus(i, 0) = %v, %d, %v; want p, 1, true", s, v, ch)
	}
}

func csUnknown(h *H) {
	_, _, ch := h.customStatus("nope", 0)
	if ch {
		h.fatalf("GetCustomStatus of unknown instance: changed=true")
	}
	// An enqueued but never acked start does not create a status either.
	h.orch("pending").start()
	if _, _, ch := h.customStatus("pending", 0); ch {
		h.fatalf("GetCustomStatus of a pending instance: changed=true")
	}
}

func csDefault(h *H) {
	h.orch("i").create()
	if s, v, ch := h.customStatus("i", 0); ch || s != nil {
		h.fatalf("new instance: GetCustomStatus(i, 0) = %v, %d, %v; want unchanged", s, v, ch)
	}
	inf := h.info("i")
	h.equal(inf.CustomStatusVersion, 0, "InstanceInfo.CustomStatusVersion")
	if inf.CustomStatus != nil {
		h.fatalf("new instance has custom status %q", *inf.CustomStatus)
	}
}

// Custom status belongs to the instance; a continue-as-new that does not set
// it keeps it.
func csAcrossCAN(h *H) {
	o := h.orch("i").create()
	o.step(o.turn().customStatus(ptr("gen1")))
	o.continueAsNew("n")
	h.wantCustom("i", ptr("gen1"), 1)
	o.step(o.turn().customStatus(ptr("gen2")))
	h.wantCustom("i", ptr("gen2"), 2)
}

func csPerInstance(h *H) {
	a := h.orch("a").create()
	b := h.orch("b").create()
	a.step(a.turn().customStatus(ptr("A1")))
	a.step(a.turn().customStatus(ptr("A2")))
	b.step(b.turn().customStatus(ptr("B1")))
	h.wantCustom("a", ptr("A2"), 2)
	h.wantCustom("b", ptr("B1"), 1)
}
