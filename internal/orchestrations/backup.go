package orchestrations

import (
	"fmt"
	"strings"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
)

// Backup orchestration names (stable: they are recorded in history).
const (
	// BackupInstance takes one verified base backup and records it.
	BackupInstance = "backup-instance"
	// BackupSchedule is an instance's eternal backup schedule.
	BackupSchedule = "backup-schedule"
	// DeleteBackupOrch removes one backup.
	DeleteBackupOrch = "delete-backup"
)

// changeBackups is the GetVersion change id of the backup steps added to
// create-instance, delete-instance and the janitor (version 1): histories
// recorded before them replay version 0, the code as it was.
const changeBackups = "backups"

// EventBackupSettings wakes an instance's schedule to re-read its settings.
const EventBackupSettings = "BackupSettings"

// BackupID is the id of the backup-instance orchestration of a backup.
func BackupID(backupID string) string { return "backup-" + backupID }

// ScheduleID is the backup schedule's instance id.
func ScheduleID(internalName string) string { return "backup-schedule-" + internalName }

// DeleteBackupID is the delete-backup orchestration's instance id.
func DeleteBackupID(backupID string) string { return "delete-backup-" + backupID }

// BackupInput starts backup-instance.
type BackupInput struct {
	InternalName string `json:"internal_name"`
	BackupID     string `json:"backup_id"`
	Kind         string `json:"kind"` // cms.BackupScheduled or cms.BackupManual
}

// BackupOutput is backup-instance's result.
type BackupOutput struct {
	BackupID  string `json:"backup_id"`
	SizeBytes int64  `json:"size_bytes"`
}

// ScheduleInput starts (and continues) an instance's backup schedule.
type ScheduleInput struct {
	InternalName string `json:"internal_name"`
	// NextDueMs is when the next scheduled backup is due (0: at once).
	NextDueMs int64 `json:"next_due_ms,omitempty"`
	Runs      int64 `json:"runs,omitempty"`
}

// DeleteBackupInput starts delete-backup.
type DeleteBackupInput struct {
	InternalName string `json:"internal_name"`
	BackupID     string `json:"backup_id"`
}

func registerBackups(reg *duroxide.Registry) error {
	for _, err := range []error{
		duroxide.RegisterOrchestration(reg, BackupInstance, backupInstance),
		duroxide.RegisterOrchestration(reg, BackupSchedule, backupSchedule),
		duroxide.RegisterOrchestration(reg, DeleteBackupOrch, deleteBackup),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// backupInstance records a backup as running, takes it, and records it as
// completed only once the data plane has verified it; a backup that fails
// is recorded as failed and its files removed. A crash at any point resumes
// here: the take-base-backup activity is redelivered and redoes a backup
// left half made, and the record stays running (never restorable) until
// then.
func backupInstance(ctx *duroxide.OrchestrationContext, in BackupInput) (BackupOutput, error) {
	d := useDefaults(ctx)
	log := ctx.Logger().With("internal_name", in.InternalName, "backup", in.BackupID)
	ref := activities.BackupRef{InternalName: in.InternalName, ID: in.BackupID}
	ctx.SetCustomStatus("recording")
	if _, err := plain[string](ctx, d, activities.CreateBackupRecord, activities.BackupRecordInput{ID: in.BackupID,
		InternalName: in.InternalName, Kind: in.Kind, OrchestrationID: ctx.InstanceID()}); err != nil {
		return BackupOutput{}, fmt.Errorf("record backup: %w", err)
	}
	ctx.SetCustomStatus("copying")
	info, err := plain[dataplane.BackupInfo](ctx, d, activities.TakeBaseBackup, ref)
	if err != nil {
		log.Error("backup failed", "error", err.Error())
		ctx.SetCustomStatus("failed")
		if _, ferr := plain[struct{}](ctx, d, activities.FailBackup, activities.FailBackupInput{InternalName: in.InternalName, ID: in.BackupID, Reason: err.Error()}); ferr != nil {
			log.Error("recording the failed backup failed", "error", ferr.Error())
		}
		return BackupOutput{}, fmt.Errorf("backup %s: %w", in.BackupID, err)
	}
	ctx.SetCustomStatus("recording result")
	if _, err := plain[struct{}](ctx, d, activities.CompleteBackup, activities.CompleteBackupInput{ID: in.BackupID, Info: info}); err != nil {
		return BackupOutput{}, fmt.Errorf("record completed backup: %w", err)
	}
	ctx.SetCustomStatus("completed")
	return BackupOutput{BackupID: in.BackupID, SizeBytes: info.SizeBytes}, nil
}

// scheduledBackupID is the id of a scheduled backup taken at t.
func scheduledBackupID(t time.Time, guid string) string {
	g := strings.ToLower(strings.ReplaceAll(guid, "-", ""))
	if len(g) > 8 {
		g = g[:8]
	}
	return "s" + t.UTC().Format("20060102t150405") + "-" + g
}

// backupSchedule takes a base backup when one is due (the first at once),
// then sleeps on a durable timer until the next is due, new settings
// arrive, or the instance is deleted, and continues as new. It ends when
// the instance is gone. A failed backup is recorded and retried at the
// next due time; it never ends the schedule.
func backupSchedule(ctx *duroxide.OrchestrationContext, in ScheduleInput) (string, error) {
	log := ctx.Logger().With("internal_name", in.InternalName)
	ref := activities.InstanceRef{InternalName: in.InternalName}
	deleted := ctx.WaitForEvent(EventInstanceDeleted)
	changed := ctx.WaitForEvent(EventBackupSettings)
	if deleted.Done() {
		return "stopped", nil
	}
	d := useDefaults(ctx)
	inst, err := call[activities.InstanceView](ctx, activities.GetInstance, ref, activities.PolicyCMS)
	if err == nil && (!inst.Found || !inst.State.Active()) {
		log.Info("backup schedule stopping: instance is gone", "state", string(inst.State))
		return "instance gone", nil
	}
	settings, err := plain[activities.SettingsOutput](ctx, d, activities.GetBackupSettings, ref)
	if err != nil {
		log.Warn("reading backup settings failed; using the defaults", "error", err.Error())
		settings = activities.SettingsOutput{Enabled: true, Interval: cms.DefaultBackupInterval, Retention: cms.DefaultBackupRetention}
	}
	now := ctx.UtcNow()
	wait := settings.Interval
	switch {
	case !settings.Enabled:
		in.NextDueMs = 0
		ctx.SetCustomStatus("disabled")
	case inst.State == cms.StateRunning && now.UnixMilli() >= in.NextDueMs:
		id := scheduledBackupID(now, ctx.NewGUID())
		ctx.SetCustomStatus("backing up " + id)
		var out BackupOutput
		if err := ctx.CallSubOrchestration(BackupInstance, BackupInput{InternalName: in.InternalName, BackupID: id, Kind: cms.BackupScheduled},
			duroxide.WithInstanceID(BackupID(id))).Await(&out); err != nil {
			log.Warn("scheduled backup failed", "backup", id, "error", err.Error())
		}
		in.Runs++
		in.NextDueMs = now.Add(settings.Interval).UnixMilli()
		fallthrough
	default:
		if in.NextDueMs > 0 {
			wait = max(time.UnixMilli(in.NextDueMs).Sub(ctx.UtcNow()), time.Second)
		}
		ctx.SetCustomStatus("next " + time.UnixMilli(in.NextDueMs).UTC().Format(time.RFC3339))
	}
	if ctx.Select(deleted, changed, ctx.CreateTimer(wait)) == 0 {
		return "stopped", nil
	}
	return "", ctx.ContinueAsNew(in)
}

// deleteBackup removes one backup's files and marks its record deleted.
func deleteBackup(ctx *duroxide.OrchestrationContext, in DeleteBackupInput) (string, error) {
	d := useDefaults(ctx)
	if _, err := plain[struct{}](ctx, d, activities.DeleteBackup, activities.BackupRef{InternalName: in.InternalName, ID: in.BackupID}); err != nil {
		return "", fmt.Errorf("delete backup %s: %w", in.BackupID, err)
	}
	return "deleted", nil
}

// restoreOrDeploy is create-instance's deploy step: a restore when the
// input names a source.
func restoreOrDeploy(ctx *duroxide.OrchestrationContext, d defaults, in CreateInput) error {
	if in.Restore == nil {
		_, err := plain[struct{}](ctx, d, activities.Deploy, activities.DeployInput{InternalName: in.InternalName,
			PostgresVersion: in.PostgresVersion, StorageGB: in.StorageGB, Internal: in.Internal, DNSLabel: in.DNSLabel})
		return err
	}
	ctx.SetCustomStatus("restoring")
	_, err := plain[struct{}](ctx, d, activities.RestorePostgres, activities.RestoreInput{InternalName: in.InternalName,
		StorageGB: in.StorageGB, Internal: in.Internal, DNSLabel: in.DNSLabel, From: *in.Restore})
	return err
}

// startBackups is create-instance's last step: archiving as asked, and the
// backup schedule.
func startBackups(ctx *duroxide.OrchestrationContext, d defaults, in CreateInput) error {
	if in.NoBackups {
		if _, err := plain[struct{}](ctx, d, activities.SetArchiving, activities.SetArchivingInput{InternalName: in.InternalName, On: false}); err != nil {
			return fmt.Errorf("turn archiving off: %w", err)
		}
		return nil
	}
	return ctx.StartOrchestration(BackupSchedule, ScheduleID(in.InternalName), ScheduleInput{InternalName: in.InternalName})
}

// beforeDelete is delete-instance's step before the resources go: the
// schedule stops and the WAL written so far reaches the archive, so the
// instance can be restored up to its deletion. Both are best effort.
func beforeDelete(ctx *duroxide.OrchestrationContext, d defaults, internalName string) {
	log := ctx.Logger().With("internal_name", internalName)
	if _, err := plain[struct{}](ctx, d, activities.RaiseEvent, activities.RaiseEventInput{Instance: ScheduleID(internalName), Event: EventInstanceDeleted}); err != nil {
		log.Warn("signalling the backup schedule failed", "error", err.Error())
	}
	if _, err := plain[struct{}](ctx, d, activities.FlushArchive, activities.InstanceRef{InternalName: internalName}); err != nil {
		log.Warn("flushing the WAL archive before deleting failed; the restore window ends at the last archived segment", "error", err.Error())
	}
}

// afterDelete purges the backups of a deleted instance when asked.
func afterDelete(ctx *duroxide.OrchestrationContext, d defaults, in DeleteInput) error {
	if !in.PurgeBackups {
		return nil
	}
	if _, err := plain[int](ctx, d, activities.PurgeBackups, activities.InstanceRef{InternalName: in.InternalName}); err != nil {
		return fmt.Errorf("purge backups: %w", err)
	}
	return nil
}
