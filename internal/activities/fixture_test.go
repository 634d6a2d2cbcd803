package activities

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/toygres/toygres/internal/apptest"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/dataplane/local"
)

// fixture is a CMS on a SQLite file and a local data plane in a fresh data
// directory, removed (with any instance left) when the test ends.
type fixture struct {
	dir    string
	store  cms.Store
	driver *local.Driver
}

func newFixture(t *testing.T, ctx context.Context, prefix string) *fixture {
	t.Helper()
	dir := apptest.NewDataDir(t, prefix)
	t.Cleanup(func() {
		if apptest.DeleteInstances(dir) {
			_ = os.RemoveAll(dir)
		}
	})
	store, err := cms.OpenSQLite(ctx, filepath.Join(dir, "toygres.db"), cms.Options{KeyFile: filepath.Join(dir, "secret.key")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	driver, err := local.New(local.Options{Dir: filepath.Join(dir, "instances")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = driver.Close() })
	return &fixture{dir: dir, store: store, driver: driver}
}

// addInstance records an instance being created (with its password) and
// returns its internal name.
func (f *fixture) addInstance(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	internal := name + "-0000abcd"
	if _, err := f.store.CreateInstance(ctx, cms.Instance{Name: name, InternalName: internal, Driver: "local", StorageGB: 1,
		CreateOrchestrationID: "create-" + internal}); err != nil {
		t.Fatal(err)
	}
	if err := f.store.SetPassword(ctx, internal, "pw-123456"); err != nil {
		t.Fatal(err)
	}
	return internal
}
