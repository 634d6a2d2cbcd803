package app

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/redact"
)

// The API and the web console are siblings over the services of this file
// and the operations of App (CreateInstance, BulkCreate, BulkDelete,
// DeleteByNameWith, StartBackup, Restore…): neither reaches into the
// stores, the runtime or the driver, and each of their actions is one
// call here. Errors come back as *ValidationError, *ConflictError or
// *NotFoundError (or a store's sentinel), which Describe turns into the
// message both show.

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
	log      *slog.Logger
}

// Orchestrations is the orchestration service.
func (a *App) Orchestrations() Orchestrations {
	return Orchestrations{client: a.client, registry: a.registry, log: a.logger}
}

// List lists orchestration instances (one page).
func (o Orchestrations) List(ctx context.Context, f duroxide.ListFilter) (*duroxide.InstancePage, error) {
	return o.client.ListInstances(ctx, f)
}

// Status returns an orchestration's status (duroxide.ErrNotFound: none).
func (o Orchestrations) Status(ctx context.Context, id string) (*duroxide.OrchestrationStatus, error) {
	return o.client.GetStatus(ctx, id)
}

// status is Status with a NotFoundError naming the id.
func (o Orchestrations) status(ctx context.Context, id string) (*duroxide.OrchestrationStatus, error) {
	st, err := o.client.GetStatus(ctx, id)
	if errors.Is(err, duroxide.ErrNotFound) {
		return nil, &NotFoundError{Msg: fmt.Sprintf("orchestration %q not found", id), Err: err}
	}
	return st, err
}

// running is status, with a ConflictError for an orchestration that ended.
func (o Orchestrations) running(ctx context.Context, id string) (*duroxide.OrchestrationStatus, error) {
	st, err := o.status(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.Status.IsTerminal() {
		return nil, conflict("orchestration %q has already finished (%s)", st.Instance, st.Status)
	}
	return st, nil
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

// Recreated is what Recreate started.
type Recreated struct {
	NewID, OriginalID string
	// Name and Version are the orchestration's (Version "" for the latest).
	Name, Version string
}

// Recreate starts the orchestration that id ran (name, version, original
// input) again under a new id derived from id (see RecreateID). The
// original must have ended (a ConflictError otherwise: cancel it first);
// a NotFoundError for an unknown id.
func (o Orchestrations) Recreate(ctx context.Context, id string) (Recreated, error) {
	st, err := o.status(ctx, id)
	if err != nil {
		return Recreated{}, err
	}
	newID := RecreateID(st.Instance)
	req, err := o.client.Recreate(ctx, st.Instance, newID)
	if errors.Is(err, duroxide.ErrInstanceRunning) {
		return Recreated{}, &ConflictError{Msg: fmt.Sprintf("orchestration %q is still %s; cancel it before recreating it", st.Instance, st.Status), Err: err}
	}
	if err != nil {
		return Recreated{}, err
	}
	o.log.Info("orchestration recreated", "orchestration_id", st.Instance, "new_id", newID, "name", req.Name)
	return Recreated{NewID: newID, OriginalID: st.Instance, Name: req.Name, Version: req.Version}, nil
}

// RecreateID derives a new orchestration id from id: a trailing
// 8-hex-digit segment is replaced, otherwise one is appended
// (create-db-1a2b3c4d → create-db-<new>).
func RecreateID(id string) string {
	base := id
	if i := strings.LastIndexByte(id, '-'); i > 0 && isHex8(id[i+1:]) {
		base = id[:i]
	}
	return base + "-" + randomHex(4)
}

func isHex8(s string) bool {
	if len(s) != 8 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// MaxCancelReason bounds a cancellation's reason.
const MaxCancelReason = 1000

// Cancel asks a running orchestration to stop, for reason (UTF-8 text of
// at most MaxCancelReason bytes). A NotFoundError for an unknown id; a
// ConflictError once it has finished.
func (o Orchestrations) Cancel(ctx context.Context, id, reason string) error {
	if len(reason) > MaxCancelReason {
		return invalid("reason must be at most %d characters", MaxCancelReason)
	}
	if !utf8.ValidString(reason) {
		return invalidField("reason", "reason is not valid UTF-8 text")
	}
	st, err := o.running(ctx, id)
	if err != nil {
		return err
	}
	if err := o.client.CancelInstance(ctx, st.Instance, reason); err != nil {
		return err
	}
	o.log.Info("orchestration cancel requested", "orchestration_id", st.Instance)
	return nil
}

// Raise delivers the external event name with data (JSON; empty or null:
// none) to a running orchestration. The name is required, at most 256
// bytes without control characters; both are UTF-8 text. A NotFoundError for an unknown id; a
// ConflictError once it has finished.
func (o Orchestrations) Raise(ctx context.Context, id, name string, data json.RawMessage) error {
	if strings.TrimSpace(name) == "" {
		return invalid("event_name is required")
	}
	if len(name) > 256 || strings.ContainsAny(name, "\x00\r\n") {
		return invalid("event_name must be at most 256 characters without control characters")
	}
	if !utf8.ValidString(name) || !utf8.Valid(data) {
		// The API's JSON decoding refuses these first; the console's
		// form values arrive unchecked.
		return invalid("event_name and event_data must be valid UTF-8 text")
	}
	st, err := o.running(ctx, id)
	if err != nil {
		return err
	}
	var payload any
	if len(data) > 0 && string(data) != "null" {
		payload = data
	}
	if err := o.client.RaiseEvent(ctx, st.Instance, name, payload); err != nil {
		return err
	}
	o.log.Info("orchestration event raised", "orchestration_id", st.Instance, "event", name)
	return nil
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
