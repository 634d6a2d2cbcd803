package dataplane

import (
	"context"
	"errors"
	"time"
)

// Backuper is implemented by drivers that archive the write-ahead log of
// their instances continuously and take base backups, so that an instance
// can be restored, into a new instance, to any moment its archive covers.
//
// Backups are kept apart from the instance: deleting the instance (Driver
// Delete) leaves them, and only DeleteBackup, PruneWAL and DeleteBackups
// remove them. Every method is idempotent and safe to retry after a crash
// at any point.
type Backuper interface {
	// SetArchiving turns continuous WAL archiving of an instance on (the
	// default of a new instance) or off.
	SetArchiving(ctx context.Context, name string, on bool) error
	// Backup takes a base backup of a running instance under the id the
	// caller chose, verifies it against its manifest and returns its
	// description. Calling it again with the id of a complete backup
	// returns that backup; a backup that an earlier call left half made is
	// discarded and taken again. A backup is listed only once verified.
	Backup(ctx context.Context, name, id string) (BackupInfo, error)
	// ListBackups lists the complete, verified base backups of an instance
	// (deleted or not), oldest first.
	ListBackups(ctx context.Context, name string) ([]BackupInfo, error)
	// DeleteBackup removes one base backup; removing a missing one succeeds.
	DeleteBackup(ctx context.Context, name, id string) error
	// PruneWAL removes the archived WAL segments an instance's restores no
	// longer need: those before segment keepFrom (a WAL file name, the
	// StartWAL of the oldest base backup kept). It returns how many it removed.
	PruneWAL(ctx context.Context, name, keepFrom string) (int, error)
	// DeleteBackups removes every backup and the WAL archive of an instance.
	DeleteBackups(ctx context.Context, name string) error
	// FlushArchive makes the WAL written so far reach the archive (switching
	// to a new segment) and waits until it has. It is a no-op for an
	// instance whose server does not run.
	FlushArchive(ctx context.Context, name string) error
	// ArchiveStatus reports the WAL archiver of a running instance.
	ArchiveStatus(ctx context.Context, name string) (ArchiveStatus, error)
	// Restore creates the instance spec from a base backup of another
	// instance (which may have been deleted) and that instance's WAL
	// archive, recovers it to the target and promotes it; the instance then
	// runs on its own like a deployed one, with password as the password
	// of its user. spec.PostgresVersion is ignored: the backup's is used.
	// It returns once the instance is promoted. Calling it again converges.
	Restore(ctx context.Context, spec Spec, password string, from RestoreSource) error
}

// ErrBackupNotFound is returned (wrapped) for a backup that does not exist.
var ErrBackupNotFound = errors.New("dataplane: backup not found")

// ErrRestoreTarget is returned (wrapped) when recovery cannot reach the
// requested target (it lies outside what the backup and archive cover).
// Retrying does not help.
var ErrRestoreTarget = errors.New("dataplane: recovery target not reachable")

// BackupInfo describes a complete, verified base backup.
type BackupInfo struct {
	ID       string `json:"id"`
	Instance string `json:"instance"` // the instance's internal name
	// StartedAt and FinishedAt bracket the backup; an instance can be
	// restored to any moment from FinishedAt on that its archive covers.
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	SizeBytes  int64     `json:"size_bytes"`
	// StartWAL is the first WAL segment a restore from it needs.
	StartWAL        string `json:"start_wal"`
	Timeline        int    `json:"timeline"`
	PostgresVersion string `json:"postgres_version"`
}

// RestoreSource says what to restore from.
type RestoreSource struct {
	// Instance is the internal name of the instance the backup is of.
	Instance string `json:"instance"`
	// BackupID is the base backup to start from.
	BackupID string `json:"backup_id"`
	// Target is the moment to recover to (it must be at or after the
	// backup's FinishedAt). Zero: as far as the archive goes, unless
	// Immediate.
	Target time.Time `json:"target,omitempty"`
	// Immediate stops recovery as soon as the backup is consistent: the
	// data as of the backup alone.
	Immediate bool `json:"immediate,omitempty"`
}

// ArchiveStatus is the state of an instance's WAL archiving.
type ArchiveStatus struct {
	Enabled          bool      `json:"enabled"`
	ArchivedCount    int64     `json:"archived_count"`
	LastArchivedWAL  string    `json:"last_archived_wal,omitempty"`
	LastArchivedTime time.Time `json:"last_archived_time,omitempty"`
	FailedCount      int64     `json:"failed_count"`
	LastFailedWAL    string    `json:"last_failed_wal,omitempty"`
	LastFailedTime   time.Time `json:"last_failed_time,omitempty"`
	// Pending is the number of finished WAL segments not archived yet.
	Pending int `json:"pending"`
}
