package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/orchestrations"
)

// probeDriver is a data plane whose every instance is the test cluster: it
// deploys and deletes nothing and is ready at once, so health checks are
// real connections and queries that answer in milliseconds.
type probeDriver struct{ ep dataplane.Endpoint }

func newProbeDriver(t *testing.T) *probeDriver {
	u, err := url.Parse(cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return &probeDriver{ep: dataplane.Endpoint{Host: u.Hostname(), Port: port, User: u.User.Username(), Database: "postgres"}}
}

func (d *probeDriver) Name() string                                         { return "probe" }
func (d *probeDriver) Deploy(context.Context, dataplane.Spec, string) error { return nil }
func (d *probeDriver) Status(context.Context, string) (dataplane.Status, error) {
	return dataplane.Status{Phase: "Running", Ready: true}, nil
}
func (d *probeDriver) Endpoint(context.Context, string) (dataplane.Endpoint, error) { return d.ep, nil }
func (d *probeDriver) Delete(context.Context, string) error                         { return nil }
func (d *probeDriver) Logs(context.Context, string, int) ([]string, error)          { return nil, nil }
func (d *probeDriver) Versions(context.Context) ([]string, error)                   { return []string{"15"}, nil }

// testSecretKey is the secret key of the apps on the shared (PostgreSQL) store.
var testSecretKey = bytes.Repeat([]byte{0x5a}, 32)

// stores runs f against an app on SQLite and on PostgreSQL.
func stores(t *testing.T, f func(t *testing.T, cfg app.Config)) {
	t.Run("SQLite", func(t *testing.T) { f(t, app.Config{DataDir: t.TempDir()}) })
	t.Run("Postgres", func(t *testing.T) {
		f(t, app.Config{DataDir: t.TempDir(), DatabaseURL: cluster.NewDatabase(t), SecretKey: testSecretKey})
	})
}

func openApp(t *testing.T, cfg app.Config) *app.App {
	t.Helper()
	cfg.Driver = newProbeDriver(t)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a, err := app.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open app: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})
	return a
}

// waitUntil polls cond every 5ms until it holds or the deadline passes.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func createRunning(t *testing.T, a *app.App, name string) *cms.Instance {
	t.Helper()
	inst, err := a.CreateInstance(t.Context(), app.CreateRequest{Name: name, Password: "secret123"})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	waitUntil(t, 30*time.Second, name+" running", func() bool {
		got, err := a.CMS().GetByInternalName(t.Context(), inst.InternalName)
		return err == nil && got.State == cms.StateRunning
	})
	return inst
}

// rows are the store's row counts.
type rows struct {
	instances, executions, events, healthChecks int
}

// countRows counts every instance, execution and history row of the durable
// store (through the store API) and the health checks of one instance.
func countRows(t *testing.T, a *app.App, internalName string) rows {
	t.Helper()
	ctx := t.Context()
	var r rows
	f := duroxide.ListFilter{Limit: 1000}
	for {
		page, err := a.Orchestrations().List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range page.Instances {
			ex, err := a.Orchestrations().Executions(ctx, in.Instance)
			if errors.Is(err, duroxide.ErrNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			r.instances++
			r.executions += len(ex)
			for _, e := range ex {
				r.events += e.EventCount
			}
		}
		if page.NextCursor == "" {
			break
		}
		f.Cursor = page.NextCursor
	}
	hcs, err := a.CMS().HealthChecks(ctx, internalName, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.healthChecks = len(hcs)
	return r
}

func actorExecution(t *testing.T, a *app.App, internalName string) int64 {
	st, err := a.Orchestrations().Status(t.Context(), orchestrations.ActorID(internalName))
	if errors.Is(err, duroxide.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.ExecutionID
}

// TestRetentionBoundsStore runs 500 health-check cycles of one instance
// (10ms actor interval, checks against a real PostgreSQL server) with the
// janitor sweeping every 100ms, and checks that the stored executions,
// history rows and health checks stay under fixed ceilings and do not grow
// between cycle 250 and cycle 500.
func TestRetentionBoundsStore(t *testing.T) {
	stores(t, func(t *testing.T, cfg app.Config) {
		const cycles = 500
		cfg.ActorInterval = 10 * time.Millisecond
		cfg.Retention = app.Retention{KeepExecutions: 3, JanitorInterval: 100 * time.Millisecond, HealthChecksPerInstance: 50}
		a := openApp(t, cfg)
		inst := createRunning(t, a, "bounded")

		// Ceilings: 3 actor executions (18 events each when complete), the
		// create orchestration (31 events), 3 janitor executions (16
		// each), with slack; the backup schedule (3 executions) and its
		// first backup-instance (one a day); 50 checks plus those recorded
		// between two sweeps.
		ceiling := rows{instances: 5, executions: 3 + 1 + 3 + 3 + 1, events: 3*20 + 35 + 3*20 + 3*20 + 20, healthChecks: 50 + 60}
		var peak, at250 rows
		check := func(r rows, cycle int64) {
			if r.instances > ceiling.instances || r.executions > ceiling.executions || r.events > ceiling.events || r.healthChecks > ceiling.healthChecks {
				t.Fatalf("cycle %d: rows %+v exceed the ceiling %+v", cycle, r, ceiling)
			}
			peak = rows{max(peak.instances, r.instances), max(peak.executions, r.executions), max(peak.events, r.events), max(peak.healthChecks, r.healthChecks)}
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			cycle := actorExecution(t, a, inst.InternalName)
			r := countRows(t, a, inst.InternalName)
			check(r, cycle)
			if cycle >= cycles/2 && at250 == (rows{}) {
				at250 = r
				t.Logf("cycle %d: %+v", cycle, r)
			}
			if cycle >= cycles {
				t.Logf("cycle %d: %+v (peak %+v)", cycle, r, peak)
				// No growth between the two halves beyond one janitor
				// interval's worth of checks and a turn in flight.
				if r.executions > at250.executions+2 || r.events > at250.events+30 || r.healthChecks > at250.healthChecks+60 {
					t.Fatalf("rows grew from %+v at cycle 250 to %+v at cycle %d", at250, r, cycle)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d health-check cycles in 5 minutes", cycle)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Every cycle recorded a check; the janitor removed all but the newest.
		hcs, err := a.CMS().HealthChecks(t.Context(), inst.InternalName, 1)
		if err != nil || len(hcs) != 1 || time.Since(hcs[0].CheckedAt) > 10*time.Second {
			t.Fatalf("latest health check %+v, %v: want a recent one", hcs, err)
		}
	})
}

func gone(t *testing.T, a *app.App, id string) bool {
	t.Helper()
	_, err := a.Orchestrations().Status(t.Context(), id)
	if err != nil && !errors.Is(err, duroxide.ErrNotFound) {
		t.Fatal(err)
	}
	return errors.Is(err, duroxide.ErrNotFound)
}

func removedMetric(t *testing.T, a *app.App, kind string) float64 {
	t.Helper()
	mfs, err := a.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "toygres_janitor_removed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestJanitorPurgesOldOrchestrations checks that a janitor sweep deletes the
// create, delete and health-actor orchestrations of an instance deleted
// longer ago than the retention, and keeps those of a newer instance.
func TestJanitorPurgesOldOrchestrations(t *testing.T) {
	stores(t, func(t *testing.T, cfg app.Config) {
		const retention = time.Second
		cfg.Retention = app.Retention{Orchestrations: retention, JanitorInterval: time.Hour}
		a := openApp(t, cfg)
		ctx := t.Context()

		old := createRunning(t, a, "old")
		if _, err := a.DeleteInstance(ctx, "old"); err != nil {
			t.Fatal(err)
		}
		oldIDs := []string{orchestrations.CreateID(old.InternalName), orchestrations.DeleteID(old.InternalName), orchestrations.ActorID(old.InternalName)}
		var finished time.Time
		waitUntil(t, 30*time.Second, "old's orchestrations to finish", func() bool {
			for _, id := range oldIDs {
				st, err := a.Orchestrations().Status(ctx, id)
				if err != nil || !st.Status.IsTerminal() || st.Status == duroxide.StatusContinuedAsNew {
					return false
				}
				if st.UpdatedAt.After(finished) {
					finished = st.UpdatedAt
				}
			}
			return true
		})
		// The retention must pass for old's orchestrations, not for new's.
		waitUntil(t, 10*time.Second, "the retention to pass", func() bool { return time.Since(finished) > retention+200*time.Millisecond })
		fresh := createRunning(t, a, "new")
		newCreate := orchestrations.CreateID(fresh.InternalName)
		waitUntil(t, 30*time.Second, "new's create to complete", func() bool {
			st, err := a.Orchestrations().Status(ctx, newCreate)
			return err == nil && st.Status == duroxide.StatusCompleted
		})

		if err := a.StartJanitor(ctx); err != nil { // sends the settings: the janitor sweeps at once
			t.Fatal(err)
		}
		waitUntil(t, 30*time.Second, "old's orchestrations to be purged", func() bool {
			for _, id := range oldIDs {
				if !gone(t, a, id) {
					return false
				}
			}
			return true
		})
		if gone(t, a, newCreate) {
			t.Fatalf("%s (finished within the retention) was purged", newCreate)
		}
		if st, err := a.Orchestrations().Status(ctx, orchestrations.ActorID(fresh.InternalName)); err != nil || st.Status.IsTerminal() && st.Status != duroxide.StatusContinuedAsNew {
			t.Fatalf("new's health actor: %+v, %v; want it running", st, err)
		}
		if n := removedMetric(t, a, "orchestrations"); n < float64(len(oldIDs)) {
			t.Fatalf("toygres_janitor_removed_total{kind=orchestrations} = %v, want at least %d", n, len(oldIDs))
		}
		// The CMS keeps the deleted instance's record.
		if got, err := a.CMS().GetByInternalName(ctx, old.InternalName); err != nil || got.State != cms.StateDeleted {
			t.Fatalf("old's record: %+v, %v", got, err)
		}
	})
}

// TestJanitorPrunesChainsTheRuntimeMissed builds a health-actor chain with
// pruning off, ends it (the instance is deleted, so no continue-as-new will
// prune it), and checks that the janitor of an app restarted with
// KeepExecutions 3 cuts it to 3 executions.
func TestJanitorPrunesChainsTheRuntimeMissed(t *testing.T) {
	stores(t, func(t *testing.T, cfg app.Config) {
		ctx := t.Context()
		first := cfg
		first.ActorInterval = 10 * time.Millisecond
		first.Retention = app.Retention{KeepExecutions: -1}
		a := openApp(t, first)
		inst := createRunning(t, a, "chain")
		actor := orchestrations.ActorID(inst.InternalName)
		waitUntil(t, 30*time.Second, "20 health-check cycles", func() bool { return actorExecution(t, a, inst.InternalName) >= 20 })
		if _, err := a.DeleteInstance(ctx, "chain"); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 30*time.Second, "the actor to end", func() bool {
			st, err := a.Orchestrations().Status(ctx, actor)
			return err == nil && st.Status == duroxide.StatusCompleted
		})
		ex, err := a.Orchestrations().Executions(ctx, actor)
		if err != nil || len(ex) < 20 {
			t.Fatalf("actor chain before the restart: %d executions, %v; want at least 20", len(ex), err)
		}
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}

		cfg.Retention = app.Retention{KeepExecutions: 3}
		b := openApp(t, cfg)
		waitUntil(t, 30*time.Second, "the janitor to prune the ended chain", func() bool {
			ex, err := b.Orchestrations().Executions(ctx, actor)
			return err == nil && len(ex) == 3
		})
		// The activity counts a prune just after the store committed it.
		waitUntil(t, 10*time.Second, fmt.Sprintf("toygres_janitor_removed_total{kind=executions} to reach %d", len(ex)-3), func() bool {
			return removedMetric(t, b, "executions") >= float64(len(ex)-3)
		})
	})
}
