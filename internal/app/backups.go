package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/orchestrations"
)

// ErrNoBackups is returned (wrapped) when the data plane takes no backups.
var ErrNoBackups = errors.New("this data plane takes no backups")

func (a *App) backuper() (dataplane.Backuper, error) {
	bk, ok := a.driver.(dataplane.Backuper)
	if !ok {
		return nil, invalid("the %s data plane takes no backups", a.driver.Name())
	}
	return bk, nil
}

// StartBackup records an on-demand base backup of a running instance and
// starts the backup-instance orchestration that takes it. The record is
// running until the backup is verified (completed) or failed.
func (a *App) StartBackup(ctx context.Context, name string) (_ *cms.Backup, err error) {
	defer func() { err = instanceNotFound(name, err) }()
	if _, err := a.backuper(); err != nil {
		return nil, err
	}
	inst, err := a.cms.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if inst.State != cms.StateRunning {
		return nil, conflict("instance %q is %s; only a running instance can be backed up", name, inst.State)
	}
	id := "m" + time.Now().UTC().Format("20060102t150405") + "-" + randomHex(4)
	orchID := orchestrations.BackupID(id)
	rec, err := a.cms.CreateBackup(ctx, cms.Backup{ID: id, InternalName: inst.InternalName, InstanceName: inst.Name, Kind: cms.BackupManual, OrchestrationID: orchID})
	if err != nil {
		return nil, err
	}
	if err := a.client.StartOrchestration(ctx, orchID, orchestrations.BackupInstance,
		orchestrations.BackupInput{InternalName: inst.InternalName, BackupID: id, Kind: cms.BackupManual}); err != nil {
		_ = a.cms.FailBackup(ctx, id, "starting the backup orchestration failed: "+err.Error())
		return nil, fmt.Errorf("start backup orchestration: %w", err)
	}
	a.logger.Info("backup requested", "instance", name, "backup", id)
	return rec, nil
}

// ListBackups lists the backups (not deleted) of every instance that had
// this name, newest first, or of all instances when name is "".
func (a *App) ListBackups(ctx context.Context, name string) ([]cms.Backup, error) {
	return a.cms.ListBackups(ctx, cms.BackupFilter{InstanceName: name})
}

// GetBackup returns one backup record.
func (a *App) GetBackup(ctx context.Context, id string) (*cms.Backup, error) {
	return a.cms.GetBackup(ctx, id)
}

// DeleteBackup starts removing a backup (the delete-backup orchestration).
// A running backup cannot be deleted.
func (a *App) DeleteBackup(ctx context.Context, id string) (*cms.Backup, error) {
	rec, err := a.cms.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	switch rec.State {
	case cms.BackupRunning:
		return nil, conflict("backup %s is still running", id)
	case cms.BackupDeleted:
		return rec, nil
	}
	// A removal under way is left alone; one that ended (it failed, since
	// the backup is not deleted) is started afresh.
	err = a.client.StartOrchestration(ctx, orchestrations.DeleteBackupID(id), orchestrations.DeleteBackupOrch,
		orchestrations.DeleteBackupInput{InternalName: rec.InternalName, BackupID: id}, duroxide.OnExisting(duroxide.ReuseRestartEnded))
	if err != nil {
		return nil, fmt.Errorf("start delete-backup orchestration: %w", err)
	}
	return rec, nil
}

// RestoreWindow is the span of time an instance can be restored to.
type RestoreWindow struct {
	// Earliest is when its oldest verified backup finished (zero: no backup).
	Earliest time.Time `json:"earliest,omitempty"`
	// Latest is now for an instance that archives, the moment it was
	// deleted for a deleted one, else the newest backup's end.
	Latest time.Time `json:"latest,omitempty"`
	// Backups is the number of verified backups.
	Backups int `json:"backups"`
}

// RestoreWindowOf returns the restore window of the instance (by internal
// name) and its verified backups, newest first.
func (a *App) RestoreWindowOf(ctx context.Context, inst *cms.Instance) (RestoreWindow, []cms.Backup, error) {
	done, err := a.cms.ListBackups(ctx, cms.BackupFilter{InternalName: inst.InternalName, States: []cms.BackupState{cms.BackupCompleted}})
	if err != nil || len(done) == 0 {
		return RestoreWindow{}, done, err
	}
	w := RestoreWindow{Earliest: done[len(done)-1].FinishedAt, Latest: done[0].FinishedAt, Backups: len(done)}
	settings, err := a.cms.BackupSettings(ctx, inst.InternalName)
	if err != nil {
		return w, done, err
	}
	switch {
	case inst.State == cms.StateDeleted && !inst.DeletedAt.IsZero():
		w.Latest = inst.DeletedAt
	case inst.State.Active() && settings.Enabled:
		w.Latest = time.Now().UTC()
	}
	return w, done, nil
}

// RestoreRequest asks for a new instance restored from another's backups
// (the API's request body).
type RestoreRequest = client.RestoreRequest

// Restore picks the backup and target of a restore, reserves the new
// instance and starts its create-instance orchestration, which restores
// instead of running initdb.
func (a *App) Restore(ctx context.Context, r RestoreRequest) (_ *cms.Instance, err error) {
	defer func() { err = instanceNotFound(r.From, err) }()
	if _, err := a.backuper(); err != nil {
		return nil, err
	}
	if r.From == "" {
		return nil, invalidField("from", "from (the instance to restore) is required")
	}
	src, err := a.cms.Get(ctx, r.From)
	if err != nil {
		return nil, err
	}
	win, backups, err := a.RestoreWindowOf(ctx, src)
	if err != nil {
		return nil, err
	}
	if len(backups) == 0 {
		return nil, invalidField("from", "instance %q has no verified backup to restore from", r.From)
	}
	from := dataplane.RestoreSource{Instance: src.InternalName}
	var chosen *cms.Backup
	if r.BackupID != "" {
		for i := range backups {
			if backups[i].ID == r.BackupID {
				chosen = &backups[i]
			}
		}
		if chosen == nil {
			return nil, invalidField("backup_id", "backup %q is not a verified backup of %q", r.BackupID, r.From)
		}
	}
	if r.At != nil {
		at := r.At.UTC()
		if at.Before(win.Earliest) || at.After(win.Latest) {
			return nil, invalidField("at", "%s is outside the restore window of %q (%s to %s)", at.Format(time.RFC3339), r.From,
				win.Earliest.Format(time.RFC3339), win.Latest.Format(time.RFC3339))
		}
		if chosen == nil {
			for i := range backups { // newest first
				if !backups[i].FinishedAt.After(at) {
					chosen = &backups[i]
					break
				}
			}
		}
		if chosen.FinishedAt.After(at) {
			return nil, invalidField("at", "backup %s finished at %s, after %s", chosen.ID, chosen.FinishedAt.Format(time.RFC3339), at.Format(time.RFC3339))
		}
		from.Target = at
	} else if chosen != nil {
		from.Immediate = true
	} else {
		chosen = &backups[0]
	}
	from.BackupID = chosen.ID
	if r.Password == "" {
		pw, err := a.cms.Password(ctx, src.InternalName)
		if err != nil {
			return nil, invalidField("password", "password is required: Toygres no longer holds the password of %q", r.From)
		}
		r.Password = pw
	}
	cr := CreateRequest{Name: r.Name, Password: r.Password, PostgresVersion: chosen.PostgresVersion, StorageGB: r.StorageGB,
		Internal: r.Internal, DNSLabel: r.DNSLabel, NoBackups: r.NoBackups}
	if cr.StorageGB == 0 {
		cr.StorageGB = src.StorageGB
	}
	return a.createInstance(ctx, cr, &from)
}

// superviseSchedules starts the backup schedule of every running instance
// with backups enabled whose schedule is missing or has ended.
func (a *App) superviseSchedules(ctx context.Context) error {
	if _, ok := a.driver.(dataplane.Backuper); !ok {
		return nil
	}
	running, err := a.cms.List(ctx, cms.ListOptions{States: []cms.State{cms.StateRunning}})
	if err != nil {
		return err
	}
	for _, inst := range running {
		if err := a.ensureSchedule(ctx, inst.InternalName); err != nil {
			return err
		}
	}
	return nil
}

// ensureSchedule starts an instance's backup schedule unless it runs or
// backups are off.
func (a *App) ensureSchedule(ctx context.Context, internalName string) error {
	settings, err := a.cms.BackupSettings(ctx, internalName)
	if err != nil || !settings.Enabled {
		return err
	}
	id := orchestrations.ScheduleID(internalName)
	if st, err := a.client.GetStatus(ctx, id); err == nil && !st.Status.IsTerminal() {
		return nil // running; the status read only spares a log line
	} else if err != nil && !errors.Is(err, duroxide.ErrNotFound) {
		return err
	}
	a.logger.Info("starting backup schedule", "internal_name", internalName, "schedule", id)
	return a.client.StartOrchestration(ctx, id, orchestrations.BackupSchedule, orchestrations.ScheduleInput{InternalName: internalName},
		duroxide.OnExisting(duroxide.ReuseRestartEnded))
}

// BackupSettingsRequest changes an instance's backup settings; nil fields
// stay as they are.
type BackupSettingsRequest struct {
	Enabled   *bool          `json:"enabled,omitempty"`
	Interval  *time.Duration `json:"-"`
	Retention *time.Duration `json:"-"`
}

// SetBackupSettings changes an instance's schedule, retention and
// archiving, and wakes its schedule to apply them.
func (a *App) SetBackupSettings(ctx context.Context, name string, r BackupSettingsRequest) (_ cms.BackupSettings, err error) {
	defer func() { err = instanceNotFound(name, err) }()
	bk, err := a.backuper()
	if err != nil {
		return cms.BackupSettings{}, err
	}
	inst, err := a.cms.Get(ctx, name)
	if err != nil {
		return cms.BackupSettings{}, err
	}
	s, err := a.cms.BackupSettings(ctx, inst.InternalName)
	if err != nil {
		return s, err
	}
	if r.Enabled != nil {
		s.Enabled = *r.Enabled
	}
	if r.Interval != nil {
		if *r.Interval < time.Second {
			return s, invalidField("interval", "the backup interval must be at least a second")
		}
		s.Interval = *r.Interval
	}
	if r.Retention != nil {
		if *r.Retention < time.Second {
			return s, invalidField("retention", "the retention must be at least a second")
		}
		s.Retention = *r.Retention
	}
	if err := a.cms.SetBackupSettings(ctx, inst.InternalName, s); err != nil {
		return s, err
	}
	if inst.State == cms.StateRunning {
		if err := bk.SetArchiving(ctx, inst.InternalName, s.Enabled); err != nil {
			return s, fmt.Errorf("set archiving: %w", err)
		}
		if err := a.ensureSchedule(ctx, inst.InternalName); err != nil {
			return s, err
		}
		_ = a.client.RaiseEvent(ctx, orchestrations.ScheduleID(inst.InternalName), orchestrations.EventBackupSettings, nil)
	}
	return s, nil
}
