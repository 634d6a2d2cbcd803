package activities

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// TestOtherHostIsAnError: with a host set (local data plane on a shared
// store), data-plane activities on an instance recorded for another host
// fail without retries instead of asking this machine's driver, which would
// take "not here" for "already gone".
func TestOtherHostIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newFixture(t, ctx, "toygres-placement-")
	store, driver := f.store, f.driver
	mk := func(name string) string { return f.addInstance(t, ctx, name) }
	elsewhere, legacy := mk("elsewhere"), mk("legacy")
	if _, err := store.ClaimPlacement(ctx, elsewhere, "host-a:/data"); err != nil {
		t.Fatal(err)
	}
	here := &acts{Deps: Deps{CMS: store, Driver: driver, Host: "host-b:/data"}}

	wantOther := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrOtherHost) || !duroxide.IsNonRetryable(err) || !strings.Contains(err.Error(), "host-a:/data") || !strings.Contains(err.Error(), "host-b:/data") {
			t.Errorf("%s: %v, want a non-retryable ErrOtherHost naming both hosts", what, err)
		}
	}
	_, err := here.deletePostgres(ctx, InstanceRef{InternalName: elsewhere})
	wantOther("delete", err)
	_, err = here.waitForReady(ctx, InstanceRef{InternalName: elsewhere})
	wantOther("wait for ready", err)
	_, err = here.getConnectionStrings(ctx, InstanceRef{InternalName: elsewhere})
	wantOther("get connection strings", err)
	_, err = here.deploy(ctx, DeployInput{InternalName: elsewhere, StorageGB: 1})
	wantOther("deploy", err)
	if h, _ := store.Placement(ctx, elsewhere); h != "host-a:/data" {
		t.Errorf("placement changed to %q", h)
	}

	// An instance from before placements were recorded passes to the driver
	// (which finds nothing to delete).
	if _, err := here.deletePostgres(ctx, InstanceRef{InternalName: legacy}); err != nil {
		t.Errorf("delete of an unplaced instance: %v", err)
	}
	// The host that runs it gets through to its driver.
	there := &acts{Deps: Deps{CMS: store, Driver: driver, Host: "host-a:/data"}}
	if _, err := there.deletePostgres(ctx, InstanceRef{InternalName: elsewhere}); err != nil {
		t.Errorf("delete on its own host: %v", err)
	}
	// Without a host (a shared data plane), nothing is checked.
	shared := &acts{Deps: Deps{CMS: store, Driver: driver}}
	if _, err := shared.deletePostgres(ctx, InstanceRef{InternalName: elsewhere}); err != nil {
		t.Errorf("delete without a host: %v", err)
	}
}
