// Package app wires Toygres together: the durable store and runtime, the
// CMS, the data-plane driver, the activities and orchestrations, and the
// instance operations the API and CLI offer.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/postgres"
	"github.com/toygres/toygres/duroxide/sqlite"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/datadir"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/dataplane/kubernetes"
	"github.com/toygres/toygres/internal/dataplane/local"
	"github.com/toygres/toygres/internal/orchestrations"
)

// Config configures an App. Zero values mean defaults.
type Config struct {
	// DataDir holds the SQLite database, the secret key, instance data (local
	// driver), logs and the server's credential file. Default: datadir.Default().
	DataDir string
	// DatabaseURL selects PostgreSQL for the durable store and the CMS
	// (postgres://…); empty means the embedded SQLite file in DataDir.
	DatabaseURL string
	// Dataplane is the driver: "local" (default) or "kubernetes".
	Dataplane string
	// Kubernetes configures the kubernetes data plane.
	Kubernetes kubernetes.Options
	// Driver, when set, is used instead of building one from Dataplane.
	Driver dataplane.Driver
	// ActorInterval is the health check period (default 30s).
	ActorInterval time.Duration
	// FailoverCheckInterval and FailoverThreshold detect a failed primary
	// of an instance with standbys: it is checked every
	// FailoverCheckInterval, and FailoverThreshold consecutive failed
	// checks start a failover (defaults 2s and 3; see orchestrations).
	FailoverCheckInterval time.Duration
	FailoverThreshold     int
	// Logger receives logs (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives duroxide's and Toygres' collectors (default: a new registry).
	Metrics *prometheus.Registry
	// WrapDriver, when set, wraps the driver (built or given) once the data
	// plane is open, before activities and the API use it; tests wrap it
	// with a fault-injecting driver (internal/dataplane/faulty).
	WrapDriver func(dataplane.Driver) dataplane.Driver
	// OrchestrationConcurrency and ActivityConcurrency size the runtime
	// (defaults 10 and DefaultActivityConcurrency).
	OrchestrationConcurrency, ActivityConcurrency int
	// Retention bounds the stores (see Retention; zero values are defaults).
	Retention Retention
	// SecretKey is the 32-byte key that encrypts instance passwords. It is
	// required with a shared store (DatabaseURL), where every server must
	// use the same key; without one the SQLite store uses (and on first
	// start generates) <DataDir>/secret.key.
	SecretKey []byte
	// OrchestrationLockTimeout and ActivityLockTimeout are the leases of a
	// running turn and activity (duroxide's defaults when zero). Leases are
	// renewed while work runs, and a dead server's are taken over within
	// seconds whatever these are (duroxide's owner liveness).
	OrchestrationLockTimeout, ActivityLockTimeout time.Duration
	// RetryPolicies and CircuitBreakers override activities' registered
	// default retry policies and circuit breakers, by activity name
	// (duroxide.Options; see internal/config).
	RetryPolicies   map[string]duroxide.RetryPolicy
	CircuitBreakers map[string]duroxide.CircuitBreakerConfig
	// TracerProvider receives the runtime's spans (duroxide.Options; nil:
	// none).
	TracerProvider trace.TracerProvider
}

// DefaultActivityConcurrency is how many activities run at once by default.
// Toygres' activities mostly wait on other systems (a data plane, a
// database, a backup Job), so the slots are cheap; few slots would let long
// waits (a Kubernetes backup Job) hold up creates and deletes.
const DefaultActivityConcurrency = 32

// App is a running Toygres control plane (without its HTTP server).
//
// Its state is its own: callers use its operations (CreateInstance,
// DeleteByNameWith, Restore…) and services (Orchestrations, Runtime; see
// services.go), and the few accessors below where a caller needs the object
// itself.
type App struct {
	cfg      Config
	store    duroxide.Store
	runtime  *duroxide.Runtime
	client   *duroxide.Client
	cms      cms.Store
	driver   dataplane.Driver
	metrics  *prometheus.Registry
	logger   *slog.Logger
	registry *duroxide.Registry

	closeDriver func() error // set when Open made the driver
	localLock   *localLock   // local data plane on a shared store
}

// Open starts the control plane: it opens (and migrates) the stores,
// re-adopts existing local instances, starts the durable runtime and makes
// sure every running instance has a live health actor.
func Open(ctx context.Context, cfg Config) (*App, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = datadir.Default()
	}
	if cfg.Dataplane == "" {
		cfg.Dataplane = "local"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
		cfg.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if cfg.ActorInterval <= 0 {
		cfg.ActorInterval = orchestrations.DefaultActorInterval
	}
	cfg.Retention = cfg.Retention.WithDefaults()
	if cfg.OrchestrationConcurrency <= 0 {
		cfg.OrchestrationConcurrency = 10
	}
	if cfg.ActivityConcurrency <= 0 {
		cfg.ActivityConcurrency = DefaultActivityConcurrency
	}
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := secureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, metrics: cfg.Metrics, logger: cfg.Logger}
	ok := false
	defer func() {
		if !ok {
			a.closeStores()
		}
	}()

	keyOpts, err := keyOptions(cfg)
	if err != nil {
		return nil, err
	}
	keyOpts.Logger = cfg.Logger
	if cfg.DatabaseURL == "" {
		path := filepath.Join(cfg.DataDir, StoreFile)
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("open durable store: %w", err)
		}
		a.store = st
		c, err := cms.OpenSQLite(ctx, path, keyOpts)
		if err != nil {
			return nil, fmt.Errorf("open cms: %w", explainKeyMismatch(err))
		}
		a.cms = c
	} else {
		st, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithSchema("toygres_duroxide"))
		if err != nil {
			return nil, fmt.Errorf("open durable store: %w", err)
		}
		a.store = st
		c, err := cms.OpenPostgres(ctx, cfg.DatabaseURL, keyOpts)
		if err != nil {
			return nil, fmt.Errorf("open cms: %w", explainKeyMismatch(err))
		}
		a.cms = c
	}
	a.client = duroxide.NewClient(a.store)

	hostID := "" // set when local instances must be pinned to this server's host
	switch {
	case cfg.Driver != nil:
		a.driver = cfg.Driver
	case cfg.Dataplane == "local":
		if cfg.DatabaseURL != "" {
			hostID = HostID(cfg.DataDir)
			if a.localLock, err = acquireLocalLock(ctx, cfg.DatabaseURL, hostID, cfg.Logger); err != nil {
				return nil, err
			}
		}
		d, err := local.New(local.Options{Dir: datadir.Instances(cfg.DataDir), Logger: cfg.Logger, Metrics: cfg.Metrics,
			OnEvent: a.recordDriverEvent})
		if err != nil {
			return nil, fmt.Errorf("local data plane: %w", err)
		}
		// A broken instance never stops the start: it is recorded as broken
		// (see recordAdoptionProblems) and can be repaired or deleted.
		a.closeDriver = d.Close // ends supervision; the servers keep running
		report, err := d.Adopt(ctx)
		if err != nil {
			cfg.Logger.Error("some local instances could not be adopted; starting anyway", "error", err.Error())
		}
		cfg.Logger.Info("local instances adopted", "running", report.Adopted, "restarted", report.Restarted,
			"pending", report.Pending, "deleted", report.Deleted, "problems", len(report.Problems))
		a.removeDeletedLeftovers(ctx, d, slices.Concat(report.Adopted, report.Restarted, report.Pending))
		// The driver's own problems come first: the first problem of an
		// instance is the one recorded.
		problems, err := a.checkLocalInstances(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("check local instances: %w", err)
		}
		a.recordAdoptionProblems(ctx, append(report.Problems, problems...))
		a.driver = d
	case cfg.Dataplane == "kubernetes":
		o := cfg.Kubernetes
		if o.Logger == nil {
			o.Logger = cfg.Logger
		}
		d, err := kubernetes.New(o)
		if err != nil {
			return nil, fmt.Errorf("kubernetes data plane: %w", err)
		}
		if err := d.Check(ctx); err != nil {
			return nil, fmt.Errorf("kubernetes data plane: %w", err)
		}
		a.driver = d
	default:
		return nil, fmt.Errorf("unknown data plane %q (want local or kubernetes)", cfg.Dataplane)
	}

	if cfg.WrapDriver != nil {
		a.driver = cfg.WrapDriver(a.driver)
	}

	reg := duroxide.NewRegistry()
	if err := activities.Register(reg, activities.Deps{CMS: a.cms, Driver: a.driver, Client: a.client, Logger: cfg.Logger, Metrics: cfg.Metrics, Host: hostID}); err != nil {
		return nil, err
	}
	if err := orchestrations.Register(reg, a.driver.Name()); err != nil {
		return nil, err
	}
	a.registry = reg
	if err := cfg.Metrics.Register(newInstanceGauges(a.cms)); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	rt, err := duroxide.Start(ctx, a.store, reg, duroxide.Options{
		Logger: cfg.Logger, Metrics: cfg.Metrics,
		OrchestrationConcurrency: cfg.OrchestrationConcurrency, ActivityConcurrency: cfg.ActivityConcurrency,
		ExclusiveStore:           cfg.DatabaseURL == "", // the server holds the data dir's lock: older leases are a dead incarnation's
		KeepExecutions:           max(cfg.Retention.KeepExecutions, 0),
		OrchestrationLockTimeout: cfg.OrchestrationLockTimeout, ActivityLockTimeout: cfg.ActivityLockTimeout,
		RetryPolicies: cfg.RetryPolicies, CircuitBreakers: cfg.CircuitBreakers,
		TracerProvider: cfg.TracerProvider,
	})
	if err != nil {
		return nil, fmt.Errorf("start runtime: %w", err)
	}
	a.runtime = rt
	// From now on, starts go through the runtime: a new instance's first
	// turn is committed with its creation, so it is visible (and running)
	// when the start returns, instead of queued until a dispatcher takes
	// it. Updated in place: the activities hold the same *Client.
	*a.client = *rt.Client()
	ok = true
	if err := a.superviseActors(ctx); err != nil {
		cfg.Logger.Warn("checking health actors failed", "error", err)
	}
	if err := a.superviseSchedules(ctx); err != nil {
		cfg.Logger.Warn("checking backup schedules failed", "error", err)
	}
	if err := a.StartJanitor(ctx); err != nil {
		cfg.Logger.Warn("starting the janitor failed", "error", err)
	}
	return a, nil
}

// Close stops the runtime (waiting up to ctx for in-flight work) and closes
// the stores. Local instances keep running.
func (a *App) Close(ctx context.Context) error {
	var err error
	if a.runtime != nil {
		err = a.runtime.Shutdown(ctx)
	}
	a.closeStores()
	return err
}

func (a *App) closeStores() {
	if a.closeDriver != nil {
		_ = a.closeDriver()
	}
	if a.cms != nil {
		_ = a.cms.Close()
	}
	if a.store != nil {
		_ = a.store.Close()
	}
	a.localLock.Close()
}

// superviseActors starts a health actor for every running instance whose
// actor is missing or has ended (the Rust version never restarted them).
func (a *App) superviseActors(ctx context.Context) error {
	running, err := a.cms.List(ctx, cms.ListOptions{States: []cms.State{cms.StateRunning}})
	if err != nil {
		return err
	}
	for _, inst := range running {
		id := orchestrations.ActorID(inst.InternalName)
		if st, err := a.client.GetStatus(ctx, id); err == nil && !st.Status.IsTerminal() {
			continue // alive; the status read only spares a log line
		} else if err != nil && !errors.Is(err, duroxide.ErrNotFound) {
			return err
		}
		a.logger.Info("starting health actor", "instance", inst.Name, "actor", id)
		if err := a.client.StartOrchestration(ctx, id, orchestrations.InstanceActor,
			orchestrations.ActorInput{InternalName: inst.InternalName, Interval: a.cfg.ActorInterval,
				FailoverInterval: a.cfg.FailoverCheckInterval, FailoverThreshold: a.cfg.FailoverThreshold},
			duroxide.OnExisting(duroxide.ReuseRestartEnded)); err != nil {
			return err
		}
	}
	return nil
}

// ValidationError is bad input from a caller (HTTP 400, CLI usage error).
type ValidationError struct {
	Msg string
	// Field is the request field at fault ("name", "password"…), if one is.
	Field string
}

func (e *ValidationError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &ValidationError{Msg: fmt.Sprintf(format, args...)}
}

func invalidField(field, format string, args ...any) error {
	return &ValidationError{Msg: fmt.Sprintf(format, args...), Field: field}
}

// CreateRequest asks for a new instance: the API's request body, one
// definition for the API, the console and the CLI.
type CreateRequest = client.CreateInstanceRequest

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$`)

// Password limits.
const (
	MinPasswordLength = 6
	MaxPasswordLength = 128
)

// DefaultStorageGB is an instance's storage when the request names none.
const DefaultStorageGB = 10

// ValidateCreate prepares a request without side effects, in two steps:
// CreateDefaults fills what it leaves out, then checkCreate validates it
// (a *ValidationError names the field at fault).
func (a *App) ValidateCreate(ctx context.Context, r *CreateRequest) error {
	versions, err := a.driver.Versions(ctx)
	if err != nil {
		return fmt.Errorf("list PostgreSQL versions: %w", err)
	}
	if err := createDefaults(r, versions); err != nil {
		return err
	}
	return a.checkCreate(r, versions)
}

// createDefaults fills what a create request leaves out: DefaultStorageGB,
// and the newest PostgreSQL version the data plane offers (versions, newest
// first).
func createDefaults(r *CreateRequest, versions []string) error {
	if r.StorageGB == 0 {
		r.StorageGB = DefaultStorageGB
	}
	if r.PostgresVersion == "" {
		if len(versions) == 0 {
			return errors.New("no PostgreSQL version is available on this data plane")
		}
		r.PostgresVersion = versions[0]
	}
	return nil
}

// checkCreate validates a create request whose defaults are filled.
func (a *App) checkCreate(r *CreateRequest, versions []string) error {
	if r.Name == "" {
		return invalidField("name", "name is required")
	}
	if !nameRE.MatchString(r.Name) {
		return invalidField("name", "invalid name %q: use 1-40 lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen", r.Name)
	}
	if r.Password == "" {
		return invalidField("password", "password is required")
	}
	if len(r.Password) < MinPasswordLength {
		return invalidField("password", "password must be at least %d characters", MinPasswordLength)
	}
	if len(r.Password) > MaxPasswordLength {
		return invalidField("password", "password must be at most %d characters", MaxPasswordLength)
	}
	if strings.ContainsAny(r.Password, "\x00\n\r") {
		return invalidField("password", "password must not contain control characters")
	}
	if r.StorageGB < 1 || r.StorageGB > 16384 {
		return invalidField("storage_gb", "storage must be between 1 and 16384 GB, got %d", r.StorageGB)
	}
	if r.DNSLabel != "" && !nameRE.MatchString(r.DNSLabel) {
		return invalidField("dns_label", "invalid DNS label %q", r.DNSLabel)
	}
	if r.Internal {
		// A driver that knows internal endpoints are out of this server's
		// reach says so now, rather than every such create failing its
		// connection test minutes later.
		if d, ok := a.driver.(interface{ InternalEndpointsReachable() error }); ok {
			if err := d.InternalEndpointsReachable(); err != nil {
				return invalidField("internal", "%v", err)
			}
		}
	}
	if err := a.validateReplicas(r.Replicas, r.SyncReplica); err != nil {
		return err
	}
	if !slices.Contains(versions, r.PostgresVersion) {
		return invalidField("postgres_version", "PostgreSQL version %q is not available (available: %s)", r.PostgresVersion, strings.Join(versions, ", "))
	}
	return nil
}

// CreateInstance validates the request, reserves the name, stores the
// password (encrypted) and starts the create-instance orchestration. It
// returns at once with the instance in state creating.
func (a *App) CreateInstance(ctx context.Context, r CreateRequest) (*cms.Instance, error) {
	return a.createInstance(ctx, r, nil)
}

// createInstance is CreateInstance, restoring from a backup when from is set.
func (a *App) createInstance(ctx context.Context, r CreateRequest, from *dataplane.RestoreSource) (*cms.Instance, error) {
	if err := a.ValidateCreate(ctx, &r); err != nil {
		return nil, err
	}
	internal := r.Name + "-" + randomHex(4)
	orchID := orchestrations.CreateID(internal)
	inst, err := a.cms.CreateInstance(ctx, cms.Instance{
		Name: r.Name, InternalName: internal, Driver: a.driver.Name(), PostgresVersion: r.PostgresVersion,
		StorageGB: r.StorageGB, Internal: r.Internal, DNSLabel: r.DNSLabel, CreateOrchestrationID: orchID,
	})
	if errors.Is(err, cms.ErrNameTaken) {
		return nil, &ConflictError{Msg: fmt.Sprintf("instance name %q is already in use by an active instance", r.Name), Field: "name", Err: err}
	}
	if err != nil {
		return nil, err
	}
	if err := a.cms.SetPassword(ctx, internal, r.Password); err != nil {
		_, _ = a.cms.UpdateState(ctx, internal, cms.StateFailed, cms.StateUpdate{FailureReason: "storing the password failed", Message: err.Error()})
		return nil, fmt.Errorf("store password: %w", err)
	}
	if r.NoBackups {
		if err := a.cms.SetBackupSettings(ctx, internal, cms.BackupSettings{Interval: cms.DefaultBackupInterval, Retention: cms.DefaultBackupRetention}); err != nil {
			return nil, fmt.Errorf("record backup settings: %w", err)
		}
	}
	in := orchestrations.CreateInput{InternalName: internal, Name: r.Name, PostgresVersion: r.PostgresVersion,
		StorageGB: r.StorageGB, Internal: r.Internal, DNSLabel: r.DNSLabel, ActorInterval: a.cfg.ActorInterval, NoBackups: r.NoBackups, Restore: from,
		Replicas: r.Replicas, SyncReplica: r.SyncReplica, FailoverInterval: a.cfg.FailoverCheckInterval, FailoverThreshold: a.cfg.FailoverThreshold}
	if err := a.client.StartOrchestration(ctx, orchID, orchestrations.CreateInstance, in); err != nil {
		_, _ = a.cms.UpdateState(ctx, internal, cms.StateFailed, cms.StateUpdate{FailureReason: "starting the create orchestration failed", Message: err.Error()})
		return nil, fmt.Errorf("start create orchestration: %w", err)
	}
	a.logger.InfoContext(ctx, "instance create requested", "instance", r.Name, "internal_name", internal, "orchestration_id", orchID)
	return inst, nil
}

// GetInstance returns the instance with this name (active, or the latest).
func (a *App) GetInstance(ctx context.Context, name string) (*cms.Instance, error) {
	return a.cms.Get(ctx, name)
}

// ConnectionURL returns the instance's connection URL with its password,
// for authenticated callers only.
func (a *App) ConnectionURL(ctx context.Context, inst *cms.Instance) (string, error) {
	if inst.ConnectionString == "" {
		return "", nil
	}
	pw, err := a.cms.Password(ctx, inst.InternalName)
	if err != nil {
		return "", err
	}
	return withPassword(inst.ConnectionString, pw)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
