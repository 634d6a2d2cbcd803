package sqlite_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/providertest"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// Liveness settings of the conformance stores: short, so that the liveness
// scenarios see a frozen handle die quickly, yet many heartbeats long, so
// that a loaded machine does not make a live handle look dead.
const (
	testHeartbeat = 250 * time.Millisecond
	testDeadAfter = 3 * time.Second
)

// TestConformance runs the shared store conformance suite against file
// stores, each in its own temporary directory. Second handles are opened as
// another process would open them.
func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Factory{
		New: func(t *testing.T) duroxide.Store {
			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "store.db"), sqlite.WithLiveness(testHeartbeat, testDeadAfter))
			if err != nil {
				t.Fatalf("sqlite.Open: %v", err)
			}
			return s
		},
		Reopen: func(t *testing.T, s duroxide.Store) duroxide.Store {
			s2, err := sqlite.Open(t.Context(), s.(*sqlite.Store).Path(), sqlite.WithLiveness(testHeartbeat, testDeadAfter), sqlite.AsOtherProcess())
			if err != nil {
				t.Fatalf("sqlite.Open (second handle): %v", err)
			}
			return s2
		},
		Freeze:    func(t *testing.T, s duroxide.Store) { sqlite.StopHeartbeat(s.(*sqlite.Store)) },
		DeadAfter: testDeadAfter,
	})
}

// TestConformanceSameProcess runs the multi_handle and liveness scenarios
// with second handles of the same process (sharing the write lock and
// notifications).
func TestConformanceSameProcess(t *testing.T) {
	skip := map[string]string{}
	for _, name := range providertest.Scenarios() {
		if area := name[:len(name)-len(filepath.Base(name))-1]; area != "multi_handle" && area != "liveness" {
			skip[area] = "covered by TestConformance"
		}
	}
	skip["liveness/reclaim_takes_leases_at_once"] = "handles of one process never reclaim each other's leases"
	providertest.Run(t, providertest.Factory{
		New: func(t *testing.T) duroxide.Store {
			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "store.db"), sqlite.WithLiveness(testHeartbeat, testDeadAfter))
			if err != nil {
				t.Fatalf("sqlite.Open: %v", err)
			}
			return s
		},
		Reopen: func(t *testing.T, s duroxide.Store) duroxide.Store {
			s2, err := sqlite.Open(t.Context(), s.(*sqlite.Store).Path(), sqlite.WithLiveness(testHeartbeat, testDeadAfter))
			if err != nil {
				t.Fatalf("sqlite.Open (second handle): %v", err)
			}
			return s2
		},
		Freeze:    func(t *testing.T, s duroxide.Store) { sqlite.StopHeartbeat(s.(*sqlite.Store)) },
		DeadAfter: testDeadAfter,
		Skip:      skip,
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
