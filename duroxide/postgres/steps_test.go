package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/toygres/toygres/duroxide"
)

// statementCounter is a pgx tracer counting the statements a store sends,
// by the store function they call (or the statement's first words).
type statementCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	key := d.SQL
	if i := strings.Index(key, `"."`); i >= 0 { // SELECT … "schema".function(
		key = key[i+3:]
		if j := strings.IndexAny(key, "( "); j >= 0 {
			key = key[:j]
		}
	} else if len(key) > 40 {
		key = key[:40]
	}
	c.mu.Lock()
	c.n[strings.Join(strings.Fields(key), " ")]++
	c.mu.Unlock()
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Group commits send their statements as batches: each call is counted
// like a lone statement, the transaction control statements under their
// own names ("BEGIN" counts the shared transactions).
func (c *statementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (c *statementCounter) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, d pgx.TraceBatchQueryData) {
	switch d.SQL {
	case "SAVEPOINT g", "RELEASE SAVEPOINT g", "COMMIT":
		return
	}
	c.TraceQueryStart(ctx, conn, pgx.TraceQueryStartData{SQL: d.SQL})
}

func (c *statementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (c *statementCounter) reset() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.n
	c.n = map[string]int{}
	return old
}

// TestStatementsPerActivity bounds the database round trips of sequential
// activities run by one runtime on its own schema: with local dispatch an
// activity costs one statement (its completion and the next turn), a
// workflow one more (its creation with the first turn, by the runtime's
// client). Write statements may share transactions (group commit), which
// does not change their number.
func TestStatementsPerActivity(t *testing.T) {
	counter := &statementCounter{n: map[string]int{}}
	st := openStore(t, WithPoolSize(10), WithPoolConfig(func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter }))
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Noop", func(_ context.Context, i int) (int, error) { return i, nil }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Seq", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		sum := 0
		for i := range n {
			v, err := duroxide.CallActivityTyped[int](ctx, "Noop", i)
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	}))
	// A long poll interval: the count must not depend on how long the run takes.
	rt := startRuntime(t, st, reg, duroxide.Options{PollInterval: time.Minute})
	c := rt.Client()
	ctx := testCtx(t)

	const workflows, acts = 50, 3
	counter.reset()
	for i := range workflows {
		if err := c.StartOrchestration(ctx, fmt.Sprintf("seq-%d", i), "Seq", acts); err != nil {
			t.Fatal(err)
		}
	}
	for i := range workflows {
		var sum int
		deadline := time.Now().Add(time.Minute)
		for {
			s, err := c.GetStatus(ctx, fmt.Sprintf("seq-%d", i))
			if err == nil && s.Status == duroxide.StatusCompleted {
				if err := s.Decode(&sum); err != nil {
					t.Fatal(err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("seq-%d not completed: %+v %v", i, s, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		if sum != acts*(acts-1)/2 {
			t.Fatalf("seq-%d: sum %d", i, sum)
		}
	}
	counts := counter.reset()
	total := 0
	var lines []string
	for k, v := range counts {
		if strings.Contains(k, "instances i") || strings.HasPrefix(k, "SELECT i.instance_id") { // the test's status polls
			continue
		}
		if k == "BEGIN" {
			lines = append(lines, fmt.Sprintf("%6d group commits", v))
			continue
		}
		total += v
		lines = append(lines, fmt.Sprintf("%6d %s", v, k))
	}
	sort.Strings(lines)
	t.Logf("store statements for %d workflows × %d activities (status reads excluded):\n%s", workflows, acts, strings.Join(lines, "\n"))
	perWorkflow := float64(total) / workflows
	gs := st.GroupCommitStats()
	t.Logf("%.2f statements per workflow in %.2f transactions; group commit: %+v",
		perWorkflow, float64(total-gs.Calls+gs.Transactions)/workflows, gs)
	// The start with the first turn, then 1 per activity = 4, plus a few
	// empty fetches and heartbeats.
	if limit := 5.5; perWorkflow > limit {
		t.Errorf("%.2f statements per workflow of %d activities, want at most %.1f", perWorkflow, acts, limit)
	}
}

// TestBulkStart starts many instances in one call: one statement, every
// instance runs once, and starting them again changes nothing.
func TestBulkStart(t *testing.T) {
	counter := &statementCounter{n: map[string]int{}}
	st := openStore(t, WithPoolSize(10), WithPoolConfig(func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter }))
	rt := startRuntime(t, st, e2eRegistry(t, nil), duroxide.Options{PollInterval: time.Minute})
	c := rt.Client()
	ctx := testCtx(t)
	reqs := make([]duroxide.StartRequest, 20)
	for i := range reqs {
		reqs[i] = duroxide.StartRequest{InstanceID: fmt.Sprintf("bulk-%d", i), Name: "Fan", Input: i}
	}
	counter.reset()
	if err := c.StartOrchestrations(ctx, reqs); err != nil {
		t.Fatal(err)
	}
	starts := 0
	for k, v := range counter.reset() {
		if strings.Contains(k, "INSERT INTO") {
			starts += v
		}
	}
	if starts != 1 {
		t.Errorf("bulk start of %d instances took %d INSERT statements, want 1", len(reqs), starts)
	}
	for i := range reqs {
		var sum int
		waitDone(t, c, reqs[i].InstanceID, &sum)
		want := 0
		for j := range i {
			want += j * j
		}
		if sum != want {
			t.Errorf("%s: sum %d, want %d", reqs[i].InstanceID, sum, want)
		}
	}
	// Again: every instance exists, nothing is queued.
	if err := c.StartOrchestrations(ctx, reqs); err != nil {
		t.Fatal(err)
	}
	stats, err := st.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.OrchestratorQueue != 0 || stats.Instances[duroxide.StatusCompleted] != len(reqs) {
		t.Errorf("after starting existing instances again: %+v", stats)
	}
	if err := c.StartOrchestrations(ctx, []duroxide.StartRequest{{InstanceID: "", Name: "Fan"}}); !errors.Is(err, duroxide.ErrInvalidInput) {
		t.Errorf("empty instance id: %v, want ErrInvalidInput", err)
	}
}
