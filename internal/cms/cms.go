// Package cms is Toygres' catalogue of PostgreSQL instances: their records,
// state changes, health checks and (encrypted) superuser passwords. It lives
// in the same database as the durable-execution store: a SQLite file by
// default, or PostgreSQL.
package cms

import (
	"context"
	"errors"
	"time"
)

// State is an instance's lifecycle state:
//
//	creating → running | failed
//	running | failed → deleting → deleted
//
// A failed create is cleaned up but stays failed (with its reason as an event).
type State string

// States.
const (
	StateCreating State = "creating"
	StateRunning  State = "running"
	StateFailed   State = "failed"
	StateDeleting State = "deleting"
	StateDeleted  State = "deleted"
)

// Active reports whether an instance in this state holds its name.
func (s State) Active() bool { return s == StateCreating || s == StateRunning || s == StateDeleting }

// Health is the result of the latest health check.
type Health string

// Health values.
const (
	HealthUnknown   Health = "unknown"
	HealthHealthy   Health = "healthy"
	HealthUnhealthy Health = "unhealthy"
)

// Instance is one PostgreSQL instance record.
type Instance struct {
	ID              string // UUID
	Name            string // user-chosen name; unique among active instances
	InternalName    string // unique forever: <name>-<8 hex>
	Driver          string // data plane driver that runs it
	PostgresVersion string
	StorageGB       int
	Internal        bool
	DNSLabel        string
	State           State
	Health          Health

	// Endpoint, once known. ConnectionString never contains the password.
	Host             string
	Port             int
	ConnectionString string
	ExternalIP       string
	DNSName          string

	CreateOrchestrationID string
	DeleteOrchestrationID string
	ActorOrchestrationID  string
	// FailureReason explains a failed create.
	FailureReason string

	// Problem, when not empty, says why the instance's data-plane
	// resources are broken (found when the control plane started, or by
	// supervision); ProblemAt is when it was recorded. A repair clears it.
	// It is independent of State and Health: a broken instance keeps its
	// state (normally running) and so its name.
	Problem   string
	ProblemAt time.Time

	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt time.Time // zero unless deleted
}

// Broken reports whether the instance has a recorded problem.
func (i *Instance) Broken() bool { return i.Problem != "" }

// Event is a recorded change of an instance.
type Event struct {
	ID        int64
	Instance  string // internal name
	Type      string // "state_change", "health_change", "problem", "note"
	OldState  State
	NewState  State
	Message   string
	CreatedAt time.Time
}

// HealthCheck is one probe of an instance.
type HealthCheck struct {
	ID              int64
	Instance        string // internal name
	Status          Health
	PostgresVersion string
	ResponseTimeMs  int64
	Error           string
	CheckedAt       time.Time
}

// StateUpdate carries optional fields written with a state change; empty
// fields leave the stored value unchanged.
type StateUpdate struct {
	Host                  string
	Port                  int
	ConnectionString      string
	ExternalIP            string
	DNSName               string
	DeleteOrchestrationID string
	ActorOrchestrationID  string `json:",omitempty"` // the health actor's orchestration id (omitempty: recorded inputs stay as they were)
	FailureReason         string
	Message               string // recorded on the state_change event
}

// ListOptions filter List.
type ListOptions struct {
	States         []State // empty: all but deleted (unless IncludeDeleted)
	IncludeDeleted bool
	// Broken keeps only instances with a recorded Problem.
	Broken bool
	Name   string // exact user name
	Limit  int    // 0: no limit
}

// Counts are instance totals for dashboards and metrics.
type Counts struct {
	ByState  map[State]int
	ByHealth map[Health]int // running instances only
}

// Errors. Implementations wrap them; match with errors.Is.
var (
	ErrNotFound  = errors.New("cms: instance not found")
	ErrNameTaken = errors.New("cms: name is held by an active instance")
	// ErrActive is returned by Purge for an instance that is not failed
	// or deleted.
	ErrActive = errors.New("cms: instance is active")
)

// Store is the CMS.
type Store interface {
	SessionStore
	BackupStore
	ReplicaStore

	// CreateInstance inserts a record in state creating (ID, timestamps,
	// State and Health are filled in). It is idempotent per
	// CreateOrchestrationID: inserting the same record again returns the
	// stored one. Another active instance with the same Name fails with
	// ErrNameTaken. A "state_change" event (→ creating) is recorded.
	CreateInstance(ctx context.Context, inst Instance) (*Instance, error)
	// Get returns the active instance with this user name, or, if there is
	// none, the most recent inactive one; ErrNotFound if never used.
	Get(ctx context.Context, name string) (*Instance, error)
	// GetByInternalName returns an instance by internal name (any state).
	GetByInternalName(ctx context.Context, internalName string) (*Instance, error)
	// List returns instances, newest first.
	List(ctx context.Context, opts ListOptions) ([]Instance, error)
	// UpdateState moves an instance to state and records a state_change
	// event when the state actually changes (with u.Message). Optional fields
	// of u are written when non-empty. Moving to deleted sets DeletedAt.
	// It returns the previous state. ErrNotFound for an unknown instance.
	UpdateState(ctx context.Context, internalName string, state State, u StateUpdate) (State, error)
	// UpdateHealth sets the health of a running instance and records a
	// health_change event when it changes; no-op in other states.
	UpdateHealth(ctx context.Context, internalName string, h Health) error
	// SetActor records the instance's health actor orchestration id.
	SetActor(ctx context.Context, internalName, orchestrationID string) error
	// AddEvent records a free-form event ("note") for an instance.
	AddEvent(ctx context.Context, internalName, message string) error
	// Events lists an instance's events, newest first (limit 0: all).
	Events(ctx context.Context, internalName string, limit int) ([]Event, error)
	// RecordHealthCheck stores one probe result (idempotent per instance
	// and CheckedAt) and, in the same transaction, sets the instance's
	// health to its status as UpdateHealth does (a check recorded before
	// changes nothing).
	RecordHealthCheck(ctx context.Context, hc HealthCheck) error
	// HealthChecks lists an instance's checks, newest first (limit 0: all).
	HealthChecks(ctx context.Context, internalName string, limit int) ([]HealthCheck, error)
	// PruneHealthChecks deletes the checks r selects (of all instances) and
	// returns how many it deleted.
	PruneHealthChecks(ctx context.Context, r HealthCheckRetention) (int64, error)
	// RecentEvents lists events of all instances, newest first.
	RecentEvents(ctx context.Context, limit int) ([]Event, error)
	// Counts returns totals by state and by health.
	Counts(ctx context.Context) (*Counts, error)

	// SetProblem records why an instance's data-plane resources are broken
	// (problem not empty) or that they are fine again (problem empty). A
	// change is recorded as a "problem" event. ErrNotFound for an unknown
	// instance; a deleted instance keeps no problem (no-op).
	SetProblem(ctx context.Context, internalName, problem string) error
	// Purge removes a failed or deleted instance's record with its events,
	// health checks and secret, for good. ErrNotFound for an unknown
	// instance, ErrActive for one in another state.
	Purge(ctx context.Context, internalName string) error

	// SetPassword stores an instance's superuser password, encrypted at rest.
	SetPassword(ctx context.Context, internalName, password string) error
	// Password returns it; ErrNotFound if none is stored.
	Password(ctx context.Context, internalName string) (string, error)
	// DeletePassword forgets it (deleted instances keep no secret).
	DeletePassword(ctx context.Context, internalName string) error

	// ClaimPlacement records that the data-plane host host runs the
	// instance, unless a host is recorded already, and returns the recorded
	// host. Data planes whose instances live on one machine (local) claim
	// it before deploying, so that a server on another machine never takes
	// "not on this machine" for "does not exist". ErrNotFound for an
	// unknown instance.
	ClaimPlacement(ctx context.Context, internalName, host string) (string, error)
	// Placement returns the recorded host, "" if none is recorded.
	Placement(ctx context.Context, internalName string) (string, error)

	Close() error
}
