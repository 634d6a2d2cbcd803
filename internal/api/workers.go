package api

import (
	"net/http"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// handleServerWorkers is GET /api/server/workers.
func (s *Server) handleServerWorkers(w http.ResponseWriter, r *http.Request) {
	rt := s.app.Runtime()
	if !rt.Running() {
		writeError(w, http.StatusServiceUnavailable, "the durable runtime is not running")
		return
	}
	st, err := s.app.Orchestrations().Stats(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	o := rt.Settings()
	writeJSON(w, http.StatusOK, ServerWorkers{
		WorkerID:                 o.WorkerID,
		OrchestrationConcurrency: o.OrchestrationConcurrency,
		ActivityConcurrency:      o.ActivityConcurrency,
		ActiveTurns:              rt.ActiveTurns(),
		RunningActivities:        rt.RunningActivities(),
		OrchestrationLockTimeout: o.OrchestrationLockTimeout.String(),
		ActivityLockTimeout:      o.ActivityLockTimeout.String(),
		PollInterval:             o.PollInterval.String(),
		MaxAttempts:              o.MaxAttempts,
		CacheSize:                o.CacheSize,
		RunningOrchestrations:    st.Instances[duroxide.StatusRunning],
		OrchestratorQueue:        st.OrchestratorQueue,
		WorkerQueue:              st.WorkerQueue,
		GeneratedAt:              time.Now().UTC(),
	})
}
