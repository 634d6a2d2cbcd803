// Package activities holds the side effects of Toygres' orchestrations: CMS
// reads and writes, data-plane calls and connection probes. Every activity is
// idempotent, because the runtime delivers activities at least once and
// retry policies repeat them.
//
// No activity takes or returns an instance password: passwords stay
// encrypted in the CMS and activities that need one read it there, so they
// never reach orchestration history. An instance password is that of the
// user in the instance's connection string (Endpoint.User): deploy hands it
// to the driver, test-connection logs in with it. It need not be a
// superuser's: on the local data plane it is not (a role that owns the
// database and may create databases and roles), and no activity needs more.
package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
)

// Activity names (stable: they are recorded in history).
const (
	CreateRecord          = "cms-create-instance-record"
	GetInstance           = "cms-get-instance"
	UpdateState           = "cms-update-instance-state"
	UpdateHealth          = "cms-update-instance-health"
	RecordHealthCheck     = "cms-record-health-check"
	SetActor              = "cms-record-instance-actor"
	AddEvent              = "cms-add-instance-event"
	ForgetPassword        = "cms-forget-password"
	GetInstanceConnection = "cms-get-instance-connection"
	Deploy                = "deploy-postgres"
	WaitForReady          = "wait-for-ready"
	GetConnectionStrings  = "get-connection-strings"
	TestConnection        = "test-connection"
	DeletePostgres        = "delete-postgres"
	RaiseEvent            = "raise-event"
	AwaitOrchestration    = "await-orchestration-finished"
)

// Deps are what activities act on.
type Deps struct {
	CMS    cms.Store
	Driver dataplane.Driver
	Client *duroxide.Client
	Logger *slog.Logger
	// Metrics, when set, receives toygres_health_check_duration_seconds{result}.
	Metrics prometheus.Registerer
	// Host, when set, identifies the machine this server's data plane runs
	// instances on (local driver on a shared store): deploy records it with
	// the instance, and data-plane calls on an instance recorded for another
	// host fail with ErrOtherHost.
	Host string
}

// healthCheckBuckets are the buckets of toygres_health_check_duration_seconds.
var healthCheckBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// newHealthCheckHistogram registers toygres_health_check_duration_seconds
// on reg (or reuses the one a previous Register call put there).
func newHealthCheckHistogram(reg prometheus.Registerer) (*prometheus.HistogramVec, error) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "toygres_health_check_duration_seconds",
		Help:    "Response time of instance health checks (connect and query), by result (healthy, unhealthy); an unhealthy check that got no answer records 0.",
		Buckets: healthCheckBuckets}, []string{"result"})
	if err := reg.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.HistogramVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("register health check metric: %w", err)
	}
	return h, nil
}

// InstanceRef names an instance by internal name.
type InstanceRef struct {
	InternalName string `json:"internal_name"`
}

// CreateRecordInput reserves an instance record.
type CreateRecordInput struct {
	Name                  string `json:"name"`
	InternalName          string `json:"internal_name"`
	Driver                string `json:"driver"`
	PostgresVersion       string `json:"postgres_version,omitempty"`
	StorageGB             int    `json:"storage_gb"`
	Internal              bool   `json:"internal,omitempty"`
	DNSLabel              string `json:"dns_label,omitempty"`
	CreateOrchestrationID string `json:"create_orchestration_id"`
}

// InstanceView is the part of a CMS record orchestrations need.
type InstanceView struct {
	Found                bool      `json:"found"`
	Name                 string    `json:"name,omitempty"`
	InternalName         string    `json:"internal_name,omitempty"`
	State                cms.State `json:"state,omitempty"`
	ConnectionString     string    `json:"connection_string,omitempty"` // without password
	ActorOrchestrationID string    `json:"actor_orchestration_id,omitempty"`
	CreateOrchestration  string    `json:"create_orchestration_id,omitempty"`
	// Replicas is the instance's standby count (0 when it has none).
	Replicas int `json:"replicas,omitempty"`
}

// UpdateStateInput moves an instance to a state.
type UpdateStateInput struct {
	InternalName string          `json:"internal_name"`
	State        cms.State       `json:"state"`
	Update       cms.StateUpdate `json:"update"`
}

// UpdateHealthInput sets an instance's health.
type UpdateHealthInput struct {
	InternalName string     `json:"internal_name"`
	Health       cms.Health `json:"health"`
}

// SetActorInput records the health actor of an instance.
type SetActorInput struct {
	InternalName    string `json:"internal_name"`
	OrchestrationID string `json:"orchestration_id"`
}

// AddEventInput records a note on an instance.
type AddEventInput struct {
	InternalName string `json:"internal_name"`
	Message      string `json:"message"`
}

// DeployInput deploys an instance (the password is read from the CMS).
type DeployInput struct {
	InternalName    string `json:"internal_name"`
	PostgresVersion string `json:"postgres_version,omitempty"`
	StorageGB       int    `json:"storage_gb"`
	Internal        bool   `json:"internal,omitempty"`
	DNSLabel        string `json:"dns_label,omitempty"`
}

// ReadyOutput is the readiness seen by wait-for-ready.
type ReadyOutput struct {
	Phase string `json:"phase"`
	Ready bool   `json:"ready"`
	// Connection is how to reach the ready instance (recorded since the
	// create orchestration stopped calling get-connection-strings; absent
	// from older histories).
	Connection *ConnectionOutput `json:"connection,omitempty"`
}

// ConnectionOutput is how to reach an instance, without its password.
type ConnectionOutput struct {
	Endpoint         dataplane.Endpoint `json:"endpoint"`
	ConnectionString string             `json:"connection_string"`
}

// TestConnectionInput probes an instance.
type TestConnectionInput struct {
	InternalName     string `json:"internal_name"`
	ConnectionString string `json:"connection_string"` // without password
	// KnownRestarts is the restart count the previous check saw; a higher
	// count now is recorded as an instance event, a log line and a metric.
	KnownRestarts int `json:"known_restarts,omitempty"`
}

// TestConnectionOutput is a successful probe.
type TestConnectionOutput struct {
	Version   string `json:"version"`
	LatencyMs int64  `json:"latency_ms"` // connect + query, measured in the activity
	// Restarts is the server's restart count where the data plane keeps one
	// (dataplane.RestartCounter), else KnownRestarts.
	Restarts int `json:"restarts,omitempty"`
}

// HealthCheckInput records one probe.
type HealthCheckInput struct {
	InternalName    string     `json:"internal_name"`
	Status          cms.Health `json:"status"`
	PostgresVersion string     `json:"postgres_version,omitempty"`
	ResponseTimeMs  int64      `json:"response_time_ms"`
	Error           string     `json:"error,omitempty"`
	CheckedAtMs     int64      `json:"checked_at_ms"` // deterministic orchestration time
}

// RaiseEventInput raises an external event on an orchestration.
type RaiseEventInput struct {
	Instance string `json:"instance"`
	Event    string `json:"event"`
	Data     string `json:"data,omitempty"`
}

// AwaitInput names an orchestration instance to wait for.
type AwaitInput struct {
	Instance string `json:"instance"`
}

// ErrNotReady is returned by wait-for-ready while an instance starts; the
// orchestration's retry policy polls through it.
var ErrNotReady = errors.New("instance is not ready yet")

// Register adds every activity to reg.
func Register(reg *duroxide.Registry, d Deps) error {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	a := &acts{Deps: d}
	if d.Metrics != nil {
		h, err := newHealthCheckHistogram(d.Metrics)
		if err != nil {
			return err
		}
		a.healthCheckDuration = h
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: dataplane.MetricRestarts, Help: dataplane.RestartsHelp}, []string{"instance"})
		if err := d.Metrics.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return fmt.Errorf("register restart counter: %w", err)
			}
			c = are.ExistingCollector.(*prometheus.CounterVec)
		}
		a.restarts = c
	}
	for _, err := range []error{
		duroxide.RegisterActivity(reg, CreateRecord, a.createRecord, registerOptions(CreateRecord)...),
		duroxide.RegisterActivity(reg, GetInstance, a.getInstance, registerOptions(GetInstance)...),
		duroxide.RegisterActivity(reg, UpdateState, a.updateState, registerOptions(UpdateState)...),
		duroxide.RegisterActivity(reg, UpdateHealth, a.updateHealth, registerOptions(UpdateHealth)...),
		duroxide.RegisterActivity(reg, RecordHealthCheck, a.recordHealthCheck, registerOptions(RecordHealthCheck)...),
		duroxide.RegisterActivity(reg, SetActor, a.setActor, registerOptions(SetActor)...),
		duroxide.RegisterActivity(reg, AddEvent, a.addEvent, registerOptions(AddEvent)...),
		duroxide.RegisterActivity(reg, ForgetPassword, a.forgetPassword, registerOptions(ForgetPassword)...),
		duroxide.RegisterActivity(reg, GetInstanceConnection, a.getInstance, registerOptions(GetInstanceConnection)...),
		duroxide.RegisterActivity(reg, Deploy, a.deploy, registerOptions(Deploy)...),
		duroxide.RegisterActivity(reg, WaitForReady, a.waitForReady, registerOptions(WaitForReady)...),
		duroxide.RegisterActivity(reg, GetConnectionStrings, a.getConnectionStrings, registerOptions(GetConnectionStrings)...),
		duroxide.RegisterActivity(reg, TestConnection, a.testConnection, registerOptions(TestConnection)...),
		duroxide.RegisterActivity(reg, DeletePostgres, a.deletePostgres, registerOptions(DeletePostgres)...),
		duroxide.RegisterActivity(reg, RaiseEvent, a.raiseEvent, registerOptions(RaiseEvent)...),
		duroxide.RegisterActivity(reg, AwaitOrchestration, a.awaitOrchestration, registerOptions(AwaitOrchestration)...),
		registerJanitor(reg, a),
		registerBackups(reg, a),
		registerReplicas(reg, a),
	} {
		if err != nil {
			return fmt.Errorf("register activities: %w", err)
		}
	}
	return nil
}

type acts struct {
	Deps
	healthCheckDuration *prometheus.HistogramVec // nil: not recorded
	restarts            *prometheus.CounterVec   // nil: not recorded
	// forgetServers drops a deleted instance's per-server series (nil:
	// nothing recorded); set by registerReplicas.
	forgetServers func(internalName string)
}

func (a *acts) createRecord(ctx context.Context, in CreateRecordInput) (InstanceView, error) {
	inst, err := a.CMS.CreateInstance(ctx, cms.Instance{
		Name: in.Name, InternalName: in.InternalName, Driver: in.Driver, PostgresVersion: in.PostgresVersion,
		StorageGB: in.StorageGB, Internal: in.Internal, DNSLabel: in.DNSLabel, CreateOrchestrationID: in.CreateOrchestrationID,
	})
	if errors.Is(err, cms.ErrNameTaken) {
		return InstanceView{}, duroxide.NonRetryable(err)
	}
	if err != nil {
		return InstanceView{}, err
	}
	v := view(inst)
	r, err := a.CMS.Replicas(ctx, in.InternalName)
	if err != nil {
		return InstanceView{}, err
	}
	v.Replicas = r.Replicas
	return v, nil
}

func view(inst *cms.Instance) InstanceView {
	return InstanceView{Found: true, Name: inst.Name, InternalName: inst.InternalName, State: inst.State,
		ConnectionString: inst.ConnectionString, ActorOrchestrationID: inst.ActorOrchestrationID, CreateOrchestration: inst.CreateOrchestrationID}
}

func (a *acts) getInstance(ctx context.Context, in InstanceRef) (InstanceView, error) {
	inst, err := a.CMS.GetByInternalName(ctx, in.InternalName)
	if errors.Is(err, cms.ErrNotFound) {
		return InstanceView{Found: false}, nil
	}
	if err != nil {
		return InstanceView{}, err
	}
	v := view(inst)
	r, err := a.CMS.Replicas(ctx, in.InternalName)
	if err != nil {
		return InstanceView{}, err
	}
	v.Replicas = r.Replicas
	return v, nil
}

func (a *acts) updateState(ctx context.Context, in UpdateStateInput) (cms.State, error) {
	prev, err := a.CMS.UpdateState(ctx, in.InternalName, in.State, in.Update)
	if errors.Is(err, cms.ErrNotFound) {
		return "", duroxide.NonRetryable(err)
	}
	return prev, err
}

func (a *acts) updateHealth(ctx context.Context, in UpdateHealthInput) (struct{}, error) {
	return struct{}{}, a.CMS.UpdateHealth(ctx, in.InternalName, in.Health)
}

func (a *acts) recordHealthCheck(ctx context.Context, in HealthCheckInput) (struct{}, error) {
	err := a.CMS.RecordHealthCheck(ctx, cms.HealthCheck{Instance: in.InternalName, Status: in.Status,
		PostgresVersion: in.PostgresVersion, ResponseTimeMs: in.ResponseTimeMs, Error: in.Error, CheckedAt: time.UnixMilli(in.CheckedAtMs)})
	if err == nil && a.healthCheckDuration != nil {
		// Observed once the check is stored, so a retried write is not
		// counted twice (a redelivered activity still can be).
		a.healthCheckDuration.WithLabelValues(string(in.Status)).Observe(float64(in.ResponseTimeMs) / 1000)
	}
	return struct{}{}, err
}

func (a *acts) setActor(ctx context.Context, in SetActorInput) (struct{}, error) {
	return struct{}{}, a.CMS.SetActor(ctx, in.InternalName, in.OrchestrationID)
}

func (a *acts) addEvent(ctx context.Context, in AddEventInput) (struct{}, error) {
	return struct{}{}, a.CMS.AddEvent(ctx, in.InternalName, in.Message)
}

func (a *acts) forgetPassword(ctx context.Context, in InstanceRef) (struct{}, error) {
	return struct{}{}, a.CMS.DeletePassword(ctx, in.InternalName)
}

func (a *acts) deploy(ctx context.Context, in DeployInput) (struct{}, error) {
	if err := a.checkHost(ctx, in.InternalName, true); err != nil {
		return struct{}{}, err
	}
	return struct{}{}, a.deployWanted(ctx, in.InternalName, func(ctx context.Context) error {
		pw, err := a.CMS.Password(ctx, in.InternalName)
		if err != nil {
			return duroxide.NonRetryable(fmt.Errorf("read password of %s: %w", in.InternalName, err))
		}
		return a.Driver.Deploy(ctx, dataplane.Spec{Name: in.InternalName, PostgresVersion: in.PostgresVersion,
			StorageGB: in.StorageGB, Internal: in.Internal, DNSLabel: in.DNSLabel}, pw)
	})
}

func (a *acts) waitForReady(ctx context.Context, in InstanceRef) (ReadyOutput, error) {
	if err := a.checkHost(ctx, in.InternalName, false); err != nil {
		return ReadyOutput{}, err
	}
	st, err := a.Driver.Status(ctx, in.InternalName)
	if err != nil {
		return ReadyOutput{}, err
	}
	if !st.Ready {
		return ReadyOutput{Phase: st.Phase}, fmt.Errorf("%w (%s: %s)", ErrNotReady, st.Phase, st.Message)
	}
	ep, err := a.Driver.Endpoint(ctx, in.InternalName)
	if err != nil {
		return ReadyOutput{}, err
	}
	return ReadyOutput{Phase: st.Phase, Ready: true, Connection: &ConnectionOutput{Endpoint: ep, ConnectionString: ep.URL("")}}, nil
}

func (a *acts) getConnectionStrings(ctx context.Context, in InstanceRef) (ConnectionOutput, error) {
	if err := a.checkHost(ctx, in.InternalName, false); err != nil {
		return ConnectionOutput{}, err
	}
	ep, err := a.Driver.Endpoint(ctx, in.InternalName)
	if err != nil {
		return ConnectionOutput{}, err
	}
	return ConnectionOutput{Endpoint: ep, ConnectionString: ep.URL("")}, nil
}

func (a *acts) testConnection(ctx context.Context, in TestConnectionInput) (TestConnectionOutput, error) {
	pw, err := a.CMS.Password(ctx, in.InternalName)
	if err != nil {
		return TestConnectionOutput{}, fmt.Errorf("read password of %s: %w", in.InternalName, err)
	}
	cfg, err := pgx.ParseConfig(in.ConnectionString)
	if err != nil {
		return TestConnectionOutput{}, duroxide.NonRetryable(fmt.Errorf("parse connection string: %w", err))
	}
	cfg.Password = pw
	cfg.ConnectTimeout = 10 * time.Second
	begin := time.Now()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return TestConnectionOutput{}, fmt.Errorf("connect to %s: %w", in.InternalName, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		return TestConnectionOutput{}, fmt.Errorf("query %s: %w", in.InternalName, err)
	}
	latency := time.Since(begin).Milliseconds()
	return TestConnectionOutput{Version: version, LatencyMs: latency, Restarts: a.noteRestarts(ctx, in)}, nil
}

// noteRestarts asks a data plane that counts server restarts (Kubernetes:
// container restarts) for the count and records an increase since the
// previous check. Drivers that restart servers themselves (local) report
// each restart as it happens instead.
func (a *acts) noteRestarts(ctx context.Context, in TestConnectionInput) int {
	rc, ok := a.Driver.(dataplane.RestartCounter)
	if !ok {
		return in.KnownRestarts
	}
	n, err := rc.Restarts(ctx, in.InternalName)
	if err != nil {
		a.Logger.WarnContext(ctx, "reading the restart count failed", "internal_name", in.InternalName, "error", err.Error())
		return in.KnownRestarts
	}
	if n <= in.KnownRestarts {
		return n
	}
	msg := fmt.Sprintf("server restarted by the %s data plane (%d restarts since the last check, %d in total)", a.Driver.Name(), n-in.KnownRestarts, n)
	a.Logger.WarnContext(ctx, "instance server restarted", "internal_name", in.InternalName, "restarts", n, "new", n-in.KnownRestarts)
	if a.restarts != nil {
		a.restarts.WithLabelValues(in.InternalName).Add(float64(n - in.KnownRestarts))
	}
	if err := a.CMS.AddEvent(ctx, in.InternalName, msg); err != nil {
		a.Logger.WarnContext(ctx, "recording a restart event failed", "internal_name", in.InternalName, "error", err.Error())
	}
	return n
}

func (a *acts) deletePostgres(ctx context.Context, in InstanceRef) (struct{}, error) {
	if err := a.checkHost(ctx, in.InternalName, false); err != nil {
		return struct{}{}, err
	}
	if err := a.Driver.Delete(ctx, in.InternalName); err != nil {
		return struct{}{}, err
	}
	if a.forgetServers != nil {
		a.forgetServers(in.InternalName) // no stale lag for servers that are gone
	}
	return struct{}{}, nil
}

func (a *acts) raiseEvent(ctx context.Context, in RaiseEventInput) (struct{}, error) {
	return struct{}{}, a.Client.RaiseEvent(ctx, in.Instance, in.Event, in.Data)
}

// awaitOrchestration fails while an orchestration instance is still running,
// so a retry policy waits for it to finish. An instance that does not exist
// counts as finished.
func (a *acts) awaitOrchestration(ctx context.Context, in AwaitInput) (string, error) {
	st, err := a.Client.GetStatus(ctx, in.Instance)
	if errors.Is(err, duroxide.ErrNotFound) {
		return "absent", nil
	}
	if err != nil {
		return "", err
	}
	if !st.Status.IsTerminal() {
		return "", fmt.Errorf("orchestration %s is still %s", in.Instance, st.Status)
	}
	return string(st.Status), nil
}
