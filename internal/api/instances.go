package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/orchestrations"
)

// nameRE is the instance name rule of app.ValidateCreate (1–40 lower-case
// letters, digits and hyphens, starting with a letter, not ending with a
// hyphen), used to reject bad names in bulk deletes before any work.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$`)

// Bulk limits.
const maxBulk = 50

// mutationTimeout bounds a create or delete; it runs detached from the
// client's connection so that a client hanging up does not leave a half-made
// request behind.
const mutationTimeout = 30 * time.Second

func detached(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), mutationTimeout)
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

func (s *Server) nameTaken(name string) error {
	return fieldErrorf(http.StatusConflict, "name", "instance name %q is already in use by an active instance", name)
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
	if errors.Is(err, cms.ErrNameTaken) {
		err = s.nameTaken(req.Name)
	}
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

func writeBulk(w http.ResponseWriter, verb string, res BulkResponse) {
	if res.Succeeded > 0 {
		writeJSON(w, http.StatusAccepted, res)
		return
	}
	status, first := http.StatusInternalServerError, ""
	for _, it := range res.Results {
		if !it.OK {
			status, first = it.Status, it.Error
			break
		}
	}
	writeJSON(w, status, bulkBody{Error: "no instance was " + verb + ": " + first, BulkResponse: res})
}

// handleBulkCreate is POST /api/instances/bulk. Every request is validated
// (including that no name is taken) before anything is created; then each
// instance is created and reported on its own.
func (s *Server) handleBulkCreate(w http.ResponseWriter, r *http.Request) {
	var req BulkCreateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.BaseName == "" {
		s.fail(w, r, fieldErrorf(http.StatusBadRequest, "base_name", "base_name is required"))
		return
	}
	if req.Count < 1 || req.Count > maxBulk {
		s.fail(w, r, fieldErrorf(http.StatusBadRequest, "count", "count must be between 1 and %d, got %d", maxBulk, req.Count))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), mutationTimeout+time.Duration(req.Count)*time.Second)
	defer cancel()
	reqs := make([]app.CreateRequest, req.Count)
	for i := range reqs {
		reqs[i] = app.CreateRequest{Name: fmt.Sprintf("%s-%d", req.BaseName, i+1), Password: req.Password,
			PostgresVersion: req.PostgresVersion, StorageGB: req.StorageGB, Internal: req.Internal}
		if err := s.app.ValidateCreate(ctx, &reqs[i]); err != nil {
			var ve *app.ValidationError
			if errors.As(err, &ve) && ve.Field == "name" {
				err = fieldErrorf(http.StatusBadRequest, "base_name", "invalid base_name %q: the names %s-1 … %s-%d must be 1-40 lower-case letters, digits and hyphens, starting with a letter",
					req.BaseName, req.BaseName, req.BaseName, req.Count)
			}
			s.fail(w, r, err)
			return
		}
	}
	var taken []string
	for _, cr := range reqs {
		inst, err := s.app.GetInstance(ctx, cr.Name)
		switch {
		case errors.Is(err, cms.ErrNotFound):
		case err != nil:
			s.fail(w, r, err)
			return
		case inst.State.Active():
			taken = append(taken, cr.Name)
		}
	}
	if len(taken) > 0 {
		s.fail(w, r, fieldErrorf(http.StatusConflict, "base_name", "names already in use by active instances: %s", strings.Join(taken, ", ")))
		return
	}
	res := BulkResponse{Requested: req.Count, Results: make([]BulkItemResult, 0, req.Count)}
	for _, cr := range reqs {
		inst, err := s.app.CreateInstance(ctx, cr)
		if errors.Is(err, cms.ErrNameTaken) {
			err = s.nameTaken(cr.Name)
		}
		res.Results = append(res.Results, s.bulkItem(r, cr.Name, inst, err, func(in *cms.Instance) string { return in.CreateOrchestrationID }))
	}
	for _, it := range res.Results {
		if it.OK {
			res.Succeeded++
		} else {
			res.Failed++
		}
	}
	writeBulk(w, "created", res)
}

func (s *Server) bulkItem(r *http.Request, name string, inst *cms.Instance, err error, orch func(*cms.Instance) string) BulkItemResult {
	if err != nil {
		status, msg, _ := s.classify(err)
		if status == http.StatusInternalServerError {
			s.log.Error("bulk item failed", "name", name, "path", r.URL.Path, "request_id", info(r).id, "error", err.Error())
			msg = "internal error (request id " + info(r).id + "); see the server log"
		}
		if status == http.StatusNotFound {
			msg = fmt.Sprintf("instance %q not found or already deleted", name)
		}
		return BulkItemResult{Name: name, Status: status, Error: msg}
	}
	v := instanceView(inst)
	return BulkItemResult{Name: name, OK: true, Status: http.StatusAccepted, OrchestrationID: orch(inst), Instance: &v}
}

// handleBulkDelete is POST /api/instances/bulk-delete: each name is deleted
// and reported on its own.
func (s *Server) handleBulkDelete(w http.ResponseWriter, r *http.Request) {
	var req BulkDeleteRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if len(req.Names) < 1 || len(req.Names) > maxBulk {
		s.fail(w, r, errorf(http.StatusBadRequest, "names must hold between 1 and %d names, got %d", maxBulk, len(req.Names)))
		return
	}
	seen := map[string]bool{}
	for _, n := range req.Names {
		if !nameRE.MatchString(n) {
			s.fail(w, r, errorf(http.StatusBadRequest, "invalid instance name %q", n))
			return
		}
		if seen[n] {
			s.fail(w, r, errorf(http.StatusBadRequest, "name %q is listed twice", n))
			return
		}
		seen[n] = true
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), mutationTimeout+time.Duration(len(req.Names))*time.Second)
	defer cancel()
	res := BulkResponse{Requested: len(req.Names), Results: make([]BulkItemResult, 0, len(req.Names))}
	for _, n := range req.Names {
		inst, err := s.app.DeleteInstance(ctx, n)
		it := s.bulkItem(r, n, inst, err, func(in *cms.Instance) string { return orchestrations.DeleteID(in.InternalName) })
		if it.Instance != nil {
			it.Instance.DeleteOrchestrationID = it.OrchestrationID
		}
		res.Results = append(res.Results, it)
		if it.OK {
			res.Succeeded++
		} else {
			res.Failed++
		}
	}
	writeBulk(w, "deleted", res)
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
	if errors.Is(err, cms.ErrNotFound) {
		err = errorf(http.StatusNotFound, "instance %q not found or already deleted", name)
	}
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
	if errors.Is(err, cms.ErrNotFound) {
		err = notFound(name)
	}
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
	if errors.Is(err, cms.ErrNotFound) {
		err = notFound(name)
	}
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
