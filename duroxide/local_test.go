package duroxide_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// queueCounter is a SQLite store (local dispatch included, by embedding)
// that counts the queue operations local dispatch is meant to avoid, and
// its inline commits of activity completions.
type queueCounter struct {
	*sqlite.Store
	workFetched, workAcked, orchFetched, turns atomic.Int64
	workPolls, orchPolls                       atomic.Int64 // fetch calls, empty ones included
}

// tempSQLite opens a SQLite store on a new file, closed at the test's end.
func tempSQLite(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// runOnStore starts a runtime on store (with or without local dispatch),
// runs one orchestration to its end from the runtime's client and returns
// its status and the client. The runtime stops at the test's end.
func runOnStore(t *testing.T, store duroxide.Store, reg *duroxide.Registry, local bool, id, name string, input any) (*duroxide.OrchestrationStatus, *duroxide.Client) {
	t.Helper()
	rt, err := duroxide.Start(context.Background(), store, reg, duroxide.Options{Logger: quietLogger(), DisableLocalDispatch: !local})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Shutdown(context.Background()) })
	c := rt.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.StartOrchestration(ctx, id, name, input); err != nil {
		t.Fatal(err)
	}
	st, err := c.WaitForCompletion(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return st, c
}

func (q *queueCounter) CommitActivityTurn(ctx context.Context, p duroxide.ActivityTurnParams) ([]duroxide.WorkItemLease, error) {
	q.turns.Add(1)
	return q.Store.CommitActivityTurn(ctx, p)
}

func (q *queueCounter) FetchWorkItem(ctx context.Context, d time.Duration) (*duroxide.WorkItemLease, error) {
	q.workPolls.Add(1)
	l, err := q.Store.FetchWorkItem(ctx, d)
	if l != nil {
		q.workFetched.Add(1)
	}
	return l, err
}

func (q *queueCounter) AckWorkItem(ctx context.Context, token string, c *duroxide.WorkItem) error {
	q.workAcked.Add(1)
	return q.Store.AckWorkItem(ctx, token, c)
}

func (q *queueCounter) FetchOrchestrationItem(ctx context.Context, d time.Duration) (*duroxide.OrchestrationItem, error) {
	q.orchPolls.Add(1)
	it, err := q.Store.FetchOrchestrationItem(ctx, d)
	if it != nil {
		q.orchFetched.Add(1)
	}
	return it, err
}

// TestStartOnEmptyStoreFetchesOnce: a runtime that starts on empty queues
// asks each queue once (the timer loop's first wake-up), not once per
// dispatcher slot and worker, and its own work then needs no fetch.
func TestStartOnEmptyStoreFetchesOnce(t *testing.T) {
	q := &queueCounter{Store: tempSQLite(t)}
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Inc", func(_ context.Context, i int) (int, error) { return i + 1, nil }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Two", func(ctx *duroxide.OrchestrationContext, i int) (int, error) {
		v, err := duroxide.CallActivityTyped[int](ctx, "Inc", i)
		if err != nil {
			return 0, err
		}
		return duroxide.CallActivityTyped[int](ctx, "Inc", v)
	}))
	rt, err := duroxide.Start(context.Background(), q, reg, duroxide.Options{Logger: quietLogger(),
		OrchestrationConcurrency: 8, ActivityConcurrency: 16, PollInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := rt.Client()
	if err := c.StartOrchestration(ctx, "two", "Two", 1); err != nil {
		t.Fatal(err)
	}
	if st, err := c.WaitForCompletion(ctx, "two"); err != nil || st.Status != duroxide.StatusCompleted {
		t.Fatalf("status %v, %v", st, err)
	}
	if w, o := q.workPolls.Load(), q.orchPolls.Load(); w > 2 || o > 2 {
		t.Errorf("fetch calls: %d of the worker queue, %d of the orchestrator queue; want at most 2 each (not one per worker or slot)", w, o)
	}
}

// TestLocalDispatch runs activities and timers of one orchestration with
// and without local dispatch: with it, none of them goes through a queue
// (not even the start: Runtime.Client starts it in process), and the results,
// histories and activity runs are the same.
func TestLocalDispatch(t *testing.T) {
	for _, local := range []bool{true, false} {
		t.Run(map[bool]string{true: "local", false: "queues"}[local], func(t *testing.T) {
			q := &queueCounter{Store: tempSQLite(t)}
			var runs atomic.Int64
			reg := duroxide.NewRegistry()
			duroxide.Must(duroxide.RegisterActivity(reg, "Inc", func(_ context.Context, i int) (int, error) {
				runs.Add(1)
				return i + 1, nil
			}))
			duroxide.Must(duroxide.RegisterOrchestration(reg, "Steps", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
				v := 0
				for range n {
					if err := ctx.CreateTimer(5 * time.Millisecond).Await(nil); err != nil {
						return 0, err
					}
					var err error
					if v, err = duroxide.CallActivityTyped[int](ctx, "Inc", v); err != nil {
						return 0, err
					}
				}
				// A fan-out: completions of one instance are batched.
				ts := make([]*duroxide.Task, 10)
				for i := range ts {
					ts[i] = ctx.CallActivity("Inc", i)
				}
				if err := ctx.Join(ts...); err != nil {
					return 0, err
				}
				return v, nil
			}))
			st2, _ := runOnStore(t, q, reg, local, "steps", "Steps", 5)
			var v int
			if err := st2.Decode(&v); err != nil || v != 5 {
				t.Fatalf("result %d (%v), want 5; status %+v", v, err, st2)
			}
			if n := runs.Load(); n != 15 {
				t.Errorf("%d activity runs, want 15", n)
			}
			t.Logf("orchestrator fetches %d, worker fetches %d, worker acks %d",
				q.orchFetched.Load(), q.workFetched.Load(), q.workAcked.Load())
			if local {
				// Every activity is leased in memory (free slots suffice);
				// timers and completions are committed inline. A timer whose
				// local commit took longer than its backstop (a loaded
				// machine) may go through the queue: allow two of those.
				if q.workFetched.Load() != 0 || q.orchFetched.Load()+q.workAcked.Load() > 2 {
					t.Errorf("with local dispatch: want no worker fetch and no orchestrator fetch")
				}
			} else if q.workFetched.Load() != 15 || q.orchFetched.Load() < 11 {
				t.Errorf("without local dispatch: want every activity and timer through the queues")
			}
		})
	}
}
