package orchestrations

import (
	"strconv"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
)

// Janitor is the orchestration that keeps the stores bounded; one instance
// of it runs, with id JanitorID.
const Janitor = "janitor"

// JanitorID is the janitor's (singleton) instance id.
const JanitorID = "toygres-janitor"

// EventJanitorSettings carries a new JanitorInput to the running janitor,
// which applies it and sweeps at once.
const EventJanitorSettings = "JanitorSettings"

// Janitor defaults.
const (
	DefaultJanitorInterval         = time.Hour
	DefaultOrchestrationRetention  = 7 * 24 * time.Hour
	DefaultHealthCheckRetention    = 24 * time.Hour
	DefaultHealthChecksPerInstance = 1000
	DefaultKeepExecutions          = 3
)

// JanitorInput configures the janitor. A zero or negative field disables
// its step (the interval is the exception: zero means the default).
type JanitorInput struct {
	// Interval between sweeps (0: DefaultJanitorInterval).
	Interval time.Duration `json:"interval,omitempty"`
	// OrchestrationRetention: finished create-instance, delete-instance and
	// instance-actor instances that completed longer ago are deleted.
	OrchestrationRetention time.Duration `json:"orchestration_retention,omitempty"`
	// HealthCheckRetention: older health checks are deleted.
	HealthCheckRetention time.Duration `json:"health_check_retention,omitempty"`
	// HealthChecksPerInstance: only the newest n checks of each instance stay.
	HealthChecksPerInstance int `json:"health_checks_per_instance,omitempty"`
	// KeepExecutions: continue-as-new chains of health actors and of the
	// janitor are cut to their newest n executions (the runtime does this
	// at each continue-as-new; the sweep catches chains it did not, such as
	// ended ones or those from before the setting).
	KeepExecutions int `json:"keep_executions,omitempty"`
	// SkipBackups turns the backup retention sweep off (by default each
	// sweep removes expired backups and WAL, per instance settings).
	SkipBackups bool `json:"skip_backups,omitempty"`
	// Runs counts completed sweeps (carried across continue-as-new).
	Runs int64 `json:"runs,omitempty"`
}

// JanitorReport is what one sweep removed.
type JanitorReport struct {
	Orchestrations activities.PurgeOrchestrationsOutput `json:"orchestrations"`
	Executions     activities.PruneExecutionsOutput     `json:"executions"`
	HealthChecks   int64                                `json:"health_checks"`
	Backups        activities.BackupRetentionOutput     `json:"backups"`
}

// janitor sweeps once per execution, then waits for the interval or new
// settings and continues as new. A failed step is logged and skipped; it
// never ends the janitor.
func janitor(ctx *duroxide.OrchestrationContext, in JanitorInput) (JanitorReport, error) {
	d := useDefaults(ctx)
	interval := in.Interval
	if interval <= 0 {
		interval = DefaultJanitorInterval
	}
	log := ctx.Logger().With("janitor_run", in.Runs+1)
	settings := ctx.WaitForEvent(EventJanitorSettings)
	now := ctx.UtcNow()
	// Sweeps recorded before backups existed replay without the backup
	// orchestrations and the backup retention step.
	withBackups := ctx.GetVersion(changeBackups, duroxide.VersionBeforeChange, 1) >= 1
	purged, chains := []string{CreateInstance, DeleteInstance, InstanceActor}, []string{InstanceActor, Janitor}
	if withBackups {
		purged = append(purged, BackupInstance, BackupSchedule, DeleteBackupOrch)
		chains = append(chains, BackupSchedule)
	}
	var rep JanitorReport
	if in.OrchestrationRetention > 0 {
		out, err := plain[activities.PurgeOrchestrationsOutput](ctx, d, activities.PurgeOrchestrations, activities.PurgeOrchestrationsInput{
			Names:             purged,
			CompletedBeforeMs: now.Add(-in.OrchestrationRetention).UnixMilli(),
		})
		if err != nil {
			log.Warn("janitor: purging finished orchestrations failed", "error", err.Error())
		}
		rep.Orchestrations = out
	}
	if in.HealthCheckRetention > 0 || in.HealthChecksPerInstance > 0 {
		hc := activities.PruneHealthChecksInput{KeepPerInstance: max(in.HealthChecksPerInstance, 0)}
		if in.HealthCheckRetention > 0 {
			hc.OlderThanMs = now.Add(-in.HealthCheckRetention).UnixMilli()
		}
		n, err := plain[int64](ctx, d, activities.PruneHealthChecks, hc)
		if err != nil {
			log.Warn("janitor: pruning health checks failed", "error", err.Error())
		}
		rep.HealthChecks = n
	}
	if in.KeepExecutions > 0 {
		out, err := plain[activities.PruneExecutionsOutput](ctx, d, activities.PruneExecutions, activities.PruneExecutionsInput{
			Names: chains, KeepLast: in.KeepExecutions,
		})
		if err != nil {
			log.Warn("janitor: pruning execution chains failed", "error", err.Error())
		}
		rep.Executions = out
	}
	if withBackups && !in.SkipBackups {
		out, err := plain[activities.BackupRetentionOutput](ctx, d, activities.BackupRetention, activities.BackupRetentionInput{NowMs: now.UnixMilli()})
		if err != nil {
			log.Warn("janitor: backup retention failed", "error", err.Error())
		}
		rep.Backups = out
	}
	log.Info("janitor run",
		"backups_expired", rep.Backups.Backups, "wal_segments_pruned", rep.Backups.WALSegments,
		"orchestrations_deleted", rep.Orchestrations.InstancesDeleted,
		"orchestration_events_deleted", rep.Orchestrations.EventsDeleted,
		"executions_pruned", rep.Executions.ExecutionsDeleted,
		"execution_events_pruned", rep.Executions.EventsDeleted,
		"health_checks_deleted", rep.HealthChecks)
	in.Runs++
	ctx.SetCustomStatus(janitorStatus(in.Runs, now))
	if ctx.Select(settings, ctx.CreateTimer(interval)) == 0 {
		var next JanitorInput
		if err := settings.Await(&next); err != nil {
			log.Warn("janitor: ignoring unreadable settings", "error", err.Error())
		} else {
			next.Runs = in.Runs
			in = next
		}
	}
	return JanitorReport{}, ctx.ContinueAsNew(in)
}

func janitorStatus(runs int64, at time.Time) string {
	return "runs=" + strconv.FormatInt(runs, 10) + " last=" + at.UTC().Format(time.RFC3339)
}
