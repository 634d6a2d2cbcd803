package activities

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// Default retry policies, registered with the activities
// (duroxide.WithDefaultRetry): an orchestration's plain call of an activity
// retries under its default, and configuration (internal/config, through
// duroxide.Options.RetryPolicies) may replace a default per environment.
// The founding document's policies are kept exactly; the steps it left on
// manual loops or without retries (wait-for-ready, deploy, CMS writes,
// backups, the janitor) get policies of their own. Each is named: the name
// is recorded with every attempt in history (Event.Policy).
var (
	// create-instance / get-connection-strings: 5 attempts, Linear 2s max 10s, 120s per attempt.
	PolicyGetConnectionStrings = duroxide.NewRetryPolicy(5).WithName("get-connection-strings").
					WithBackoff(duroxide.Linear{Base: 2 * time.Second, Max: 10 * time.Second}).
					WithTimeout(120 * time.Second)
	// create-instance / test-connection: 5 attempts, Exponential 2s ×2 max 30s, 60s per attempt.
	// It is not test-connection's default (the health check's is): create-instance passes it.
	PolicyCreateTestConnection = duroxide.NewRetryPolicy(5).WithName("create-test-connection").
					WithBackoff(duroxide.Exponential{Base: 2 * time.Second, Multiplier: 2, Max: 30 * time.Second}).
					WithTimeout(60 * time.Second)
	// delete-instance / look-up: 3 attempts, Fixed 2s, 10s per attempt.
	PolicyDeleteLookup = duroxide.NewRetryPolicy(3).WithName("delete-lookup").
				WithBackoff(duroxide.Fixed{Delay: 2 * time.Second}).
				WithTimeout(10 * time.Second)
	// delete-instance / delete-postgres: 3 attempts, Exponential 1s ×2 max 10s, 60s per attempt.
	PolicyDeletePostgres = duroxide.NewRetryPolicy(3).WithName("delete-postgres").
				WithBackoff(duroxide.Exponential{Base: time.Second, Multiplier: 2, Max: 10 * time.Second}).
				WithTimeout(60 * time.Second)
	// instance-actor / get connection: 3 attempts, Exponential 2s ×2 max 10s, 15s per attempt.
	PolicyActorGetConnection = duroxide.NewRetryPolicy(3).WithName("actor-get-connection").
					WithBackoff(duroxide.Exponential{Base: 2 * time.Second, Multiplier: 2, Max: 10 * time.Second}).
					WithTimeout(15 * time.Second)
	// instance-actor / probe: 3 attempts, Linear 1s max 5s, 30s per attempt.
	PolicyActorProbe = duroxide.NewRetryPolicy(3).WithName("actor-probe").
				WithBackoff(duroxide.Linear{Base: time.Second, Max: 5 * time.Second}).
				WithTimeout(30 * time.Second)

	// wait-for-ready replaces the Rust version's manual 60 × (check + 5s
	// timer) loop: the activity fails while the server starts and the policy
	// polls, backing off to 5s, for at most 10 minutes.
	PolicyWaitForReady = duroxide.NewRetryPolicy(200).WithName("wait-for-ready").
				WithBackoff(duroxide.Exponential{Base: 250 * time.Millisecond, Multiplier: 1.5, Max: 5 * time.Second}).
				WithTimeout(30 * time.Second).
				WithTotalTimeout(10 * time.Minute)
	// deploy-postgres is idempotent, so transient platform errors are retried.
	PolicyDeploy = duroxide.NewRetryPolicy(3).WithName("deploy").
			WithBackoff(duroxide.Exponential{Base: 2 * time.Second, Multiplier: 2, Max: 10 * time.Second}).
			WithTimeout(5 * time.Minute)
	// CMS reads and writes: quick retries of transient database errors.
	PolicyCMS = duroxide.NewRetryPolicy(5).WithName("cms").
			WithBackoff(duroxide.Exponential{Base: 500 * time.Millisecond, Multiplier: 2, Max: 5 * time.Second}).
			WithTimeout(30 * time.Second)
	// Waiting for a create that is being cancelled before deleting.
	PolicyAwaitCreate = duroxide.NewRetryPolicy(120).WithName("await-create").
				WithBackoff(duroxide.Fixed{Delay: time.Second}).
				WithTotalTimeout(3 * time.Minute)

	// A base backup: a few attempts; each redoes the backup from scratch.
	PolicyBackup = duroxide.NewRetryPolicy(3).
			WithBackoff(duroxide.Exponential{Base: 5 * time.Second, Multiplier: 2, Max: time.Minute}).
			WithTimeout(time.Hour)
	// A restore: the driver resumes where an attempt stopped.
	PolicyRestore = duroxide.NewRetryPolicy(3).
			WithBackoff(duroxide.Exponential{Base: 5 * time.Second, Multiplier: 2, Max: time.Minute}).
			WithTimeout(time.Hour)
	// Flushing the archive before a delete: brief, best effort.
	PolicyFlush = duroxide.NewRetryPolicy(2).
			WithBackoff(duroxide.Fixed{Delay: 2 * time.Second}).
			WithTimeout(90 * time.Second)
	// Removing backup files.
	PolicyBackupFiles = duroxide.NewRetryPolicy(5).
				WithBackoff(duroxide.Exponential{Base: time.Second, Multiplier: 2, Max: 30 * time.Second}).
				WithTimeout(10 * time.Minute)

	// PolicyJanitor retries a janitor sweep step a few times; a step that
	// still fails is skipped until the next run.
	PolicyJanitor = duroxide.NewRetryPolicy(3).WithName("janitor").
			WithBackoff(duroxide.Exponential{Base: 2 * time.Second, Multiplier: 2, Max: 10 * time.Second}).
			WithTimeout(10 * time.Minute)
)

// DefaultPolicies returns the default retry policy of every activity, by
// activity name (a fresh map: callers may change it).
func DefaultPolicies() map[string]duroxide.RetryPolicy {
	m := replicaPolicies()
	maps.Copy(m, map[string]duroxide.RetryPolicy{
		CreateRecord:          PolicyCMS,
		GetInstance:           PolicyDeleteLookup,
		UpdateState:           PolicyCMS,
		UpdateHealth:          PolicyCMS,
		RecordHealthCheck:     PolicyCMS,
		SetActor:              PolicyCMS,
		AddEvent:              PolicyCMS,
		ForgetPassword:        PolicyCMS,
		GetInstanceConnection: PolicyActorGetConnection,
		Deploy:                PolicyDeploy,
		WaitForReady:          PolicyWaitForReady,
		GetConnectionStrings:  PolicyGetConnectionStrings,
		TestConnection:        PolicyActorProbe,
		DeletePostgres:        PolicyDeletePostgres,
		RaiseEvent:            PolicyCMS,
		AwaitOrchestration:    PolicyAwaitCreate,

		CreateBackupRecord: PolicyCMS,
		TakeBaseBackup:     PolicyBackup,
		CompleteBackup:     PolicyCMS,
		FailBackup:         PolicyBackupFiles,
		DeleteBackup:       PolicyBackupFiles,
		PurgeBackups:       PolicyBackupFiles,
		SetArchiving:       PolicyCMS,
		FlushArchive:       PolicyFlush,
		RestorePostgres:    PolicyRestore,
		GetBackupSettings:  PolicyCMS,

		BackupRetention:     PolicyJanitor,
		PurgeOrchestrations: PolicyJanitor,
		PruneHealthChecks:   PolicyJanitor,
		PruneExecutions:     PolicyJanitor,
	})
	return m
}

// DataPlaneActivities are the activities that call the data plane's
// platform (deploy, delete, backups): they share the data-plane circuit
// breaker configuration (one breaker per activity). Probes of instances
// (test-connection, wait-for-ready) are left out: an unwell instance says
// nothing about the platform.
var DataPlaneActivities = []string{Deploy, GetConnectionStrings, DeletePostgres, TakeBaseBackup, RestorePostgres, FlushArchive, DeleteBackup, PurgeBackups}

// DefaultDataPlaneBreaker is the circuit breaker in front of each data-plane
// activity: it opens when half of at least 10 calls in a minute failed, and
// half-opens after 30s.
var DefaultDataPlaneBreaker = duroxide.CircuitBreakerConfig{
	Window: time.Minute, MinCalls: 10, FailureRatio: 0.5, CoolDown: 30 * time.Second,
}

// BreakerFailure is the data-plane breakers' IsFailure: errors that say the
// call was wrong (non-retryable), that the instance is still starting, or
// that the call was cancelled do not count against the platform.
func BreakerFailure(err error) bool {
	return !duroxide.IsNonRetryable(err) && !errors.Is(err, ErrNotReady) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// Breakers returns the circuit breaker configuration of every data-plane
// activity, given the shared configuration (IsFailure filled in).
func Breakers(cfg duroxide.CircuitBreakerConfig) map[string]duroxide.CircuitBreakerConfig {
	if cfg.IsFailure == nil {
		cfg.IsFailure = BreakerFailure
	}
	m := make(map[string]duroxide.CircuitBreakerConfig, len(DataPlaneActivities))
	for _, name := range DataPlaneActivities {
		m[name] = cfg
	}
	return m
}

// registerOptions are an activity's registration options: its default
// retry policy and, for a data-plane activity, the default breaker.
func registerOptions(name string) []duroxide.RegisterOption {
	var opts []duroxide.RegisterOption
	if p, ok := DefaultPolicies()[name]; ok {
		opts = append(opts, duroxide.WithDefaultRetry(p))
	}
	if cfg, ok := Breakers(DefaultDataPlaneBreaker)[name]; ok {
		opts = append(opts, duroxide.WithCircuitBreaker(cfg))
	}
	return opts
}
