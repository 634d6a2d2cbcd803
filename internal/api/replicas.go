package api

import (
	"errors"
	"net/http"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
)

type (
	ScaleRequest      = client.ScaleRequest
	OperationResponse = client.OperationResponse
	InstanceReplicas  = client.InstanceReplicas
	ReplicaServer     = client.Server
)

// replicaRoutes are the standby endpoints (see apiRoutes).
func (s *Server) replicaRoutes() []route {
	return []route{
		{"POST /api/instances/{name}/scale", s.handleScale},
		{"POST /api/instances/{name}/failover", s.handleFailover(false)},
		{"POST /api/instances/{name}/switchover", s.handleFailover(true)},
	}
}

// handleScale is POST /api/instances/{name}/scale {replicas, sync_replica}:
// 202 with the scale orchestration's id; 400 for a count out of range or a
// data plane without replicas, 409 unless the instance runs.
func (s *Server) handleScale(w http.ResponseWriter, r *http.Request) {
	var req ScaleRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	ctx, cancel := detached(r)
	defer cancel()
	op, err := s.app.Scale(ctx, name, req.Replicas, req.SyncReplica)
	s.writeOperation(w, r, op, err)
}

// handleFailover is POST /api/instances/{name}/failover (planned false) and
// /switchover: 202 with the orchestration's id (started false: one was
// running already); 409 unless the instance runs with standbys.
func (s *Server) handleFailover(planned bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		ctx, cancel := detached(r)
		defer cancel()
		op, err := s.app.Failover(ctx, name, planned)
		s.writeOperation(w, r, op, err)
	}
}

func (s *Server) writeOperation(w http.ResponseWriter, r *http.Request, op app.Operation, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/orchestrations/"+op.OrchestrationID)
	writeJSON(w, http.StatusAccepted, OperationResponse{OrchestrationID: op.OrchestrationID, Started: op.Started})
}

// replicaDetail fills the standby part of an instance's detail: the
// recorded configuration, the read-only URL with the password, and the
// servers as the data plane sees them now.
func (s *Server) replicaDetail(r *http.Request, inst *cms.Instance) (InstanceReplicas, error) {
	ctx := r.Context()
	v, err := s.app.Replicas(ctx, inst)
	if err != nil {
		return InstanceReplicas{}, err
	}
	out := InstanceReplicas{Replicas: v.Replicas.Replicas, SyncReplica: v.Sync, Primary: v.Primary, ServersError: v.ServersError}
	if inst.State != cms.StateDeleted {
		ro, err := s.app.ReadOnlyURL(ctx, inst, v.Replicas)
		if err != nil && !errors.Is(err, cms.ErrNotFound) {
			return InstanceReplicas{}, err
		}
		out.ReadOnlyConnectionString = ro
	}
	for _, sv := range v.Servers {
		out.Servers = append(out.Servers, ReplicaServer{ID: sv.ID, Role: string(sv.Role), Host: sv.Host, Port: sv.Port, Ready: sv.Ready,
			Sync: sv.Sync, Streaming: sv.Streaming, LagBytes: sv.LagBytes, Timeline: sv.Timeline, Message: sv.Message})
	}
	return out, nil
}
