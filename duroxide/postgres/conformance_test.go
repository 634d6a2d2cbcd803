package postgres

import (
	"testing"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/providertest"
)

// TestConformance runs the shared provider suite, each scenario against a
// store in a fresh schema of the shared test cluster.
func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Factory{
		New: func(t *testing.T) duroxide.Store {
			schema := cluster.NewSchemaName(t)
			st, err := Open(t.Context(), cluster.URL, WithSchema(schema), WithPoolSize(8))
			if err != nil {
				t.Fatalf("open store: %v", err)
			}
			return st
		},
	})
}
