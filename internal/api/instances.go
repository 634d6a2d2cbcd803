package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/orchestrations"
)

// detached is the request's context for a mutation (see app.Detached).
func detached(r *http.Request) (context.Context, context.CancelFunc) {
	return app.Detached(r.Context())
}

var states = []cms.State{cms.StateCreating, cms.StateRunning, cms.StateFailed, cms.StateDeleting, cms.StateDeleted}

// liveStates are the states GET /api/instances lists by default.
var liveStates = []cms.State{cms.StateCreating, cms.StateRunning, cms.StateDeleting}

// handleListInstances is GET /api/instances?all=true&state=a,b&name=&limit=:
// live instances by default, every record with all=true (include_deleted
// is its older name), or those of the given states; the pseudo-state
// "broken" keeps instances with a recorded problem.
func (s *Server) handleListInstances(w http.ResponseWriter, r *http.Request) {
	var opts cms.ListOptions
	for _, v := range r.URL.Query()["state"] {
		for _, st := range strings.Split(v, ",") {
			st = strings.ToLower(strings.TrimSpace(st))
			if st == "" {
				continue
			}
			if st == "broken" {
				opts.Broken = true
				continue
			}
			ok := false
			for _, known := range states {
				if cms.State(st) == known {
					ok = true
				}
			}
			if !ok {
				s.fail(w, r, errorf(http.StatusBadRequest, "unknown state %q (want creating, running, failed, deleting, deleted or broken)", st))
				return
			}
			opts.States = append(opts.States, cms.State(st))
		}
	}
	all, err := queryBool(r, "all")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	inclDeleted, err := queryBool(r, "include_deleted")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case len(opts.States) > 0:
		opts.IncludeDeleted = true // the states say it
	case all || inclDeleted:
		opts.IncludeDeleted = true
	case opts.Broken:
		// Broken instances in any state but deleted.
	default:
		opts.States = liveStates
	}
	if opts.Limit, err = queryInt(r, "limit", 0, 0, 100_000); err != nil {
		s.fail(w, r, err)
		return
	}
	opts.Name = r.URL.Query().Get("name")
	list, err := s.app.ListInstances(r.Context(), opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := InstanceList{Instances: make([]Instance, 0, len(list))}
	for i := range list {
		out.Instances = append(out.Instances, instanceView(&list[i]))
	}
	out.Count = len(out.Instances)
	writeJSON(w, http.StatusOK, out)
}

func notFound(name string) error {
	return errorf(http.StatusNotFound, "instance %q not found", name)
}

// handleCreateInstance is POST /api/instances: 202 with the new record.
func (s *Server) handleCreateInstance(w http.ResponseWriter, r *http.Request) {
	var req CreateInstanceRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	inst, err := s.app.CreateInstance(ctx, req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/instances/"+url.PathEscape(inst.Name))
	writeJSON(w, http.StatusAccepted, instanceView(inst))
}

// bulkBody is a bulk response that nothing succeeded in: an error line plus
// the per-item results.
type bulkBody struct {
	Error string `json:"error"`
	BulkResponse
}

// writeBulk answers a bulk request: 202 when an item succeeded, else the
// first failure's status with its message.
func (s *Server) writeBulk(w http.ResponseWriter, r *http.Request, res *app.BulkResult) {
	out := BulkResponse{Requested: len(res.Items), Results: make([]BulkItemResult, 0, len(res.Items))}
	for _, it := range res.Items {
		if it.Err != nil {
			status, msg, _ := s.problem(r, it.Err)
			out.Results = append(out.Results, BulkItemResult{Name: it.Name, Status: status, Error: msg})
			out.Failed++
			continue
		}
		v := instanceView(it.Instance)
		out.Results = append(out.Results, BulkItemResult{Name: it.Name, OK: true, Status: http.StatusAccepted, OrchestrationID: it.OrchestrationID, Instance: &v})
		out.Succeeded++
	}
	if out.Succeeded > 0 {
		writeJSON(w, http.StatusAccepted, out)
		return
	}
	status, first := http.StatusInternalServerError, ""
	for _, it := range out.Results {
		if !it.OK {
			status, first = it.Status, it.Error
			break
		}
	}
	writeJSON(w, status, bulkBody{Error: res.NothingDone(first), BulkResponse: out})
}

// handleBulkCreate is POST /api/instances/bulk (see app.BulkCreate).
func (s *Server) handleBulkCreate(w http.ResponseWriter, r *http.Request) {
	var req BulkCreateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.app.BulkCreate(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeBulk(w, r, res)
}

// handleBulkDelete is POST /api/instances/bulk-delete (see app.BulkDelete).
func (s *Server) handleBulkDelete(w http.ResponseWriter, r *http.Request) {
	var req BulkDeleteRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.app.BulkDelete(r.Context(), req.Names)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeBulk(w, r, res)
}

// instance looks up the {name} of the path.
func (s *Server) instance(r *http.Request) (*cms.Instance, error) {
	name := r.PathValue("name")
	inst, err := s.app.GetInstance(r.Context(), name)
	if errors.Is(err, cms.ErrNotFound) {
		return nil, notFound(name)
	}
	return inst, err
}

// handleGetInstance is GET /api/instances/{name}?events=N&checks=N: the
// record with its connection string (with the password: the caller is
// authenticated), latest events and health checks.
func (s *Server) handleGetInstance(w http.ResponseWriter, r *http.Request) {
	nEvents, err := queryInt(r, "events", 50, 0, 10_000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	nChecks, err := queryInt(r, "checks", 10, 0, 10_000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	inst, err := s.instance(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := r.Context()
	d := InstanceDetail{Instance: instanceView(inst), Events: []InstanceEvent{}, HealthChecks: []HealthCheck{}}
	if inst.State != cms.StateDeleted {
		conn, err := s.app.ConnectionURL(ctx, inst)
		if err != nil && !errors.Is(err, cms.ErrNotFound) {
			s.fail(w, r, err)
			return
		}
		d.ConnectionString = conn
	}
	if d.InstanceReplicas, err = s.replicaDetail(r, inst); err != nil {
		s.fail(w, r, err)
		return
	}
	if nEvents > 0 {
		evs, err := s.app.InstanceEvents(ctx, inst, nEvents)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		d.Events = eventViews(evs)
	}
	if nChecks > 0 {
		hcs, err := s.app.HealthChecks(ctx, inst, nChecks)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		d.HealthChecks = checkViews(hcs)
	}
	writeJSON(w, http.StatusOK, d)
}

// handleDeleteInstance is DELETE /api/instances/{name}: 202 with every
// record being deleted, or 404 when the name is unknown or all its records
// are deleted.
func (s *Server) handleDeleteInstance(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	purge, err := queryBool(r, "purge_backups")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := detached(r)
	defer cancel()
	d, err := s.app.DeleteByNameWith(ctx, name, app.DeleteOptions{PurgeBackups: purge})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := DeleteResponse{Instance: instanceView(d.Instance), Records: make([]DeletingRecord, 0, len(d.Records))}
	out.DeleteOrchestrationID = orchestrations.DeleteID(d.Instance.InternalName)
	for _, rec := range d.Records {
		out.Records = append(out.Records, DeletingRecord{InternalName: rec.InternalName, State: string(rec.State),
			DeleteOrchestrationID: orchestrations.DeleteID(rec.InternalName)})
	}
	w.Header().Set("Location", "/api/orchestrations/"+url.PathEscape(out.DeleteOrchestrationID))
	writeJSON(w, http.StatusAccepted, out)
}

// handlePurgeInstance is POST /api/instances/{name}/purge: 200 with what was
// purged and skipped; 404 for an unknown name; 409 when nothing could go.
func (s *Server) handlePurgeInstance(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := detached(r)
	defer cancel()
	res, err := s.app.Purge(ctx, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := PurgeResponse{Name: name, Purged: res.Purged, Skipped: make([]PurgeSkip, 0, len(res.Skipped))}
	for _, sk := range res.Skipped {
		out.Skipped = append(out.Skipped, PurgeSkip{InternalName: sk.InternalName, State: string(sk.State), Reason: sk.Reason})
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRepairInstance is POST /api/instances/{name}/repair: 200 with the
// repaired instance; 404 for an unknown or deleted name; 409 when it is not
// running or still broken.
func (s *Server) handleRepairInstance(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 3*time.Minute)
	defer cancel()
	inst, err := s.app.RepairInstance(ctx, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, instanceView(inst))
}

// handleInstanceHealth is GET /api/instances/{name}/health?limit=50.
func (s *Server) handleInstanceHealth(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r, "limit", 50, 1, 10_000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	inst, err := s.instance(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	hcs, err := s.app.HealthChecks(r.Context(), inst, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, InstanceHealth{Name: inst.Name, State: string(inst.State), Health: string(inst.Health), Checks: checkViews(hcs)})
}

// handleInstanceEvents is GET /api/instances/{name}/events?limit=100.
func (s *Server) handleInstanceEvents(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r, "limit", 100, 1, 10_000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	inst, err := s.instance(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs, err := s.app.InstanceEvents(r.Context(), inst, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, InstanceEvents{Name: inst.Name, Events: eventViews(evs)})
}

// handleInstanceLogs is GET /api/instances/{name}/logs?tail=200: the
// PostgreSQL server's latest log lines from the data plane, with the
// instance's password masked should it appear.
func (s *Server) handleInstanceLogs(w http.ResponseWriter, r *http.Request) {
	tail, err := queryInt(r, "tail", 200, 1, 10_000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	inst, err := s.instance(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	lines, err := s.app.InstanceLogs(r.Context(), inst, tail)
	if errors.Is(err, dataplane.ErrNotFound) {
		err = errorf(http.StatusNotFound, "instance %q has no server on the data plane (state %s)", inst.Name, inst.State)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if lines == nil {
		lines = []string{}
	}
	writeJSON(w, http.StatusOK, InstanceLogs{Name: inst.Name, InternalName: inst.InternalName, Tail: tail, Lines: lines})
}
