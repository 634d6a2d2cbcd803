// Package dataplane defines how Toygres runs PostgreSQL servers: a Driver
// deploys, inspects and removes one instance. Drivers live in subpackages:
// local (server processes on this machine) and kubernetes.
//
// Every Driver method is idempotent and safe to retry: orchestration
// activities call them under retry policies, and a process may crash half way
// through any of them.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when an instance has no resources.
var ErrNotFound = errors.New("dataplane: instance not found")

// Spec describes an instance to deploy.
type Spec struct {
	// Name is the instance's unique internal name (Toygres' "k8s name"):
	// lower-case letters, digits and hyphens, starting with a letter, at most
	// 63 bytes. Every resource of the instance is named after it.
	Name string
	// PostgresVersion is the major version ("15", "16", …); "" picks the
	// newest the driver can deploy.
	PostgresVersion string
	// StorageGB is the requested storage size in GiB.
	StorageGB int
	// Internal instances are reachable only from inside the platform
	// (local: loopback only; Kubernetes: a ClusterIP service).
	Internal bool
	// DNSLabel is an optional DNS label for public instances.
	DNSLabel string
}

// Status is the readiness of an instance.
type Status struct {
	Phase   string // driver-specific phase, e.g. "Starting", "Running", "NotFound"
	Ready   bool   // accepting connections
	Message string // detail for humans
}

// Endpoint says how to reach an instance. It never holds the password.
type Endpoint struct {
	Host       string // host name or IP clients connect to
	Port       int
	User       string // superuser name
	Database   string
	DNSName    string // optional public DNS name
	ExternalIP string // optional public IP
	// Standbys are the addresses of the instance's standby servers (see
	// Replicator); empty without replicas.
	Standbys []HostPort
	// MultiHost: the read-write URL lists every server (Host:Port first,
	// then Standbys) with target_session_attrs=read-write, so that libpq
	// finds whichever is primary after a failover (local data plane). A
	// driver whose Host follows the primary itself (a Kubernetes Service)
	// leaves it false.
	MultiHost bool
	// ReadOnly is the address that reaches the standbys when the driver
	// has one (a Kubernetes Service); when empty, ReadOnlyURL lists
	// Standbys.
	ReadOnly *HostPort
}

// HostPort is one server address.
type HostPort struct {
	Host string
	Port int
}

func (h HostPort) String() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// URL returns the read-write postgresql:// connection URL: it reaches the
// primary, also after a failover (see MultiHost). With an empty password
// the URL carries no password (safe to store, log or show).
func (e Endpoint) URL(password string) string {
	host := e.Host
	if e.DNSName != "" {
		host = e.DNSName
	}
	hosts := []HostPort{{host, e.Port}}
	if e.MultiHost {
		hosts = append(hosts, e.Standbys...)
	}
	return e.url(password, hosts, "read-write")
}

// ReadOnlyURL returns a connection URL that reaches a standby (any of them;
// the primary when none answers), or "" when the instance has none.
func (e Endpoint) ReadOnlyURL(password string) string {
	switch {
	case e.ReadOnly != nil:
		return e.url(password, []HostPort{*e.ReadOnly}, "")
	case len(e.Standbys) > 0:
		return e.url(password, append(slices.Clone(e.Standbys), HostPort{e.Host, e.Port}), "prefer-standby")
	}
	return ""
}

func (e Endpoint) url(password string, hosts []HostPort, attrs string) string {
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.String()
	}
	u := url.URL{Scheme: "postgresql", Host: strings.Join(names, ","), Path: "/" + e.Database}
	if password != "" {
		u.User = url.UserPassword(e.User, password)
	} else {
		u.User = url.User(e.User)
	}
	if attrs != "" && len(hosts) > 1 {
		u.RawQuery = "target_session_attrs=" + attrs
	}
	return u.String()
}

// String describes the endpoint without secrets.
func (e Endpoint) String() string {
	return fmt.Sprintf("%s@%s:%d/%s", e.User, e.Host, e.Port, e.Database)
}

// Driver runs PostgreSQL instances on some platform.
type Driver interface {
	// Name is the driver's name ("local", "kubernetes").
	Name() string
	// Deploy creates the instance's resources with password as the
	// superuser password, or converges to them when an earlier attempt
	// created some. It returns once creation is under way; use Status to
	// learn when the server is ready.
	Deploy(ctx context.Context, spec Spec, password string) error
	// Status reports the instance's readiness; ErrNotFound if it has no resources.
	Status(ctx context.Context, name string) (Status, error)
	// Endpoint returns how clients reach a deployed instance.
	Endpoint(ctx context.Context, name string) (Endpoint, error)
	// Delete removes every resource of the instance (processes, data,
	// volumes, secrets). Deleting an instance that does not exist succeeds.
	Delete(ctx context.Context, name string) error
	// Logs returns up to tail of the server's most recent log lines.
	Logs(ctx context.Context, name string, tail int) ([]string, error)
	// Versions lists the PostgreSQL major versions the driver can deploy,
	// newest first.
	Versions(ctx context.Context) ([]string, error)
}

// Repairer is implemented by drivers that can take an instance over again
// after its resources were broken (when the control plane started, say):
// Readopt re-reads the instance's resources and starts its server if it
// does not run. It fails, explaining why, while they are still broken.
type Repairer interface {
	Readopt(ctx context.Context, name string) (restarted bool, err error)
}

// MetricRestarts counts restarts of instance servers after a crash, by
// instance, whoever saw them (the local driver's supervisor, or the health
// actor reading a RestartCounter); RestartsHelp is its help text.
const (
	MetricRestarts = "toygres_instance_restarts_total"
	RestartsHelp   = "Restarts of instance servers that had died, by instance."
)

// RestartCounter is implemented by drivers whose platform restarts crashed
// servers on its own (Kubernetes restarts containers): Restarts returns how
// often the instance's server was restarted, so the health actor can
// report each restart as an event.
type RestartCounter interface {
	Restarts(ctx context.Context, name string) (int, error)
}

// EventKind says what a driver's supervisor did.
type EventKind string

// Kinds of supervision events.
const (
	// EventRestart: the server had died (crash, kill) and was restarted.
	EventRestart EventKind = "restart"
	// EventRestartFailed: restarting a dead server failed; the supervisor
	// retries with backoff until it detects a crash loop.
	EventRestartFailed EventKind = "restart-failed"
	// EventCrashLoop: the server died too often in a short time; the
	// supervisor stopped restarting it until a manual restart (Readopt or
	// Deploy) succeeds.
	EventCrashLoop EventKind = "crash-loop"
)

// Event is something a driver did to an instance on its own, reported
// through a callback the driver's options carry. It holds no secrets.
type Event struct {
	Instance string // the instance's internal name (Spec.Name)
	// Server is the server of the instance it concerns ("0", "1", …; see
	// Replicator), "" when the driver has one server per instance.
	Server  string
	Kind    EventKind
	Message string // detail for humans (the error, the server log's last line)
	Attempt int    // crashes in the current crash-loop window, counting this one
	Time    time.Time
}

// ProblemKind classifies why a driver could not adopt or start an instance.
type ProblemKind string

// Kinds of instance problems.
const (
	// ProblemHalfDeleted: a deletion was interrupted and finishing it failed.
	ProblemHalfDeleted ProblemKind = "half-deleted"
	// ProblemGone: the instance's resources are gone altogether.
	ProblemGone ProblemKind = "missing"
	// ProblemMissingConfig: the instance's data directory or configuration
	// files are missing (for example partly removed): it is not started,
	// lest a damaged cluster serve clients. Delete removes it.
	ProblemMissingConfig ProblemKind = "missing-config"
	// ProblemPortTaken: another process listens on the instance's port.
	ProblemPortTaken ProblemKind = "port-taken"
	// ProblemUnreadable: the instance's metadata cannot be read.
	ProblemUnreadable ProblemKind = "unreadable"
	// ProblemVersionMissing: the instance's PostgreSQL version is not installed.
	ProblemVersionMissing ProblemKind = "version-missing"
	// ProblemStartFailed: the server did not start for another reason.
	ProblemStartFailed ProblemKind = "start-failed"
	// ProblemCrashLoop: the server keeps dying; the supervisor gave up.
	ProblemCrashLoop ProblemKind = "crash-loop"
)

// Problem is the error of one instance that a driver could not adopt or
// start. Find it with errors.As.
type Problem struct {
	Instance string
	Kind     ProblemKind
	Err      error
}

func (p *Problem) Error() string {
	return fmt.Sprintf("instance %s: %s: %v", p.Instance, p.Kind, p.Err)
}

func (p *Problem) Unwrap() error { return p.Err }

// AdoptReport is what a driver found when taking over the instances of an
// earlier run. One instance's problem never stops the others' adoption.
type AdoptReport struct {
	Adopted   []string // servers found running and taken over
	Restarted []string // servers found stopped and started again
	Pending   []string // Deploy never finished; Deploy or Delete converge them
	Deleted   []string // interrupted deletions that were finished
	Problems  []*Problem
}
