package cms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// BackupState is a base backup's lifecycle state:
//
//	running → completed | failed
//	completed | failed → deleted
//
// Only completed backups (verified by the data plane) are restorable.
type BackupState string

// Backup states.
const (
	BackupRunning   BackupState = "running"
	BackupCompleted BackupState = "completed"
	BackupFailed    BackupState = "failed"
	BackupDeleted   BackupState = "deleted"
)

// Backup kinds.
const (
	BackupScheduled = "scheduled"
	BackupManual    = "manual"
)

// Backup is one base backup of an instance.
type Backup struct {
	ID              string
	InternalName    string
	InstanceName    string
	Kind            string // BackupScheduled or BackupManual
	State           BackupState
	OrchestrationID string
	StartedAt       time.Time // zero until the data plane reports it
	FinishedAt      time.Time
	SizeBytes       int64
	Duration        time.Duration
	StartWAL        string
	Timeline        int
	PostgresVersion string
	Error           string
	CreatedAt       time.Time
	DeletedAt       time.Time
}

// BackupResult is what the data plane reports of a completed backup.
type BackupResult struct {
	StartedAt, FinishedAt time.Time
	SizeBytes             int64
	StartWAL              string
	Timeline              int
	PostgresVersion       string
}

// BackupFilter selects backups for ListBackups; empty fields select all.
type BackupFilter struct {
	InternalName string
	InstanceName string
	States       []BackupState // empty: all but deleted
	Limit        int
}

// BackupSettings are an instance's backup schedule and retention.
type BackupSettings struct {
	Enabled   bool
	Interval  time.Duration // between scheduled base backups
	Retention time.Duration // how long backups and WAL are kept
}

// Backup defaults.
const (
	DefaultBackupInterval  = 24 * time.Hour
	DefaultBackupRetention = 7 * 24 * time.Hour
)

// DefaultBackupSettings are those of an instance with none recorded.
var DefaultBackupSettings = BackupSettings{Enabled: true, Interval: DefaultBackupInterval, Retention: DefaultBackupRetention}

// ErrBackupNotFound is returned (wrapped) for an unknown backup id.
var ErrBackupNotFound = errors.New("cms: backup not found")

// BackupStore records base backups and backup settings. Backup records
// outlive their instance's record state (a deleted instance keeps its
// backups until they expire).
type BackupStore interface {
	// CreateBackup records a backup in state running; creating the same
	// id again returns the stored record.
	CreateBackup(ctx context.Context, b Backup) (*Backup, error)
	// CompleteBackup moves a running backup to completed with r. Completing
	// a completed one is a no-op; others fail.
	CompleteBackup(ctx context.Context, id string, r BackupResult) (*Backup, error)
	// FailBackup moves a running backup to failed with the reason; no-op
	// in other states.
	FailBackup(ctx context.Context, id, reason string) error
	// MarkBackupDeleted moves a backup to deleted (no-op if it is).
	MarkBackupDeleted(ctx context.Context, id string) error
	// GetBackup returns a backup, or ErrBackupNotFound.
	GetBackup(ctx context.Context, id string) (*Backup, error)
	// ListBackups lists backups, newest first.
	ListBackups(ctx context.Context, f BackupFilter) ([]Backup, error)
	// BackupSettings returns an instance's settings (DefaultBackupSettings
	// if none are recorded).
	BackupSettings(ctx context.Context, internalName string) (BackupSettings, error)
	// SetBackupSettings records an instance's settings.
	SetBackupSettings(ctx context.Context, internalName string, s BackupSettings) error
}

const backupCols = `id, internal_name, instance_name, kind, state, orchestration_id, started_at, finished_at,
	size_bytes, duration_ms, start_wal, timeline, postgres_version, error, created_at, deleted_at`

func scanBackup(r scanner) (*Backup, error) {
	var b Backup
	var state string
	var started, finished, dur, created, deleted int64
	if err := r.Scan(&b.ID, &b.InternalName, &b.InstanceName, &b.Kind, &state, &b.OrchestrationID, &started, &finished,
		&b.SizeBytes, &dur, &b.StartWAL, &b.Timeline, &b.PostgresVersion, &b.Error, &created, &deleted); err != nil {
		return nil, err
	}
	b.State = BackupState(state)
	b.StartedAt, b.FinishedAt = msTime(started), msTime(finished)
	b.Duration = time.Duration(dur) * time.Millisecond
	b.CreatedAt, b.DeletedAt = msTime(created), msTime(deleted)
	return &b, nil
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// CreateBackup implements BackupStore.
func (s *store) CreateBackup(ctx context.Context, b Backup) (*Backup, error) {
	if b.ID == "" || b.InternalName == "" {
		return nil, errors.New("cms: create backup: id and internal name are required")
	}
	if b.Kind == "" {
		b.Kind = BackupManual
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO {p}backups (id, internal_name, instance_name, kind, state, orchestration_id, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`),
		b.ID, b.InternalName, b.InstanceName, b.Kind, string(BackupRunning), b.OrchestrationID, s.now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("cms: create backup %s: %w", b.ID, err)
	}
	return s.GetBackup(ctx, b.ID)
}

// CompleteBackup implements BackupStore.
func (s *store) CompleteBackup(ctx context.Context, id string, r BackupResult) (*Backup, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE {p}backups SET state = ?, started_at = ?, finished_at = ?, size_bytes = ?, duration_ms = ?,
		start_wal = ?, timeline = ?, postgres_version = ?, error = '' WHERE id = ? AND state = ?`),
		string(BackupCompleted), msOf(r.StartedAt), msOf(r.FinishedAt), r.SizeBytes, r.FinishedAt.Sub(r.StartedAt).Milliseconds(),
		r.StartWAL, r.Timeline, r.PostgresVersion, id, string(BackupRunning))
	if err != nil {
		return nil, fmt.Errorf("cms: complete backup %s: %w", id, err)
	}
	b, err := s.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 && b.State != BackupCompleted {
		return nil, fmt.Errorf("cms: complete backup %s: it is %s", id, b.State)
	}
	return b, nil
}

// FailBackup implements BackupStore.
func (s *store) FailBackup(ctx context.Context, id, reason string) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE {p}backups SET state = ?, error = ?, finished_at = ? WHERE id = ? AND state = ?`),
		string(BackupFailed), reason, s.now().UnixMilli(), id, string(BackupRunning))
	if err != nil {
		return fmt.Errorf("cms: fail backup %s: %w", id, err)
	}
	return nil
}

// MarkBackupDeleted implements BackupStore.
func (s *store) MarkBackupDeleted(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE {p}backups SET state = ?, deleted_at = ? WHERE id = ? AND state <> ?`),
		string(BackupDeleted), s.now().UnixMilli(), id, string(BackupDeleted))
	if err != nil {
		return fmt.Errorf("cms: delete backup %s: %w", id, err)
	}
	return nil
}

// GetBackup implements BackupStore.
func (s *store) GetBackup(ctx context.Context, id string) (*Backup, error) {
	b, err := scanBackup(s.db.QueryRowContext(ctx, s.q(`SELECT `+backupCols+` FROM {p}backups WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrBackupNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: get backup %s: %w", id, err)
	}
	return b, nil
}

// ListBackups implements BackupStore.
func (s *store) ListBackups(ctx context.Context, f BackupFilter) ([]Backup, error) {
	var where []string
	var args []any
	if f.InternalName != "" {
		where, args = append(where, "internal_name = ?"), append(args, f.InternalName)
	}
	if f.InstanceName != "" {
		where, args = append(where, "instance_name = ?"), append(args, f.InstanceName)
	}
	if len(f.States) == 0 {
		where, args = append(where, "state <> ?"), append(args, string(BackupDeleted))
	} else {
		ph := make([]string, len(f.States))
		for i, st := range f.States {
			ph[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	q := `SELECT ` + backupCols + ` FROM {p}backups WHERE ` + strings.Join(where, " AND ") + ` ORDER BY created_at DESC, id DESC`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("cms: list backups: %w", err)
	}
	defer rows.Close()
	var out []Backup
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, fmt.Errorf("cms: list backups: %w", err)
		}
		out = append(out, *b)
	}
	return out, rows.Err()
}

// BackupSettings implements BackupStore.
func (s *store) BackupSettings(ctx context.Context, internalName string) (BackupSettings, error) {
	var enabled int
	var interval, retention int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT enabled, interval_ms, retention_ms FROM {p}backup_settings WHERE internal_name = ?`),
		internalName).Scan(&enabled, &interval, &retention)
	if errors.Is(err, sql.ErrNoRows) {
		return DefaultBackupSettings, nil
	}
	if err != nil {
		return BackupSettings{}, fmt.Errorf("cms: backup settings of %s: %w", internalName, err)
	}
	return BackupSettings{Enabled: enabled != 0, Interval: time.Duration(interval) * time.Millisecond, Retention: time.Duration(retention) * time.Millisecond}, nil
}

// SetBackupSettings implements BackupStore.
func (s *store) SetBackupSettings(ctx context.Context, internalName string, bs BackupSettings) error {
	if bs.Interval <= 0 || bs.Retention <= 0 {
		return errors.New("cms: backup settings: interval and retention must be positive")
	}
	enabled := 0
	if bs.Enabled {
		enabled = 1
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO {p}backup_settings (internal_name, enabled, interval_ms, retention_ms, updated_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (internal_name) DO UPDATE SET enabled = excluded.enabled,
		interval_ms = excluded.interval_ms, retention_ms = excluded.retention_ms, updated_at = excluded.updated_at`),
		internalName, enabled, bs.Interval.Milliseconds(), bs.Retention.Milliseconds(), s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("cms: set backup settings of %s: %w", internalName, err)
	}
	return nil
}
