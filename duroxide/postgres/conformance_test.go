package postgres

import (
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/providertest"
)

// Liveness settings of the conformance stores: short, so that the liveness
// scenarios see a frozen handle die quickly, yet many heartbeats long.
const (
	testHeartbeat = 250 * time.Millisecond
	testDeadAfter = 3 * time.Second
)

// TestConformance runs the shared provider suite, each scenario against a
// store in a fresh schema of the shared test cluster. Second handles open
// the same schema with a pool of their own, as another process would.
func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Factory{
		New: func(t *testing.T) duroxide.Store {
			schema := cluster.NewSchemaName(t)
			st, err := Open(t.Context(), cluster.URL, WithSchema(schema), WithPoolSize(8), WithLiveness(testHeartbeat, testDeadAfter))
			if err != nil {
				t.Fatalf("open store: %v", err)
			}
			return st
		},
		Reopen: func(t *testing.T, s duroxide.Store) duroxide.Store {
			st, err := Open(t.Context(), cluster.URL, WithSchema(s.(*Store).Schema()), WithPoolSize(8), WithLiveness(testHeartbeat, testDeadAfter))
			if err != nil {
				t.Fatalf("open second handle: %v", err)
			}
			return st
		},
		Freeze:    func(t *testing.T, s duroxide.Store) { s.(*Store).stopHeartbeat() },
		DeadAfter: testDeadAfter,
	})
}
