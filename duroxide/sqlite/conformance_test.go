package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/providertest"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// TestConformance runs the shared store conformance suite against file
// stores, each in its own temporary directory.
func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Factory{
		New: func(t *testing.T) duroxide.Store {
			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "store.db"))
			if err != nil {
				t.Fatalf("sqlite.Open: %v", err)
			}
			return s
		},
		Reopen: func(t *testing.T, s duroxide.Store) duroxide.Store {
			s2, err := sqlite.Open(t.Context(), s.(*sqlite.Store).Path())
			if err != nil {
				t.Fatalf("sqlite.Open (second handle): %v", err)
			}
			return s2
		},
	})
}

// TestConformanceMemory runs the suite against in-memory stores.
func TestConformanceMemory(t *testing.T) {
	providertest.Run(t, providertest.Factory{
		New: func(t *testing.T) duroxide.Store {
			s, err := sqlite.Open(t.Context(), sqlite.MemoryPath)
			if err != nil {
				t.Fatalf("sqlite.Open: %v", err)
			}
			return s
		},
	})
}
