package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
)

// Replica activity names (stable: they are recorded in history).
const (
	SetReplicas           = "set-replicas"
	WaitForStandbys       = "wait-for-standbys"
	ListServers           = "list-servers"
	FenceServer           = "fence-server"
	PromoteServer         = "promote-server"
	RebuildServer         = "rebuild-server"
	RecordReplicaEndpoint = "cms-record-replica-endpoint"
	RecordFailover        = "cms-record-failover"
	StartFailover         = "start-failover"
)

// Replica metrics.
const (
	MetricReplicationLag = "toygres_replication_lag_bytes"
	MetricFailovers      = "toygres_failovers_total"
)

// ErrNoReplicas is returned (wrapped, non-retryable) when the instance's
// data plane cannot run standbys (its driver is no dataplane.Replicator).
var ErrNoReplicas = errors.New("this data plane does not support replicas")

// Replica policies (see policies.go for the others).
var (
	// set-replicas: the driver only starts the change.
	PolicySetReplicas = duroxide.NewRetryPolicy(3).WithName("set-replicas").
				WithBackoff(duroxide.Exponential{Base: 2 * time.Second, Multiplier: 2, Max: 10 * time.Second}).
				WithTimeout(5 * time.Minute)
	// wait-for-standbys polls like wait-for-ready, for as long as a base
	// copy of a large instance may take.
	PolicyWaitForStandbys = duroxide.NewRetryPolicy(1000).WithName("wait-for-standbys").
				WithBackoff(duroxide.Exponential{Base: 250 * time.Millisecond, Multiplier: 1.5, Max: 5 * time.Second}).
				WithTimeout(30 * time.Second).
				WithTotalTimeout(30 * time.Minute)
	// list-servers: quick; a failover decides on what it returns.
	PolicyListServers = duroxide.NewRetryPolicy(3).WithName("list-servers").
				WithBackoff(duroxide.Linear{Base: time.Second, Max: 3 * time.Second}).
				WithTimeout(15 * time.Second)
	// fence-server must succeed before anything is promoted (never two
	// primaries): a few quick attempts, then the failover stops.
	PolicyFence = duroxide.NewRetryPolicy(5).WithName("fence-server").
			WithBackoff(duroxide.Exponential{Base: time.Second, Multiplier: 2, Max: 10 * time.Second}).
			WithTimeout(time.Minute)
	// promote-server waits until the standby accepts writes.
	PolicyPromote = duroxide.NewRetryPolicy(3).WithName("promote-server").
			WithBackoff(duroxide.Exponential{Base: time.Second, Multiplier: 2, Max: 10 * time.Second}).
			WithTimeout(2 * time.Minute)
	// rebuild-server: pg_rewind or a fresh base copy.
	PolicyRebuild = duroxide.NewRetryPolicy(3).WithName("rebuild-server").
			WithBackoff(duroxide.Exponential{Base: 5 * time.Second, Multiplier: 2, Max: time.Minute}).
			WithTimeout(time.Hour)
	// PolicyFailoverProbe is the health actor's probe of an instance with
	// standbys: one attempt, a short timeout; consecutive failed checks
	// (not retries within one) decide a failover, so that it starts within
	// seconds.
	PolicyFailoverProbe = duroxide.NewRetryPolicy(1).WithName("failover-probe").WithTimeout(5 * time.Second)
)

// replicaPolicies are the default policies of the replica activities.
func replicaPolicies() map[string]duroxide.RetryPolicy {
	return map[string]duroxide.RetryPolicy{
		SetReplicas:           PolicySetReplicas,
		WaitForStandbys:       PolicyWaitForStandbys,
		ListServers:           PolicyListServers,
		FenceServer:           PolicyFence,
		PromoteServer:         PolicyPromote,
		RebuildServer:         PolicyRebuild,
		RecordReplicaEndpoint: PolicyCMS,
		RecordFailover:        PolicyCMS,
		StartFailover:         PolicyCMS,
	}
}

// SetReplicasInput converges an instance to n standbys.
type SetReplicasInput struct {
	InternalName string `json:"internal_name"`
	Replicas     int    `json:"replicas"`
	Sync         bool   `json:"sync,omitempty"`
}

// WaitForStandbysInput waits until an instance has exactly Replicas
// streaming standbys.
type WaitForStandbysInput struct {
	InternalName string `json:"internal_name"`
	Replicas     int    `json:"replicas"`
}

// ServersOutput is every server of an instance, the primary first.
type ServersOutput struct {
	Servers []dataplane.ServerState `json:"servers"`
}

// ServerRef names one server of an instance.
type ServerRef struct {
	InternalName string `json:"internal_name"`
	ServerID     string `json:"server_id"`
}

// RecordEndpointInput records where an instance's primary now is.
type RecordEndpointInput struct {
	InternalName string `json:"internal_name"`
	Primary      string `json:"primary"`
}

// RecordEndpointOutput is the instance's connection strings (no password).
type RecordEndpointOutput struct {
	ConnectionString         string `json:"connection_string"`
	ReadOnlyConnectionString string `json:"read_only_connection_string,omitempty"`
}

// RecordFailoverInput records a completed promotion.
type RecordFailoverInput struct {
	InternalName string `json:"internal_name"`
	Kind         string `json:"kind"` // "failover" or "switchover"
	From         string `json:"from"`
	To           string `json:"to"`
	Message      string `json:"message"`
}

// StartFailoverInput starts a failover (or switchover) orchestration
// unless one of the instance is running.
type StartFailoverInput struct {
	InternalName  string          `json:"internal_name"`
	Orchestration string          `json:"orchestration"`
	Input         json.RawMessage `json:"input"`
}

// StartFailoverOutput names the orchestration that runs the failover.
type StartFailoverOutput struct {
	OrchestrationID string `json:"orchestration_id"`
	// Started is false when a failover of the instance was running already
	// (OrchestrationID is that one).
	Started bool `json:"started"`
}

// FailoverID is the orchestration id of an instance's seq-th failover or
// switchover.
func FailoverID(internalName string, seq int) string {
	return "failover-" + internalName + "-" + strconv.Itoa(seq)
}

// ErrFailoverRunning is returned (wrapped) by StartFailoverOrchestration's
// callers that refuse to queue behind a running failover.
var ErrFailoverRunning = errors.New("a failover of this instance is running")

// StartFailoverOrchestration starts orchestration (a failover or a
// switchover) for an instance with input, unless one of its failovers is
// running, in which case it returns that one's id and started false. At
// most one failover per instance runs at a time: ids are numbered by the
// CMS (FailoverSeq), and a new number is taken only once the orchestration
// of the current one has finished. Safe to repeat and to race.
func StartFailoverOrchestration(ctx context.Context, store cms.ReplicaStore, client *duroxide.Client, internalName, orchestration string, input any) (string, bool, error) {
	r, err := store.Replicas(ctx, internalName)
	if err != nil {
		return "", false, err
	}
	seq := r.FailoverSeq
	if seq > 0 {
		id := FailoverID(internalName, seq)
		st, err := client.GetStatus(ctx, id)
		switch {
		case errors.Is(err, duroxide.ErrNotFound):
			// Numbered but not started (a crash in between): start it.
			if err := client.StartOrchestration(ctx, id, orchestration, input); err != nil {
				return "", false, err
			}
			return id, true, nil
		case err != nil:
			return "", false, fmt.Errorf("status of %s: %w", id, err)
		case !st.Status.IsTerminal():
			return id, false, nil
		}
	}
	next, err := store.NextFailoverSeq(ctx, internalName, seq)
	if err != nil {
		return "", false, err
	}
	id := FailoverID(internalName, next)
	if err := client.StartOrchestration(ctx, id, orchestration, input); err != nil {
		return "", false, err
	}
	return id, true, nil
}

type replicaActs struct {
	*acts
	lag       *prometheus.GaugeVec   // nil: not recorded
	failovers *prometheus.CounterVec // nil: not recorded
}

func registerCollector[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func registerReplicas(reg *duroxide.Registry, a *acts) error {
	r := &replicaActs{acts: a}
	if a.Metrics != nil {
		var err error
		r.lag, err = registerCollector(a.Metrics, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricReplicationLag,
			Help: "How far each standby's replay is behind its primary, in bytes, by instance and server (0 for the primary), as of the latest health check."},
			[]string{"instance", "server"}))
		if err != nil {
			return fmt.Errorf("register replication lag metric: %w", err)
		}
		lag := r.lag
		a.forgetServers = func(name string) { lag.DeletePartialMatch(prometheus.Labels{"instance": name}) }
		r.failovers, err = registerCollector(a.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricFailovers,
			Help: "Promotions of a standby, by instance and kind (failover: the primary had failed; switchover: planned)."},
			[]string{"instance", "kind"}))
		if err != nil {
			return fmt.Errorf("register failover counter: %w", err)
		}
	}
	for _, err := range []error{
		duroxide.RegisterActivity(reg, SetReplicas, r.setReplicas, registerOptions(SetReplicas)...),
		duroxide.RegisterActivity(reg, WaitForStandbys, r.waitForStandbys, registerOptions(WaitForStandbys)...),
		duroxide.RegisterActivity(reg, ListServers, r.listServers, registerOptions(ListServers)...),
		duroxide.RegisterActivity(reg, FenceServer, r.fence, registerOptions(FenceServer)...),
		duroxide.RegisterActivity(reg, PromoteServer, r.promote, registerOptions(PromoteServer)...),
		duroxide.RegisterActivity(reg, RebuildServer, r.rebuild, registerOptions(RebuildServer)...),
		duroxide.RegisterActivity(reg, RecordReplicaEndpoint, r.recordEndpoint, registerOptions(RecordReplicaEndpoint)...),
		duroxide.RegisterActivity(reg, RecordFailover, r.recordFailover, registerOptions(RecordFailover)...),
		duroxide.RegisterActivity(reg, StartFailover, r.startFailover, registerOptions(StartFailover)...),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// replicator returns the driver as a Replicator, or a non-retryable
// ErrNoReplicas.
func (r *replicaActs) replicator() (dataplane.Replicator, error) {
	rep, ok := r.Driver.(dataplane.Replicator)
	if !ok {
		return nil, duroxide.NonRetryable(fmt.Errorf("%w (driver %s)", ErrNoReplicas, r.Driver.Name()))
	}
	return rep, nil
}

func (r *replicaActs) setReplicas(ctx context.Context, in SetReplicasInput) (struct{}, error) {
	if in.Replicas < 0 || in.Replicas > dataplane.MaxReplicas {
		return struct{}{}, duroxide.NonRetryable(fmt.Errorf("replicas must be 0 to %d, not %d", dataplane.MaxReplicas, in.Replicas))
	}
	rep, err := r.replicator()
	if err != nil {
		return struct{}{}, err
	}
	if err := r.checkHost(ctx, in.InternalName, false); err != nil {
		return struct{}{}, err
	}
	if err := rep.SetReplicas(ctx, in.InternalName, in.Replicas, in.Sync); err != nil {
		return struct{}{}, err
	}
	return struct{}{}, r.CMS.SetReplicaCount(ctx, in.InternalName, in.Replicas, in.Sync)
}

// waitForStandbys fails with ErrNotReady until the instance has a ready
// primary and exactly in.Replicas standbys, all ready and streaming.
func (r *replicaActs) waitForStandbys(ctx context.Context, in WaitForStandbysInput) (ServersOutput, error) {
	rep, err := r.replicator()
	if err != nil {
		return ServersOutput{}, err
	}
	servers, err := rep.Servers(ctx, in.InternalName)
	if err != nil {
		return ServersOutput{}, err
	}
	primaries, streaming, others := 0, 0, 0
	for _, s := range servers {
		switch {
		case s.Role == dataplane.RolePrimary && s.Ready:
			primaries++
		case s.Role == dataplane.RoleStandby && s.Ready && s.Streaming:
			streaming++
		default:
			others++
		}
	}
	if primaries != 1 || streaming != in.Replicas || others != 0 {
		return ServersOutput{Servers: servers}, fmt.Errorf("%w (%d ready primaries, %d of %d standbys streaming, %d other servers)",
			ErrNotReady, primaries, streaming, in.Replicas, others)
	}
	return ServersOutput{Servers: servers}, nil
}

// listServers reports the instance's servers and records each one's lag
// (toygres_replication_lag_bytes); servers no longer listed lose theirs.
func (r *replicaActs) listServers(ctx context.Context, in InstanceRef) (ServersOutput, error) {
	rep, err := r.replicator()
	if err != nil {
		return ServersOutput{}, err
	}
	servers, err := rep.Servers(ctx, in.InternalName)
	if errors.Is(err, dataplane.ErrNotFound) {
		return ServersOutput{}, duroxide.NonRetryable(err)
	}
	if err != nil {
		return ServersOutput{}, err
	}
	if r.lag != nil {
		r.lag.DeletePartialMatch(prometheus.Labels{"instance": in.InternalName})
		for _, s := range servers {
			r.lag.WithLabelValues(in.InternalName, s.ID).Set(float64(s.LagBytes))
		}
	}
	return ServersOutput{Servers: servers}, nil
}

func (r *replicaActs) fence(ctx context.Context, in ServerRef) (struct{}, error) {
	rep, err := r.replicator()
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, rep.Fence(ctx, in.InternalName, in.ServerID)
}

func (r *replicaActs) promote(ctx context.Context, in ServerRef) (struct{}, error) {
	rep, err := r.replicator()
	if err != nil {
		return struct{}{}, err
	}
	err = rep.Promote(ctx, in.InternalName, in.ServerID)
	if errors.Is(err, dataplane.ErrNotStandby) {
		return struct{}{}, duroxide.NonRetryable(err)
	}
	return struct{}{}, err
}

func (r *replicaActs) rebuild(ctx context.Context, in ServerRef) (struct{}, error) {
	rep, err := r.replicator()
	if err != nil {
		return struct{}{}, err
	}
	return struct{}{}, rep.Rebuild(ctx, in.InternalName, in.ServerID)
}

// recordEndpoint reads the instance's endpoint from the data plane and
// records its connection strings (without password) and primary in the
// CMS. The read-write string of a running instance is updated in place (it
// changes when standbys come or go); other states are left alone.
func (r *replicaActs) recordEndpoint(ctx context.Context, in RecordEndpointInput) (RecordEndpointOutput, error) {
	ep, err := r.Driver.Endpoint(ctx, in.InternalName)
	if err != nil {
		return RecordEndpointOutput{}, err
	}
	out := RecordEndpointOutput{ConnectionString: ep.URL(""), ReadOnlyConnectionString: ep.ReadOnlyURL("")}
	if err := r.CMS.SetReplicaEndpoint(ctx, in.InternalName, in.Primary, out.ReadOnlyConnectionString); err != nil {
		return RecordEndpointOutput{}, err
	}
	inst, err := r.CMS.GetByInternalName(ctx, in.InternalName)
	if err != nil {
		return RecordEndpointOutput{}, err
	}
	if inst.State == cms.StateRunning {
		if _, err := r.CMS.UpdateState(ctx, in.InternalName, cms.StateRunning, cms.StateUpdate{
			Host: ep.Host, Port: ep.Port, ConnectionString: out.ConnectionString}); err != nil {
			return RecordEndpointOutput{}, err
		}
	}
	return out, nil
}

// recordFailover records a promotion as an instance event and counts it.
func (r *replicaActs) recordFailover(ctx context.Context, in RecordFailoverInput) (struct{}, error) {
	if err := r.CMS.AddEvent(ctx, in.InternalName, in.Message); err != nil {
		return struct{}{}, err
	}
	// Counted once the event is stored (a redelivered activity still can
	// be counted twice).
	if r.failovers != nil {
		r.failovers.WithLabelValues(in.InternalName, in.Kind).Inc()
	}
	r.Logger.Warn("instance primary changed", "internal_name", in.InternalName, "kind", in.Kind, "from", in.From, "to", in.To)
	return struct{}{}, nil
}

func (r *replicaActs) startFailover(ctx context.Context, in StartFailoverInput) (StartFailoverOutput, error) {
	id, started, err := StartFailoverOrchestration(ctx, r.CMS, r.Client, in.InternalName, in.Orchestration, in.Input)
	if err != nil {
		return StartFailoverOutput{}, err
	}
	return StartFailoverOutput{OrchestrationID: id, Started: started}, nil
}
