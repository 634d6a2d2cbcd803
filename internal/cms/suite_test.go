package cms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// opener opens a Store on one database (always the same one).
type opener func(ctx context.Context, opts Options) (Store, error)

// factory creates a fresh, empty database for one test and returns how to
// open it.
type factory func(t *testing.T) opener

// runSuite runs the dialect-independent tests against databases made by newDB.
func runSuite(t *testing.T, newDB factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newDB factory)
	}{
		{"CreateGetList", testCreateGetList},
		{"StateTransitions", testStateTransitions},
		{"DeletedKeepsRow", testDeletedKeepsRow},
		{"NameReuse", testNameReuse},
		{"ConcurrentCreateSameName", testConcurrentCreateSameName},
		{"IdempotentCreate", testIdempotentCreate},
		{"Health", testHealth},
		{"HealthChecks", testHealthChecks},
		{"EventsAndNotes", testEventsAndNotes},
		{"Counts", testCounts},
		{"Passwords", testPasswords},
		{"WrongKey", testWrongKey},
		{"KeyFile", testKeyFile},
		{"KeyOptions", testKeyOptions},
		{"MigrationsIdempotent", testMigrationsIdempotent},
		{"ConcurrentOpen", testConcurrentOpen},
		{"Problems", testProblems},
		{"Purge", testPurge},
		{"Sessions", testSessions},
		{"Backups", testBackups},
		{"Replicas", testReplicas},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newDB) })
	}
}

var testKey = bytes.Repeat([]byte{7}, KeySize)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openT opens the database with opts (testKey if no key is set) and closes
// it at cleanup.
func openT(t *testing.T, open opener, opts Options) Store {
	t.Helper()
	if len(opts.SecretKey) == 0 && opts.KeyFile == "" {
		opts.SecretKey = testKey
	}
	s, err := open(ctxT(t), opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t *testing.T, newDB factory) Store {
	t.Helper()
	return openT(t, newDB(t), Options{})
}

func spec(name, suffix string) Instance {
	return Instance{
		Name:                  name,
		InternalName:          name + "-" + suffix,
		Driver:                "local",
		PostgresVersion:       "16",
		StorageGB:             2,
		CreateOrchestrationID: "create-" + name + "-" + suffix,
	}
}

func mustCreate(t *testing.T, s Store, inst Instance) *Instance {
	t.Helper()
	got, err := s.CreateInstance(ctxT(t), inst)
	if err != nil {
		t.Fatalf("CreateInstance(%s): %v", inst.InternalName, err)
	}
	return got
}

func mustState(t *testing.T, s Store, internal string, st State, u StateUpdate) State {
	t.Helper()
	prev, err := s.UpdateState(ctxT(t), internal, st, u)
	if err != nil {
		t.Fatalf("UpdateState(%s, %s): %v", internal, st, err)
	}
	return prev
}

func internalNames(insts []Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.InternalName
	}
	return out
}

func eqStrings(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func testCreateGetList(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)

	in := spec("alpha", "00000001")
	in.Internal = true
	in.DNSLabel = "alpha-lbl"
	in.Host = "10.0.0.1"
	in.Port = 5432
	in.State = StateRunning // ignored
	before := time.Now().Add(-time.Second)
	a := mustCreate(t, s, in)
	if !uuidRE.MatchString(a.ID) {
		t.Fatalf("ID %q is not a v4 UUID", a.ID)
	}
	if a.State != StateCreating || a.Health != HealthUnknown {
		t.Fatalf("new instance is %s/%s", a.State, a.Health)
	}
	if a.CreatedAt.Before(before) || !a.CreatedAt.Equal(a.UpdatedAt) || !a.DeletedAt.IsZero() {
		t.Fatalf("timestamps: created %v updated %v deleted %v", a.CreatedAt, a.UpdatedAt, a.DeletedAt)
	}

	got, err := s.Get(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if !sameInstance(*got, *a) {
		t.Fatalf("Get = %+v\nwant  %+v", *got, *a)
	}
	got, err = s.GetByInternalName(ctx, a.InternalName)
	if err != nil {
		t.Fatal(err)
	}
	if !sameInstance(*got, *a) {
		t.Fatalf("GetByInternalName = %+v\nwant %+v", *got, *a)
	}
	if !got.Internal || got.DNSLabel != "alpha-lbl" || got.Host != "10.0.0.1" || got.Port != 5432 || got.StorageGB != 2 ||
		got.PostgresVersion != "16" || got.Driver != "local" || got.CreateOrchestrationID != in.CreateOrchestrationID {
		t.Fatalf("fields not stored: %+v", *got)
	}

	if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}
	if _, err := s.GetByInternalName(ctx, "nope-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetByInternalName unknown: %v", err)
	}
	if _, err := s.CreateInstance(ctx, Instance{Name: "x"}); err == nil {
		t.Fatal("CreateInstance without InternalName succeeded")
	}
	leaky := spec("leaky", "00000001")
	leaky.ConnectionString = "postgresql://postgres:hunter2@h:5432/postgres"
	if _, err := s.CreateInstance(ctx, leaky); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("connection string with a password: %v", err)
	}

	b := mustCreate(t, s, spec("beta", "00000002"))
	c := mustCreate(t, s, spec("gamma", "00000003"))
	d := mustCreate(t, s, spec("delta", "00000004"))
	mustState(t, s, b.InternalName, StateRunning, StateUpdate{})
	mustState(t, s, c.InternalName, StateFailed, StateUpdate{FailureReason: "boom"})
	mustState(t, s, d.InternalName, StateDeleting, StateUpdate{})
	mustState(t, s, d.InternalName, StateDeleted, StateUpdate{})

	list := func(o ListOptions) []string {
		t.Helper()
		l, err := s.List(ctx, o)
		if err != nil {
			t.Fatalf("List(%+v): %v", o, err)
		}
		return internalNames(l)
	}
	eqStrings(t, "List()", list(ListOptions{}), c.InternalName, b.InternalName, a.InternalName)
	eqStrings(t, "List(IncludeDeleted)", list(ListOptions{IncludeDeleted: true}), d.InternalName, c.InternalName, b.InternalName, a.InternalName)
	eqStrings(t, "List(running,creating)", list(ListOptions{States: []State{StateRunning, StateCreating}}), b.InternalName, a.InternalName)
	eqStrings(t, "List(deleted)", list(ListOptions{States: []State{StateDeleted}}), d.InternalName)
	eqStrings(t, "List(name)", list(ListOptions{Name: "beta"}), b.InternalName)
	eqStrings(t, "List(name deleted)", list(ListOptions{Name: "delta"}))
	eqStrings(t, "List(limit)", list(ListOptions{Limit: 2, IncludeDeleted: true}), d.InternalName, c.InternalName)
	if _, err := s.List(ctx, ListOptions{States: []State{"bogus"}}); err == nil {
		t.Fatal("List with a bogus state succeeded")
	}

	// Many instances created within the same millisecond keep their order.
	var want []string
	for i := range 20 {
		in := mustCreate(t, s, spec(fmt.Sprintf("bulk%02d", i), "0000aaaa"))
		want = append([]string{in.InternalName}, want...)
	}
	got2 := list(ListOptions{})
	eqStrings(t, "List() newest first", got2[:20], want...)
}

// sameInstance compares instances, times with Equal.
func sameInstance(a, b Instance) bool {
	ta := []time.Time{a.CreatedAt, a.UpdatedAt, a.DeletedAt}
	tb := []time.Time{b.CreatedAt, b.UpdatedAt, b.DeletedAt}
	for i := range ta {
		if !ta[i].Equal(tb[i]) {
			return false
		}
	}
	a.CreatedAt, a.UpdatedAt, a.DeletedAt = time.Time{}, time.Time{}, time.Time{}
	b.CreatedAt, b.UpdatedAt, b.DeletedAt = time.Time{}, time.Time{}, time.Time{}
	return a == b
}

func stateEvents(t *testing.T, s Store, internal string) []string {
	t.Helper()
	evs, err := s.Events(ctxT(t), internal, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Type == EventStateChange {
			out = append(out, fmt.Sprintf("%s>%s:%s", e.OldState, e.NewState, e.Message))
		}
	}
	return out
}

func testStateTransitions(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("web", "0000000a"))
	eqStrings(t, "events after create", stateEvents(t, s, a.InternalName), ">creating:instance created")

	time.Sleep(3 * time.Millisecond)
	prev := mustState(t, s, a.InternalName, StateRunning, StateUpdate{
		Host: "127.0.0.1", Port: 15432, ConnectionString: "postgresql://postgres@127.0.0.1:15432/postgres",
		ExternalIP: "1.2.3.4", DNSName: "web.example.com", Message: "deployed",
	})
	if prev != StateCreating {
		t.Fatalf("prev = %s", prev)
	}
	got, err := s.GetByInternalName(ctx, a.InternalName)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateRunning || got.Host != "127.0.0.1" || got.Port != 15432 || got.ExternalIP != "1.2.3.4" ||
		got.DNSName != "web.example.com" || !strings.HasPrefix(got.ConnectionString, "postgresql://") {
		t.Fatalf("after running: %+v", *got)
	}
	if !got.UpdatedAt.After(got.CreatedAt) {
		t.Fatalf("UpdatedAt %v not after CreatedAt %v", got.UpdatedAt, got.CreatedAt)
	}

	// Same state again: no event, but optional fields are still written;
	// empty fields leave values alone.
	prev = mustState(t, s, a.InternalName, StateRunning, StateUpdate{Port: 15433, Message: "again"})
	if prev != StateRunning {
		t.Fatalf("prev = %s", prev)
	}
	got, _ = s.GetByInternalName(ctx, a.InternalName)
	if got.Port != 15433 || got.Host != "127.0.0.1" || got.DNSName != "web.example.com" {
		t.Fatalf("after no-op update: %+v", *got)
	}
	eqStrings(t, "events", stateEvents(t, s, a.InternalName), "creating>running:deployed", ">creating:instance created")

	mustState(t, s, a.InternalName, StateDeleting, StateUpdate{DeleteOrchestrationID: "delete-web-1"})
	mustState(t, s, a.InternalName, StateDeleting, StateUpdate{})
	got, _ = s.GetByInternalName(ctx, a.InternalName)
	if got.DeleteOrchestrationID != "delete-web-1" {
		t.Fatalf("DeleteOrchestrationID = %q", got.DeleteOrchestrationID)
	}
	eqStrings(t, "events", stateEvents(t, s, a.InternalName),
		"running>deleting:", "creating>running:deployed", ">creating:instance created")

	if _, err := s.UpdateState(ctx, "ghost-1", StateRunning, StateUpdate{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateState unknown: %v", err)
	}
	if _, err := s.UpdateState(ctx, a.InternalName, "bogus", StateUpdate{}); err == nil {
		t.Fatal("UpdateState to a bogus state succeeded")
	}
	for _, cs := range []string{"postgresql://u:pw@h/db", "host=h user=u password=pw", "postgres://u@h/db?password=pw"} {
		if _, err := s.UpdateState(ctx, a.InternalName, StateDeleting, StateUpdate{ConnectionString: cs}); err == nil {
			t.Fatalf("UpdateState accepted connection string %q", cs)
		}
	}

	// A failed create keeps its reason.
	f := mustCreate(t, s, spec("broken", "0000000b"))
	mustState(t, s, f.InternalName, StateFailed, StateUpdate{FailureReason: "image pull failed", Message: "deploy failed"})
	got, _ = s.GetByInternalName(ctx, f.InternalName)
	if got.State != StateFailed || got.FailureReason != "image pull failed" {
		t.Fatalf("failed: %+v", *got)
	}
	eqStrings(t, "failed events", stateEvents(t, s, f.InternalName), "creating>failed:deploy failed", ">creating:instance created")
}

func testDeletedKeepsRow(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("gone", "000000c1"))
	mustState(t, s, a.InternalName, StateRunning, StateUpdate{})
	if err := s.SetPassword(ctx, a.InternalName, "pw"); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, a.InternalName, StateDeleting, StateUpdate{})
	got, _ := s.GetByInternalName(ctx, a.InternalName)
	if !got.DeletedAt.IsZero() {
		t.Fatal("DeletedAt set while deleting")
	}
	before := time.Now().Add(-time.Second)
	mustState(t, s, a.InternalName, StateDeleted, StateUpdate{Message: "bye"})

	got, err := s.GetByInternalName(ctx, a.InternalName)
	if err != nil {
		t.Fatalf("deleted row is gone: %v", err)
	}
	if got.State != StateDeleted || got.DeletedAt.IsZero() || got.DeletedAt.Before(before) {
		t.Fatalf("deleted: state %s DeletedAt %v", got.State, got.DeletedAt)
	}
	deletedAt := got.DeletedAt
	// Deleted again: no change, DeletedAt kept, no event.
	if prev := mustState(t, s, a.InternalName, StateDeleted, StateUpdate{}); prev != StateDeleted {
		t.Fatalf("prev = %s", prev)
	}
	got, _ = s.GetByInternalName(ctx, a.InternalName)
	if !got.DeletedAt.Equal(deletedAt) {
		t.Fatalf("DeletedAt moved: %v → %v", deletedAt, got.DeletedAt)
	}
	eqStrings(t, "events", stateEvents(t, s, a.InternalName),
		"deleting>deleted:bye", "running>deleting:", "creating>running:", ">creating:instance created")

	// Get by name still finds the deleted record.
	if g, err := s.Get(ctx, "gone"); err != nil || g.InternalName != a.InternalName {
		t.Fatalf("Get deleted: %v %v", g, err)
	}
	// The secret is gone with it.
	if _, err := s.Password(ctx, a.InternalName); !errors.Is(err, ErrNotFound) {
		t.Fatalf("password of deleted instance: %v", err)
	}
	// Deleted is final.
	if _, err := s.UpdateState(ctx, a.InternalName, StateRunning, StateUpdate{}); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("deleted → running: %v", err)
	}
	// Events, history and health checks survive.
	if evs, err := s.Events(ctx, a.InternalName, 0); err != nil || len(evs) != 4 {
		t.Fatalf("events: %d %v", len(evs), err)
	}
}

func testNameReuse(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("db", "00000001"))

	// An active name cannot be taken, in any active state.
	for _, st := range []State{StateCreating, StateRunning, StateDeleting} {
		if st != StateCreating {
			mustState(t, s, a.InternalName, st, StateUpdate{})
		}
		_, err := s.CreateInstance(ctx, spec("db", "0000000"+string(st[0])))
		if !errors.Is(err, ErrNameTaken) {
			t.Fatalf("create while %s: %v", st, err)
		}
	}
	mustState(t, s, a.InternalName, StateDeleted, StateUpdate{})

	// Deleted: the name is free again.
	b := mustCreate(t, s, spec("db", "00000002"))
	if g, err := s.Get(ctx, "db"); err != nil || g.InternalName != b.InternalName {
		t.Fatalf("Get after reuse = %v, %v", g, err)
	}
	// Failed: the name is free again.
	mustState(t, s, b.InternalName, StateFailed, StateUpdate{FailureReason: "x"})
	c := mustCreate(t, s, spec("db", "00000003"))
	if g, err := s.Get(ctx, "db"); err != nil || g.InternalName != c.InternalName {
		t.Fatalf("Get after second reuse = %v, %v", g, err)
	}
	// The failed one cannot become active while c holds the name.
	if _, err := s.UpdateState(ctx, b.InternalName, StateDeleting, StateUpdate{}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("failed → deleting while the name is held: %v", err)
	}
	// It can go straight to deleted.
	mustState(t, s, b.InternalName, StateDeleted, StateUpdate{})

	// All inactive: Get returns the most recent one.
	mustState(t, s, c.InternalName, StateFailed, StateUpdate{})
	if g, err := s.Get(ctx, "db"); err != nil || g.InternalName != c.InternalName {
		t.Fatalf("Get all inactive = %v, %v", g, err)
	}
	l, err := s.List(ctx, ListOptions{Name: "db", IncludeDeleted: true})
	if err != nil {
		t.Fatal(err)
	}
	eqStrings(t, "history of db", internalNames(l), c.InternalName, b.InternalName, a.InternalName)

	// A DNS label is also held by active instances only.
	x := spec("x", "00000001")
	x.DNSLabel = "shared"
	x1 := mustCreate(t, s, x)
	y := spec("y", "00000001")
	y.DNSLabel = "shared"
	if _, err := s.CreateInstance(ctx, y); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("duplicate active DNS label: %v", err)
	}
	mustState(t, s, x1.InternalName, StateFailed, StateUpdate{})
	mustCreate(t, s, y)
}

func testConcurrentCreateSameName(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wins []string
	var taken int
	var other []error
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			inst, err := s.CreateInstance(ctx, spec("race", fmt.Sprintf("%08x", i)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins = append(wins, inst.InternalName)
			case errors.Is(err, ErrNameTaken):
				taken++
			default:
				other = append(other, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("unexpected errors: %v", other)
	}
	if len(wins) != 1 || taken != n-1 {
		t.Fatalf("wins %v, taken %d", wins, taken)
	}
	l, err := s.List(ctx, ListOptions{Name: "race", IncludeDeleted: true})
	if err != nil {
		t.Fatal(err)
	}
	eqStrings(t, "rows", internalNames(l), wins[0])
	if evs, err := s.RecentEvents(ctx, 0); err != nil || len(evs) != 1 {
		t.Fatalf("events: %v %v", evs, err)
	}
}

func testIdempotentCreate(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	in := spec("idem", "00000001")
	a := mustCreate(t, s, in)
	b := mustCreate(t, s, in)
	if !sameInstance(*a, *b) {
		t.Fatalf("second create returned %+v, want %+v", *b, *a)
	}
	// Still the stored record after it moved on.
	mustState(t, s, a.InternalName, StateRunning, StateUpdate{})
	c := mustCreate(t, s, in)
	if c.ID != a.ID || c.State != StateRunning {
		t.Fatalf("replayed create = %+v", *c)
	}
	// Same orchestration, different record: an error, not a silent success.
	other := in
	other.Name, other.InternalName = "other", "other-00000001"
	if _, err := s.CreateInstance(ctx, other); err == nil {
		t.Fatal("create with a reused orchestration id and another name succeeded")
	}

	// Concurrent replays of one orchestration all get the same record.
	in2 := spec("idem2", "00000002")
	var wg sync.WaitGroup
	ids := make([]string, 12)
	errs := make([]error, 12)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.CreateInstance(ctx, in2)
			errs[i] = err
			if err == nil {
				ids[i] = got.ID
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil {
			t.Fatalf("concurrent replay %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("concurrent replays returned different ids: %v", ids)
		}
	}
	l, _ := s.List(ctx, ListOptions{IncludeDeleted: true})
	if len(l) != 2 {
		t.Fatalf("%d rows, want 2", len(l))
	}
	eqStrings(t, "events", stateEvents(t, s, in2.InternalName), ">creating:instance created")
}

func testHealth(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("h", "00000001"))
	health := func() Health {
		t.Helper()
		g, err := s.GetByInternalName(ctx, a.InternalName)
		if err != nil {
			t.Fatal(err)
		}
		return g.Health
	}
	healthEvents := func() []string {
		t.Helper()
		evs, err := s.Events(ctx, a.InternalName, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			if e.Type == EventHealthChange {
				out = append(out, e.Message)
			}
		}
		return out
	}
	// Creating: no-op.
	if err := s.UpdateHealth(ctx, a.InternalName, HealthHealthy); err != nil {
		t.Fatal(err)
	}
	if h := health(); h != HealthUnknown {
		t.Fatalf("health while creating = %s", h)
	}
	mustState(t, s, a.InternalName, StateRunning, StateUpdate{})
	for _, h := range []Health{HealthHealthy, HealthHealthy, HealthUnhealthy, HealthUnhealthy, HealthHealthy} {
		if err := s.UpdateHealth(ctx, a.InternalName, h); err != nil {
			t.Fatal(err)
		}
		if got := health(); got != h {
			t.Fatalf("health = %s, want %s", got, h)
		}
	}
	eqStrings(t, "health events", healthEvents(),
		"health unhealthy -> healthy", "health healthy -> unhealthy", "health unknown -> healthy")
	// Deleting: no-op.
	mustState(t, s, a.InternalName, StateDeleting, StateUpdate{})
	if err := s.UpdateHealth(ctx, a.InternalName, HealthUnhealthy); err != nil {
		t.Fatal(err)
	}
	if h := health(); h != HealthHealthy {
		t.Fatalf("health changed while deleting: %s", h)
	}
	if len(healthEvents()) != 3 {
		t.Fatal("health event recorded while deleting")
	}
	if err := s.UpdateHealth(ctx, "ghost-1", HealthHealthy); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateHealth unknown: %v", err)
	}
	if err := s.UpdateHealth(ctx, a.InternalName, "meh"); err == nil {
		t.Fatal("UpdateHealth with a bogus value succeeded")
	}

	// SetActor.
	if err := s.SetActor(ctx, a.InternalName, "actor-h-1"); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.GetByInternalName(ctx, a.InternalName); g.ActorOrchestrationID != "actor-h-1" {
		t.Fatalf("actor = %q", g.ActorOrchestrationID)
	}
	if err := s.SetActor(ctx, "ghost-1", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetActor unknown: %v", err)
	}
}

func testHealthChecks(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("hc", "00000001"))
	b := mustCreate(t, s, spec("hc2", "00000001"))
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	// Recorded out of order; the sub-millisecond part is dropped.
	for _, off := range []time.Duration{2 * time.Second, 0, time.Second, 1500 * time.Microsecond} {
		hc := HealthCheck{Instance: a.InternalName, Status: HealthHealthy, PostgresVersion: "16.4",
			ResponseTimeMs: int64(off / time.Millisecond), CheckedAt: base.Add(off)}
		if off == time.Second {
			hc.Status, hc.Error = HealthUnhealthy, "connection refused"
		}
		if err := s.RecordHealthCheck(ctx, hc); err != nil {
			t.Fatal(err)
		}
	}
	// Same instance and time again: ignored.
	if err := s.RecordHealthCheck(ctx, HealthCheck{Instance: a.InternalName, Status: HealthUnhealthy, CheckedAt: base}); err != nil {
		t.Fatal(err)
	}
	// Same time, other instance: stored.
	if err := s.RecordHealthCheck(ctx, HealthCheck{Instance: b.InternalName, Status: HealthHealthy, CheckedAt: base}); err != nil {
		t.Fatal(err)
	}
	hcs, err := s.HealthChecks(ctx, a.InternalName, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, hc := range hcs {
		if hc.Instance != a.InternalName || hc.ID == 0 {
			t.Fatalf("bad check %+v", hc)
		}
		got = append(got, fmt.Sprintf("%s/%s/%d/%s", hc.CheckedAt.Sub(base), hc.Status, hc.ResponseTimeMs, hc.Error))
	}
	eqStrings(t, "checks", got,
		"2s/healthy/2000/", "1s/unhealthy/1000/connection refused", "1ms/healthy/1/", "0s/healthy/0/")
	if hcs[0].PostgresVersion != "16.4" || hcs[0].CheckedAt.Location() != time.UTC {
		t.Fatalf("check %+v", hcs[0])
	}
	if hcs, err := s.HealthChecks(ctx, a.InternalName, 2); err != nil || len(hcs) != 2 || !hcs[0].CheckedAt.Equal(base.Add(2*time.Second)) {
		t.Fatalf("limit 2: %v %v", hcs, err)
	}
	if hcs, err := s.HealthChecks(ctx, b.InternalName, 0); err != nil || len(hcs) != 1 {
		t.Fatalf("other instance: %v %v", hcs, err)
	}
	// Zero CheckedAt: now.
	if err := s.RecordHealthCheck(ctx, HealthCheck{Instance: b.InternalName, Status: HealthHealthy}); err != nil {
		t.Fatal(err)
	}
	if hcs, _ := s.HealthChecks(ctx, b.InternalName, 1); time.Since(hcs[0].CheckedAt) > time.Minute {
		t.Fatalf("zero CheckedAt stored as %v", hcs[0].CheckedAt)
	}
	// A check sets the health of a running instance in the same
	// transaction; the same check again changes nothing.
	if _, err := s.UpdateState(ctx, b.InternalName, StateRunning, StateUpdate{}); err != nil {
		t.Fatal(err)
	}
	healthOf := func() Health {
		g, err := s.GetByInternalName(ctx, b.InternalName)
		if err != nil {
			t.Fatal(err)
		}
		return g.Health
	}
	late := base.Add(time.Hour)
	if err := s.RecordHealthCheck(ctx, HealthCheck{Instance: b.InternalName, Status: HealthUnhealthy, CheckedAt: late}); err != nil {
		t.Fatal(err)
	}
	if h := healthOf(); h != HealthUnhealthy {
		t.Fatalf("health after an unhealthy check = %s", h)
	}
	if err := s.UpdateHealth(ctx, b.InternalName, HealthHealthy); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordHealthCheck(ctx, HealthCheck{Instance: b.InternalName, Status: HealthUnhealthy, CheckedAt: late}); err != nil {
		t.Fatal(err)
	}
	if h := healthOf(); h != HealthHealthy {
		t.Fatalf("a redelivered check changed the health to %s", h)
	}
	if err := s.RecordHealthCheck(ctx, HealthCheck{Instance: "ghost-1", Status: HealthHealthy, CheckedAt: base}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RecordHealthCheck unknown: %v", err)
	}
	if _, err := s.HealthChecks(ctx, "ghost-1", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("HealthChecks unknown: %v", err)
	}
	c := mustCreate(t, s, spec("hc3", "00000001"))
	if hcs, err := s.HealthChecks(ctx, c.InternalName, 0); err != nil || len(hcs) != 0 {
		t.Fatalf("no checks: %v %v", hcs, err)
	}
}

func testEventsAndNotes(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("ev", "00000001"))
	b := mustCreate(t, s, spec("ev2", "00000001"))
	if err := s.AddEvent(ctx, a.InternalName, "backup started"); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, b.InternalName, StateRunning, StateUpdate{Message: "up"})
	if err := s.AddEvent(ctx, a.InternalName, "backup done"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(ctx, "ghost-1", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("AddEvent unknown: %v", err)
	}
	evs, err := s.Events(ctx, a.InternalName, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Type+":"+e.Message)
		if e.Instance != a.InternalName || e.CreatedAt.IsZero() {
			t.Fatalf("bad event %+v", e)
		}
	}
	eqStrings(t, "events", got, "note:backup done", "note:backup started", "state_change:instance created")
	if evs, _ := s.Events(ctx, a.InternalName, 1); len(evs) != 1 || evs[0].Message != "backup done" {
		t.Fatalf("limit 1: %+v", evs)
	}
	if _, err := s.Events(ctx, "ghost-1", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Events unknown: %v", err)
	}
	recent, err := s.RecentEvents(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, e := range recent {
		got = append(got, e.Instance+":"+e.Message)
	}
	eqStrings(t, "recent", got, a.InternalName+":backup done", b.InternalName+":up", a.InternalName+":backup started")
	all, _ := s.RecentEvents(ctx, 0)
	if len(all) != 5 {
		t.Fatalf("all events: %d", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID >= all[i-1].ID || all[i].CreatedAt.After(all[i-1].CreatedAt) {
			t.Fatalf("not newest first: %+v", all)
		}
	}
}

func testCounts(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	c, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ByState) != 5 || len(c.ByHealth) != 3 || c.ByState[StateRunning] != 0 {
		t.Fatalf("empty counts: %+v", c)
	}
	mk := func(i int, st State, h Health) {
		in := mustCreate(t, s, spec(fmt.Sprintf("c%d", i), "00000001"))
		switch st {
		case StateCreating:
			return
		case StateFailed:
			mustState(t, s, in.InternalName, StateFailed, StateUpdate{})
			return
		}
		mustState(t, s, in.InternalName, StateRunning, StateUpdate{})
		if h != "" {
			if err := s.UpdateHealth(ctx, in.InternalName, h); err != nil {
				t.Fatal(err)
			}
		}
		if st == StateDeleting || st == StateDeleted {
			mustState(t, s, in.InternalName, StateDeleting, StateUpdate{})
		}
		if st == StateDeleted {
			mustState(t, s, in.InternalName, StateDeleted, StateUpdate{})
		}
	}
	mk(1, StateCreating, "")
	mk(2, StateRunning, HealthHealthy)
	mk(3, StateRunning, HealthHealthy)
	mk(4, StateRunning, HealthUnhealthy)
	mk(5, StateRunning, "")
	mk(6, StateFailed, "")
	mk(7, StateDeleted, HealthUnhealthy) // health of non-running instances is not counted
	mk(8, StateDeleting, "")
	c, err = s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantS := map[State]int{StateCreating: 1, StateRunning: 4, StateFailed: 1, StateDeleting: 1, StateDeleted: 1}
	wantH := map[Health]int{HealthHealthy: 2, HealthUnhealthy: 1, HealthUnknown: 1}
	if fmt.Sprint(c.ByState) != fmt.Sprint(wantS) || fmt.Sprint(c.ByHealth) != fmt.Sprint(wantH) {
		t.Fatalf("counts %v %v, want %v %v", c.ByState, c.ByHealth, wantS, wantH)
	}
}

func testPasswords(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	s := newStore(t, newDB)
	a := mustCreate(t, s, spec("pw", "00000001"))
	b := mustCreate(t, s, spec("pw2", "00000001"))
	const secret = "s3cr3t-Päss/word"
	if _, err := s.Password(ctx, a.InternalName); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Password before set: %v", err)
	}
	if err := s.SetPassword(ctx, a.InternalName, secret); err != nil {
		t.Fatal(err)
	}
	if pw, err := s.Password(ctx, a.InternalName); err != nil || pw != secret {
		t.Fatalf("Password = %q, %v", pw, err)
	}

	raw := func(name string) (nonce, ct []byte) {
		t.Helper()
		st := s.(*store)
		if err := st.db.QueryRowContext(ctx, st.q("SELECT nonce, ciphertext FROM {p}instance_secrets WHERE internal_name = ?"), name).Scan(&nonce, &ct); err != nil {
			t.Fatal(err)
		}
		return
	}
	n1, c1 := raw(a.InternalName)
	if bytes.Contains(c1, []byte(secret)) || bytes.Contains(c1, []byte("s3cr3t")) || len(n1) != 12 {
		t.Fatalf("ciphertext %x / nonce %x look wrong", c1, n1)
	}
	// Same password again: new nonce, new ciphertext.
	if err := s.SetPassword(ctx, a.InternalName, secret); err != nil {
		t.Fatal(err)
	}
	n2, c2 := raw(a.InternalName)
	if bytes.Equal(n1, n2) || bytes.Equal(c1, c2) {
		t.Fatal("rewriting the password reused the nonce")
	}
	// Overwrite, and an empty password round-trips too.
	if err := s.SetPassword(ctx, b.InternalName, ""); err != nil {
		t.Fatal(err)
	}
	if pw, err := s.Password(ctx, b.InternalName); err != nil || pw != "" {
		t.Fatalf("empty password = %q, %v", pw, err)
	}
	if err := s.SetPassword(ctx, b.InternalName, "second"); err != nil {
		t.Fatal(err)
	}
	if pw, _ := s.Password(ctx, b.InternalName); pw != "second" {
		t.Fatalf("overwritten password = %q", pw)
	}
	// A ciphertext moved to another instance's row does not decrypt.
	st := s.(*store)
	if _, err := st.db.ExecContext(ctx, st.q("UPDATE {p}instance_secrets SET nonce = ?, ciphertext = ? WHERE internal_name = ?"), n2, c2, b.InternalName); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Password(ctx, b.InternalName); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("swapped ciphertext: %v", err)
	}

	if err := s.SetPassword(ctx, "ghost-1", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetPassword unknown: %v", err)
	}
	if err := s.DeletePassword(ctx, a.InternalName); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Password(ctx, a.InternalName); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Password after delete: %v", err)
	}
	if err := s.DeletePassword(ctx, a.InternalName); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func testWrongKey(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	open := newDB(t)
	s := openT(t, open, Options{SecretKey: testKey})
	a := mustCreate(t, s, spec("wk", "00000001"))
	if err := s.SetPassword(ctx, a.InternalName, "hunter2"); err != nil {
		t.Fatal(err)
	}
	// A second process with another key is refused at open, naming both keys.
	other := bytes.Repeat([]byte{9}, KeySize)
	if s2, err := open(ctx, Options{SecretKey: other}); err == nil {
		s2.Close()
		t.Fatal("opened with another key")
	} else if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), KeyID(testKey)) || !strings.Contains(err.Error(), KeyID(other)) {
		t.Fatalf("open with another key: %v", err)
	}
	// A row written under another key (copied from elsewhere) fails to decrypt.
	st := s.(*store)
	if _, err := st.db.ExecContext(ctx, st.q("UPDATE {p}instance_secrets SET key_id = ?"), KeyID(other)); err != nil {
		t.Fatal(err)
	}
	_, err := s.Password(ctx, a.InternalName)
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong key: %v", err)
	}
	if !strings.Contains(err.Error(), "wrong secret key") || !strings.Contains(err.Error(), KeyID(other)) ||
		strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("unclear error: %v", err)
	}
	// Even with a matching key id, a ciphertext of another key fails authentication.
	if _, err := st.db.ExecContext(ctx, st.q("UPDATE {p}instance_secrets SET key_id = ?, ciphertext = ?"), KeyID(testKey), bytes.Repeat([]byte{1}, 24)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Password(ctx, a.InternalName); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong key, forged key id: %v", err)
	}
}

func testKeyFile(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	open := newDB(t)
	keyFile := filepath.Join(t.TempDir(), "secrets", "cms.key")
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := openT(t, open, Options{KeyFile: keyFile, Logger: logger})
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatalf("key file not created: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(keyFile)
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(b) {
		t.Fatalf("key file content %q", b)
	}
	if ents, _ := os.ReadDir(filepath.Dir(keyFile)); len(ents) != 1 {
		t.Fatalf("temp files left behind: %v", ents)
	}
	a := mustCreate(t, s, spec("kf", "00000001"))
	if err := s.SetPassword(ctx, a.InternalName, "pw1-secret"); err != nil {
		t.Fatal(err)
	}
	mustState(t, s, a.InternalName, StateRunning, StateUpdate{})
	if _, err := s.Password(ctx, a.InternalName); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The logs mention the new key file, but never a key or a password.
	l := logs.String()
	if !strings.Contains(l, "generated a new secret key") || !strings.Contains(l, "state change") ||
		strings.Contains(l, strings.TrimSpace(string(b))) || strings.Contains(l, "pw1-secret") {
		t.Fatalf("logs:\n%s", l)
	}
	// Reopening reuses the key.
	s2 := openT(t, open, Options{KeyFile: keyFile})
	if pw, err := s2.Password(ctx, a.InternalName); err != nil || pw != "pw1-secret" {
		t.Fatalf("after reopen: %q, %v", pw, err)
	}
	b2, _ := os.ReadFile(keyFile)
	if !bytes.Equal(b, b2) {
		t.Fatal("key file rewritten")
	}
	// Concurrent first use agrees on one key.
	kf2 := filepath.Join(t.TempDir(), "k2")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateKeyFile(kf2, nil)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys {
		if len(k) != KeySize || !bytes.Equal(k, keys[0]) {
			t.Fatalf("keys differ: %x", keys)
		}
	}
	// A corrupt key file is refused.
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := open(ctx, Options{KeyFile: bad}); err == nil {
		t.Fatal("opened with a corrupt key file")
	}
}

func testKeyOptions(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	open := newDB(t)
	for _, o := range []Options{
		{},                                    // no key
		{SecretKey: []byte("short")},          // wrong size
		{SecretKey: testKey, KeyFile: "/x/y"}, // both
	} {
		if s, err := open(ctx, o); err == nil {
			s.Close()
			t.Fatalf("Open(%+v) succeeded", o)
		}
	}
}

func testMigrationsIdempotent(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	open := newDB(t)
	s := openT(t, open, Options{})
	a := mustCreate(t, s, spec("mig", "00000001"))
	s.Close()
	for range 3 {
		s2 := openT(t, open, Options{})
		if g, err := s2.Get(ctx, "mig"); err != nil || g.ID != a.ID {
			t.Fatalf("after reopen: %v %v", g, err)
		}
		st := s2.(*store)
		var n, v int
		if err := st.db.QueryRowContext(ctx, st.q("SELECT count(*), max(version) FROM {p}schema_migrations")).Scan(&n, &v); err != nil {
			t.Fatal(err)
		}
		if n != len(st.d.migrations) || v != SchemaVersion() {
			t.Fatalf("schema_migrations: %d rows, version %d", n, v)
		}
		s2.Close()
	}
}

func testConcurrentOpen(t *testing.T, newDB factory) {
	ctx := ctxT(t)
	open := newDB(t)
	const n = 6
	stores := make([]Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = open(ctx, Options{SecretKey: testKey})
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("open %d: %v", i, errs[i])
		}
		defer stores[i].Close()
	}
	// Every handle works, and they see each other's writes.
	for i, s := range stores {
		mustCreate(t, s, spec(fmt.Sprintf("co%d", i), "00000001"))
	}
	l, err := stores[0].List(ctx, ListOptions{})
	if err != nil || len(l) != n {
		t.Fatalf("list: %d %v", len(l), err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
