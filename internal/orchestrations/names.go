// Package orchestrations holds Toygres' durable workflows: creating an
// instance, deleting it, and the per-instance health actor.
package orchestrations

import (
	"time"

	"github.com/toygres/toygres/internal/dataplane"
)

// Orchestration names (stable: they are recorded in history).
const (
	CreateInstance = "create-instance"
	DeleteInstance = "delete-instance"
	InstanceActor  = "instance-actor"
)

// Instance ids of the orchestrations of one instance.
func CreateID(internalName string) string { return "create-" + internalName }

// DeleteID is the delete orchestration's instance id.
func DeleteID(internalName string) string { return "delete-" + internalName }

// CleanupID is the id of the delete-instance sub-orchestration that cleans
// up after a failed create (a child of the create orchestration, so it is
// not the id a user's later delete uses).
func CleanupID(internalName string) string { return "cleanup-" + internalName }

// ActorID is the health actor's instance id.
func ActorID(internalName string) string { return "actor-" + internalName }

// EventInstanceDeleted stops an instance's health actor.
const EventInstanceDeleted = "InstanceDeleted"

// CreateInput starts create-instance. It never carries the password: the
// API stores it (encrypted) in the CMS before starting the orchestration, and
// activities read it from there.
type CreateInput struct {
	InternalName    string `json:"internal_name"`
	Name            string `json:"name"`
	PostgresVersion string `json:"postgres_version,omitempty"`
	StorageGB       int    `json:"storage_gb"`
	Internal        bool   `json:"internal,omitempty"`
	DNSLabel        string `json:"dns_label,omitempty"`
	// ActorInterval is the health check period (0: 30s).
	ActorInterval time.Duration `json:"actor_interval,omitempty"`
	// NoBackups turns WAL archiving off and starts no backup schedule.
	NoBackups bool `json:"no_backups,omitempty"`
	// Restore, when set, makes the instance from a backup instead of initdb.
	Restore *dataplane.RestoreSource `json:"restore,omitempty"`
	// Replicas standbys (0..dataplane.MaxReplicas) are added once the
	// primary answers, one synchronous when SyncReplica.
	Replicas    int  `json:"replicas,omitempty"`
	SyncReplica bool `json:"sync_replica,omitempty"`
	// FailoverInterval and FailoverThreshold configure failure detection
	// of instances with standbys (0: DefaultFailoverCheckInterval,
	// DefaultFailoverThreshold); they are handed to the health actor.
	FailoverInterval  time.Duration `json:"failover_interval,omitempty"`
	FailoverThreshold int           `json:"failover_threshold,omitempty"`
}

// CreateOutput is create-instance's result.
type CreateOutput struct {
	InternalName     string `json:"internal_name"`
	ConnectionString string `json:"connection_string"` // without password
}

// DeleteInput starts delete-instance.
type DeleteInput struct {
	InternalName string `json:"internal_name"`
	// Cleanup is set when a failed create cleans up: the instance keeps its
	// failed state instead of moving to deleting/deleted.
	Cleanup bool   `json:"cleanup,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// PurgeBackups removes the instance's backups too (by default they stay
	// until they expire).
	PurgeBackups bool `json:"purge_backups,omitempty"`
}

// ActorInput starts (and continues) the health actor.
type ActorInput struct {
	InternalName string        `json:"internal_name"`
	Interval     time.Duration `json:"interval,omitempty"`
	Checks       int64         `json:"checks,omitempty"`   // checks done by earlier executions
	Restarts     int           `json:"restarts,omitempty"` // server restart count the last check saw
	// FailedChecks counts consecutive failed checks of an instance with
	// standbys; FailoverThreshold of them start a failover. Instances
	// with standbys are checked every FailoverInterval instead of Interval.
	FailedChecks      int           `json:"failed_checks,omitempty"`
	FailoverInterval  time.Duration `json:"failover_interval,omitempty"`
	FailoverThreshold int           `json:"failover_threshold,omitempty"`
}
