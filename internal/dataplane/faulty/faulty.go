// Package faulty is a test data plane: it wraps a real driver and injects
// failures into what Toygres does with it, so tests can watch the retry
// policies, the failure branches and their records at work on real
// instances. Deploy failures are returned by Deploy; connection failures are
// real refused connections: Endpoint hands out the address of a small proxy
// in front of the instance that answers its first connections with a
// PostgreSQL error and forwards the others.
//
// It is for tests only. The toygres binary uses it only when built with the
// toygres_faults build tag (see cmd/toygres/faults_on.go).
package faulty

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/toygres/toygres/internal/dataplane"
)

// Faults says what to inject, per instance.
type Faults struct {
	// DeployFailures makes the first n Deploy calls of each instance fail
	// (negative: every call).
	DeployFailures int
	// ConnectionFailures makes the first n connections to each instance's
	// endpoint fail with a PostgreSQL error (negative: every connection).
	ConnectionFailures int
}

// ParseFaults reads faults written as "deploy=N,connection=N" (either part
// may be left out).
func ParseFaults(s string) (Faults, error) {
	var f Faults
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || err != nil {
			return f, fmt.Errorf("faults: %q is not name=count", part)
		}
		switch strings.TrimSpace(k) {
		case "deploy":
			f.DeployFailures = n
		case "connection":
			f.ConnectionFailures = n
		default:
			return f, fmt.Errorf("faults: unknown fault %q (want deploy or connection)", k)
		}
	}
	return f, nil
}

// Driver is a driver with injected faults. Close it to stop its proxies.
type Driver struct {
	inner  dataplane.Driver
	faults Faults

	mu      sync.Mutex
	deploys map[string]int
	proxies map[string]*proxy
	closed  bool
}

// New wraps inner.
func New(inner dataplane.Driver, f Faults) *Driver {
	return &Driver{inner: inner, faults: f, deploys: map[string]int{}, proxies: map[string]*proxy{}}
}

// Wrap wraps inner and returns the result as a dataplane.Driver that keeps
// the optional interfaces of inner (dataplane.Repairer,
// dataplane.RestartCounter, InternalEndpointsReachable, dataplane.Backuper,
// dataplane.Replicator), so the control plane treats it as it treats inner.
// Backups, restores and the standby operations pass through without faults.
func Wrap(inner dataplane.Driver, f Faults) (dataplane.Driver, *Driver) {
	d := New(inner, f)
	_, repair := inner.(dataplane.Repairer)
	_, counter := inner.(dataplane.RestartCounter)
	_, reach := inner.(interface{ InternalEndpointsReachable() error })
	bk, backups := inner.(dataplane.Backuper)
	rp, replicas := inner.(dataplane.Replicator)
	switch {
	case repair && counter && reach && backups && replicas:
		return withAllReplicas{withAll{d}, backupsVia{bk}, replicasVia{rp}}, d
	case backups && replicas:
		return withBackupsReplicas{d, backupsVia{bk}, replicasVia{rp}}, d
	case repair && counter && reach && backups:
		return withAllBackups{withAll{d}, backupsVia{bk}}, d
	case backups:
		return withBackups{d, backupsVia{bk}}, d
	case repair && counter && reach:
		return withAll{d}, d
	case counter && reach:
		return withCounter{d}, d
	case repair:
		return withRepair{d}, d
	}
	return d, d
}

// Name is the inner driver's name (it is recorded with instances).
func (d *Driver) Name() string { return d.inner.Name() }

// Deploy fails while the instance's deploy faults last, then deploys.
func (d *Driver) Deploy(ctx context.Context, spec dataplane.Spec, password string) error {
	d.mu.Lock()
	d.deploys[spec.Name]++
	n := d.deploys[spec.Name]
	d.mu.Unlock()
	if d.faults.DeployFailures < 0 || n <= d.faults.DeployFailures {
		return fmt.Errorf("injected deploy failure for %s (call %d)", spec.Name, n)
	}
	return d.inner.Deploy(ctx, spec, password)
}

// Status is the inner driver's.
func (d *Driver) Status(ctx context.Context, name string) (dataplane.Status, error) {
	return d.inner.Status(ctx, name)
}

// Endpoint returns the inner endpoint, or, with connection faults, the
// address of the instance's fault proxy in front of it.
func (d *Driver) Endpoint(ctx context.Context, name string) (dataplane.Endpoint, error) {
	ep, err := d.inner.Endpoint(ctx, name)
	if err != nil || d.faults.ConnectionFailures == 0 {
		return ep, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ep, fmt.Errorf("faulty driver closed")
	}
	p := d.proxies[name]
	target := ep.Host
	if ep.DNSName != "" {
		target = ep.DNSName
	}
	target += ":" + strconv.Itoa(ep.Port)
	if p == nil || p.target != target {
		if p != nil {
			p.close()
		}
		p, err = startProxy(name, target, d.faults.ConnectionFailures)
		if err != nil {
			return ep, err
		}
		d.proxies[name] = p
	}
	ep.Host, ep.Port, ep.DNSName = "127.0.0.1", p.port, ""
	return ep, nil
}

// Delete, Logs and Versions are the inner driver's.
func (d *Driver) Delete(ctx context.Context, name string) error {
	d.mu.Lock()
	if p := d.proxies[name]; p != nil {
		p.close()
		delete(d.proxies, name)
	}
	d.mu.Unlock()
	return d.inner.Delete(ctx, name)
}

// Logs is the inner driver's.
func (d *Driver) Logs(ctx context.Context, name string, tail int) ([]string, error) {
	return d.inner.Logs(ctx, name, tail)
}

// Versions is the inner driver's.
func (d *Driver) Versions(ctx context.Context) ([]string, error) { return d.inner.Versions(ctx) }

// Close stops the proxies (not the inner driver).
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for name, p := range d.proxies {
		p.close()
		delete(d.proxies, name)
	}
	return nil
}

type withRepair struct{ *Driver }

func (w withRepair) Readopt(ctx context.Context, name string) (bool, error) {
	return w.inner.(dataplane.Repairer).Readopt(ctx, name)
}

type withCounter struct{ *Driver }

func (w withCounter) Restarts(ctx context.Context, name string) (int, error) {
	return w.inner.(dataplane.RestartCounter).Restarts(ctx, name)
}

func (w withCounter) InternalEndpointsReachable() error {
	return w.inner.(interface{ InternalEndpointsReachable() error }).InternalEndpointsReachable()
}

type withAll struct{ *Driver }

func (w withAll) Readopt(ctx context.Context, name string) (bool, error) {
	return withRepair(w).Readopt(ctx, name)
}

func (w withAll) Restarts(ctx context.Context, name string) (int, error) {
	return withCounter(w).Restarts(ctx, name)
}

func (w withAll) InternalEndpointsReachable() error {
	return withCounter(w).InternalEndpointsReachable()
}

// backupsVia passes dataplane.Backuper through to the inner driver.
type backupsVia struct{ b dataplane.Backuper }

func (v backupsVia) SetArchiving(ctx context.Context, name string, on bool) error {
	return v.b.SetArchiving(ctx, name, on)
}

func (v backupsVia) Backup(ctx context.Context, name, id string) (dataplane.BackupInfo, error) {
	return v.b.Backup(ctx, name, id)
}

func (v backupsVia) ListBackups(ctx context.Context, name string) ([]dataplane.BackupInfo, error) {
	return v.b.ListBackups(ctx, name)
}

func (v backupsVia) DeleteBackup(ctx context.Context, name, id string) error {
	return v.b.DeleteBackup(ctx, name, id)
}

func (v backupsVia) PruneWAL(ctx context.Context, name, keepFrom string) (int, error) {
	return v.b.PruneWAL(ctx, name, keepFrom)
}

func (v backupsVia) DeleteBackups(ctx context.Context, name string) error {
	return v.b.DeleteBackups(ctx, name)
}

func (v backupsVia) FlushArchive(ctx context.Context, name string) error {
	return v.b.FlushArchive(ctx, name)
}

func (v backupsVia) ArchiveStatus(ctx context.Context, name string) (dataplane.ArchiveStatus, error) {
	return v.b.ArchiveStatus(ctx, name)
}

func (v backupsVia) Restore(ctx context.Context, spec dataplane.Spec, password string, from dataplane.RestoreSource) error {
	return v.b.Restore(ctx, spec, password, from)
}

type withBackups struct {
	*Driver
	backupsVia
}

type withAllBackups struct {
	withAll
	backupsVia
}

// replicasVia passes dataplane.Replicator through to the inner driver.
type replicasVia struct{ r dataplane.Replicator }

func (v replicasVia) SetReplicas(ctx context.Context, name string, n int, sync bool) error {
	return v.r.SetReplicas(ctx, name, n, sync)
}

func (v replicasVia) Servers(ctx context.Context, name string) ([]dataplane.ServerState, error) {
	return v.r.Servers(ctx, name)
}

func (v replicasVia) Fence(ctx context.Context, name, id string) error {
	return v.r.Fence(ctx, name, id)
}

func (v replicasVia) Promote(ctx context.Context, name, id string) error {
	return v.r.Promote(ctx, name, id)
}

func (v replicasVia) Rebuild(ctx context.Context, name, id string) error {
	return v.r.Rebuild(ctx, name, id)
}

type withBackupsReplicas struct {
	*Driver
	backupsVia
	replicasVia
}

type withAllReplicas struct {
	withAll
	backupsVia
	replicasVia
}
