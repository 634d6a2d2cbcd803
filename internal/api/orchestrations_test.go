package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/internal/orchestrations"
)

// startActor starts a real health actor for a recorded (creating, so never
// probed) instance with a long interval: it stays Running until it is sent
// InstanceDeleted or cancelled.
func startActor(t *testing.T, e *env, name string) string {
	t.Helper()
	internal := fakeInstance(t, e, name, "", false)
	id := orchestrations.ActorID(internal)
	if err := e.app.Orchestrations().Start(context.Background(), id, orchestrations.InstanceActor,
		orchestrations.ActorInput{InternalName: internal, Interval: time.Hour}); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) orchestration(id, query, tok string) OrchestrationDetail {
	e.t.Helper()
	r := e.do("GET", "/api/orchestrations/"+url.PathEscape(id)+query, nil, tok)
	expect(e.t, r, http.StatusOK)
	var d OrchestrationDetail
	r.json(e.t, &d)
	return d
}

func (e *env) waitStatus(id, tok, status string) OrchestrationDetail {
	e.t.Helper()
	var d OrchestrationDetail
	eventually(e.t, time.Minute, id+" "+status, func() (bool, string) {
		r := e.do("GET", "/api/orchestrations/"+url.PathEscape(id), nil, tok)
		if r.status != http.StatusOK {
			return false, r.String()
		}
		r.json(e.t, &d)
		return d.Status == status, d.Status
	})
	return d
}

// waitStarted waits until the actor has run its first turn (it waits on
// its timer then).
func (e *env) waitStarted(id, tok string) {
	e.t.Helper()
	eventually(e.t, time.Minute, id+" started", func() (bool, string) {
		r := e.do("GET", "/api/orchestrations/"+url.PathEscape(id)+"?history=full", nil, tok)
		if r.status != http.StatusOK {
			return false, r.String()
		}
		var d OrchestrationDetail
		r.json(e.t, &d)
		if d.Status != "Running" || len(d.Executions) == 0 {
			return false, d.Status
		}
		for _, ev := range d.Executions[len(d.Executions)-1].History {
			if ev.Kind == "TimerCreated" {
				return true, ""
			}
		}
		return false, "no timer yet"
	})
}

func TestOrchestrationOperations(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	base := uniq("orch")
	a := startActor(t, e, base+"-a")
	b := startActor(t, e, base+"-b")
	e.waitStarted(a, tok)
	e.waitStarted(b, tok)

	// List with filters and paging.
	prefix := "actor-" + base + "-"
	var page OrchestrationList
	e.do("GET", "/api/orchestrations?prefix="+prefix+"&status=running&name=instance-actor", nil, tok).json(t, &page)
	if len(page.Orchestrations) != 2 || page.NextCursor != "" {
		t.Fatalf("list: %+v", page)
	}
	e.do("GET", "/api/orchestrations?prefix="+prefix+"&limit=1", nil, tok).json(t, &page)
	// Newest first by the store's creation time (its first turn), which
	// need not follow the order of the two starts: the pages hold each once.
	if len(page.Orchestrations) != 1 || page.NextCursor == "" || (page.Orchestrations[0].ID != a && page.Orchestrations[0].ID != b) {
		t.Fatalf("page 1: %+v", page)
	}
	var page2 OrchestrationList
	e.do("GET", "/api/orchestrations?prefix="+prefix+"&limit=1&cursor="+url.QueryEscape(page.NextCursor), nil, tok).json(t, &page2)
	if len(page2.Orchestrations) != 1 || page2.NextCursor != "" ||
		page2.Orchestrations[0].ID == page.Orchestrations[0].ID || (page2.Orchestrations[0].ID != a && page2.Orchestrations[0].ID != b) {
		t.Fatalf("page 2: %+v", page2)
	}
	var none OrchestrationList
	e.do("GET", "/api/orchestrations?prefix="+prefix+"&status=Failed", nil, tok).json(t, &none)
	if len(none.Orchestrations) != 0 {
		t.Fatalf("status filter: %+v", none)
	}
	for _, q := range []string{"status=bogus", "limit=0", "limit=5000", "cursor=not-a-cursor"} {
		r := e.do("GET", "/api/orchestrations?"+q, nil, tok)
		expect(t, r, http.StatusBadRequest)
		r.errMsg(t)
	}

	// Detail: no history by default; history=full has readable events.
	d := e.orchestration(a, "", tok)
	if d.Name != orchestrations.InstanceActor || len(d.Executions) == 0 || d.Executions[0].History != nil || d.CreatedAt.IsZero() {
		t.Fatalf("detail: %+v", d)
	}
	d = e.orchestration(a, "?history=full", tok)
	h := d.Executions[0].History
	if len(h) == 0 || h[0].Kind != "OrchestrationStarted" || h[0].Timestamp == nil {
		t.Fatalf("history: %+v", h)
	}
	var in map[string]any
	if err := json.Unmarshal(h[0].Input, &in); err != nil || !strings.HasPrefix(in["internal_name"].(string), base+"-a-") {
		t.Fatalf("start input %s: %v", h[0].Input, err)
	}
	// The same history as steps (package historyview).
	steps := d.Executions[0].Steps
	if len(steps) == 0 || steps[0].Kind != "start" || len(steps[0].IDs) == 0 || steps[0].IDs[0] != h[0].EventID {
		t.Fatalf("steps: %+v", steps)
	}
	expect(t, e.do("GET", "/api/orchestrations/"+a+"?history=lots", nil, tok), http.StatusBadRequest)

	// raise-event: bad bodies, then the actor's stop signal.
	for _, body := range []string{`{}`, `{"event_name":"  "}`, `{"event_name":"x","bogus":1}`, `{"event_name":`} {
		expect(t, e.do("POST", "/api/orchestrations/"+a+"/raise-event", body, tok), http.StatusBadRequest)
	}
	r := e.do("POST", "/api/orchestrations/"+a+"/raise-event",
		RaiseEventRequest{EventName: orchestrations.EventInstanceDeleted, EventData: json.RawMessage(`{"why":"test"}`)}, tok)
	expect(t, r, http.StatusAccepted)
	var rr RaiseEventResponse
	r.json(t, &rr)
	if !rr.Raised || rr.ID != a {
		t.Fatalf("raise: %+v", rr)
	}
	done := e.waitStatus(a, tok, "Completed")
	if string(done.Output) != `"stopped"` {
		t.Fatalf("actor output %s", done.Output)
	}
	// Finished: cancel and raise-event conflict.
	expect(t, e.do("POST", "/api/orchestrations/"+a+"/cancel", nil, tok), http.StatusConflict)
	expect(t, e.do("POST", "/api/orchestrations/"+a+"/raise-event", RaiseEventRequest{EventName: "x"}, tok), http.StatusConflict)

	// Cancel b for real.
	r = e.do("POST", "/api/orchestrations/"+b+"/cancel", CancelRequest{Reason: "test cancel"}, tok)
	expect(t, r, http.StatusAccepted)
	cancelled := e.waitStatus(b, tok, "Cancelled")
	if cancelled.Error == nil || !strings.Contains(cancelled.Error.Message, "test cancel") {
		t.Fatalf("cancelled: %+v", cancelled.Error)
	}

	// Recreate a: same name and input, new id with a new 8-hex suffix.
	r = e.do("POST", "/api/orchestrations/"+a+"/recreate", nil, tok)
	expect(t, r, http.StatusAccepted)
	var rc RecreateResponse
	r.json(t, &rc)
	if rc.OriginalID != a || rc.NewID == a || len(rc.NewID) != len(a) || !strings.HasPrefix(rc.NewID, a[:len(a)-8]) ||
		rc.Name != orchestrations.InstanceActor {
		t.Fatalf("recreate: %+v", rc)
	}
	e.waitStarted(rc.NewID, tok)
	nd := e.orchestration(rc.NewID, "?history=1", tok)
	if string(nd.Executions[0].History[0].Input) != string(h[0].Input) {
		t.Fatalf("recreated input %s, want %s", nd.Executions[0].History[0].Input, h[0].Input)
	}
	// A running orchestration is not recreated; cancel it (cancel with no body).
	expect(t, e.do("POST", "/api/orchestrations/"+rc.NewID+"/recreate", nil, tok), http.StatusConflict)
	expect(t, e.do("POST", "/api/orchestrations/"+rc.NewID+"/cancel", nil, tok), http.StatusAccepted)
	e.waitStatus(rc.NewID, tok, "Cancelled")

	// Unknown ids.
	ghost := "actor-" + uniq("ghost") + "-deadbeef"
	expect(t, e.do("GET", "/api/orchestrations/"+ghost, nil, tok), http.StatusNotFound)
	expect(t, e.do("POST", "/api/orchestrations/"+ghost+"/cancel", nil, tok), http.StatusNotFound)
	expect(t, e.do("POST", "/api/orchestrations/"+ghost+"/recreate", nil, tok), http.StatusNotFound)
	expect(t, e.do("POST", "/api/orchestrations/"+ghost+"/raise-event", RaiseEventRequest{EventName: "x"}, tok), http.StatusNotFound)
}

func TestPayloadMasksSecrets(t *testing.T) {
	got := string(payload(`{"name":"db","password":"hunter22","nested":{"api_token":"t0k"},"list":[{"Secret":"s"}],"n":12345678901234567890}`))
	for _, s := range []string{"hunter22", "t0k", `"s"`} {
		if strings.Contains(got, s) {
			t.Fatalf("payload %s leaks %s", got, s)
		}
	}
	if !strings.Contains(got, `"name":"db"`) || !strings.Contains(got, "12345678901234567890") {
		t.Fatalf("payload %s", got)
	}
	if string(payload("not json")) != `"not json"` || payload("") != nil {
		t.Fatal("non-JSON payloads")
	}
}
