package cms

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// problemEvents lists an instance's problem events, oldest first.
func problemEvents(t *testing.T, s Store, internal string) []string {
	t.Helper()
	evs, err := s.Events(ctxT(t), internal, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == EventProblem {
			out = append(out, evs[i].Message)
		}
	}
	return out
}

func testProblems(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("brk", "00000001"))
	b := mustCreate(t, s, spec("fine", "00000002"))
	mustState(t, s, a.InternalName, StateRunning, StateUpdate{})
	mustState(t, s, b.InternalName, StateRunning, StateUpdate{})
	if got, _ := s.GetByInternalName(ctx, a.InternalName); got.Broken() || !got.ProblemAt.IsZero() {
		t.Fatalf("new instance has a problem: %q %v", got.Problem, got.ProblemAt)
	}

	before := time.Now().Add(-time.Second)
	for range 2 { // the same problem twice: one event
		if err := s.SetProblem(ctx, a.InternalName, "adopt: bad metadata"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(ctx, "brk")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Broken() || got.Problem != "adopt: bad metadata" || got.ProblemAt.Before(before) || got.State != StateRunning {
		t.Fatalf("broken instance: state %s problem %q at %v", got.State, got.Problem, got.ProblemAt)
	}
	broken, err := s.List(ctx, ListOptions{Broken: true})
	if err != nil {
		t.Fatal(err)
	}
	eqStrings(t, "broken", internalNames(broken), a.InternalName)
	// Health checks do not hide the problem.
	if err := s.UpdateHealth(ctx, a.InternalName, HealthUnhealthy); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "brk"); got.Problem == "" || got.Health != HealthUnhealthy {
		t.Fatalf("after a health change: %q %s", got.Problem, got.Health)
	}
	// Clearing it.
	if err := s.SetProblem(ctx, a.InternalName, ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "brk"); got.Broken() || !got.ProblemAt.IsZero() {
		t.Fatalf("repaired instance: %q %v", got.Problem, got.ProblemAt)
	}
	if l, _ := s.List(ctx, ListOptions{Broken: true}); len(l) != 0 {
		t.Fatalf("broken after repair: %v", internalNames(l))
	}
	eqStrings(t, "problem events", problemEvents(t, s, a.InternalName), "broken: adopt: bad metadata", "repaired")

	// Deleting an instance forgets its problem; a deleted one gets none.
	if err := s.SetProblem(ctx, b.InternalName, "gone"); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, b.InternalName, StateDeleting, StateUpdate{})
	if got, _ := s.GetByInternalName(ctx, b.InternalName); got.Problem != "gone" {
		t.Fatalf("deleting instance lost its problem: %q", got.Problem)
	}
	mustState(t, s, b.InternalName, StateDeleted, StateUpdate{})
	if err := s.SetProblem(ctx, b.InternalName, "again"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetByInternalName(ctx, b.InternalName); got.Broken() || !got.ProblemAt.IsZero() {
		t.Fatalf("deleted instance has a problem: %q", got.Problem)
	}
	if err := s.SetProblem(ctx, "nope-00000000", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetProblem of an unknown instance: %v", err)
	}
}

func testPurge(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	// Three records of one name: failed, deleted and running.
	failed := mustCreate(t, s, spec("pg", "00000001"))
	mustState(t, s, failed.InternalName, StateFailed, StateUpdate{FailureReason: "deploy failed"})
	deleted := mustCreate(t, s, spec("pg", "00000002"))
	mustState(t, s, deleted.InternalName, StateRunning, StateUpdate{})
	if err := s.RecordHealthCheck(ctx, HealthCheck{Instance: deleted.InternalName, Status: HealthHealthy}); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, deleted.InternalName, StateDeleting, StateUpdate{})
	mustState(t, s, deleted.InternalName, StateDeleted, StateUpdate{})
	live := mustCreate(t, s, spec("pg", "00000003"))
	mustState(t, s, live.InternalName, StateRunning, StateUpdate{})
	for _, in := range []*Instance{failed, live} {
		if err := s.SetPassword(ctx, in.InternalName, "pw"); err != nil {
			t.Fatal(err)
		}
	}

	// Active instances cannot be purged.
	if err := s.Purge(ctx, live.InternalName); !errors.Is(err, ErrActive) {
		t.Fatalf("purge of a running instance: %v", err)
	}
	creating := mustCreate(t, s, spec("other", "00000004"))
	if err := s.Purge(ctx, creating.InternalName); !errors.Is(err, ErrActive) {
		t.Fatalf("purge of a creating instance: %v", err)
	}
	if err := s.Purge(ctx, "nope-00000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("purge of an unknown instance: %v", err)
	}

	for _, in := range []*Instance{failed, deleted} {
		if err := s.Purge(ctx, in.InternalName); err != nil {
			t.Fatalf("purge %s: %v", in.InternalName, err)
		}
		if _, err := s.GetByInternalName(ctx, in.InternalName); !errors.Is(err, ErrNotFound) {
			t.Fatalf("purged record still there: %v", err)
		}
		if _, err := s.Events(ctx, in.InternalName, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("events of a purged record: %v", err)
		}
		if _, err := s.HealthChecks(ctx, in.InternalName, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("health checks of a purged record: %v", err)
		}
		if _, err := s.Password(ctx, in.InternalName); !errors.Is(err, ErrNotFound) {
			t.Fatalf("password of a purged record: %v", err)
		}
		if err := s.Purge(ctx, in.InternalName); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second purge: %v", err)
		}
	}
	all, err := s.List(ctx, ListOptions{Name: "pg", IncludeDeleted: true})
	if err != nil {
		t.Fatal(err)
	}
	eqStrings(t, "records of pg after purging", internalNames(all), live.InternalName)
	if pw, err := s.Password(ctx, live.InternalName); err != nil || pw != "pw" {
		t.Fatalf("the live instance's password: %q %v", pw, err)
	}
	// Another instance's recent events are untouched.
	if evs, err := s.RecentEvents(ctx, 0); err != nil || len(evs) == 0 {
		t.Fatalf("recent events: %d %v", len(evs), err)
	} else {
		for _, e := range evs {
			if e.Instance == failed.InternalName || e.Instance == deleted.InternalName {
				t.Fatalf("event of a purged instance left: %+v", e)
			}
		}
	}
}

// upgradeFromV1 opens a database at schema version 1, records an instance,
// then opens it with this release and checks the record and the new columns.
func upgradeFromV1(t *testing.T, db *sql.DB, d *dialect, open func(context.Context) (Store, error)) {
	ctx := ctxT(t)
	// The store as release 1 opened it: its one migration, and no checks
	// that need later tables.
	d.migrations = d.migrations[:1]
	seal, err := newSealer(bytes.Clone(testKey))
	if err != nil {
		t.Fatal(err)
	}
	old := &store{db: db, d: d, seal: seal, log: slog.New(slog.DiscardHandler), qcache: map[string]string{}}
	if err := old.migrate(ctx); err != nil {
		t.Fatalf("open at version 1: %v", err)
	}
	in := spec("old", "00000001")
	in.CreateOrchestrationID = "" // its look-up reads the new columns
	if _, err := old.CreateInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := open(ctx)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	defer s.Close()
	got, err := s.Get(ctx, "old")
	if err != nil || got.InternalName != "old-00000001" || got.Broken() || !got.ProblemAt.IsZero() {
		t.Fatalf("record after upgrade: %+v %v", got, err)
	}
	if err := s.SetProblem(ctx, got.InternalName, "p"); err != nil {
		t.Fatal(err)
	}
	if l, err := s.List(ctx, ListOptions{Broken: true}); err != nil || len(l) != 1 {
		t.Fatalf("broken list after upgrade: %v %v", l, err)
	}
}

func TestSQLiteUpgradeFromV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "toygres.db")
	db := sql.OpenDB(sqliteConnector{dsn: path + "?_txlock=immediate&_foreign_keys=1"})
	upgradeFromV1(t, db, sqliteDialect(), func(ctx context.Context) (Store, error) {
		return OpenSQLite(ctx, path, Options{SecretKey: testKey})
	})
}

func TestPostgresUpgradeFromV1(t *testing.T) {
	url := cluster.NewDatabase(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	upgradeFromV1(t, stdlib.OpenDB(*cfg), postgresDialect(DefaultSchema), func(ctx context.Context) (Store, error) {
		return OpenPostgres(ctx, url, Options{SecretKey: testKey})
	})
}
