package api

import (
	"net/http"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// ServerWorkers is the body of GET /api/server/workers: the durable
// runtime's dispatchers as this server runs them (its real settings, with
// defaults applied, not the configured values), what they are doing now, and
// the store's running orchestrations and queue depths.
type ServerWorkers struct {
	WorkerID                 string `json:"worker_id"`
	OrchestrationConcurrency int    `json:"orchestration_concurrency"` // orchestration dispatchers
	ActivityConcurrency      int    `json:"activity_concurrency"`      // activity workers
	// ActiveTurns and RunningActivities are this runtime's in-flight work.
	ActiveTurns              int    `json:"active_turns"`
	RunningActivities        int    `json:"running_activities"`
	OrchestrationLockTimeout string `json:"orchestration_lock_timeout"`
	ActivityLockTimeout      string `json:"activity_lock_timeout"`
	PollInterval             string `json:"poll_interval"`
	MaxAttempts              int    `json:"max_attempts"`
	CacheSize                int    `json:"cache_size"`
	// RunningOrchestrations counts the store's orchestrations in status
	// Running (of every runtime sharing the store).
	RunningOrchestrations int       `json:"running_orchestrations"`
	OrchestratorQueue     int       `json:"orchestrator_queue"`
	WorkerQueue           int       `json:"worker_queue"`
	GeneratedAt           time.Time `json:"generated_at"`
}

// handleServerWorkers is GET /api/server/workers.
func (s *Server) handleServerWorkers(w http.ResponseWriter, r *http.Request) {
	rt := s.app.Runtime
	if rt == nil {
		writeError(w, http.StatusServiceUnavailable, "the durable runtime is not running")
		return
	}
	st, err := s.app.Client.Stats(r.Context())
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
