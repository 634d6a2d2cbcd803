package dataplane

import (
	"context"
	"errors"
)

// EventPrimaryDown: the primary of an instance with standbys died. The
// driver's supervisor does not restart it (that would race a failover):
// the health actor fails over (Fence it, Promote a standby, Rebuild it).
// Event.Server names the dead server.
const EventPrimaryDown EventKind = "primary-down"

// MaxReplicas is the largest number of standby servers an instance may
// have.
const MaxReplicas = 2

// Role is what a server of an instance does.
type Role string

// Server roles.
const (
	// RolePrimary accepts writes; an instance has exactly one.
	RolePrimary Role = "primary"
	// RoleStandby replays the primary's WAL (streaming replication) and
	// answers read-only queries.
	RoleStandby Role = "standby"
	// RoleFenced is a server that was stopped so that it can never accept
	// writes (a failed or demoted primary) and waits to be rebuilt as a
	// standby.
	RoleFenced Role = "fenced"
	// RoleBuilding is a standby whose base copy is still being taken.
	RoleBuilding Role = "building"
)

// ServerState is one server of an instance as the driver sees it now.
type ServerState struct {
	// ID names the server within its instance ("0", "1", "2"); it stays
	// the same across promotions.
	ID   string
	Role Role
	Host string
	Port int
	// Ready: the server accepts connections (read-write for the primary,
	// read-only for a standby).
	Ready bool
	// Sync: a standby the primary waits for at commit (synchronous_standby_names).
	Sync bool
	// Streaming: a standby connected to the primary and receiving WAL.
	Streaming bool
	// LagBytes is how far a standby's replay is behind the primary's
	// current WAL position; 0 for the primary or when unknown.
	LagBytes int64
	// Timeline is the server's current timeline (it increases at each
	// promotion); 0 when unknown.
	Timeline int
	// Message is a detail for humans (why it is not ready, say).
	Message string
}

// ErrNotStandby is returned (wrapped) by Promote when the server named is
// not a standby that can be promoted.
var ErrNotStandby = errors.New("dataplane: server is not a promotable standby")

// Replicator is implemented by drivers that can run standby servers for an
// instance: streaming replication from the primary, optionally synchronous,
// with the means for a failover orchestration to fence, promote and
// rebuild. Every method is idempotent and safe to retry, like Driver's.
//
// The instance's Endpoint keeps reaching the primary after a promotion:
// Endpoint.URL is the read-write connection string (on the local data plane
// libpq multi-host with target_session_attrs=read-write; on Kubernetes a
// Service whose selector follows the primary) and Endpoint.ReadOnlyURL
// reaches the standbys.
type Replicator interface {
	// SetReplicas converges the instance to n standbys (0..MaxReplicas),
	// built from the current primary (pg_basebackup -R) and synchronous
	// when sync (the primary then waits for one of them at commit). It
	// returns once the change is under way; Servers reports progress.
	// Removing standbys removes their data.
	SetReplicas(ctx context.Context, name string, n int, sync bool) error
	// Servers reports every server of the instance with its role,
	// readiness and lag, the primary first; ErrNotFound if the instance
	// has no resources.
	Servers(ctx context.Context, name string) ([]ServerState, error)
	// Fence makes sure server id cannot accept writes: it is stopped
	// (cleanly when it still answers, so that its standbys have received
	// everything it committed), not restarted by any supervisor, and
	// marked RoleFenced. Fencing a fenced or absent server succeeds.
	Fence(ctx context.Context, name, id string) error
	// Promote makes standby id the instance's primary: it must be fenced
	// from the old primary first (the caller fences). It waits until the
	// server accepts writes, points the remaining standbys at it, and
	// makes the instance's Endpoint reach it. Promoting the current
	// primary succeeds; a server that is not a standby fails with
	// ErrNotStandby.
	Promote(ctx context.Context, name, id string) error
	// Rebuild turns fenced server id back into a standby of the current
	// primary: pg_rewind when its history allows, else a fresh base backup.
	// Rebuilding a standby that streams already succeeds.
	Rebuild(ctx context.Context, name, id string) error
}
