package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide/postgres/pgtest"
)

// cluster is shared by every test of the package (conformance included).
var cluster *pgtest.Cluster

func TestMain(m *testing.M) { pgtest.Main(m, &cluster) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a store in a fresh schema of the cluster's database.
func openStore(t *testing.T, opts ...Option) *Store {
	t.Helper()
	schema := cluster.NewSchemaName(t)
	return openSchema(t, schema, opts...)
}

// openSchema opens (another handle on) a given schema; closed at cleanup.
func openSchema(t *testing.T, schema string, opts ...Option) *Store {
	t.Helper()
	opts = append([]Option{WithSchema(schema), WithPoolSize(4)}, opts...)
	st, err := Open(testCtx(t), cluster.URL, opts...)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
