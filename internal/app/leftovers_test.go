package app_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/apptest"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/datadir"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/dataplane/local"
)

// TestStartRemovesWhatDeletedInstancesLeft: a deploy that finished after
// its instance's delete removes what it made, unless the server is killed
// in between; then the cancelled create never runs again and the next
// start must remove the PostgreSQL server of the deleted instance (before,
// it adopted it and kept it running).
func TestStartRemovesWhatDeletedInstancesLeft(t *testing.T) {
	if err := apptest.CheckRunAs(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	dir := apptest.NewDataDir(t, "toygres-leftovers-")
	t.Cleanup(func() {
		if apptest.DeleteInstances(dir) {
			_ = os.RemoveAll(dir)
		}
	})
	logFile, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	open := func() *app.App {
		t.Helper()
		a, err := app.Open(ctx, app.Config{DataDir: dir, Logger: slog.New(slog.NewJSONHandler(logFile, nil))})
		if err != nil {
			t.Fatalf("open app: %v", err)
		}
		return a
	}
	closeApp := func(a *app.App) {
		t.Helper()
		if err := a.Close(context.WithoutCancel(ctx)); err != nil {
			t.Fatal(err)
		}
	}
	// The records: one instance deleted, one still being deleted (its
	// delete orchestration removes its resources, not the start).
	a := open()
	record := func(name string, states ...cms.State) string {
		internal := name + "-0000abcd"
		if _, err := a.CMS().CreateInstance(ctx, cms.Instance{Name: name, InternalName: internal, Driver: "local", StorageGB: 1,
			CreateOrchestrationID: "create-" + internal}); err != nil {
			t.Fatal(err)
		}
		for _, st := range states {
			if _, err := a.CMS().UpdateState(ctx, internal, st, cms.StateUpdate{}); err != nil {
				t.Fatal(err)
			}
		}
		return internal
	}
	deleted := record("left", cms.StateDeleting, cms.StateDeleted)
	deleting := record("going", cms.StateDeleting)
	closeApp(a)

	// Their servers, as a deploy that outran the delete left them.
	d, err := local.New(local.Options{Dir: datadir.Instances(dir), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := d.Versions(ctx); err != nil || len(v) == 0 {
		t.Fatalf("no PostgreSQL binaries found (install them: apt-get install -y postgresql): %v", err)
	}
	for _, name := range []string{deleted, deleting} {
		if err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, "pw-123456"); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()

	a = open()
	closeApp(a)
	d, err = local.New(local.Options{Dir: datadir.Instances(dir), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if st, err := d.Status(ctx, deleted); !errors.Is(err, dataplane.ErrNotFound) {
		t.Errorf("deleted instance after the start: %+v, %v; want its resources gone", st, err)
	}
	if _, err := os.Stat(filepath.Join(datadir.Instances(dir), deleted)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted instance's directory is left (%v)", err)
	}
	if logs, err := os.ReadFile(logFile.Name()); err != nil || !strings.Contains(string(logs), `"msg":"removed the resources a deleted instance left"`) {
		t.Errorf("the removal is not logged")
	}
	if _, err := d.Status(ctx, deleting); err != nil {
		t.Errorf("instance being deleted: %v; want its resources left to its delete", err)
	}
}
