package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/orchestrations"
)

// validateReplicas checks a requested standby count: 0..MaxReplicas, and
// more than 0 only on a data plane that runs standbys.
func (a *App) validateReplicas(n int, sync bool) error {
	if n < 0 || n > dataplane.MaxReplicas {
		return invalidField("replicas", "replicas must be between 0 and %d, got %d", dataplane.MaxReplicas, n)
	}
	if sync && n == 0 {
		return invalidField("sync_replica", "sync_replica needs at least one replica")
	}
	if _, ok := a.driver.(dataplane.Replicator); !ok && n > 0 {
		return invalidField("replicas", "the %s data plane does not support replicas", a.driver.Name())
	}
	return nil
}

// runningInstance returns the running instance with this name, or a
// conflict error naming its state.
func (a *App) runningInstance(ctx context.Context, name, what string) (*cms.Instance, error) {
	inst, err := a.cms.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if inst.State != cms.StateRunning {
		return nil, conflict("instance %q is %s; only a running instance can be %s", name, inst.State, what)
	}
	return inst, nil
}

// Operation names the orchestration that carries out a request.
type Operation struct {
	OrchestrationID string `json:"orchestration_id"`
	// Started is false when an operation of the same kind was running
	// already (OrchestrationID is that one).
	Started bool `json:"started"`
}

// Scale starts the scale-instance orchestration, which converges a running
// instance to n standbys (synchronous when sync) and records its new
// connection strings.
func (a *App) Scale(ctx context.Context, name string, n int, sync bool) (_ Operation, err error) {
	defer func() { err = instanceNotFound(name, err) }()
	if err := a.validateReplicas(n, sync); err != nil {
		return Operation{}, err
	}
	inst, err := a.runningInstance(ctx, name, "scaled")
	if err != nil {
		return Operation{}, err
	}
	id := orchestrations.ScaleID(inst.InternalName, time.Now().UTC().Format("20060102t150405")+"-"+randomHex(2))
	if err := a.client.StartOrchestration(ctx, id, orchestrations.ScaleInstance,
		orchestrations.ScaleInput{InternalName: inst.InternalName, Replicas: n, Sync: sync}); err != nil {
		return Operation{}, fmt.Errorf("start scale orchestration: %w", err)
	}
	a.logger.Info("scale requested", "instance", name, "replicas", n, "sync", sync, "orchestration_id", id)
	return Operation{OrchestrationID: id, Started: true}, nil
}

// Failover starts a failover (planned false: promote a standby whatever
// the primary's state) or a switchover (planned: the primary is stopped
// cleanly first, nothing is lost) of a running instance with standbys. At
// most one runs per instance: when one runs already, its id is returned
// with Started false.
func (a *App) Failover(ctx context.Context, name string, planned bool) (_ Operation, err error) {
	defer func() { err = instanceNotFound(name, err) }()
	what, orch := "failed over", orchestrations.FailoverInstance
	if planned {
		what, orch = "switched over", orchestrations.SwitchoverInstance
	}
	if _, ok := a.driver.(dataplane.Replicator); !ok {
		return Operation{}, invalid("the %s data plane does not support replicas", a.driver.Name())
	}
	inst, err := a.runningInstance(ctx, name, what)
	if err != nil {
		return Operation{}, err
	}
	r, err := a.cms.Replicas(ctx, inst.InternalName)
	if err != nil {
		return Operation{}, err
	}
	if r.Replicas == 0 {
		return Operation{}, conflict("instance %q has no standby to promote (scale it first)", name)
	}
	reason := "requested through the API"
	id, started, err := activities.StartFailoverOrchestration(ctx, a.cms, a.client, inst.InternalName, orch,
		orchestrations.FailoverInput{InternalName: inst.InternalName, Reason: reason})
	if err != nil {
		return Operation{}, fmt.Errorf("start %s: %w", orch, err)
	}
	a.logger.Info(orch+" requested", "instance", name, "orchestration_id", id, "started", started)
	return Operation{OrchestrationID: id, Started: started}, nil
}

// ReplicaView is an instance's standbys as the API shows them.
type ReplicaView struct {
	cms.Replicas
	// Servers are the data plane's live view (nil without a Replicator or
	// when it could not be read; ServersError says why).
	Servers      []dataplane.ServerState
	ServersError string
}

// Replicas returns the instance's standby configuration and, for an
// instance whose resources exist, its servers as the data plane sees them
// now.
func (a *App) Replicas(ctx context.Context, inst *cms.Instance) (ReplicaView, error) {
	r, err := a.cms.Replicas(ctx, inst.InternalName)
	if err != nil {
		return ReplicaView{}, err
	}
	v := ReplicaView{Replicas: r}
	rep, ok := a.driver.(dataplane.Replicator)
	if !ok || inst.State != cms.StateRunning || inst.Driver != a.driver.Name() {
		return v, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	servers, err := rep.Servers(ctx, inst.InternalName)
	switch {
	case errors.Is(err, dataplane.ErrNotFound):
	case err != nil:
		v.ServersError = err.Error()
	default:
		v.Servers = servers
	}
	return v, nil
}

// ReadOnlyURL returns the instance's read-only connection URL with its
// password ("" when it has no standbys), for authenticated callers only.
func (a *App) ReadOnlyURL(ctx context.Context, inst *cms.Instance, r cms.Replicas) (string, error) {
	if r.ReadOnlyConnectionString == "" {
		return "", nil
	}
	pw, err := a.cms.Password(ctx, inst.InternalName)
	if err != nil {
		return "", err
	}
	return withPassword(r.ReadOnlyConnectionString, pw)
}
