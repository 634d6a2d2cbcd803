package activities

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/apptest"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane"
)

// gatedDriver holds each Deploy until the test releases it, then deploys
// even if the activity was cancelled meanwhile: a deploy past the point a
// cancellation could stop it (initdb done, server starting).
type gatedDriver struct {
	dataplane.Driver
	entered, release chan struct{}
	deploys          int
}

func (g *gatedDriver) Deploy(ctx context.Context, spec dataplane.Spec, password string) error {
	g.deploys++
	close(g.entered)
	<-g.release
	return g.Driver.Deploy(context.WithoutCancel(ctx), spec, password)
}

// TestDeleteDuringDeployLeavesNothing: a delete of an instance still being
// created runs while the create's deploy is under way (the create is
// cancelled, but its running deploy is not stopped in time). The delete
// finds nothing to remove; the deploy then creates the instance, and must
// remove it again: before the check after deploying, its PostgreSQL server
// and directory outlived the deleted instance (found by TestChaos).
func TestDeleteDuringDeployLeavesNothing(t *testing.T) {
	if err := apptest.CheckRunAs(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, ctx, "toygres-wanted-")
	store, driver, dir := f.store, f.driver, f.dir
	if v, err := driver.Versions(ctx); err != nil || len(v) == 0 {
		t.Fatalf("no PostgreSQL binaries found (install them: apt-get install -y postgresql): %v", err)
	}
	mk := func(name string) string { return f.addInstance(t, ctx, name) }
	gone := func(internal string) {
		t.Helper()
		if st, err := driver.Status(ctx, internal); !errors.Is(err, dataplane.ErrNotFound) {
			t.Errorf("%s: status %+v, %v; want its resources gone", internal, st, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "instances", internal)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: its directory is left (%v)", internal, err)
		}
	}
	wantDeleted := func(err error) {
		t.Helper()
		if !errors.Is(err, ErrDeletedWhileCreating) || !duroxide.IsNonRetryable(err) {
			t.Errorf("deploy: %v, want a non-retryable ErrDeletedWhileCreating", err)
		}
	}
	// deleteSteps does what delete-instance does for an instance still
	// being created: mark it deleting, (await the create,) remove its
	// resources, forget its password, mark it deleted.
	deleteSteps := func(a *acts, internal string) {
		t.Helper()
		if _, err := a.updateState(ctx, UpdateStateInput{InternalName: internal, State: cms.StateDeleting}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.deletePostgres(ctx, InstanceRef{InternalName: internal}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.forgetPassword(ctx, InstanceRef{InternalName: internal}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.updateState(ctx, UpdateStateInput{InternalName: internal, State: cms.StateDeleted}); err != nil {
			t.Fatal(err)
		}
	}

	// The delete runs while the deploy waits at the gate; the deploy
	// completes after it, its context cancelled as a cancelled create's is.
	racing := mk("racing")
	gate := &gatedDriver{Driver: driver, entered: make(chan struct{}), release: make(chan struct{})}
	a := &acts{Deps: Deps{CMS: store, Driver: gate, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}}
	actx, cancelActivity := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := a.deploy(actx, DeployInput{InternalName: racing, StorageGB: 1})
		done <- err
	}()
	select {
	case <-gate.entered:
	case err := <-done:
		t.Fatalf("deploy ended before reaching the driver: %v", err)
	}
	deleteSteps(a, racing)
	cancelActivity()
	close(gate.release)
	wantDeleted(<-done)
	gone(racing)

	// A deploy that starts after the delete does not reach the driver.
	late := mk("late")
	gate = &gatedDriver{Driver: driver, entered: make(chan struct{}), release: make(chan struct{})}
	a.Driver = gate
	deleteSteps(a, late)
	_, err := a.deploy(ctx, DeployInput{InternalName: late, StorageGB: 1})
	wantDeleted(err)
	if gate.deploys != 0 {
		t.Errorf("a deploy of a deleted instance reached the driver")
	}
	gone(late)

	// A failed instance is still deployed (an operator may recreate its
	// create).
	failed := mk("failed")
	if _, err := a.updateState(ctx, UpdateStateInput{InternalName: failed, State: cms.StateFailed}); err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	if _, err := a.deploy(ctx, DeployInput{InternalName: failed, StorageGB: 1}); err != nil {
		t.Fatalf("deploy of a failed instance: %v", err)
	}
	if st, err := driver.Status(ctx, failed); err != nil {
		t.Errorf("failed instance after deploy: %+v, %v", st, err)
	}
}
