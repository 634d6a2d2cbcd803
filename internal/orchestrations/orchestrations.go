package orchestrations

import (
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
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
		registerReplicas(reg),
	} {
		if err != nil {
			return fmt.Errorf("register orchestrations: %w", err)
		}
	}
	return nil
}

// changeDefaultRetry is the GetVersion change id of the move of the retry
// policies from the call sites to the activities' registrations: an
// execution recorded before it replays its explicit policies (a default
// sequence records its schedule and timers in another order, and histories
// from before attempt numbers were recorded cannot carry a default).
const changeDefaultRetry = "default-retry-policies"

// defaults says whether an execution calls activities under their default
// policies (true) or under the policies its call sites used to pass.
type defaults bool

// useDefaults records, once per execution, which way it calls activities.
func useDefaults(ctx *duroxide.OrchestrationContext) defaults {
	return ctx.GetVersion(changeDefaultRetry, duroxide.VersionBeforeChange, 1) >= 1
}

// seedPolicies are the policies the call sites passed before the change:
// the activities' built-in defaults, never the configured ones.
var seedPolicies = activities.DefaultPolicies()

// plain calls an activity under its default retry policy (registered with
// the activity, see activities.DefaultPolicies, or configured through
// duroxide.Options.RetryPolicies); an execution recorded before the change
// passes the built-in default explicitly, as its call site did.
func plain[Out any](ctx *duroxide.OrchestrationContext, d defaults, name string, in any) (Out, error) {
	if d {
		return duroxide.CallActivityTyped[Out](ctx, name, in)
	}
	return duroxide.CallActivityWithRetryTyped[Out](ctx, name, in, seedPolicies[name])
}

// call calls an activity under an explicit policy, where a step needs
// another policy than the activity's default.
func call[Out any](ctx *duroxide.OrchestrationContext, name string, in any, p duroxide.RetryPolicy) (Out, error) {
	return duroxide.CallActivityWithRetryTyped[Out](ctx, name, in, p)
}

// GetVersion change ids of the steps left out since the lean create and the
// single health write (see createInstance and instanceActor).
const (
	changeLeanCreate     = "lean-create"
	changeOneHealthWrite = "one-health-write"
)

func createInstance(driverName string) func(*duroxide.OrchestrationContext, CreateInput) (CreateOutput, error) {
	return func(ctx *duroxide.OrchestrationContext, in CreateInput) (CreateOutput, error) {
		d := useDefaults(ctx)
		log := ctx.Logger().With("instance", in.Name, "internal_name", in.InternalName)
		ref := activities.InstanceRef{InternalName: in.InternalName}
		// Creates since the lean change leave out three steps that added
		// nothing: the record the caller wrote is not written again, the
		// connection comes with readiness, and the actor id is recorded
		// with the running state.
		lean := ctx.GetVersion(changeLeanCreate, duroxide.VersionBeforeChange, 1) >= 1
		if !lean {
			ctx.SetCustomStatus("recording")
			if _, err := plain[activities.InstanceView](ctx, d, activities.CreateRecord, activities.CreateRecordInput{
				Name: in.Name, InternalName: in.InternalName, Driver: driverName, PostgresVersion: in.PostgresVersion,
				StorageGB: in.StorageGB, Internal: in.Internal, DNSLabel: in.DNSLabel, CreateOrchestrationID: ctx.InstanceID(),
			}); err != nil {
				// Nothing was created: no cleanup needed.
				return CreateOutput{}, fmt.Errorf("record instance: %w", err)
			}
		}

		fail := func(step string, cause error) (CreateOutput, error) {
			reason := fmt.Sprintf("%s failed: %v", step, cause)
			log.Error("create failed; cleaning up", "step", step, "error", cause.Error())
			ctx.SetCustomStatus("cleaning up")
			if _, err := plain[cms.State](ctx, d, activities.UpdateState, activities.UpdateStateInput{
				InternalName: in.InternalName, State: cms.StateFailed,
				Update: cms.StateUpdate{FailureReason: reason, Message: reason},
			}); err != nil {
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
		if err := restoreOrDeploy(ctx, d, in); err != nil {
			return fail("deploy", err)
		}
		ctx.SetCustomStatus("waiting for ready")
		ready, err := plain[activities.ReadyOutput](ctx, d, activities.WaitForReady, ref)
		if err != nil {
			return fail("wait for ready", err)
		}
		var conn activities.ConnectionOutput
		if lean && ready.Connection != nil {
			conn = *ready.Connection
		} else {
			ctx.SetCustomStatus("getting connection strings")
			if conn, err = plain[activities.ConnectionOutput](ctx, d, activities.GetConnectionStrings, ref); err != nil {
				return fail("get connection strings", err)
			}
		}
		ctx.SetCustomStatus("testing connection")
		probe, err := call[activities.TestConnectionOutput](ctx, activities.TestConnection,
			activities.TestConnectionInput{InternalName: in.InternalName, ConnectionString: conn.ConnectionString}, activities.PolicyCreateTestConnection)
		if err != nil {
			return fail("test connection", err)
		}
		// Standbys (change "replicas"): creates recorded before it replay
		// without the step.
		withReplicas := ctx.GetVersion(changeReplicas, duroxide.VersionBeforeChange, 1) >= 1 && in.Replicas > 0
		primary := ""
		if withReplicas {
			ctx.SetCustomStatus("adding standbys")
			servers, err := createReplicas(ctx, in)
			if err != nil {
				return fail("add standbys", err)
			}
			primary = primaryOf(servers.Servers)
			// The read-write string now lists the standbys too.
			if conn, err = plain[activities.ConnectionOutput](ctx, d, activities.GetConnectionStrings, ref); err != nil {
				return fail("get connection strings", err)
			}
		}
		actorID := ActorID(in.InternalName)
		update := cms.StateUpdate{Host: conn.Endpoint.Host, Port: conn.Endpoint.Port, ConnectionString: conn.ConnectionString,
			ExternalIP: conn.Endpoint.ExternalIP, DNSName: conn.Endpoint.DNSName, Message: "ready: " + probe.Version}
		if lean {
			update.ActorOrchestrationID = actorID
		}
		if _, err := plain[cms.State](ctx, d, activities.UpdateState, activities.UpdateStateInput{
			InternalName: in.InternalName, State: cms.StateRunning, Update: update,
		}); err != nil {
			return fail("mark running", err)
		}
		// The health actor runs on its own; it is not a child of this instance.
		if withReplicas {
			if _, err := duroxide.CallActivityTyped[activities.RecordEndpointOutput](ctx, activities.RecordReplicaEndpoint,
				activities.RecordEndpointInput{InternalName: in.InternalName, Primary: primary}); err != nil {
				return fail("record read-only connection string", err)
			}
		}
		if err := ctx.StartOrchestration(InstanceActor, actorID, ActorInput{InternalName: in.InternalName, Interval: in.ActorInterval,
			FailoverInterval: in.FailoverInterval, FailoverThreshold: in.FailoverThreshold}); err != nil {
			return fail("start health actor", err)
		}
		if !lean {
			if _, err := plain[struct{}](ctx, d, activities.SetActor, activities.SetActorInput{InternalName: in.InternalName, OrchestrationID: actorID}); err != nil {
				log.Warn("recording the actor id failed", "error", err.Error())
			}
		}
		// Creates that passed this point before backups existed replay
		// without them (the app starts their schedules when it starts).
		if ctx.GetVersion(changeBackups, duroxide.VersionBeforeChange, 1) >= 1 {
			if err := startBackups(ctx, d, in); err != nil {
				log.Warn("starting backups failed", "error", err.Error())
			}
		}
		ctx.SetCustomStatus("running")
		log.Info("instance running", "connection", conn.ConnectionString)
		return CreateOutput{InternalName: in.InternalName, ConnectionString: conn.ConnectionString}, nil
	}
}

func deleteInstance(ctx *duroxide.OrchestrationContext, in DeleteInput) (string, error) {
	d := useDefaults(ctx)
	log := ctx.Logger().With("internal_name", in.InternalName)
	ref := activities.InstanceRef{InternalName: in.InternalName}
	inst, err := plain[activities.InstanceView](ctx, d, activities.GetInstance, ref)
	if err != nil {
		return "", fmt.Errorf("look up instance: %w", err)
	}
	if !inst.Found {
		return "not found", nil
	}
	// A failed instance was cleaned up already and does not hold its name, so
	// it goes straight to deleted at the end.
	if !in.Cleanup && inst.State != cms.StateFailed {
		if _, err := plain[cms.State](ctx, d, activities.UpdateState, activities.UpdateStateInput{
			InternalName: in.InternalName, State: cms.StateDeleting,
			Update: cms.StateUpdate{DeleteOrchestrationID: ctx.InstanceID(), Message: "delete requested"},
		}); err != nil {
			return "", fmt.Errorf("mark deleting: %w", err)
		}
		// A create still in flight (being cancelled by the API) must end
		// before resources are removed, or it could recreate them.
		if inst.CreateOrchestration != "" {
			if _, err := plain[string](ctx, d, activities.AwaitOrchestration, activities.AwaitInput{Instance: inst.CreateOrchestration}); err != nil {
				log.Warn("create orchestration still running; deleting anyway", "error", err.Error())
			}
		}
	}
	// Stop the health actor (events wait for it even across continue-as-new).
	actor := inst.ActorOrchestrationID
	if actor == "" {
		actor = ActorID(in.InternalName)
	}
	if _, err := plain[struct{}](ctx, d, activities.RaiseEvent, activities.RaiseEventInput{Instance: actor, Event: EventInstanceDeleted}); err != nil {
		log.Warn("signalling the health actor failed", "error", err.Error())
	}
	// Deletes that passed this point before backups existed replay without
	// the backup steps.
	withBackups := ctx.GetVersion(changeBackups, duroxide.VersionBeforeChange, 1) >= 1
	if withBackups {
		beforeDelete(ctx, d, in.InternalName)
	}
	if _, err := plain[struct{}](ctx, d, activities.DeletePostgres, ref); err != nil {
		if !in.Cleanup {
			_, _ = plain[struct{}](ctx, d, activities.AddEvent, activities.AddEventInput{InternalName: in.InternalName, Message: "delete failed: " + err.Error()})
		}
		return "", fmt.Errorf("delete resources: %w", err)
	}
	if _, err := plain[struct{}](ctx, d, activities.ForgetPassword, ref); err != nil {
		log.Warn("forgetting the password failed", "error", err.Error())
	}
	if in.Cleanup {
		if _, err := plain[struct{}](ctx, d, activities.AddEvent, activities.AddEventInput{InternalName: in.InternalName, Message: "resources of the failed instance removed"}); err != nil {
			return "", fmt.Errorf("record cleanup: %w", err)
		}
		return "cleaned up", nil
	}
	if _, err := plain[cms.State](ctx, d, activities.UpdateState, activities.UpdateStateInput{
		InternalName: in.InternalName, State: cms.StateDeleted, Update: cms.StateUpdate{Message: "deleted"},
	}); err != nil {
		return "", fmt.Errorf("mark deleted: %w", err)
	}
	if !withBackups {
		return "deleted", nil
	}
	if err := afterDelete(ctx, d, in); err != nil {
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
	d := useDefaults(ctx)

	inst, err := plain[activities.InstanceView](ctx, d, activities.GetInstanceConnection, ref)
	switch {
	case err != nil:
		log.Warn("health actor could not read the instance; will try again", "error", err.Error())
	case !inst.Found || inst.State == cms.StateDeleted || inst.State == cms.StateFailed:
		log.Info("health actor stopping: instance is gone", "state", string(inst.State))
		return "instance gone", nil
	case inst.State == cms.StateDeleting:
		log.Info("health actor stopping: instance is being deleted")
		return "instance deleting", nil
	case inst.ConnectionString != "" && inst.Replicas > 0 && ctx.GetVersion(changeReplicas, duroxide.VersionBeforeChange, 1) >= 1:
		// An instance with standbys (never one recorded before the change):
		// quick checks that may start a failover.
		replicatedCheck(ctx, d, &in, inst.ConnectionString)
		interval = in.FailoverInterval
		if interval <= 0 {
			interval = DefaultFailoverCheckInterval
		}
	case inst.ConnectionString != "":
		checkedAt := ctx.UtcNow()
		probe, perr := plain[activities.TestConnectionOutput](ctx, d, activities.TestConnection,
			activities.TestConnectionInput{InternalName: in.InternalName, ConnectionString: inst.ConnectionString, KnownRestarts: in.Restarts})
		hc := activities.HealthCheckInput{InternalName: in.InternalName, CheckedAtMs: checkedAt.UnixMilli()}
		if perr != nil {
			hc.Status, hc.Error = cms.HealthUnhealthy, perr.Error()
		} else {
			hc.Status, hc.PostgresVersion, hc.ResponseTimeMs = cms.HealthHealthy, probe.Version, probe.LatencyMs
			in.Restarts = probe.Restarts
		}
		if _, err := plain[struct{}](ctx, d, activities.RecordHealthCheck, hc); err != nil {
			log.Warn("recording a health check failed", "error", err.Error())
		}
		// Since the one-health-write change, recording the check sets the
		// instance's health in the same transaction.
		if ctx.GetVersion(changeOneHealthWrite, duroxide.VersionBeforeChange, 1) < 1 {
			if _, err := plain[struct{}](ctx, d, activities.UpdateHealth, activities.UpdateHealthInput{InternalName: in.InternalName, Health: hc.Status}); err != nil {
				log.Warn("updating health failed", "error", err.Error())
			}
		}
		in.Checks++
	}
	if ctx.Select(deleted, ctx.CreateTimer(interval)) == 0 {
		log.Info("health actor stopping: instance deleted")
		return "stopped", nil
	}
	return "", ctx.ContinueAsNew(in)
}
