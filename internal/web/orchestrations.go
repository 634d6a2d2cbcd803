package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/historyview"
)

// orchRow is one orchestration in a list.
type orchRow struct {
	ID, Name, Version, Status string
	CustomStatus              *string
	ExecutionID               int64
	Parent                    string
	CreatedAt, UpdatedAt      time.Time
}

func orchRowOf(in *duroxide.InstanceInfo) orchRow {
	return orchRow{ID: in.Instance, Name: in.OrchestrationName, Version: in.OrchestrationVersion, Status: string(in.Status),
		CustomStatus: in.CustomStatus, ExecutionID: in.ExecutionID, Parent: in.ParentInstance,
		CreatedAt: in.CreatedAt, UpdatedAt: in.UpdatedAt}
}

const orchPageSize = 25

type orchListData struct {
	Status, Name, Prefix, Cursor string
	Page                         int
	Statuses                     []string
	Names                        []string
	Rows                         []orchRow
	NextURL, FirstURL            string
	Err                          string
}

func (c *Console) handleOrchestrations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := &orchListData{Status: q.Get("status"), Name: strings.TrimSpace(q.Get("name")), Prefix: strings.TrimSpace(q.Get("prefix")),
		Cursor: q.Get("cursor"), Statuses: []string{"Running", "Completed", "Failed", "Cancelled"}}
	d.Page, _ = strconv.Atoi(q.Get("page"))
	if d.Page < 1 || d.Cursor == "" {
		d.Page = 1
	}
	d.Names = c.app.Orchestrations().Names()
	f := duroxide.ListFilter{OrchestrationName: d.Name, InstancePrefix: d.Prefix, Cursor: d.Cursor, Limit: orchPageSize}
	switch d.Status {
	case "":
	case "Running", "Completed", "Failed", "Cancelled":
		f.Statuses = []duroxide.Status{duroxide.Status(d.Status)}
	default:
		d.Status = ""
	}
	if len(f.Cursor) > 1024 {
		f.Cursor, d.Err = "", "The page cursor is invalid; showing the first page."
	}
	page, err := c.app.Orchestrations().List(r.Context(), f)
	if err != nil && f.Cursor != "" && strings.Contains(err.Error(), "invalid cursor") {
		d.Err, f.Cursor, d.Cursor, d.Page = "The page cursor is invalid; showing the first page.", "", "", 1
		page, err = c.app.Orchestrations().List(r.Context(), f)
	}
	if err != nil {
		c.internal(w, r, err)
		return
	}
	for i := range page.Instances {
		d.Rows = append(d.Rows, orchRowOf(&page.Instances[i]))
	}
	base := url.Values{}
	for k, v := range map[string]string{"status": d.Status, "name": d.Name, "prefix": d.Prefix} {
		if v != "" {
			base.Set(k, v)
		}
	}
	if page.NextCursor != "" {
		next := url.Values{}
		for k, v := range base {
			next[k] = v
		}
		next.Set("cursor", page.NextCursor)
		next.Set("page", strconv.Itoa(d.Page+1))
		d.NextURL = "/orchestrations?" + next.Encode()
	}
	if d.Cursor != "" {
		d.FirstURL = "/orchestrations"
		if len(base) > 0 {
			d.FirstURL += "?" + base.Encode()
		}
	}
	c.render(w, r, http.StatusOK, "orchestrations", "Orchestrations", "orchestrations", d)
}

// execView is one execution with its readable history.
type execView struct {
	ID          int64
	Status      string
	StartedAt   time.Time
	CompletedAt time.Time
	Took        string
	EventCount  int
	HasHistory  bool
	Items       []historyview.Step
	Raw         []historyview.RawEvent
}

type raiseForm struct {
	Name, Data, Err string
}

type orchData struct {
	ID           string
	St           *duroxide.OrchestrationStatus
	Terminal     bool
	Output       string
	Error        string
	ErrorCat     string
	Instance     string     // the Toygres instance's user name, when the id names one
	Executions   []execView // newest first, with history
	Older        []execView // the next ones, listed without history
	More         int        // executions neither shown nor listed
	Shown        int        // how many executions show their history
	MoreURL      string     // to show more executions' history
	Raise        raiseForm
	CancelReason string
	Pending      bool // a start is queued but the runtime has not run it yet
}

// Executions: the newest execsWithHistory show their history (up to
// maxExecsWithHistory with ?executions=N); the next olderListed are listed.
// The health actor continues as new every interval, so it has thousands.
const (
	execsWithHistory    = 3
	maxExecsWithHistory = 50
	olderListed         = 20
)

func (c *Console) handleOrchestration(w http.ResponseWriter, r *http.Request) {
	c.renderOrchestration(w, r, http.StatusOK, raiseForm{Data: "{}"})
}

func (c *Console) renderOrchestration(w http.ResponseWriter, r *http.Request, status int, raise raiseForm) {
	ctx := r.Context()
	id := r.PathValue("id")
	st, err := c.app.Orchestrations().Status(ctx, id)
	pending := false
	if errors.Is(err, duroxide.ErrNotFound) {
		// A start the console just queued (recreate, a create in flight) is
		// not an instance until the runtime runs its first turn.
		if r.URL.Query().Get("pending") != "1" {
			c.notFound(w, r, "orchestration "+id)
			return
		}
		st, err, pending = &duroxide.OrchestrationStatus{Instance: id, Status: duroxide.StatusPending}, nil, true
	}
	if err != nil {
		c.internal(w, r, err)
		return
	}
	d := &orchData{ID: id, St: st, Terminal: st.Status.IsTerminal(), Raise: raise, Instance: instanceOfOrchestration(id),
		Shown: execsWithHistory, Pending: pending}
	if n, err := strconv.Atoi(r.URL.Query().Get("executions")); err == nil && n >= 1 {
		d.Shown = min(n, maxExecsWithHistory)
	}
	if st.Output != "" {
		d.Output = prettyPayload(st.Output, 20000)
	}
	if st.Error != nil {
		d.Error, d.ErrorCat = st.Error.Display(), string(st.Error.Category)
	}
	var execs []duroxide.ExecutionInfo
	if !pending {
		execs, err = c.app.Orchestrations().Executions(ctx, id)
	}
	if err != nil && !errors.Is(err, duroxide.ErrNotFound) {
		c.internal(w, r, err)
		return
	}
	for i := len(execs) - 1; i >= 0; i-- {
		ex := execs[i]
		ev := execView{ID: ex.ExecutionID, Status: string(ex.Status), StartedAt: ex.StartedAt, CompletedAt: ex.CompletedAt, EventCount: ex.EventCount}
		if !ex.CompletedAt.IsZero() {
			ev.Took = fmtDur(ex.CompletedAt.Sub(ex.StartedAt))
		}
		switch rank := len(execs) - i; {
		case rank <= d.Shown:
			hist, err := c.app.Orchestrations().History(ctx, id, ex.ExecutionID)
			if err != nil {
				c.internal(w, r, err)
				return
			}
			ev.HasHistory = true
			ev.Items = historyview.Steps(hist, ex.Status == duroxide.StatusRunning)
			ev.Raw = historyview.RawEvents(hist)
			d.Executions = append(d.Executions, ev)
		case rank <= d.Shown+olderListed:
			d.Older = append(d.Older, ev)
		default:
			d.More++
		}
	}
	if len(execs) > d.Shown && d.Shown < maxExecsWithHistory {
		d.MoreURL = fmt.Sprintf("/orchestrations/%s?executions=%d", url.PathEscape(id), min(maxExecsWithHistory, d.Shown+20))
	}
	c.render(w, r, status, "orchestration", id, "orchestrations", d)
}

// instanceOfOrchestration is the user name of the instance a Toygres
// orchestration id names (create-, delete-, actor-<internal name>).
func instanceOfOrchestration(id string) string {
	for _, p := range []string{"create-", "delete-", "actor-"} {
		if rest, ok := strings.CutPrefix(id, p); ok {
			if n := userName(rest); n != rest {
				return n
			}
		}
	}
	return ""
}

func orchURL(id string) string { return "/orchestrations/" + url.PathEscape(id) }

// handleCancel is POST /orchestrations/{id}/cancel (reason optional).
func (c *Console) handleCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := parseForm(w, r); err != nil {
		redirect(w, r, orchURL(id), "error", "The form could not be read.")
		return
	}
	reason := trimmed(r, "reason")
	if reason == "" {
		reason = "cancelled from the web console"
	}
	if err := c.app.Orchestrations().Cancel(r.Context(), id, reason); err != nil {
		_, msg, _ := c.problem(w, r, err)
		redirect(w, r, orchURL(id), "error", "Cancel failed: "+msg)
		return
	}
	redirect(w, r, orchURL(id), "ok", "Cancellation requested.")
}

// handleRecreate is POST /orchestrations/{id}/recreate: it starts the
// same orchestration with the same input under a new id.
func (c *Console) handleRecreate(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rc, err := c.app.Orchestrations().Recreate(r.Context(), id)
	if err != nil {
		_, msg, _ := c.problem(w, r, err)
		redirect(w, r, orchURL(id), "error", "Recreate failed: "+msg)
		return
	}
	redirect(w, r, orchURL(rc.NewID)+"?pending=1", "ok", "Recreated "+id+" as "+rc.NewID+".")
}

// handleRaiseEvent is POST /orchestrations/{id}/raise-event with an event
// name and JSON data (empty: null).
func (c *Console) handleRaiseEvent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := parseForm(w, r); err != nil {
		redirect(w, r, orchURL(id), "error", "The form could not be read.")
		return
	}
	f := raiseForm{Name: trimmed(r, "event_name"), Data: strings.TrimSpace(r.PostForm.Get("event_data"))}
	if f.Name == "" {
		f.Err = "The event name is required."
		c.renderOrchestration(w, r, http.StatusBadRequest, f)
		return
	}
	var data json.RawMessage
	if f.Data != "" {
		if !json.Valid([]byte(f.Data)) {
			f.Err = "The event data must be JSON (for example {} or \"text\" or 42)."
			c.renderOrchestration(w, r, http.StatusBadRequest, f)
			return
		}
		data = json.RawMessage(f.Data)
	}
	if err := c.app.Orchestrations().Raise(r.Context(), id, f.Name, data); err != nil {
		var status int
		status, f.Err, _ = c.problem(w, r, err)
		c.renderOrchestration(w, r, status, f)
		return
	}
	redirect(w, r, orchURL(id), "ok", "Event "+f.Name+" raised.")
}
