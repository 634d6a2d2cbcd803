package client

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Backup states (Backup.State).
const (
	BackupRunning   = "running"
	BackupCompleted = "completed"
	BackupFailed    = "failed"
	BackupDeleted   = "deleted"
)

// Backup is a base backup of an instance. Together with the instance's WAL
// archive, its completed backups let Restore make a new instance as of any
// moment of the restore window.
type Backup struct {
	ID              string     `json:"id"`
	Instance        string     `json:"instance"`
	InternalName    string     `json:"internal_name"`
	Kind            string     `json:"kind"`  // "scheduled" or "manual"
	State           string     `json:"state"` // running, completed, failed, deleted
	OrchestrationID string     `json:"orchestration_id,omitempty"`
	StartedAt       *time.Time `json:"started_at,omitempty"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	SizeBytes       int64      `json:"size_bytes"`
	DurationMs      int64      `json:"duration_ms"`
	StartWAL        string     `json:"start_wal,omitempty"`
	PostgresVersion string     `json:"postgres_version,omitempty"`
	Error           string     `json:"error,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
}

// BackupList is the body of GET /api/backups (newest first).
type BackupList struct {
	Backups []Backup `json:"backups"`
}

// BackupSettings are an instance's backup settings; durations are Go
// duration strings ("24h0m0s").
type BackupSettings struct {
	Enabled   bool   `json:"enabled"`
	Interval  string `json:"interval"`
	Retention string `json:"retention"`
}

// BackupSettingsRequest is the body of PUT
// /api/instances/{name}/backup-settings; omitted fields stay as they are.
// Durations are Go duration strings ("6h", "30m").
type BackupSettingsRequest struct {
	Enabled   *bool  `json:"enabled,omitempty"`
	Interval  string `json:"interval,omitempty"`
	Retention string `json:"retention,omitempty"`
}

// RestoreWindow is the span of time an instance can be restored to.
type RestoreWindow struct {
	// Earliest is when its oldest completed backup finished (absent: no
	// backup, nothing to restore).
	Earliest *time.Time `json:"earliest,omitempty"`
	// Latest is now for an instance that archives its WAL, the moment it
	// was deleted for a deleted one, else the newest backup's end.
	Latest *time.Time `json:"latest,omitempty"`
	// Backups is the number of completed backups.
	Backups int `json:"backups"`
}

// InstanceBackups is the body of GET /api/instances/{name}/backups: the
// instance's restore window, backup settings and backups (newest first).
type InstanceBackups struct {
	Instance string         `json:"instance"`
	Window   RestoreWindow  `json:"window"`
	Settings BackupSettings `json:"settings"`
	Backups  []Backup       `json:"backups"`
}

// RestoreRequest is the body of POST /api/restore: make the new instance
// Name from the backups and WAL archive of the instance From (which may
// have been deleted, within its retention). At picks the moment (the newest
// backup that finished before it is used); BackupID restores as of that
// backup's end (with At: starts from it); neither restores as far as the
// archive goes. Password defaults to the source's while Toygres holds it.
type RestoreRequest struct {
	Name      string     `json:"name"`
	From      string     `json:"from"`
	At        *time.Time `json:"at,omitempty"`
	BackupID  string     `json:"backup_id,omitempty"`
	Password  string     `json:"password,omitempty"`
	Internal  bool       `json:"internal,omitempty"`
	DNSLabel  string     `json:"dns_label,omitempty"`
	StorageGB int        `json:"storage_gb,omitempty"`
	NoBackups bool       `json:"no_backups,omitempty"`
}

// String hides the password.
func (r RestoreRequest) String() string {
	return "RestoreRequest{Name:" + r.Name + ", From:" + r.From + ", Password:***}"
}

// LogValue hides the password from slog.
func (r RestoreRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", r.Name), slog.String("from", r.From),
		slog.String("backup_id", r.BackupID), slog.String("password", "***"))
}

func backupPath(id string) string { return "/api/backups/" + url.PathEscape(id) }

// CreateBackup starts a manual base backup of a running instance (202); the
// backup is running until verified, follow it with WaitForBackup. An
// instance that does not run (or does not archive): ErrConflict.
func (c *Client) CreateBackup(ctx context.Context, name string) (*Backup, error) {
	var b Backup
	if err := c.Do(ctx, http.MethodPost, instancePath(name)+"/backups", nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// ListBackups lists the backups (not deleted) of every instance, or with a
// name, of every instance that had that name (deleted ones included),
// newest first.
func (c *Client) ListBackups(ctx context.Context, name string) (*BackupList, error) {
	q := url.Values{}
	if name != "" {
		q.Set("instance", name)
	}
	var l BackupList
	if err := c.Do(ctx, http.MethodGet, withQuery("/api/backups", q), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// InstanceBackups returns the restore window, backup settings and backups
// of the instance the name stands for. Unknown: ErrNotFound.
func (c *Client) InstanceBackups(ctx context.Context, name string) (*InstanceBackups, error) {
	var b InstanceBackups
	if err := c.Do(ctx, http.MethodGet, instancePath(name)+"/backups", nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// GetBackup returns a backup by id. Unknown: ErrNotFound.
func (c *Client) GetBackup(ctx context.Context, id string) (*Backup, error) {
	var b Backup
	if err := c.Do(ctx, http.MethodGet, backupPath(id), nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// DeleteBackup starts deleting a backup (202). A running backup:
// ErrConflict.
func (c *Client) DeleteBackup(ctx context.Context, id string) (*Backup, error) {
	var b Backup
	if err := c.Do(ctx, http.MethodDelete, backupPath(id), nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// SetBackupSettings changes an instance's backup schedule and retention;
// fields left empty stay as they are. It returns the settings in force.
func (c *Client) SetBackupSettings(ctx context.Context, name string, req BackupSettingsRequest) (*BackupSettings, error) {
	var s BackupSettings
	if err := c.Do(ctx, http.MethodPut, instancePath(name)+"/backup-settings", req, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Restore starts making a new instance from another's backups (202); follow
// it with WaitForInstance. A taken name: ErrConflict; an unknown source:
// ErrNotFound; a moment outside the restore window, or a backup that is not
// a completed backup of the source: ErrBadRequest.
func (c *Client) Restore(ctx context.Context, req RestoreRequest) (*Instance, error) {
	var in Instance
	if err := c.Do(ctx, http.MethodPost, "/api/restore", req, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// WaitForBackup polls a backup every interval (0: 1s) until it is no longer
// running and returns it; a failed backup is returned without error (check
// State). The context bounds the wait.
func (c *Client) WaitForBackup(ctx context.Context, id string, interval time.Duration) (*Backup, error) {
	if interval <= 0 {
		interval = time.Second
	}
	for {
		b, err := c.GetBackup(ctx, id)
		if err != nil {
			return nil, err
		}
		if b.State != BackupRunning {
			return b, nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return b, fmt.Errorf("wait for backup %s (it is %s): %w", id, b.State, ctx.Err())
		case <-t.C:
		}
	}
}
