package cms

import (
	"testing"
	"time"
)

func TestPruneHealthChecks(t *testing.T) {
	for name, newDB := range map[string]factory{"SQLite": sqliteDB, "Postgres": postgresDB} {
		t.Run(name, func(t *testing.T) { testPruneHealthChecks(t, newDB) })
	}
}

// testPruneHealthChecks records checks of two instances an hour apart and
// prunes them by age, then by a per-instance cap.
func testPruneHealthChecks(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("keep", "00000001"))
	b := mustCreate(t, s, spec("keep2", "00000001"))
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i := range 10 { // checks at now-9h … now
		for _, inst := range []*Instance{a, b} {
			if err := s.RecordHealthCheck(ctx, HealthCheck{Instance: inst.InternalName, Status: HealthHealthy,
				CheckedAt: now.Add(-time.Duration(9-i) * time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func(inst *Instance) (int, time.Time) {
		t.Helper()
		hcs, err := s.HealthChecks(ctx, inst.InternalName, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(hcs) == 0 {
			return 0, time.Time{}
		}
		return len(hcs), hcs[len(hcs)-1].CheckedAt
	}

	// Nothing selected: nothing deleted.
	if n, err := s.PruneHealthChecks(ctx, HealthCheckRetention{}); err != nil || n != 0 {
		t.Fatalf("empty retention deleted %d, %v", n, err)
	}
	// By age: checks older than 5h30m go (4 per instance: -9h … -6h).
	n, err := s.PruneHealthChecks(ctx, HealthCheckRetention{OlderThan: now.Add(-5*time.Hour - 30*time.Minute)})
	if err != nil || n != 8 {
		t.Fatalf("prune by age deleted %d, %v; want 8", n, err)
	}
	for _, inst := range []*Instance{a, b} {
		if c, oldest := count(inst); c != 6 || !oldest.Equal(now.Add(-5*time.Hour)) {
			t.Fatalf("%s after age prune: %d checks, oldest %v; want 6, %v", inst.InternalName, c, oldest, now.Add(-5*time.Hour))
		}
	}
	// Per instance: the newest 2 of each stay.
	n, err = s.PruneHealthChecks(ctx, HealthCheckRetention{KeepPerInstance: 2})
	if err != nil || n != 8 {
		t.Fatalf("prune by count deleted %d, %v; want 8", n, err)
	}
	for _, inst := range []*Instance{a, b} {
		if c, oldest := count(inst); c != 2 || !oldest.Equal(now.Add(-time.Hour)) {
			t.Fatalf("%s after count prune: %d checks, oldest %v; want 2, %v", inst.InternalName, c, oldest, now.Add(-time.Hour))
		}
	}
	// Idempotent.
	if n, err := s.PruneHealthChecks(ctx, HealthCheckRetention{OlderThan: now.Add(-5 * time.Hour), KeepPerInstance: 2}); err != nil || n != 0 {
		t.Fatalf("second prune deleted %d, %v", n, err)
	}
}
