package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
)

// Janitor activity names (stable: they are recorded in history).
const (
	PurgeOrchestrations = "janitor-purge-orchestrations"
	PruneHealthChecks   = "janitor-prune-health-checks"
	PruneExecutions     = "janitor-prune-executions"
)

// PurgeOrchestrationsInput selects finished root orchestration instances to
// delete (with their sub-orchestrations).
type PurgeOrchestrationsInput struct {
	Names             []string `json:"names"`               // orchestration names
	CompletedBeforeMs int64    `json:"completed_before_ms"` // only instances that finished before this
}

// PurgeOrchestrationsOutput counts what a purge deleted.
type PurgeOrchestrationsOutput struct {
	InstancesDeleted  int `json:"instances_deleted"`
	ExecutionsDeleted int `json:"executions_deleted"`
	EventsDeleted     int `json:"events_deleted"`
}

// PruneHealthChecksInput selects health checks to delete (see cms.HealthCheckRetention).
type PruneHealthChecksInput struct {
	OlderThanMs     int64 `json:"older_than_ms,omitempty"` // 0: none by age
	KeepPerInstance int   `json:"keep_per_instance,omitempty"`
}

// PruneExecutionsInput cuts the continue-as-new chains of every instance of
// the named orchestrations to their newest KeepLast executions.
type PruneExecutionsInput struct {
	Names    []string `json:"names"`
	KeepLast int      `json:"keep_last"`
}

// PruneExecutionsOutput counts what a prune deleted.
type PruneExecutionsOutput struct {
	Instances         int `json:"instances"` // instances examined
	ExecutionsDeleted int `json:"executions_deleted"`
	EventsDeleted     int `json:"events_deleted"`
}

// purgeBatch is the number of instance ids per DeleteInstancesBulk call.
const purgeBatch = 500

var terminalStatuses = []duroxide.Status{duroxide.StatusCompleted, duroxide.StatusFailed, duroxide.StatusCancelled}

// janitorActs are the janitor's activities.
type janitorActs struct {
	*acts
	removed *prometheus.CounterVec // nil: not counted
}

func registerJanitor(reg *duroxide.Registry, a *acts) error {
	j := &janitorActs{acts: a}
	if a.Metrics != nil {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "toygres_janitor_removed_total",
			Help: "Rows the janitor removed, by kind: orchestrations (finished instances), executions, history_events, health_checks."},
			[]string{"kind"})
		if err := a.Metrics.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return fmt.Errorf("register janitor metric: %w", err)
			}
			c = are.ExistingCollector.(*prometheus.CounterVec)
		}
		j.removed = c
	}
	for _, err := range []error{
		duroxide.RegisterActivity(reg, PurgeOrchestrations, j.purgeOrchestrations, registerOptions(PurgeOrchestrations)...),
		duroxide.RegisterActivity(reg, PruneHealthChecks, j.pruneHealthChecks, registerOptions(PruneHealthChecks)...),
		duroxide.RegisterActivity(reg, PruneExecutions, j.pruneExecutions, registerOptions(PruneExecutions)...),
	} {
		if err != nil {
			return fmt.Errorf("register janitor activities: %w", err)
		}
	}
	return nil
}

func (j *janitorActs) count(kind string, n int) {
	if j.removed != nil && n > 0 {
		j.removed.WithLabelValues(kind).Add(float64(n))
	}
}

// listInstances returns the ids of the instances of an orchestration with
// one of the statuses (all statuses when none given).
func (j *janitorActs) listInstances(ctx context.Context, name string, statuses []duroxide.Status) ([]string, error) {
	var ids []string
	f := duroxide.ListFilter{OrchestrationName: name, Statuses: statuses, Limit: 1000}
	for {
		page, err := j.Client.ListInstances(ctx, f)
		if err != nil {
			return ids, fmt.Errorf("list %s instances: %w", name, err)
		}
		for _, in := range page.Instances {
			ids = append(ids, in.Instance)
		}
		if page.NextCursor == "" {
			return ids, nil
		}
		f.Cursor = page.NextCursor
	}
}

// purgeOrchestrations deletes finished root instances of the named
// orchestrations that completed before the cutoff. The store re-checks both
// conditions atomically, so an instance restarted meanwhile is kept.
func (j *janitorActs) purgeOrchestrations(ctx context.Context, in PurgeOrchestrationsInput) (PurgeOrchestrationsOutput, error) {
	var out PurgeOrchestrationsOutput
	before := time.UnixMilli(in.CompletedBeforeMs)
	for _, name := range in.Names {
		ids, err := j.listInstances(ctx, name, terminalStatuses)
		if err != nil {
			return out, err
		}
		for len(ids) > 0 {
			batch := ids[:min(len(ids), purgeBatch)]
			ids = ids[len(batch):]
			r, err := j.Client.DeleteInstancesBulk(ctx, duroxide.BulkDeleteFilter{InstanceIDs: batch, CompletedBefore: before, Limit: len(batch)})
			out.InstancesDeleted += r.InstancesDeleted
			out.ExecutionsDeleted += r.ExecutionsDeleted
			out.EventsDeleted += r.EventsDeleted
			j.count("orchestrations", r.InstancesDeleted)
			j.count("executions", r.ExecutionsDeleted)
			j.count("history_events", r.EventsDeleted)
			if err != nil {
				return out, fmt.Errorf("delete finished %s instances: %w", name, err)
			}
		}
	}
	return out, nil
}

func (j *janitorActs) pruneHealthChecks(ctx context.Context, in PruneHealthChecksInput) (int64, error) {
	r := cms.HealthCheckRetention{KeepPerInstance: in.KeepPerInstance}
	if in.OlderThanMs > 0 {
		r.OlderThan = time.UnixMilli(in.OlderThanMs)
	}
	n, err := j.CMS.PruneHealthChecks(ctx, r)
	j.count("health_checks", int(n))
	return n, err
}

// pruneExecutions cuts every chain of the named orchestrations (running or
// not) to its newest KeepLast executions.
func (j *janitorActs) pruneExecutions(ctx context.Context, in PruneExecutionsInput) (PruneExecutionsOutput, error) {
	var out PruneExecutionsOutput
	if in.KeepLast <= 0 {
		return out, duroxide.NonRetryable(errors.New("prune executions: keep_last must be positive"))
	}
	for _, name := range in.Names {
		ids, err := j.listInstances(ctx, name, nil)
		if err != nil {
			return out, err
		}
		for _, id := range ids {
			r, err := j.Client.PruneExecutions(ctx, id, duroxide.PruneOptions{KeepLast: in.KeepLast})
			if errors.Is(err, duroxide.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return out, fmt.Errorf("prune executions of %s: %w", id, err)
			}
			out.Instances++
			out.ExecutionsDeleted += r.ExecutionsDeleted
			out.EventsDeleted += r.EventsDeleted
			j.count("executions", r.ExecutionsDeleted)
			j.count("history_events", r.EventsDeleted)
		}
	}
	return out, nil
}
