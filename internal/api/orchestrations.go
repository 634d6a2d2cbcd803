package api

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/historyview"
)

var orchestrationStatuses = []duroxide.Status{duroxide.StatusRunning, duroxide.StatusCompleted, duroxide.StatusFailed, duroxide.StatusCancelled}

// handleListOrchestrations is GET /api/orchestrations?status=Running,Failed
// &name=create-instance&prefix=create-&limit=100&cursor=…: one page, newest
// first, with next_cursor for the next.
func (s *Server) handleListOrchestrations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := duroxide.ListFilter{OrchestrationName: q.Get("name"), InstancePrefix: q.Get("prefix"), Cursor: q.Get("cursor")}
	for _, v := range q["status"] {
		for _, st := range strings.Split(v, ",") {
			st = strings.TrimSpace(st)
			if st == "" {
				continue
			}
			found := false
			for _, known := range orchestrationStatuses {
				if strings.EqualFold(st, string(known)) || (strings.EqualFold(st, "canceled") && known == duroxide.StatusCancelled) {
					f.Statuses = append(f.Statuses, known)
					found = true
				}
			}
			if !found {
				s.fail(w, r, errorf(http.StatusBadRequest, "unknown status %q (want Running, Completed, Failed or Cancelled)", st))
				return
			}
		}
	}
	var err error
	if f.Limit, err = queryInt(r, "limit", 100, 1, 1000); err != nil {
		s.fail(w, r, err)
		return
	}
	if len(f.Cursor) > 1024 {
		s.fail(w, r, errorf(http.StatusBadRequest, "invalid cursor"))
		return
	}
	page, err := s.app.Orchestrations().List(r.Context(), f)
	if err != nil {
		if f.Cursor != "" && strings.Contains(err.Error(), "invalid cursor") {
			err = errorf(http.StatusBadRequest, "invalid cursor")
		}
		s.fail(w, r, err)
		return
	}
	out := OrchestrationList{Orchestrations: make([]Orchestration, 0, len(page.Instances)), NextCursor: page.NextCursor}
	for i := range page.Instances {
		out.Orchestrations = append(out.Orchestrations, orchestrationInfoView(&page.Instances[i]))
	}
	writeJSON(w, http.StatusOK, out)
}

// status looks up the {id} of the path.
func (s *Server) status(r *http.Request) (*duroxide.OrchestrationStatus, error) {
	id := r.PathValue("id")
	st, err := s.app.Orchestrations().Status(r.Context(), id)
	if errors.Is(err, duroxide.ErrNotFound) {
		return nil, errorf(http.StatusNotFound, "orchestration %q not found", id)
	}
	return st, err
}

// handleGetOrchestration is GET /api/orchestrations/{id}?history=full|N:
// status, output or error, custom status and executions; with history, the
// events of every execution (full) or of the newest N.
func (s *Server) handleGetOrchestration(w http.ResponseWriter, r *http.Request) {
	withHistory := 0 // executions to include history for; -1: all
	switch h := r.URL.Query().Get("history"); h {
	case "", "none", "0":
	case "full", "all":
		withHistory = -1
	default:
		n, err := strconv.Atoi(h)
		if err != nil || n < 0 || n > 100_000 {
			s.fail(w, r, errorf(http.StatusBadRequest, "query parameter history must be full or a number of executions"))
			return
		}
		withHistory = n
	}
	st, err := s.status(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := r.Context()
	d := OrchestrationDetail{Orchestration: orchestrationView(st), CustomStatusVersion: st.CustomStatusVersion,
		Output: payload(st.Output), Error: errorView(st.Error), Executions: []Execution{}}
	execs, err := s.app.Orchestrations().Executions(ctx, st.Instance)
	if err != nil && !errors.Is(err, duroxide.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	first := 0
	if withHistory >= 0 {
		first = len(execs) - withHistory
	}
	for i, ex := range execs {
		e := Execution{ExecutionID: ex.ExecutionID, Status: string(ex.Status), StartedAt: utc(ex.StartedAt),
			CompletedAt: optTime(ex.CompletedAt), EventCount: ex.EventCount}
		if i >= first {
			hist, err := s.app.Orchestrations().History(ctx, st.Instance, ex.ExecutionID)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			e.History = make([]HistoryEvent, 0, len(hist))
			for _, ev := range hist {
				e.History = append(e.History, historyView(ev))
			}
			e.Steps = historyview.Steps(hist, ex.Status == duroxide.StatusRunning)
		}
		d.Executions = append(d.Executions, e)
	}
	writeJSON(w, http.StatusOK, d)
}

// handleCancel is POST /api/orchestrations/{id}/cancel with an optional
// {"reason": …}: 202 once the cancellation is queued; 409 if finished.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	var req CancelRequest
	if r.ContentLength != 0 {
		if err := decodeJSONOptional(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	reason := req.Reason
	if reason == "" {
		reason = "cancelled through the API"
	}
	id := r.PathValue("id")
	if err := s.app.Orchestrations().Cancel(r.Context(), id, reason); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, CancelResponse{ID: id, Status: "cancel_requested"})
}

// decodeJSONOptional decodes a body that may be empty.
func decodeJSONOptional(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	return decodeJSONBody(w, r, v, true)
}

// handleRecreate is POST /api/orchestrations/{id}/recreate: it starts the
// same orchestration (name, version, original input) under a new id. The
// original must have finished (409 otherwise: cancel it first).
func (s *Server) handleRecreate(w http.ResponseWriter, r *http.Request) {
	rc, err := s.app.Orchestrations().Recreate(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/orchestrations/"+url.PathEscape(rc.NewID))
	writeJSON(w, http.StatusAccepted, RecreateResponse{NewID: rc.NewID, OriginalID: rc.OriginalID, Name: rc.Name, Version: rc.Version})
}

// handleRaiseEvent is POST /api/orchestrations/{id}/raise-event with
// {"event_name": …, "event_data": <any JSON>}: 202, 409 if finished.
func (s *Server) handleRaiseEvent(w http.ResponseWriter, r *http.Request) {
	var req RaiseEventRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	if err := s.app.Orchestrations().Raise(r.Context(), id, req.EventName, req.EventData); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, RaiseEventResponse{ID: id, EventName: req.EventName, Raised: true})
}
