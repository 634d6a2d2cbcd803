package app

import (
	"context"
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/redact"
)

// The API and the web console are siblings over the services of this file
// and the operations of App (CreateInstance, DeleteByNameWith, Restore…):
// neither reaches into the stores, the runtime or the driver.

// ListInstances lists instance records.
func (a *App) ListInstances(ctx context.Context, opts cms.ListOptions) ([]cms.Instance, error) {
	return a.cms.List(ctx, opts)
}

// InstanceEvents returns an instance's newest events (at most limit).
func (a *App) InstanceEvents(ctx context.Context, inst *cms.Instance, limit int) ([]cms.Event, error) {
	return a.cms.Events(ctx, inst.InternalName, limit)
}

// RecentEvents returns the newest events of every instance (at most limit).
func (a *App) RecentEvents(ctx context.Context, limit int) ([]cms.Event, error) {
	return a.cms.RecentEvents(ctx, limit)
}

// HealthChecks returns an instance's newest health checks (at most limit).
func (a *App) HealthChecks(ctx context.Context, inst *cms.Instance, limit int) ([]cms.HealthCheck, error) {
	return a.cms.HealthChecks(ctx, inst.InternalName, limit)
}

// InstanceCounts counts the instances by state and health.
func (a *App) InstanceCounts(ctx context.Context) (*cms.Counts, error) {
	return a.cms.Counts(ctx)
}

// InstanceLogs returns the newest lines (at most tail) of the instance's
// server log, its password masked. dataplane.ErrNotFound: no server.
func (a *App) InstanceLogs(ctx context.Context, inst *cms.Instance, tail int) ([]string, error) {
	lines, err := a.driver.Logs(ctx, inst.InternalName, tail)
	if err != nil {
		return nil, err
	}
	if pw, err := a.cms.Password(ctx, inst.InternalName); err == nil {
		lines = redact.Lines(lines, pw)
	}
	return lines, nil
}

// Versions lists the PostgreSQL versions the data plane offers, newest first.
func (a *App) Versions(ctx context.Context) ([]string, error) { return a.driver.Versions(ctx) }

// DataplaneName is the data plane driver's name (local, kubernetes).
func (a *App) DataplaneName() string { return a.driver.Name() }

// TakesBackups tells whether the data plane takes backups.
func (a *App) TakesBackups() bool {
	_, ok := a.driver.(dataplane.Backuper)
	return ok
}

// InstanceBackups returns an instance's backup settings and its backups
// (newest first).
func (a *App) InstanceBackups(ctx context.Context, inst *cms.Instance) (cms.BackupSettings, []cms.Backup, error) {
	settings, err := a.cms.BackupSettings(ctx, inst.InternalName)
	if err != nil {
		return settings, nil, err
	}
	list, err := a.cms.ListBackups(ctx, cms.BackupFilter{InternalName: inst.InternalName})
	return settings, list, err
}

// Orchestrations reads and steers the durable orchestrations (the API's
// /api/orchestrations, the console's orchestration pages).
type Orchestrations struct {
	client   *duroxide.Client
	registry *duroxide.Registry
}

// Orchestrations is the orchestration service.
func (a *App) Orchestrations() Orchestrations {
	return Orchestrations{client: a.client, registry: a.registry}
}

// List lists orchestration instances (one page).
func (o Orchestrations) List(ctx context.Context, f duroxide.ListFilter) (*duroxide.InstancePage, error) {
	return o.client.ListInstances(ctx, f)
}

// Status returns an orchestration's status (duroxide.ErrNotFound: none).
func (o Orchestrations) Status(ctx context.Context, id string) (*duroxide.OrchestrationStatus, error) {
	return o.client.GetStatus(ctx, id)
}

// Executions lists an orchestration's executions, oldest first.
func (o Orchestrations) Executions(ctx context.Context, id string) ([]duroxide.ExecutionInfo, error) {
	return o.client.ListExecutions(ctx, id)
}

// History returns the events of one execution.
func (o Orchestrations) History(ctx context.Context, id string, execution int64) ([]duroxide.Event, error) {
	return o.client.ReadHistory(ctx, id, execution)
}

// Start starts an orchestration.
func (o Orchestrations) Start(ctx context.Context, id, name string, input any, opts ...duroxide.StartOption) error {
	return o.client.StartOrchestration(ctx, id, name, input, opts...)
}

// Recreate starts the orchestration that id ran (name, version, input)
// again as newID; id must have ended.
func (o Orchestrations) Recreate(ctx context.Context, id, newID string) (duroxide.StartRequest, error) {
	return o.client.Recreate(ctx, id, newID)
}

// Cancel asks a running orchestration to stop.
func (o Orchestrations) Cancel(ctx context.Context, id, reason string) error {
	return o.client.CancelInstance(ctx, id, reason)
}

// Raise delivers an external event.
func (o Orchestrations) Raise(ctx context.Context, id, name string, data any) error {
	return o.client.RaiseEvent(ctx, id, name, data)
}

// Stats counts orchestrations by status and the queues' depths.
func (o Orchestrations) Stats(ctx context.Context) (*duroxide.StoreStats, error) {
	return o.client.Stats(ctx)
}

// Names lists the registered orchestrations' names, sorted.
func (o Orchestrations) Names() []string {
	if o.registry == nil {
		return nil
	}
	var out []string
	for n := range o.registry.OrchestrationNames() {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Runtime reports on this server's durable runtime: its settings, its
// work in flight, its retry sequences and circuit breakers.
type Runtime struct{ rt *duroxide.Runtime }

// Runtime is the runtime report service.
func (a *App) Runtime() Runtime { return Runtime{rt: a.runtime} }

// Running tells whether the runtime runs.
func (r Runtime) Running() bool { return r.rt != nil }

// Settings are the runtime's effective options.
func (r Runtime) Settings() duroxide.Options { return r.rt.Settings() }

// ActiveTurns is how many orchestration turns run now.
func (r Runtime) ActiveTurns() int { return r.rt.ActiveTurns() }

// RunningActivities is how many activities run now.
func (r Runtime) RunningActivities() int { return r.rt.RunningActivities() }

// RetryStats are the retry sequences observed since the start.
func (r Runtime) RetryStats() []duroxide.ActivityRetryStats { return r.rt.RetryStats() }

// CircuitBreakers are the circuit breakers' states.
func (r Runtime) CircuitBreakers() []duroxide.CircuitBreakerStatus { return r.rt.CircuitBreakers() }

// Accessors, for callers that need the object itself.

// Config is the effective configuration (defaults applied), a copy without
// the secret key.
func (a *App) Config() Config {
	c := a.cfg
	c.SecretKey = nil
	return c
}

// CMS is the control-plane metadata store (for tests and tools that work
// on records directly, and the shared login sessions of servers on one
// database).
func (a *App) CMS() cms.Store { return a.cms }

// Metrics is the Prometheus registry of the app's collectors; the API adds
// its own and serves it.
func (a *App) Metrics() *prometheus.Registry { return a.metrics }

// Logger is the app's logger.
func (a *App) Logger() *slog.Logger { return a.logger }

// Sessions is the login session store in the CMS, for servers sharing one
// database (their API honours each other's tokens and logouts).
func (a *App) Sessions() cms.SessionStore { return a.cms }
