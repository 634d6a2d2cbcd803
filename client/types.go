package client

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// The types below are the JSON bodies of the REST API, shared with the server
// (package internal/api aliases them), so the client and the server cannot
// disagree about a field. api/openapi.json describes the same bodies. Every
// timestamp is RFC 3339 in UTC.

// ErrorResponse is the body of every error: one clear line, never a secret.
type ErrorResponse struct {
	Error string `json:"error"`
	// Field is the request body's field the error is about (a JSON path
	// such as "name" or "names[2]"), when the error is about one field.
	Field string `json:"field,omitempty"`
}

// Health is the body of GET /health.
type Health struct {
	Status  string `json:"status"` // "healthy"
	Service string `json:"service"`
	Version string `json:"version"`
}

// LoginRequest is the body of POST /api/login (and a JSON POST /login).
type LoginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// String hides the password.
func (r LoginRequest) String() string {
	return "LoginRequest{Username:" + r.Username + ", Password:***}"
}

// LogValue hides the password from slog.
func (r LoginRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", r.Username), slog.String("password", "***"))
}

// LoginResponse carries a bearer token for the Authorization header.
type LoginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CreateInstanceRequest is the body of POST /api/instances.
type CreateInstanceRequest struct {
	Name            string `json:"name"`
	Password        string `json:"password"`
	PostgresVersion string `json:"postgres_version,omitempty"`
	StorageGB       int    `json:"storage_gb,omitempty"`
	Internal        bool   `json:"internal,omitempty"`
	DNSLabel        string `json:"dns_label,omitempty"`
	// NoBackups turns WAL archiving and scheduled backups off (no
	// point-in-time restore of the instance).
	NoBackups bool `json:"no_backups,omitempty"`
	// Replicas standby servers in streaming replication (0 to 2), one of
	// them synchronous with SyncReplica (see replicas.go).
	Replicas    int  `json:"replicas,omitempty"`
	SyncReplica bool `json:"sync_replica,omitempty"`
}

// String hides the password.
func (r CreateInstanceRequest) String() string {
	return "CreateInstanceRequest{Name:" + r.Name + ", Password:***}"
}

// LogValue hides the password from slog.
func (r CreateInstanceRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", r.Name), slog.String("password", "***"),
		slog.String("postgres_version", r.PostgresVersion), slog.Int("storage_gb", r.StorageGB))
}

// BulkCreateRequest is the body of POST /api/instances/bulk: it creates
// <base_name>-1 … <base_name>-<count> with the same settings.
type BulkCreateRequest struct {
	BaseName        string `json:"base_name"`
	Count           int    `json:"count"` // 1–50
	Password        string `json:"password"`
	PostgresVersion string `json:"postgres_version,omitempty"`
	StorageGB       int    `json:"storage_gb,omitempty"`
	Internal        bool   `json:"internal,omitempty"`
}

// String hides the password.
func (r BulkCreateRequest) String() string {
	return "BulkCreateRequest{BaseName:" + r.BaseName + ", Password:***}"
}

// LogValue hides the password from slog.
func (r BulkCreateRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_name", r.BaseName), slog.Int("count", r.Count), slog.String("password", "***"))
}

// BulkDeleteRequest is the body of POST /api/instances/bulk-delete.
type BulkDeleteRequest struct {
	Names []string `json:"names"` // 1–50 distinct names
}

// BulkResponse reports the per-item outcome of a bulk operation.
type BulkResponse struct {
	Requested int              `json:"requested"`
	Succeeded int              `json:"succeeded"`
	Failed    int              `json:"failed"`
	Results   []BulkItemResult `json:"results"`
}

// BulkItemResult is the outcome for one name. Status is the HTTP status the
// single-item endpoint would have answered (202, 404, 409, 500…).
type BulkItemResult struct {
	Name            string    `json:"name"`
	OK              bool      `json:"ok"`
	Status          int       `json:"status"`
	Error           string    `json:"error,omitempty"`
	OrchestrationID string    `json:"orchestration_id,omitempty"`
	Instance        *Instance `json:"instance,omitempty"`
}

// Instance is an instance record. It never holds a password; GET
// /api/instances/{name} adds the connection string with the password.
type Instance struct {
	ID                    string `json:"id"`
	Name                  string `json:"name"`
	InternalName          string `json:"internal_name"`
	Driver                string `json:"driver"`
	PostgresVersion       string `json:"postgres_version"`
	StorageGB             int    `json:"storage_gb"`
	Internal              bool   `json:"internal"`
	DNSLabel              string `json:"dns_label,omitempty"`
	State                 string `json:"state"`
	Health                string `json:"health"`
	Host                  string `json:"host,omitempty"`
	Port                  int    `json:"port,omitempty"`
	DNSName               string `json:"dns_name,omitempty"`
	ExternalIP            string `json:"external_ip,omitempty"`
	CreateOrchestrationID string `json:"create_orchestration_id,omitempty"`
	DeleteOrchestrationID string `json:"delete_orchestration_id,omitempty"`
	ActorOrchestrationID  string `json:"actor_orchestration_id,omitempty"`
	FailureReason         string `json:"failure_reason,omitempty"`
	// Broken instances have data-plane resources that could not be taken
	// over (Problem says why, since ProblemAt); repair or delete them.
	Broken    bool       `json:"broken,omitempty"`
	Problem   string     `json:"problem,omitempty"`
	ProblemAt *time.Time `json:"problem_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

// InstanceList is the body of GET /api/instances (newest first).
type InstanceList struct {
	Instances []Instance `json:"instances"`
	Count     int        `json:"count"`
}

// DeleteResponse is the body of DELETE /api/instances/{name}: the instance
// the name stands for (the active one, else the newest failed one) and
// every record of the name being deleted (failed ones included).
type DeleteResponse struct {
	Instance
	Records []DeletingRecord `json:"records"`
}

// DeletingRecord is one record a delete works on.
type DeletingRecord struct {
	InternalName          string `json:"internal_name"`
	State                 string `json:"state"` // when the delete was requested
	DeleteOrchestrationID string `json:"delete_orchestration_id"`
}

// PurgeResponse is the body of POST /api/instances/{name}/purge.
type PurgeResponse struct {
	Name    string      `json:"name"`
	Purged  []string    `json:"purged"` // internal names
	Skipped []PurgeSkip `json:"skipped"`
}

// PurgeSkip is a record a purge left, and why.
type PurgeSkip struct {
	InternalName string `json:"internal_name"`
	State        string `json:"state"`
	Reason       string `json:"reason"`
}

// InstanceDetail is the body of GET /api/instances/{name}.
type InstanceDetail struct {
	Instance
	// ConnectionString is the postgresql:// URL with the superuser password
	// (empty until the instance has an endpoint, and once it is deleted).
	ConnectionString string `json:"connection_string,omitempty"`
	// Replicas, SyncReplica, ReadOnlyConnectionString (with the password),
	// Primary and Servers describe the standbys (see replicas.go).
	InstanceReplicas
	Events       []InstanceEvent `json:"events"`        // newest first
	HealthChecks []HealthCheck   `json:"health_checks"` // newest first
}

// InstanceEvent is a recorded change of an instance.
type InstanceEvent struct {
	ID        int64     `json:"id"`
	Type      string    `json:"type"`
	OldState  string    `json:"old_state,omitempty"`
	NewState  string    `json:"new_state,omitempty"`
	Message   string    `json:"message,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// HealthCheck is one probe of an instance.
type HealthCheck struct {
	ID              int64     `json:"id"`
	Status          string    `json:"status"`
	PostgresVersion string    `json:"postgres_version,omitempty"`
	ResponseTimeMs  int64     `json:"response_time_ms"`
	Error           string    `json:"error,omitempty"`
	CheckedAt       time.Time `json:"checked_at"`
}

// InstanceEvents is the body of GET /api/instances/{name}/events.
type InstanceEvents struct {
	Name   string          `json:"name"`
	Events []InstanceEvent `json:"events"`
}

// InstanceHealth is the body of GET /api/instances/{name}/health.
type InstanceHealth struct {
	Name   string        `json:"name"`
	State  string        `json:"state"`
	Health string        `json:"health"`
	Checks []HealthCheck `json:"checks"`
}

// InstanceLogs is the body of GET /api/instances/{name}/logs.
type InstanceLogs struct {
	Name         string   `json:"name"`
	InternalName string   `json:"internal_name"`
	Tail         int      `json:"tail"`
	Lines        []string `json:"lines"`
}

// Orchestration summarises an orchestration instance.
type Orchestration struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Version      string    `json:"version,omitempty"`
	Status       string    `json:"status"` // Running, Completed, Failed, Cancelled
	ExecutionID  int64     `json:"execution_id"`
	CustomStatus *string   `json:"custom_status,omitempty"`
	Parent       string    `json:"parent,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// OrchestrationList is a page of GET /api/orchestrations (newest first).
// Pass NextCursor as ?cursor= for the next page; it is empty on the last.
type OrchestrationList struct {
	Orchestrations []Orchestration `json:"orchestrations"`
	NextCursor     string          `json:"next_cursor,omitempty"`
}

// OrchestrationDetail is the body of GET /api/orchestrations/{id}.
type OrchestrationDetail struct {
	Orchestration
	CustomStatusVersion int64               `json:"custom_status_version,omitempty"`
	Output              json.RawMessage     `json:"output,omitempty"` // when Completed
	Error               *OrchestrationError `json:"error,omitempty"`  // when Failed or Cancelled
	Executions          []Execution         `json:"executions"`
}

// OrchestrationError is a failed or cancelled orchestration's error.
type OrchestrationError struct {
	Category     string `json:"category"`
	Message      string `json:"message"`
	Type         string `json:"type,omitempty"`
	NonRetryable bool   `json:"non_retryable,omitempty"`
	Timeout      bool   `json:"timeout,omitempty"`
}

// Execution is one execution of an orchestration (continue-as-new starts a
// new one). History is present only when asked for with ?history=.
type Execution struct {
	ExecutionID int64          `json:"execution_id"`
	Status      string         `json:"status"`
	StartedAt   time.Time      `json:"started_at"`
	CompletedAt *time.Time     `json:"completed_at,omitempty"`
	EventCount  int            `json:"event_count"`
	History     []HistoryEvent `json:"history,omitempty"`
	// Steps is History read as steps (an activity call with all its
	// attempts, a timer, an event…), present with History.
	Steps []HistoryStep `json:"steps,omitempty"`
}

// HistoryStep is one readable step of an execution's history: an activity
// call with its attempts, a sub-orchestration, a timer, a wait, an event, a
// status change, the start or the end. Payloads are masked like
// HistoryEvent's.
type HistoryStep struct {
	// Kind is start, activity, timer, wait, event, sub, chained, status,
	// syscall, cancel, completed, failed, continued or other.
	Kind  string `json:"kind"`
	Title string `json:"title"`
	// Status is ok, failed, running, cancelled, waiting or info.
	Status     string    `json:"status"`
	StatusText string    `json:"status_text,omitempty"`
	At         time.Time `json:"at,omitzero"`
	// IDs are the ids of the events the step stands for.
	IDs []int64 `json:"event_ids"`
	// Lines are notes on the step ("3 attempts, 2 retried after a failure").
	Lines []string        `json:"notes,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
	// Payload is the step's result, output or data; PayloadFor names it.
	Payload    json.RawMessage `json:"payload,omitempty"`
	PayloadFor string          `json:"payload_for,omitempty"`
	Error      string          `json:"error,omitempty"`
	// Link is a related orchestration's id (a sub-orchestration, a chained
	// one, the parent), LinkText how to call it.
	Link     string `json:"instance,omitempty"`
	LinkText string `json:"instance_label,omitempty"`
	// Policy is the retry policy's summary, when the history records it.
	Policy   string           `json:"policy,omitempty"`
	Attempts []HistoryAttempt `json:"attempts,omitempty"`
	// Total is the retry sequence's total timeout timer.
	Total   *HistoryTimer `json:"total_timeout,omitempty"`
	Retried bool          `json:"retried,omitempty"`
}

// IDList is the event ids as "#3 #4 #9".
func (h HistoryStep) IDList() string {
	var b strings.Builder
	for i, id := range h.IDs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("#" + strconv.FormatInt(id, 10))
	}
	return b.String()
}

// ShowAttempts tells whether the attempts are worth listing: not for a
// call that succeeded on its first attempt.
func (h HistoryStep) ShowAttempts() bool {
	n := len(h.Attempts)
	return n > 1 || (n == 1 && h.Attempts[0].Status != "ok") || h.Total != nil
}

// HistoryAttempt is one attempt of an activity call.
type HistoryAttempt struct {
	// N is the attempt's number, Of the policy's maximum (0: unknown).
	N       int       `json:"attempt"`
	Of      int       `json:"max_attempts,omitempty"`
	EventID int64     `json:"event_id"`
	At      time.Time `json:"at,omitzero"`
	// Status is ok, failed, timeout, cancelled or running.
	Status     string          `json:"status"`
	StatusText string          `json:"status_text,omitempty"`
	Took       time.Duration   `json:"took_ns,omitempty"`
	Error      string          `json:"error,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	// Timeout is the attempt's timeout timer; Backoff the wait after this
	// attempt, before the next.
	Timeout *HistoryTimer `json:"timeout,omitempty"`
	Backoff *HistoryTimer `json:"backoff,omitempty"`
}

// Label is "attempt 2 of 5" (or "attempt 2" when the maximum is unknown).
func (a HistoryAttempt) Label() string {
	if a.Of > 0 {
		return fmt.Sprintf("attempt %d of %d", a.N, a.Of)
	}
	return fmt.Sprintf("attempt %d", a.N)
}

// HistoryTimer is a durable timer of a step.
type HistoryTimer struct {
	EventID int64         `json:"event_id"`
	Delay   time.Duration `json:"delay_ns"`
	FireAt  time.Time     `json:"fire_at,omitzero"`
	Fired   bool          `json:"fired,omitempty"`
	FiredID int64         `json:"fired_event_id,omitempty"`
}

// HistoryEvent is one history event in readable form. Payloads (input,
// result, data) are embedded as JSON when they are JSON; values of keys that
// look like secrets (password, token, secret) are masked.
type HistoryEvent struct {
	EventID           int64               `json:"event_id"`
	Kind              string              `json:"kind"`
	SourceEventID     int64               `json:"source_event_id,omitempty"`
	Timestamp         *time.Time          `json:"timestamp,omitempty"`
	Name              string              `json:"name,omitempty"`
	Version           string              `json:"version,omitempty"`
	Input             json.RawMessage     `json:"input,omitempty"`
	Result            json.RawMessage     `json:"result,omitempty"`
	Instance          string              `json:"instance,omitempty"`
	Data              json.RawMessage     `json:"data,omitempty"`
	Reason            string              `json:"reason,omitempty"`
	FireAt            *time.Time          `json:"fire_at,omitempty"`
	ParentInstance    string              `json:"parent_instance,omitempty"`
	ParentExecutionID int64               `json:"parent_execution_id,omitempty"`
	Error             *OrchestrationError `json:"error,omitempty"`
	CustomStatus      *string             `json:"custom_status,omitempty"`
	CarryForward      []CarriedEvent      `json:"carry_forward,omitempty"`
	// Retry detail recorded by newer runtimes (absent in older histories):
	// the attempt a schedule starts (or a timer belongs to), the policy's
	// attempts and summary, and why a timer exists (user, backoff,
	// attempt_timeout, total_timeout).
	Attempt      int    `json:"attempt,omitempty"`
	MaxAttempts  int    `json:"max_attempts,omitempty"`
	Policy       string `json:"policy,omitempty"`
	TimerPurpose string `json:"timer_purpose,omitempty"`
}

// CarriedEvent is an external event carried across continue-as-new.
type CarriedEvent struct {
	Name string          `json:"name"`
	Data json.RawMessage `json:"data,omitempty"`
}

// CancelRequest is the optional body of POST /api/orchestrations/{id}/cancel.
type CancelRequest struct {
	Reason string `json:"reason,omitempty"`
}

// CancelResponse acknowledges a cancellation request.
type CancelResponse struct {
	ID     string `json:"id"`
	Status string `json:"status"` // "cancel_requested"
}

// RecreateResponse is the body of POST /api/orchestrations/{id}/recreate.
type RecreateResponse struct {
	NewID      string `json:"new_id"`
	OriginalID string `json:"original_id"`
	Name       string `json:"name"`
	Version    string `json:"version,omitempty"`
}

// RaiseEventRequest is the body of POST /api/orchestrations/{id}/raise-event.
// EventData is any JSON value (default null).
type RaiseEventRequest struct {
	EventName string          `json:"event_name"`
	EventData json.RawMessage `json:"event_data,omitempty"`
}

// RaiseEventResponse acknowledges a raised event.
type RaiseEventResponse struct {
	ID        string `json:"id"`
	EventName string `json:"event_name"`
	Raised    bool   `json:"raised"`
}

// ServerLogs is the body of GET /api/server/logs: the last matching lines
// of the server's log file, oldest first.
type ServerLogs struct {
	File  string   `json:"file,omitempty"`
	Lines []string `json:"lines"`
	Count int      `json:"count"`
}

// ServerStats is the body of GET /api/server/stats.
type ServerStats struct {
	Instances      InstanceStats      `json:"instances"`
	Orchestrations OrchestrationStats `json:"orchestrations"`
	GeneratedAt    time.Time          `json:"generated_at"`
}

// InstanceStats counts instances.
type InstanceStats struct {
	Total    int            `json:"total"`
	ByState  map[string]int `json:"by_state"`
	ByHealth map[string]int `json:"by_health"` // running instances only
}

// OrchestrationStats counts orchestrations and queued messages.
type OrchestrationStats struct {
	Total             int            `json:"total"`
	ByStatus          map[string]int `json:"by_status"`
	OrchestratorQueue int            `json:"orchestrator_queue"`
	WorkerQueue       int            `json:"worker_queue"`
}

// ServerConfig is the effective configuration, secrets masked.
type ServerConfig struct {
	Version                  string          `json:"version"`
	GoVersion                string          `json:"go_version"`
	StartedAt                time.Time       `json:"started_at"`
	DataDir                  string          `json:"data_dir"`
	Database                 string          `json:"database"`
	Dataplane                string          `json:"dataplane"`
	PostgresVersions         []string        `json:"postgres_versions,omitempty"`
	ActorInterval            string          `json:"actor_interval"`
	OrchestrationConcurrency int             `json:"orchestration_concurrency"`
	ActivityConcurrency      int             `json:"activity_concurrency"`
	AdminUser                string          `json:"admin_user"`
	AdminPassword            string          `json:"admin_password"` // always "***"
	StateDir                 string          `json:"state_dir"`
	LogFile                  string          `json:"log_file,omitempty"`
	SessionTTL               string          `json:"session_ttl"`
	TokenTTL                 string          `json:"token_ttl"`
	Metrics                  string          `json:"metrics"` // who may read /metrics
	LoginRateLimit           string          `json:"login_rate_limit"`
	Retention                RetentionConfig `json:"retention"`
	// Retry is every activity's effective default retry policy, sorted by
	// activity; CircuitBreaker the data-plane breaker.
	Retry          []RetryPolicyInfo `json:"retry,omitempty"`
	CircuitBreaker *BreakerInfo      `json:"circuit_breaker,omitempty"`
}

// RetryPolicyInfo is an activity's retry policy and where it came from.
type RetryPolicyInfo struct {
	Activity string `json:"activity"`
	// Summary is the policy as history records it, e.g. "deploy: 3
	// attempts, exponential 2s×2 max 10s, 5m0s per attempt".
	Summary     string `json:"summary"`
	MaxAttempts int    `json:"max_attempts"`
	// Backoff is none, fixed, linear or exponential; Base is the fixed
	// delay or the linear/exponential base. Durations are Go durations.
	Backoff      string  `json:"backoff"`
	Base         string  `json:"base,omitempty"`
	Max          string  `json:"max,omitempty"`
	Multiplier   float64 `json:"multiplier,omitempty"`
	Timeout      string  `json:"timeout,omitempty"`
	TotalTimeout string  `json:"total_timeout,omitempty"`
	Jitter       float64 `json:"jitter,omitempty"`
	// Source is default, file or env: the highest-precedence source of any
	// field; Fields maps each configured field to its source.
	Source string            `json:"source"`
	Fields map[string]string `json:"fields,omitempty"`
}

// BreakerInfo is the circuit breaker in front of each data-plane activity.
type BreakerInfo struct {
	FailureRatio float64           `json:"failure_ratio"`
	Window       string            `json:"window"`
	MinCalls     int               `json:"min_calls"`
	CoolDown     string            `json:"cool_down"`
	Probes       int               `json:"probes"`
	Activities   []string          `json:"activities"`
	Source       string            `json:"source"`
	Fields       map[string]string `json:"fields,omitempty"`
}

// ServerRetries is the body of GET /api/server/retries: what this server
// observed of its activities' retry sequences since it started.
type ServerRetries struct {
	GeneratedAt time.Time         `json:"generated_at"`
	Activities  []ActivityRetries `json:"activities"`
}

// ActivityRetries is one activity's retry report.
type ActivityRetries struct {
	Activity string `json:"activity"`
	// Policy is the default policy in force (none without one).
	Policy *RetryPolicyInfo `json:"policy,omitempty"`
	// Policies are the policies observed sequences ran under.
	Policies []string `json:"policies,omitempty"`
	// Sequences that ended: succeeded, exhausted their attempts (or total
	// time), or failed early (a non-retryable error).
	Sequences   int `json:"sequences"`
	Succeeded   int `json:"succeeded"`
	Exhausted   int `json:"exhausted"`
	FailedEarly int `json:"failed_early"`
	// SuccessByAttempt: how many sequences succeeded on each attempt.
	SuccessByAttempt []AttemptCount `json:"success_by_attempt"`
	// Attempts that ended, of which Failures failed and Timeouts timed out.
	Attempts      int             `json:"attempts"`
	Failures      int             `json:"failures"`
	Timeouts      int             `json:"timeouts"`
	TimeToSuccess DurationSummary `json:"time_to_success"`
	// Circuits are the activity's circuit breakers that have seen a call.
	Circuits []CircuitInfo `json:"circuits,omitempty"`
	// Advice is duroxide.Suggest's tuning advice.
	Advice []string `json:"advice,omitempty"`
}

// AttemptCount is the number of sequences that succeeded on an attempt.
type AttemptCount struct {
	Attempt   int `json:"attempt"`
	Sequences int `json:"sequences"`
}

// DurationSummary summarizes durations (Go durations, "0s" when none).
type DurationSummary struct {
	Count int    `json:"count"`
	Mean  string `json:"mean"`
	P50   string `json:"p50"`
	P95   string `json:"p95"`
	Max   string `json:"max"`
}

// CircuitInfo is the state of one circuit breaker.
type CircuitInfo struct {
	Key   string `json:"key,omitempty"`
	State string `json:"state"` // closed, open, half_open
	// HalfOpenAt is when an open breaker half-opens.
	HalfOpenAt *time.Time `json:"half_open_at,omitempty"`
}

// RetentionConfig is what the stores keep ("all" where a limit is off).
type RetentionConfig struct {
	ExecutionsPerChain      string `json:"executions_per_chain"`
	JanitorInterval         string `json:"janitor_interval"`
	Orchestrations          string `json:"orchestrations"`
	HealthChecks            string `json:"health_checks"`
	HealthChecksPerInstance string `json:"health_checks_per_instance"`
}

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

// SessionInfo is the body of GET /api/session.
type SessionInfo struct {
	User      string    `json:"user"`
	Kind      string    `json:"kind"` // "browser" or "token"
	ExpiresAt time.Time `json:"expires_at"`
}

// LogoutResponse is the body of POST /api/logout.
type LogoutResponse struct {
	Status string `json:"status"` // "logged out"
}
