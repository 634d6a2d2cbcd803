package activities

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
)

// Backup activity names (stable: they are recorded in history).
const (
	CreateBackupRecord = "cms-create-backup-record"
	TakeBaseBackup     = "take-base-backup"
	CompleteBackup     = "cms-complete-backup"
	FailBackup         = "cms-fail-backup"
	DeleteBackup       = "delete-backup"
	PurgeBackups       = "purge-backups"
	SetArchiving       = "set-archiving"
	FlushArchive       = "flush-archive"
	RestorePostgres    = "restore-postgres"
	GetBackupSettings  = "cms-get-backup-settings"
	BackupRetention    = "janitor-backup-retention"
)

// Backup metric names.
const (
	MetricBackupLastSuccess = "toygres_backup_last_success_timestamp_seconds"
	MetricBackupAge         = "toygres_backup_last_success_age_seconds"
	MetricBackupDuration    = "toygres_backup_duration_seconds"
	MetricBackupSize        = "toygres_backup_size_bytes"
	MetricBackupFailures    = "toygres_backup_failures_total"
	MetricArchivePending    = "toygres_wal_archive_pending_segments"
	MetricArchiveLag        = "toygres_wal_archive_lag_seconds"
	MetricArchiveFailures   = "toygres_wal_archive_failures_total"
)

// BackupRecordInput records a backup that starts.
type BackupRecordInput struct {
	ID              string `json:"id"`
	InternalName    string `json:"internal_name"`
	Kind            string `json:"kind"`
	OrchestrationID string `json:"orchestration_id"`
}

// BackupRef names one backup of an instance.
type BackupRef struct {
	InternalName string `json:"internal_name"`
	ID           string `json:"id"`
}

// CompleteBackupInput records a verified backup.
type CompleteBackupInput struct {
	ID   string               `json:"id"`
	Info dataplane.BackupInfo `json:"info"`
}

// FailBackupInput records a failed backup.
type FailBackupInput struct {
	InternalName string `json:"internal_name"`
	ID           string `json:"id"`
	Reason       string `json:"reason"`
}

// SetArchivingInput turns WAL archiving on or off.
type SetArchivingInput struct {
	InternalName string `json:"internal_name"`
	On           bool   `json:"on"`
}

// RestoreInput restores a backup into a new instance (the password is
// read from the CMS, as deploy does).
type RestoreInput struct {
	InternalName string                  `json:"internal_name"`
	StorageGB    int                     `json:"storage_gb"`
	Internal     bool                    `json:"internal,omitempty"`
	DNSLabel     string                  `json:"dns_label,omitempty"`
	From         dataplane.RestoreSource `json:"from"`
}

// SettingsOutput is an instance's backup settings.
type SettingsOutput struct {
	Enabled   bool          `json:"enabled"`
	Interval  time.Duration `json:"interval"`
	Retention time.Duration `json:"retention"`
}

// BackupRetentionInput runs a retention sweep as of NowMs.
type BackupRetentionInput struct {
	NowMs int64 `json:"now_ms"`
}

// BackupRetentionOutput counts what a sweep removed.
type BackupRetentionOutput struct {
	Backups     int `json:"backups"`
	WALSegments int `json:"wal_segments"`
	Archives    int `json:"archives"` // whole archives of deleted instances
}

type backupActs struct {
	*acts
	duration *prometheus.HistogramVec
	size     *prometheus.GaugeVec
	failures *prometheus.CounterVec
}

func registerBackups(reg *duroxide.Registry, a *acts) error {
	b := &backupActs{acts: a}
	if a.Metrics != nil {
		var err error
		if b.duration, err = registerOrReuse(a.Metrics, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricBackupDuration,
			Help: "Duration of successful base backups (copy and verification), by instance.", Buckets: prometheus.ExponentialBuckets(0.25, 2, 14)},
			[]string{"instance"})); err != nil {
			return err
		}
		if b.size, err = registerOrReuse(a.Metrics, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricBackupSize,
			Help: "Size of the latest successful base backup, by instance."}, []string{"instance"})); err != nil {
			return err
		}
		if b.failures, err = registerOrReuse(a.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricBackupFailures,
			Help: "Base backups that failed, by instance."}, []string{"instance"})); err != nil {
			return err
		}
		if _, err := registerOrReuse(a.Metrics, prometheus.Collector(&backupCollector{a: a})); err != nil {
			return err
		}
	}
	for _, err := range []error{
		duroxide.RegisterActivity(reg, CreateBackupRecord, b.createRecord, registerOptions(CreateBackupRecord)...),
		duroxide.RegisterActivity(reg, TakeBaseBackup, b.take, registerOptions(TakeBaseBackup)...),
		duroxide.RegisterActivity(reg, CompleteBackup, b.complete, registerOptions(CompleteBackup)...),
		duroxide.RegisterActivity(reg, FailBackup, b.fail, registerOptions(FailBackup)...),
		duroxide.RegisterActivity(reg, DeleteBackup, b.delete, registerOptions(DeleteBackup)...),
		duroxide.RegisterActivity(reg, PurgeBackups, b.purge, registerOptions(PurgeBackups)...),
		duroxide.RegisterActivity(reg, SetArchiving, b.setArchiving, registerOptions(SetArchiving)...),
		duroxide.RegisterActivity(reg, FlushArchive, b.flush, registerOptions(FlushArchive)...),
		duroxide.RegisterActivity(reg, RestorePostgres, b.restore, registerOptions(RestorePostgres)...),
		duroxide.RegisterActivity(reg, GetBackupSettings, b.settings, registerOptions(GetBackupSettings)...),
		duroxide.RegisterActivity(reg, BackupRetention, b.retention, registerOptions(BackupRetention)...),
	} {
		if err != nil {
			return fmt.Errorf("register backup activities: %w", err)
		}
	}
	return nil
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register backup metrics: %w", err)
	}
	return c, nil
}

// backuper returns the driver's Backuper, or a non-retryable error.
func (b *backupActs) backuper() (dataplane.Backuper, error) {
	bk, ok := b.Driver.(dataplane.Backuper)
	if !ok {
		return nil, duroxide.NonRetryable(fmt.Errorf("the %s data plane does not take backups", b.Driver.Name()))
	}
	return bk, nil
}

func (b *backupActs) createRecord(ctx context.Context, in BackupRecordInput) (string, error) {
	inst, err := b.CMS.GetByInternalName(ctx, in.InternalName)
	if errors.Is(err, cms.ErrNotFound) {
		return "", duroxide.NonRetryable(err)
	}
	if err != nil {
		return "", err
	}
	rec, err := b.CMS.CreateBackup(ctx, cms.Backup{ID: in.ID, InternalName: in.InternalName, InstanceName: inst.Name, Kind: in.Kind, OrchestrationID: in.OrchestrationID})
	if err != nil {
		return "", err
	}
	return string(rec.State), nil
}

func (b *backupActs) take(ctx context.Context, in BackupRef) (dataplane.BackupInfo, error) {
	bk, err := b.backuper()
	if err != nil {
		return dataplane.BackupInfo{}, err
	}
	if err := b.checkHost(ctx, in.InternalName, false); err != nil {
		return dataplane.BackupInfo{}, err
	}
	info, err := bk.Backup(ctx, in.InternalName, in.ID)
	if errors.Is(err, dataplane.ErrNotFound) {
		return info, duroxide.NonRetryable(err)
	}
	return info, err
}

func (b *backupActs) complete(ctx context.Context, in CompleteBackupInput) (struct{}, error) {
	i := in.Info
	rec, err := b.CMS.CompleteBackup(ctx, in.ID, cms.BackupResult{StartedAt: i.StartedAt, FinishedAt: i.FinishedAt, SizeBytes: i.SizeBytes,
		StartWAL: i.StartWAL, Timeline: i.Timeline, PostgresVersion: i.PostgresVersion})
	if err != nil {
		return struct{}{}, err
	}
	if b.duration != nil {
		b.duration.WithLabelValues(rec.InstanceName).Observe(rec.Duration.Seconds())
		b.size.WithLabelValues(rec.InstanceName).Set(float64(rec.SizeBytes))
	}
	_ = b.CMS.AddEvent(ctx, rec.InternalName, fmt.Sprintf("%s backup %s completed and verified (%d bytes in %s)", rec.Kind, rec.ID, rec.SizeBytes, rec.Duration))
	return struct{}{}, nil
}

// fail records a failed backup and removes what it left.
func (b *backupActs) fail(ctx context.Context, in FailBackupInput) (struct{}, error) {
	if bk, ok := b.Driver.(dataplane.Backuper); ok {
		if err := bk.DeleteBackup(ctx, in.InternalName, in.ID); err != nil {
			return struct{}{}, err
		}
	}
	if err := b.CMS.FailBackup(ctx, in.ID, in.Reason); err != nil {
		return struct{}{}, err
	}
	if rec, err := b.CMS.GetBackup(ctx, in.ID); err == nil {
		if b.failures != nil {
			b.failures.WithLabelValues(rec.InstanceName).Inc()
		}
		_ = b.CMS.AddEvent(ctx, rec.InternalName, "backup "+rec.ID+" failed: "+in.Reason)
	}
	return struct{}{}, nil
}

func (b *backupActs) delete(ctx context.Context, in BackupRef) (struct{}, error) {
	bk, err := b.backuper()
	if err != nil {
		return struct{}{}, err
	}
	if err := bk.DeleteBackup(ctx, in.InternalName, in.ID); err != nil {
		return struct{}{}, err
	}
	return struct{}{}, b.CMS.MarkBackupDeleted(ctx, in.ID)
}

// purge removes every backup and the archive of an instance.
func (b *backupActs) purge(ctx context.Context, in InstanceRef) (int, error) {
	bk, err := b.backuper()
	if err != nil {
		return 0, err
	}
	if err := bk.DeleteBackups(ctx, in.InternalName); err != nil {
		return 0, err
	}
	list, err := b.CMS.ListBackups(ctx, cms.BackupFilter{InternalName: in.InternalName})
	if err != nil {
		return 0, err
	}
	for _, rec := range list {
		if err := b.CMS.MarkBackupDeleted(ctx, rec.ID); err != nil {
			return 0, err
		}
	}
	return len(list), nil
}

func (b *backupActs) setArchiving(ctx context.Context, in SetArchivingInput) (struct{}, error) {
	bk, ok := b.Driver.(dataplane.Backuper)
	if !ok {
		return struct{}{}, nil
	}
	return struct{}{}, bk.SetArchiving(ctx, in.InternalName, in.On)
}

func (b *backupActs) flush(ctx context.Context, in InstanceRef) (struct{}, error) {
	bk, ok := b.Driver.(dataplane.Backuper)
	if !ok {
		return struct{}{}, nil
	}
	err := bk.FlushArchive(ctx, in.InternalName)
	if errors.Is(err, dataplane.ErrNotFound) {
		return struct{}{}, nil
	}
	return struct{}{}, err
}

func (b *backupActs) restore(ctx context.Context, in RestoreInput) (struct{}, error) {
	bk, err := b.backuper()
	if err != nil {
		return struct{}{}, err
	}
	if err := b.checkHost(ctx, in.InternalName, true); err != nil {
		return struct{}{}, err
	}
	return struct{}{}, b.deployWanted(ctx, in.InternalName, func(ctx context.Context) error {
		pw, err := b.CMS.Password(ctx, in.InternalName)
		if err != nil {
			return duroxide.NonRetryable(fmt.Errorf("read password of %s: %w", in.InternalName, err))
		}
		err = bk.Restore(ctx, dataplane.Spec{Name: in.InternalName, StorageGB: in.StorageGB, Internal: in.Internal, DNSLabel: in.DNSLabel}, pw, in.From)
		if errors.Is(err, dataplane.ErrRestoreTarget) || errors.Is(err, dataplane.ErrBackupNotFound) {
			return duroxide.NonRetryable(err)
		}
		return err
	})
}

func (b *backupActs) settings(ctx context.Context, in InstanceRef) (SettingsOutput, error) {
	s, err := b.CMS.BackupSettings(ctx, in.InternalName)
	return SettingsOutput{Enabled: s.Enabled, Interval: s.Interval, Retention: s.Retention}, err
}

// retention removes, per instance, the completed backups older than its
// retention (all but the newest while the instance lives), failed records
// older than it, and the archived WAL before the oldest backup kept; a
// deleted instance with no backup left loses its whole archive.
func (b *backupActs) retention(ctx context.Context, in BackupRetentionInput) (BackupRetentionOutput, error) {
	var out BackupRetentionOutput
	bk, ok := b.Driver.(dataplane.Backuper)
	if !ok {
		return out, nil
	}
	now := time.UnixMilli(in.NowMs)
	all, err := b.CMS.ListBackups(ctx, cms.BackupFilter{States: []cms.BackupState{cms.BackupCompleted, cms.BackupFailed}})
	if err != nil {
		return out, err
	}
	byInst := map[string][]cms.Backup{}
	for _, rec := range all {
		byInst[rec.InternalName] = append(byInst[rec.InternalName], rec)
	}
	for name, recs := range byInst {
		settings, err := b.CMS.BackupSettings(ctx, name)
		if err != nil {
			return out, err
		}
		live := false
		if inst, err := b.CMS.GetByInternalName(ctx, name); err == nil {
			live = inst.State.Active()
		} else if !errors.Is(err, cms.ErrNotFound) {
			return out, err
		}
		cutoff := now.Add(-settings.Retention)
		// Oldest first.
		sort.Slice(recs, func(i, j int) bool { return recs[i].CreatedAt.Before(recs[j].CreatedAt) })
		newest := -1
		for i, rec := range recs {
			if rec.State == cms.BackupCompleted {
				newest = i
			}
		}
		var kept []cms.Backup
		for i, rec := range recs {
			at := rec.FinishedAt
			if at.IsZero() {
				at = rec.CreatedAt
			}
			expired := at.Before(cutoff) && !(live && i == newest)
			if !expired {
				if rec.State == cms.BackupCompleted {
					kept = append(kept, rec)
				}
				continue
			}
			if err := bk.DeleteBackup(ctx, name, rec.ID); err != nil {
				return out, err
			}
			if err := b.CMS.MarkBackupDeleted(ctx, rec.ID); err != nil {
				return out, err
			}
			if rec.State == cms.BackupCompleted {
				out.Backups++
				b.Logger.InfoContext(ctx, "backup expired", "internal_name", name, "backup", rec.ID, "finished", rec.FinishedAt)
			}
		}
		switch {
		case len(kept) > 0:
			n, err := bk.PruneWAL(ctx, name, kept[0].StartWAL)
			if err != nil {
				return out, err
			}
			out.WALSegments += n
		case !live:
			if err := bk.DeleteBackups(ctx, name); err != nil {
				return out, err
			}
			out.Archives++
			b.Logger.InfoContext(ctx, "archive of a deleted instance expired", "internal_name", name)
		}
	}
	return out, nil
}

// backupCollector reports, at scrape time, the age of each instance's
// latest successful backup (from the CMS) and its WAL archiver's state
// (from the data plane).
type backupCollector struct{ a *acts }

var (
	descLastSuccess = prometheus.NewDesc(MetricBackupLastSuccess, "When the latest successful base backup of the instance finished (Unix time).", []string{"instance"}, nil)
	descAge         = prometheus.NewDesc(MetricBackupAge, "Seconds since the latest successful base backup of the instance finished.", []string{"instance"}, nil)
	descPending     = prometheus.NewDesc(MetricArchivePending, "Finished WAL segments waiting to be archived, by instance.", []string{"instance"}, nil)
	descLag         = prometheus.NewDesc(MetricArchiveLag, "Seconds since the instance last archived a WAL segment (0 with nothing waiting).", []string{"instance"}, nil)
	descArchFail    = prometheus.NewDesc(MetricArchiveFailures, "Failed WAL archiving attempts since the instance's server started, by instance.", []string{"instance"}, nil)
)

func (c *backupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLastSuccess, descAge, descPending, descLag, descArchFail} {
		ch <- d
	}
}

func (c *backupCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	running, err := c.a.CMS.List(ctx, cms.ListOptions{States: []cms.State{cms.StateRunning}})
	if err != nil {
		return
	}
	now := time.Now()
	bk, _ := c.a.Driver.(dataplane.Backuper)
	for _, inst := range running {
		if list, err := c.a.CMS.ListBackups(ctx, cms.BackupFilter{InternalName: inst.InternalName, States: []cms.BackupState{cms.BackupCompleted}, Limit: 1}); err == nil && len(list) > 0 {
			ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue, float64(list[0].FinishedAt.UnixMilli())/1000, inst.Name)
			ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, now.Sub(list[0].FinishedAt).Seconds(), inst.Name)
		}
		if bk == nil || inst.Driver != c.a.Driver.Name() {
			continue
		}
		actx, acancel := context.WithTimeout(ctx, time.Second)
		st, err := bk.ArchiveStatus(actx, inst.InternalName)
		acancel()
		if err != nil || !st.Enabled {
			continue
		}
		lag := 0.0
		if st.Pending > 0 && !st.LastArchivedTime.IsZero() {
			lag = now.Sub(st.LastArchivedTime).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(st.Pending), inst.Name)
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, lag, inst.Name)
		ch <- prometheus.MustNewConstMetric(descArchFail, prometheus.CounterValue, float64(st.FailedCount), inst.Name)
	}
}
