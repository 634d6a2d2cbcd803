package orchestrations

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
)

// Replica orchestration names (stable: they are recorded in history).
const (
	// ScaleInstance converges an instance to a number of standbys.
	ScaleInstance = "scale-instance"
	// FailoverInstance promotes a standby in place of a failed primary.
	FailoverInstance = "failover-instance"
	// SwitchoverInstance hands the primary role to a standby, planned,
	// losing nothing.
	SwitchoverInstance = "switchover-instance"
)

// changeReplicas is the GetVersion change id of the standby steps added to
// create-instance and the health actor (version 1).
const changeReplicas = "replicas"

// Failover detection defaults for instances with standbys: the health actor
// checks the primary every DefaultFailoverCheckInterval (instead of the
// actor interval) and starts a failover after DefaultFailoverThreshold
// consecutive failed checks, so a dead primary is replaced within seconds.
const (
	DefaultFailoverCheckInterval = 2 * time.Second
	DefaultFailoverThreshold     = 3
)

// Failover kinds (the kind label of toygres_failovers_total).
const (
	KindFailover   = "failover"
	KindSwitchover = "switchover"
)

// ScaleID is the id of a scale-instance orchestration; stamp makes it
// unique per request.
func ScaleID(internalName, stamp string) string { return "scale-" + internalName + "-" + stamp }

// FailoverID is the orchestration id of an instance's seq-th failover or
// switchover (one at a time; see activities.StartFailoverOrchestration).
func FailoverID(internalName string, seq int) string { return activities.FailoverID(internalName, seq) }

// ScaleInput starts scale-instance.
type ScaleInput struct {
	InternalName string `json:"internal_name"`
	Replicas     int    `json:"replicas"`
	Sync         bool   `json:"sync,omitempty"`
}

// ScaleOutput is scale-instance's result.
type ScaleOutput struct {
	Replicas                 int    `json:"replicas"`
	ConnectionString         string `json:"connection_string"` // without password
	ReadOnlyConnectionString string `json:"read_only_connection_string,omitempty"`
}

// FailoverInput starts failover-instance or switchover-instance.
type FailoverInput struct {
	InternalName string `json:"internal_name"`
	// Automatic: started by the health actor. An automatic failover stops
	// without promoting when the data plane reports the primary ready.
	Automatic bool   `json:"automatic,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// FailoverOutput is the result of a failover or switchover.
type FailoverOutput struct {
	Kind string `json:"kind"`
	From string `json:"from"` // the old primary's server id
	To   string `json:"to"`   // the new primary's
	// Skipped explains why nothing was promoted (automatic failover of a
	// primary that answers again).
	Skipped string `json:"skipped,omitempty"`
}

func registerReplicas(reg *duroxide.Registry) error {
	for _, err := range []error{
		duroxide.RegisterOrchestration(reg, ScaleInstance, scaleInstance),
		duroxide.RegisterOrchestration(reg, FailoverInstance, promotion(KindFailover)),
		duroxide.RegisterOrchestration(reg, SwitchoverInstance, promotion(KindSwitchover)),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// note records an instance event; a failure is only logged.
func note(ctx *duroxide.OrchestrationContext, internalName, msg string) {
	if _, err := duroxide.CallActivityTyped[struct{}](ctx, activities.AddEvent, activities.AddEventInput{InternalName: internalName, Message: msg}); err != nil {
		ctx.Logger().Warn("recording an instance event failed", "internal_name", internalName, "error", err.Error())
	}
}

// scaleInstance sets the standby count, waits until every standby streams
// and records the new connection strings.
func scaleInstance(ctx *duroxide.OrchestrationContext, in ScaleInput) (ScaleOutput, error) {
	failed := func(step string, err error) (ScaleOutput, error) {
		msg := fmt.Sprintf("scale to %d standbys failed: %s: %v", in.Replicas, step, err)
		ctx.SetCustomStatus("failed")
		note(ctx, in.InternalName, msg)
		return ScaleOutput{}, errors.New(msg)
	}
	ctx.SetCustomStatus("setting replicas")
	if _, err := duroxide.CallActivityTyped[struct{}](ctx, activities.SetReplicas,
		activities.SetReplicasInput{InternalName: in.InternalName, Replicas: in.Replicas, Sync: in.Sync}); err != nil {
		return failed("set replicas", err)
	}
	ctx.SetCustomStatus("waiting for standbys")
	servers, err := duroxide.CallActivityTyped[activities.ServersOutput](ctx, activities.WaitForStandbys,
		activities.WaitForStandbysInput{InternalName: in.InternalName, Replicas: in.Replicas})
	if err != nil {
		return failed("wait for standbys", err)
	}
	ctx.SetCustomStatus("recording connection strings")
	ep, err := duroxide.CallActivityTyped[activities.RecordEndpointOutput](ctx, activities.RecordReplicaEndpoint,
		activities.RecordEndpointInput{InternalName: in.InternalName, Primary: primaryOf(servers.Servers)})
	if err != nil {
		return failed("record connection strings", err)
	}
	mode := ""
	if in.Sync && in.Replicas > 0 {
		mode = ", one synchronous"
	}
	note(ctx, in.InternalName, fmt.Sprintf("scaled to %d standbys%s", in.Replicas, mode))
	ctx.SetCustomStatus("done")
	return ScaleOutput{Replicas: in.Replicas, ConnectionString: ep.ConnectionString, ReadOnlyConnectionString: ep.ReadOnlyConnectionString}, nil
}

// primaryOf returns the id of the primary among servers ("" if none).
func primaryOf(servers []dataplane.ServerState) string {
	for _, s := range servers {
		if s.Role == dataplane.RolePrimary {
			return s.ID
		}
	}
	return ""
}

// chooseStandby picks the standby to promote: ready standbys only (and
// streaming ones only when planned), a synchronous one first (it has
// every acknowledged commit), then the newest timeline, then the least
// lag, then the lowest id. ok is false when there is none.
func chooseStandby(servers []dataplane.ServerState, planned bool) (dataplane.ServerState, bool) {
	var c []dataplane.ServerState
	for _, s := range servers {
		if s.Role == dataplane.RoleStandby && s.Ready && (!planned || s.Streaming) {
			c = append(c, s)
		}
	}
	if len(c) == 0 {
		return dataplane.ServerState{}, false
	}
	slices.SortStableFunc(c, func(a, b dataplane.ServerState) int {
		if a.Sync != b.Sync {
			if a.Sync {
				return -1
			}
			return 1
		}
		if a.Timeline != b.Timeline {
			return cmp.Compare(b.Timeline, a.Timeline)
		}
		if a.LagBytes != b.LagBytes {
			return cmp.Compare(a.LagBytes, b.LagBytes)
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return c[0], true
}

// promotion returns the failover (or, planned, switchover) orchestration:
// choose a standby, fence the old primary (it never accepts writes again,
// so there are never two primaries; a clean stop first sends its standbys
// all its WAL), promote the standby, record the new endpoint and the event,
// then rebuild the old primary as a standby and wait until it streams.
// Every step is an activity under its retry policy; a crash resumes at the
// step it was in.
func promotion(kind string) func(*duroxide.OrchestrationContext, FailoverInput) (FailoverOutput, error) {
	planned := kind == KindSwitchover
	return func(ctx *duroxide.OrchestrationContext, in FailoverInput) (FailoverOutput, error) {
		log := ctx.Logger().With("internal_name", in.InternalName, "kind", kind)
		out := FailoverOutput{Kind: kind}
		stop := func(msg string) (FailoverOutput, error) {
			ctx.SetCustomStatus("failed")
			note(ctx, in.InternalName, kind+" stopped: "+msg)
			return out, errors.New(kind + " stopped: " + msg)
		}
		ctx.SetCustomStatus("choosing a standby")
		list, err := duroxide.CallActivityTyped[activities.ServersOutput](ctx, activities.ListServers, activities.InstanceRef{InternalName: in.InternalName})
		if err != nil {
			return stop("listing the servers failed: " + err.Error())
		}
		var old *dataplane.ServerState
		for i, s := range list.Servers {
			if s.Role == dataplane.RolePrimary {
				old = &list.Servers[i]
				break
			}
		}
		if old == nil {
			// An earlier attempt fenced the primary and stopped: carry on
			// from the fenced server.
			for i, s := range list.Servers {
				if s.Role == dataplane.RoleFenced {
					old = &list.Servers[i]
					break
				}
			}
		}
		if old == nil {
			return stop("the instance has no primary")
		}
		out.From = old.ID
		if planned && !old.Ready {
			return stop(fmt.Sprintf("primary %s is not ready; a switchover needs a running primary (use failover)", old.ID))
		}
		if in.Automatic && old.Role == dataplane.RolePrimary && old.Ready {
			out.Skipped = fmt.Sprintf("primary %s answers again", old.ID)
			note(ctx, in.InternalName, "automatic failover skipped: "+out.Skipped)
			ctx.SetCustomStatus("skipped")
			return out, nil
		}
		cand, ok := chooseStandby(list.Servers, planned)
		if !ok {
			return stop("no ready standby to promote")
		}
		out.To = cand.ID
		reason := in.Reason
		if reason == "" {
			reason = "requested"
		}
		note(ctx, in.InternalName, fmt.Sprintf("%s started (%s): promoting server %s in place of %s", kind, reason, cand.ID, old.ID))

		ctx.SetCustomStatus("fencing " + old.ID)
		if _, err := duroxide.CallActivityTyped[struct{}](ctx, activities.FenceServer, activities.ServerRef{InternalName: in.InternalName, ServerID: old.ID}); err != nil {
			return stop(fmt.Sprintf("fencing server %s failed, nothing promoted: %v", old.ID, err))
		}
		ctx.SetCustomStatus("promoting " + cand.ID)
		if _, err := duroxide.CallActivityTyped[struct{}](ctx, activities.PromoteServer, activities.ServerRef{InternalName: in.InternalName, ServerID: cand.ID}); err != nil {
			return stop(fmt.Sprintf("promoting server %s failed (server %s is fenced): %v", cand.ID, old.ID, err))
		}
		ctx.SetCustomStatus("recording the new primary")
		if _, err := duroxide.CallActivityTyped[activities.RecordEndpointOutput](ctx, activities.RecordReplicaEndpoint,
			activities.RecordEndpointInput{InternalName: in.InternalName, Primary: cand.ID}); err != nil {
			log.Warn("recording the new endpoint failed", "error", err.Error())
		}
		if _, err := duroxide.CallActivityTyped[struct{}](ctx, activities.RecordFailover, activities.RecordFailoverInput{
			InternalName: in.InternalName, Kind: kind, From: old.ID, To: cand.ID,
			Message: fmt.Sprintf("%s: server %s is the primary (was %s)", kind, cand.ID, old.ID)}); err != nil {
			log.Warn("recording the failover failed", "error", err.Error())
		}

		ctx.SetCustomStatus("rebuilding " + old.ID)
		standbys := len(list.Servers) - 1
		if _, err := duroxide.CallActivityTyped[struct{}](ctx, activities.RebuildServer, activities.ServerRef{InternalName: in.InternalName, ServerID: old.ID}); err != nil {
			return stop(fmt.Sprintf("server %s is the primary, but rebuilding server %s as a standby failed: %v", cand.ID, old.ID, err))
		}
		if _, err := duroxide.CallActivityTyped[activities.ServersOutput](ctx, activities.WaitForStandbys,
			activities.WaitForStandbysInput{InternalName: in.InternalName, Replicas: standbys}); err != nil {
			return stop(fmt.Sprintf("server %s is the primary, but server %s does not stream: %v", cand.ID, old.ID, err))
		}
		note(ctx, in.InternalName, fmt.Sprintf("%s done: server %s rebuilt as a standby of %s", kind, old.ID, cand.ID))
		ctx.SetCustomStatus("done")
		return out, nil
	}
}

// createReplicas adds the standbys asked for at create, once the primary
// answers, and returns the servers.
func createReplicas(ctx *duroxide.OrchestrationContext, in CreateInput) (activities.ServersOutput, error) {
	if _, err := duroxide.CallActivityTyped[struct{}](ctx, activities.SetReplicas,
		activities.SetReplicasInput{InternalName: in.InternalName, Replicas: in.Replicas, Sync: in.SyncReplica}); err != nil {
		return activities.ServersOutput{}, err
	}
	return duroxide.CallActivityTyped[activities.ServersOutput](ctx, activities.WaitForStandbys,
		activities.WaitForStandbysInput{InternalName: in.InternalName, Replicas: in.Replicas})
}

// replicatedCheck is the health actor's check of an instance with standbys
// (see instanceActor): a quick probe through the read-write connection
// string, the servers' lag, and after Threshold consecutive failed checks
// a failover.
func replicatedCheck(ctx *duroxide.OrchestrationContext, d defaults, in *ActorInput, conn string) {
	log := ctx.Logger().With("internal_name", in.InternalName)
	checkedAt := ctx.UtcNow()
	probe, perr := call[activities.TestConnectionOutput](ctx, activities.TestConnection,
		activities.TestConnectionInput{InternalName: in.InternalName, ConnectionString: conn, KnownRestarts: in.Restarts}, activities.PolicyFailoverProbe)
	hc := activities.HealthCheckInput{InternalName: in.InternalName, CheckedAtMs: checkedAt.UnixMilli()}
	if perr != nil {
		hc.Status, hc.Error = cms.HealthUnhealthy, perr.Error()
		in.FailedChecks++
	} else {
		hc.Status, hc.PostgresVersion, hc.ResponseTimeMs = cms.HealthHealthy, probe.Version, probe.LatencyMs
		in.Restarts = probe.Restarts
		in.FailedChecks = 0
	}
	if _, err := plain[struct{}](ctx, d, activities.RecordHealthCheck, hc); err != nil {
		log.Warn("recording a health check failed", "error", err.Error())
	}
	if ctx.GetVersion(changeOneHealthWrite, duroxide.VersionBeforeChange, 1) < 1 {
		if _, err := plain[struct{}](ctx, d, activities.UpdateHealth, activities.UpdateHealthInput{InternalName: in.InternalName, Health: hc.Status}); err != nil {
			log.Warn("updating health failed", "error", err.Error())
		}
	}
	in.Checks++
	if _, err := duroxide.CallActivityTyped[activities.ServersOutput](ctx, activities.ListServers, activities.InstanceRef{InternalName: in.InternalName}); err != nil {
		log.Warn("listing the servers failed", "error", err.Error())
	}
	threshold := in.FailoverThreshold
	if threshold <= 0 {
		threshold = DefaultFailoverThreshold
	}
	if in.FailedChecks < threshold {
		return
	}
	reason := fmt.Sprintf("%d consecutive failed health checks of the primary: %s", in.FailedChecks, hc.Error)
	input := FailoverInput{InternalName: in.InternalName, Automatic: true, Reason: reason}
	raw, err := json.Marshal(input)
	if err != nil {
		log.Error("encoding the failover input failed", "error", err.Error())
		return
	}
	started, err := duroxide.CallActivityTyped[activities.StartFailoverOutput](ctx, activities.StartFailover,
		activities.StartFailoverInput{InternalName: in.InternalName, Orchestration: FailoverInstance, Input: raw})
	switch {
	case err != nil:
		log.Error("starting a failover failed", "error", err.Error())
	case started.Started:
		log.Warn("primary down: failover started", "orchestration", started.OrchestrationID, "failed_checks", in.FailedChecks)
		in.FailedChecks = 0
	default:
		log.Info("primary down: a failover is running", "orchestration", started.OrchestrationID)
	}
}
