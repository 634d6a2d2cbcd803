package cms

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toygres/toygres/duroxide/postgres/pgtest"
	dxsqlite "github.com/toygres/toygres/duroxide/sqlite"
)

// cluster is the throwaway PostgreSQL server shared by this package's tests.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) { pgtest.Main(m, &cluster) }

// sqliteDB returns a fresh SQLite database: a file in a new temp dir.
func sqliteDB(t *testing.T) opener {
	path := filepath.Join(t.TempDir(), "toygres.db")
	return func(ctx context.Context, opts Options) (Store, error) {
		return OpenSQLite(ctx, path, opts)
	}
}

// postgresDB returns a fresh PostgreSQL database of the shared cluster.
func postgresDB(t *testing.T) opener {
	url := cluster.NewDatabase(t)
	return func(ctx context.Context, opts Options) (Store, error) {
		return OpenPostgres(ctx, url, opts)
	}
}

func TestSQLite(t *testing.T)   { runSuite(t, sqliteDB) }
func TestPostgres(t *testing.T) { runSuite(t, postgresDB) }

// The CMS shares its SQLite file with the durable-execution store.
func TestSQLiteSharesFileWithDuroxide(t *testing.T) {
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "toygres.db")
	dx, err := dxsqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer dx.Close()
	s, err := OpenSQLite(ctx, path, Options{SecretKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCreate(t, s, spec("shared", "00000001"))
	st := s.(*store)
	var mode string
	if err := st.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q, %v", mode, err)
	}
	// Both sets of tables live side by side; ours are all prefixed.
	rows, err := st.db.QueryContext(ctx, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ours, theirs int
	for rows.Next() {
		var name string
		rows.Scan(&name)
		if strings.HasPrefix(name, "cms_") {
			ours++
		} else {
			theirs++
		}
	}
	if ours != 11 || theirs == 0 {
		t.Fatalf("tables: %d cms_, %d duroxide", ours, theirs)
	}
	// Reopening the duroxide store after the CMS migrated is fine too.
	dx.Close()
	dx2, err := dxsqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	dx2.Close()
}

func TestPostgresSchema(t *testing.T) {
	ctx := ctxT(t)
	url := cluster.NewDatabase(t)
	s, err := OpenPostgres(ctx, url, Options{SecretKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	custom, err := OpenPostgres(ctx, url, Options{SecretKey: testKey, Schema: "cms_two"})
	if err != nil {
		t.Fatal(err)
	}
	defer custom.Close()
	mustCreate(t, s, spec("one", "00000001"))
	mustCreate(t, custom, spec("one", "00000002")) // separate catalogue: no clash
	st := s.(*store)
	var n int
	if err := st.db.QueryRowContext(ctx,
		"SELECT count(*) FROM information_schema.tables WHERE table_schema = 'toygres_cms' AND table_name IN ('instances','instance_events','instance_health_checks','instance_secrets','schema_migrations')").Scan(&n); err != nil || n != 5 {
		t.Fatalf("tables in toygres_cms: %d, %v", n, err)
	}
	if l, _ := custom.List(ctx, ListOptions{}); len(l) != 1 || l[0].InternalName != "one-00000002" {
		t.Fatalf("custom schema list: %v", l)
	}
	if _, err := OpenPostgres(ctx, url, Options{SecretKey: testKey, Schema: "Bad-Name"}); err == nil {
		t.Fatal("bad schema name accepted")
	}
}
