package orchestrations

import (
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
)

// Retry policies. The founding document's policies are kept exactly; the
// steps it left on manual loops or without retries (wait-for-ready, deploy,
// CMS writes) get policies of their own. Each is named: the name is recorded
// with every attempt in history (Event.Policy).
var (
	// create-instance / get-connection-strings: 5 attempts, Linear 2s max 10s, 120s per attempt.
	PolicyGetConnectionStrings = duroxide.NewRetryPolicy(5).WithName("get-connection-strings").
					WithBackoff(duroxide.Linear{Base: 2 * time.Second, Max: 10 * time.Second}).
					WithTimeout(120 * time.Second)
	// create-instance / test-connection: 5 attempts, Exponential 2s ×2 max 30s, 60s per attempt.
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
)

// DefaultActorInterval is the health check period.
const DefaultActorInterval = 30 * time.Second

// Register adds the orchestrations to reg.
func Register(reg *duroxide.Registry, driverName string) error {
	for _, err := range []error{
		duroxide.RegisterOrchestration(reg, CreateInstance, createInstance(driverName)),
		duroxide.RegisterOrchestration(reg, DeleteInstance, deleteInstance),
		duroxide.RegisterOrchestration(reg, InstanceActor, instanceActor),
		duroxide.RegisterOrchestration(reg, Janitor, janitor),
		registerBackups(reg),
	} {
		if err != nil {
			return fmt.Errorf("register orchestrations: %w", err)
		}
	}
	return nil
}

func call[Out any](ctx *duroxide.OrchestrationContext, name string, in any, p duroxide.RetryPolicy) (Out, error) {
	return duroxide.CallActivityWithRetryTyped[Out](ctx, name, in, p)
}

func createInstance(driverName string) func(*duroxide.OrchestrationContext, CreateInput) (CreateOutput, error) {
	return func(ctx *duroxide.OrchestrationContext, in CreateInput) (CreateOutput, error) {
		log := ctx.Logger().With("instance", in.Name, "internal_name", in.InternalName)
		ref := activities.InstanceRef{InternalName: in.InternalName}
		ctx.SetCustomStatus("recording")
		if _, err := call[activities.InstanceView](ctx, activities.CreateRecord, activities.CreateRecordInput{
			Name: in.Name, InternalName: in.InternalName, Driver: driverName, PostgresVersion: in.PostgresVersion,
			StorageGB: in.StorageGB, Internal: in.Internal, DNSLabel: in.DNSLabel, CreateOrchestrationID: ctx.InstanceID(),
		}, PolicyCMS); err != nil {
			// Nothing was created: no cleanup needed.
			return CreateOutput{}, fmt.Errorf("record instance: %w", err)
		}

		fail := func(step string, cause error) (CreateOutput, error) {
			reason := fmt.Sprintf("%s failed: %v", step, cause)
			log.Error("create failed; cleaning up", "step", step, "error", cause.Error())
			ctx.SetCustomStatus("cleaning up")
			if _, err := call[cms.State](ctx, activities.UpdateState, activities.UpdateStateInput{
				InternalName: in.InternalName, State: cms.StateFailed,
				Update: cms.StateUpdate{FailureReason: reason, Message: reason},
			}, PolicyCMS); err != nil {
				log.Error("marking instance failed failed", "error", err.Error())
			}
			cleanup := ctx.CallSubOrchestration(DeleteInstance, DeleteInput{InternalName: in.InternalName, Cleanup: true, Reason: reason},
				duroxide.WithInstanceID(CleanupID(in.InternalName)))
			if err := cleanup.Await(nil); err != nil {
				log.Error("cleanup after failed create failed", "error", err.Error())
				return CreateOutput{}, fmt.Errorf("%s (cleanup also failed: %v)", reason, err)
			}
			return CreateOutput{}, errors.New(reason)
		}

		ctx.SetCustomStatus("deploying")
		if err := restoreOrDeploy(ctx, in); err != nil {
			return fail("deploy", err)
		}
		ctx.SetCustomStatus("waiting for ready")
		if _, err := call[activities.ReadyOutput](ctx, activities.WaitForReady, ref, PolicyWaitForReady); err != nil {
			return fail("wait for ready", err)
		}
		ctx.SetCustomStatus("getting connection strings")
		conn, err := call[activities.ConnectionOutput](ctx, activities.GetConnectionStrings, ref, PolicyGetConnectionStrings)
		if err != nil {
			return fail("get connection strings", err)
		}
		ctx.SetCustomStatus("testing connection")
		probe, err := call[activities.TestConnectionOutput](ctx, activities.TestConnection,
			activities.TestConnectionInput{InternalName: in.InternalName, ConnectionString: conn.ConnectionString}, PolicyCreateTestConnection)
		if err != nil {
			return fail("test connection", err)
		}
		if _, err := call[cms.State](ctx, activities.UpdateState, activities.UpdateStateInput{
			InternalName: in.InternalName, State: cms.StateRunning,
			Update: cms.StateUpdate{Host: conn.Endpoint.Host, Port: conn.Endpoint.Port, ConnectionString: conn.ConnectionString,
				ExternalIP: conn.Endpoint.ExternalIP, DNSName: conn.Endpoint.DNSName, Message: "ready: " + probe.Version},
		}, PolicyCMS); err != nil {
			return fail("mark running", err)
		}
		// The health actor runs on its own; it is not a child of this instance.
		actorID := ActorID(in.InternalName)
		if err := ctx.StartOrchestration(InstanceActor, actorID, ActorInput{InternalName: in.InternalName, Interval: in.ActorInterval}); err != nil {
			return fail("start health actor", err)
		}
		if _, err := call[struct{}](ctx, activities.SetActor, activities.SetActorInput{InternalName: in.InternalName, OrchestrationID: actorID}, PolicyCMS); err != nil {
			log.Warn("recording the actor id failed", "error", err.Error())
		}
		// Creates that passed this point before backups existed replay
		// without them (the app starts their schedules when it starts).
		if ctx.GetVersion(changeBackups, duroxide.VersionBeforeChange, 1) >= 1 {
			if err := startBackups(ctx, in); err != nil {
				log.Warn("starting backups failed", "error", err.Error())
			}
		}
		ctx.SetCustomStatus("running")
		log.Info("instance running", "connection", conn.ConnectionString)
		return CreateOutput{InternalName: in.InternalName, ConnectionString: conn.ConnectionString}, nil
	}
}

func deleteInstance(ctx *duroxide.OrchestrationContext, in DeleteInput) (string, error) {
	log := ctx.Logger().With("internal_name", in.InternalName)
	ref := activities.InstanceRef{InternalName: in.InternalName}
	inst, err := call[activities.InstanceView](ctx, activities.GetInstance, ref, PolicyDeleteLookup)
	if err != nil {
		return "", fmt.Errorf("look up instance: %w", err)
	}
	if !inst.Found {
		return "not found", nil
	}
	// A failed instance was cleaned up already and does not hold its name, so
	// it goes straight to deleted at the end.
	if !in.Cleanup && inst.State != cms.StateFailed {
		if _, err := call[cms.State](ctx, activities.UpdateState, activities.UpdateStateInput{
			InternalName: in.InternalName, State: cms.StateDeleting,
			Update: cms.StateUpdate{DeleteOrchestrationID: ctx.InstanceID(), Message: "delete requested"},
		}, PolicyCMS); err != nil {
			return "", fmt.Errorf("mark deleting: %w", err)
		}
		// A create still in flight (being cancelled by the API) must end
		// before resources are removed, or it could recreate them.
		if inst.CreateOrchestration != "" {
			if _, err := call[string](ctx, activities.AwaitOrchestration, activities.AwaitInput{Instance: inst.CreateOrchestration}, PolicyAwaitCreate); err != nil {
				log.Warn("create orchestration still running; deleting anyway", "error", err.Error())
			}
		}
	}
	// Stop the health actor (events wait for it even across continue-as-new).
	actor := inst.ActorOrchestrationID
	if actor == "" {
		actor = ActorID(in.InternalName)
	}
	if _, err := call[struct{}](ctx, activities.RaiseEvent, activities.RaiseEventInput{Instance: actor, Event: EventInstanceDeleted}, PolicyCMS); err != nil {
		log.Warn("signalling the health actor failed", "error", err.Error())
	}
	// Deletes that passed this point before backups existed replay without
	// the backup steps.
	withBackups := ctx.GetVersion(changeBackups, duroxide.VersionBeforeChange, 1) >= 1
	if withBackups {
		beforeDelete(ctx, in.InternalName)
	}
	if _, err := call[struct{}](ctx, activities.DeletePostgres, ref, PolicyDeletePostgres); err != nil {
		if !in.Cleanup {
			_, _ = call[struct{}](ctx, activities.AddEvent, activities.AddEventInput{InternalName: in.InternalName, Message: "delete failed: " + err.Error()}, PolicyCMS)
		}
		return "", fmt.Errorf("delete resources: %w", err)
	}
	if _, err := call[struct{}](ctx, activities.ForgetPassword, ref, PolicyCMS); err != nil {
		log.Warn("forgetting the password failed", "error", err.Error())
	}
	if in.Cleanup {
		if _, err := call[struct{}](ctx, activities.AddEvent, activities.AddEventInput{InternalName: in.InternalName, Message: "resources of the failed instance removed"}, PolicyCMS); err != nil {
			return "", fmt.Errorf("record cleanup: %w", err)
		}
		return "cleaned up", nil
	}
	if _, err := call[cms.State](ctx, activities.UpdateState, activities.UpdateStateInput{
		InternalName: in.InternalName, State: cms.StateDeleted, Update: cms.StateUpdate{Message: "deleted"},
	}, PolicyCMS); err != nil {
		return "", fmt.Errorf("mark deleted: %w", err)
	}
	if !withBackups {
		return "deleted", nil
	}
	if err := afterDelete(ctx, in); err != nil {
		return "", err
	}
	return "deleted", nil
}

// instanceActor checks one instance's health once per execution, then waits
// for the interval or an InstanceDeleted event and continues as new. A
// failed step is recorded as an unhealthy check; it never ends the actor.
func instanceActor(ctx *duroxide.OrchestrationContext, in ActorInput) (string, error) {
	interval := in.Interval
	if interval <= 0 {
		interval = DefaultActorInterval
	}
	log := ctx.Logger().With("internal_name", in.InternalName)
	ref := activities.InstanceRef{InternalName: in.InternalName}
	deleted := ctx.WaitForEvent(EventInstanceDeleted)
	if deleted.Done() {
		log.Info("health actor stopping: instance deleted")
		return "stopped", nil
	}

	inst, err := call[activities.InstanceView](ctx, activities.GetInstanceConnection, ref, PolicyActorGetConnection)
	switch {
	case err != nil:
		log.Warn("health actor could not read the instance; will try again", "error", err.Error())
	case !inst.Found || inst.State == cms.StateDeleted || inst.State == cms.StateFailed:
		log.Info("health actor stopping: instance is gone", "state", string(inst.State))
		return "instance gone", nil
	case inst.State == cms.StateDeleting:
		log.Info("health actor stopping: instance is being deleted")
		return "instance deleting", nil
	case inst.ConnectionString != "":
		checkedAt := ctx.UtcNow()
		probe, perr := call[activities.TestConnectionOutput](ctx, activities.TestConnection,
			activities.TestConnectionInput{InternalName: in.InternalName, ConnectionString: inst.ConnectionString, KnownRestarts: in.Restarts}, PolicyActorProbe)
		hc := activities.HealthCheckInput{InternalName: in.InternalName, CheckedAtMs: checkedAt.UnixMilli()}
		if perr != nil {
			hc.Status, hc.Error = cms.HealthUnhealthy, perr.Error()
		} else {
			hc.Status, hc.PostgresVersion, hc.ResponseTimeMs = cms.HealthHealthy, probe.Version, probe.LatencyMs
			in.Restarts = probe.Restarts
		}
		if _, err := call[struct{}](ctx, activities.RecordHealthCheck, hc, PolicyCMS); err != nil {
			log.Warn("recording a health check failed", "error", err.Error())
		}
		if _, err := call[struct{}](ctx, activities.UpdateHealth, activities.UpdateHealthInput{InternalName: in.InternalName, Health: hc.Status}, PolicyCMS); err != nil {
			log.Warn("updating health failed", "error", err.Error())
		}
		in.Checks++
	}
	if ctx.Select(deleted, ctx.CreateTimer(interval)) == 0 {
		log.Info("health actor stopping: instance deleted")
		return "stopped", nil
	}
	return "", ctx.ContinueAsNew(in)
}
