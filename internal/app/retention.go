package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/orchestrations"
)

// Retention bounds what the stores keep. Zero fields mean the defaults; a
// negative field disables its limit.
type Retention struct {
	// KeepExecutions is how many executions of a continue-as-new chain
	// (health actors, the janitor) are kept (default 3). The runtime prunes
	// at each continue-as-new; the janitor catches the rest.
	KeepExecutions int
	// JanitorInterval is the period of the janitor's sweeps (default 1h).
	JanitorInterval time.Duration
	// Orchestrations is how long finished create, delete and health-actor
	// orchestrations are kept (default 7 days).
	Orchestrations time.Duration
	// HealthChecks is how long health check rows are kept (default 24h).
	HealthChecks time.Duration
	// HealthChecksPerInstance caps the health check rows kept per instance
	// (default 1000, the newest).
	HealthChecksPerInstance int
}

// WithDefaults fills zero fields with the defaults.
func (r Retention) WithDefaults() Retention {
	if r.KeepExecutions == 0 {
		r.KeepExecutions = orchestrations.DefaultKeepExecutions
	}
	if r.JanitorInterval <= 0 {
		r.JanitorInterval = orchestrations.DefaultJanitorInterval
	}
	if r.Orchestrations == 0 {
		r.Orchestrations = orchestrations.DefaultOrchestrationRetention
	}
	if r.HealthChecks == 0 {
		r.HealthChecks = orchestrations.DefaultHealthCheckRetention
	}
	if r.HealthChecksPerInstance == 0 {
		r.HealthChecksPerInstance = orchestrations.DefaultHealthChecksPerInstance
	}
	return r
}

// JanitorInput is the janitor's configuration for these settings
// (disabled limits become zero).
func (r Retention) JanitorInput() orchestrations.JanitorInput {
	r = r.WithDefaults()
	return orchestrations.JanitorInput{
		Interval:                r.JanitorInterval,
		OrchestrationRetention:  max(r.Orchestrations, 0),
		HealthCheckRetention:    max(r.HealthChecks, 0),
		HealthChecksPerInstance: max(r.HealthChecksPerInstance, 0),
		KeepExecutions:          max(r.KeepExecutions, 0),
	}
}

// StartJanitor makes sure the janitor orchestration runs with the app's
// retention settings: it starts it when absent, restarts it when it has
// ended, and otherwise sends the running one the current settings (it
// applies them and sweeps at once). Open calls it.
func (a *App) StartJanitor(ctx context.Context) error {
	in := a.cfg.Retention.JanitorInput()
	st, err := a.client.GetStatus(ctx, orchestrations.JanitorID)
	switch {
	case errors.Is(err, duroxide.ErrNotFound):
	case err != nil:
		return fmt.Errorf("janitor status: %w", err)
	case !st.Status.IsTerminal() || st.Status == duroxide.StatusContinuedAsNew:
		if err := a.client.RaiseEvent(ctx, orchestrations.JanitorID, orchestrations.EventJanitorSettings, in); err != nil {
			return fmt.Errorf("send janitor settings: %w", err)
		}
		return nil
	}
	// Missing, or ended (it never should): a fresh one.
	if err := a.client.StartOrchestration(ctx, orchestrations.JanitorID, orchestrations.Janitor, in, duroxide.OnExisting(duroxide.ReuseRestartEnded)); err != nil {
		return fmt.Errorf("start janitor: %w", err)
	}
	a.logger.Info("janitor started", "interval", in.Interval.String(), "orchestration_retention", in.OrchestrationRetention.String(),
		"health_check_retention", in.HealthCheckRetention.String(), "health_checks_per_instance", in.HealthChecksPerInstance,
		"keep_executions", in.KeepExecutions)
	return nil
}
