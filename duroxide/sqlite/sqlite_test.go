package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func openFile(t testing.TB, opts ...Option) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "test.db"), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func start(instance string) duroxide.WorkItem {
	return duroxide.WorkItem{Kind: duroxide.WorkStartOrchestration, Instance: instance, ExecutionID: 1, Name: "Orch", Version: "1.0.0", Input: "in"}
}

func startedTurn(exec int64) *duroxide.TurnCommit {
	return &duroxide.TurnCommit{
		ExecutionID:          exec,
		OrchestrationName:    "Orch",
		OrchestrationVersion: "1.0.0",
		Status:               duroxide.StatusRunning,
		HistoryDelta:         []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted, Name: "Orch", Version: "1.0.0", Input: "in"}},
	}
}

func TestSchemaVersionMatchesMigrations(t *testing.T) {
	if SchemaVersion != len(migrations) {
		t.Fatalf("SchemaVersion %d, %d migrations", SchemaVersion, len(migrations))
	}
}

func TestOpenCreatesSchemaAndReopens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "..", "db.sqlite")
	s, err := Open(ctx, path)
	must(t, err)
	var mode string
	must(t, s.wconn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode))
	if mode != "wal" {
		t.Fatalf("journal_mode %q", mode)
	}
	var v int
	must(t, s.wconn.QueryRowContext(ctx, "SELECT max(version) FROM schema_version").Scan(&v))
	if v != SchemaVersion {
		t.Fatalf("schema version %d", v)
	}
	must(t, s.EnqueueOrchestratorItem(ctx, start("a"), 0))
	it, err := s.FetchOrchestrationItem(ctx, time.Minute)
	must(t, err)
	must(t, s.AckOrchestrationItem(ctx, it.LockToken, startedTurn(1)))
	must(t, s.EnqueueOrchestratorItem(ctx, start("b"), 0))
	must(t, s.Close())
	must(t, s.Close()) // idempotent

	s, err = Open(ctx, path, WithSynchronous(SyncFull), WithBusyTimeout(time.Second))
	must(t, err)
	defer s.Close()
	h, err := s.ReadHistory(ctx, "a", 0)
	must(t, err)
	if len(h) != 1 || h[0].Kind != duroxide.EventOrchestrationStarted {
		t.Fatalf("history after reopen: %v", h)
	}
	it, err = s.FetchOrchestrationItem(ctx, time.Minute)
	must(t, err)
	if it == nil || it.Instance != "b" || it.Exists {
		t.Fatalf("fetch after reopen: %+v", it)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(ctx, path)
	must(t, err)
	_, err = s.wconn.ExecContext(ctx, "INSERT INTO schema_version VALUES (?, 0)", SchemaVersion+1)
	must(t, err)
	must(t, s.Close())
	if _, err := Open(ctx, path); err == nil {
		t.Fatal("opened a database with a newer schema")
	}
}

func testStores(t *testing.T, fn func(t *testing.T, s *Store)) {
	t.Run("file", func(t *testing.T) { fn(t, openFile(t)) })
	t.Run("memory", func(t *testing.T) {
		s, err := Open(context.Background(), MemoryPath)
		must(t, err)
		defer s.Close()
		fn(t, s)
	})
}

func TestTurnRoundTrip(t *testing.T) {
	testStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		must(t, s.EnqueueOrchestratorItem(ctx, start("i1"), 0))
		if _, err := s.GetInstance(ctx, "i1"); !errors.Is(err, duroxide.ErrNotFound) {
			t.Fatalf("enqueue created the instance: %v", err)
		}
		it, err := s.FetchOrchestrationItem(ctx, time.Minute)
		must(t, err)
		if it == nil || it.Instance != "i1" || it.Exists || it.ExecutionID != 1 || it.AttemptCount != 1 ||
			it.OrchestrationName != "Orch" || len(it.Messages) != 1 {
			t.Fatalf("first fetch: %+v", it)
		}
		// Locked: nothing else to fetch.
		if again, err := s.FetchOrchestrationItem(ctx, time.Minute); err != nil || again != nil {
			t.Fatalf("second fetch: %+v %v", again, err)
		}
		c := startedTurn(1)
		c.HistoryDelta = append(c.HistoryDelta, duroxide.Event{EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "A"},
			duroxide.Event{EventID: 3, Kind: duroxide.EventTimerCreated, FireAtMs: time.Now().Add(time.Hour).UnixMilli()})
		c.WorkerItems = []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: "i1", ExecutionID: 1, ID: 2, Name: "A"}}
		fire := time.Now().Add(time.Hour).UnixMilli()
		c.OrchestratorItems = []duroxide.WorkItem{{Kind: duroxide.WorkTimerFired, Instance: "i1", ExecutionID: 1, ID: 3, FireAtMs: fire}}
		status := "working"
		c.SetCustomStatus, c.CustomStatus = true, &status
		must(t, s.AckOrchestrationItem(ctx, it.LockToken, c))
		if err := s.AckOrchestrationItem(ctx, it.LockToken, c); !errors.Is(err, duroxide.ErrLockLost) {
			t.Fatalf("second ack: %v", err)
		}

		info, err := s.GetInstance(ctx, "i1")
		must(t, err)
		if info.Status != duroxide.StatusRunning || info.ExecutionID != 1 || info.OrchestrationVersion != "1.0.0" ||
			info.CustomStatus == nil || *info.CustomStatus != "working" || info.CustomStatusVersion != 1 {
			t.Fatalf("instance: %+v", info)
		}
		h, err := s.ReadHistory(ctx, "i1", 0)
		must(t, err)
		if len(h) != 3 || h[2].FireAtMs == 0 {
			t.Fatalf("history: %v", h)
		}
		at, ok, err := s.NextVisibleAt(ctx, duroxide.QueueOrchestrator)
		must(t, err)
		if !ok || at.UnixMilli() != fire {
			t.Fatalf("next visible %v %v, want %v", at, ok, fire)
		}

		// Worker round trip.
		lease, err := s.FetchWorkItem(ctx, time.Minute)
		must(t, err)
		if lease == nil || lease.Item.Name != "A" || lease.AttemptCount != 1 {
			t.Fatalf("lease: %+v", lease)
		}
		if l2, err := s.FetchWorkItem(ctx, time.Minute); err != nil || l2 != nil {
			t.Fatalf("second worker fetch: %+v %v", l2, err)
		}
		must(t, s.RenewWorkItemLock(ctx, lease.LockToken, time.Minute))
		done := duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: "i1", ExecutionID: 1, ID: 2, Result: "r"}
		must(t, s.AckWorkItem(ctx, lease.LockToken, &done))
		if err := s.AckWorkItem(ctx, lease.LockToken, &done); !errors.Is(err, duroxide.ErrLockLost) {
			t.Fatalf("second worker ack: %v", err)
		}

		it, err = s.FetchOrchestrationItem(ctx, time.Minute)
		must(t, err)
		if it == nil || !it.Exists || it.LastEventID != 3 || len(it.Messages) != 1 || it.Messages[0].Kind != duroxide.WorkActivityCompleted ||
			it.ExecutionStatus != duroxide.StatusRunning {
			t.Fatalf("fetch completion: %+v", it)
		}
		// Complete; the pending timer message is untouched (not tagged).
		c = &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", OrchestrationVersion: "1.0.0",
			Status: duroxide.StatusCompleted, Output: "out",
			HistoryDelta: []duroxide.Event{{EventID: 4, Kind: duroxide.EventActivityCompleted, SourceEventID: 2},
				{EventID: 5, Kind: duroxide.EventOrchestrationCompleted, Result: "out"}}}
		must(t, s.AckOrchestrationItem(ctx, it.LockToken, c))
		info, err = s.GetInstance(ctx, "i1")
		must(t, err)
		if info.Status != duroxide.StatusCompleted || info.Output != "out" {
			t.Fatalf("instance after completion: %+v", info)
		}
		execs, err := s.ListExecutions(ctx, "i1")
		must(t, err)
		if len(execs) != 1 || execs[0].Status != duroxide.StatusCompleted || execs[0].EventCount != 5 || execs[0].CompletedAt.IsZero() {
			t.Fatalf("executions: %+v", execs)
		}
		st, err := s.Stats(ctx)
		must(t, err)
		if st.OrchestratorQueue != 1 || st.WorkerQueue != 0 || st.Instances[duroxide.StatusCompleted] != 1 {
			t.Fatalf("stats: %+v", st)
		}
		res, err := s.DeleteInstances(ctx, duroxide.DeleteParams{IDs: []string{"i1"}, Force: false})
		must(t, err)
		if res.InstancesDeleted != 1 || res.EventsDeleted != 5 || res.ExecutionsDeleted != 1 || res.QueueMessagesDeleted != 1 {
			t.Fatalf("delete: %+v", res)
		}
	})
}

func TestDuplicateEventRollsBack(t *testing.T) {
	testStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		must(t, s.EnqueueOrchestratorItem(ctx, start("d"), 0))
		it, _ := s.FetchOrchestrationItem(ctx, time.Minute)
		must(t, s.AckOrchestrationItem(ctx, it.LockToken, startedTurn(1)))
		must(t, s.EnqueueOrchestratorItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkExternalRaised, Instance: "d", Name: "e"}, 0))
		it, _ = s.FetchOrchestrationItem(ctx, time.Minute)
		c := startedTurn(1)
		c.WorkerItems = []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: "d", ExecutionID: 1, ID: 2}}
		err := s.AckOrchestrationItem(ctx, it.LockToken, c)
		if !errors.Is(err, duroxide.ErrDuplicateEvent) || duroxide.IsRetryable(err) {
			t.Fatalf("duplicate ack: %v", err)
		}
		// Nothing changed and the lock is still held.
		if l, _ := s.FetchWorkItem(ctx, time.Minute); l != nil {
			t.Fatal("worker item of a failed ack was committed")
		}
		if again, _ := s.FetchOrchestrationItem(ctx, time.Minute); again != nil {
			t.Fatal("lock released by a failed ack")
		}
		must(t, s.RenewOrchestrationItemLock(ctx, it.LockToken, time.Minute))
		must(t, s.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch"}))
	})
}

func TestLockExpiry(t *testing.T) {
	testStores(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		lock := 150 * time.Millisecond
		must(t, s.EnqueueOrchestratorItem(ctx, start("x"), 0))
		it, _ := s.FetchOrchestrationItem(ctx, lock)
		must(t, s.EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "x", ExecutionID: 1, ID: 2}))
		lease, _ := s.FetchWorkItem(ctx, lock)
		time.Sleep(lock + 50*time.Millisecond)
		if err := s.RenewOrchestrationItemLock(ctx, it.LockToken, time.Minute); !errors.Is(err, duroxide.ErrLockLost) {
			t.Fatalf("renew expired: %v", err)
		}
		if err := s.RenewWorkItemLock(ctx, lease.LockToken, time.Minute); !errors.Is(err, duroxide.ErrLockLost) {
			t.Fatalf("renew expired work: %v", err)
		}
		it2, err := s.FetchOrchestrationItem(ctx, time.Minute)
		must(t, err)
		if it2 == nil || it2.LockToken == it.LockToken || it2.AttemptCount != 2 {
			t.Fatalf("refetch: %+v", it2)
		}
		if err := s.AckOrchestrationItem(ctx, it.LockToken, startedTurn(1)); !errors.Is(err, duroxide.ErrLockLost) {
			t.Fatalf("stale ack: %v", err)
		}
		l2, err := s.FetchWorkItem(ctx, time.Minute)
		must(t, err)
		if l2 == nil || l2.AttemptCount != 2 {
			t.Fatalf("work refetch: %+v", l2)
		}
		if err := s.AckWorkItem(ctx, lease.LockToken, nil); !errors.Is(err, duroxide.ErrLockLost) {
			t.Fatalf("stale work ack: %v", err)
		}
		// Abandon with ignoreAttempt never goes below zero.
		must(t, s.AbandonWorkItem(ctx, l2.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: true}))
		l3, _ := s.FetchWorkItem(ctx, time.Minute)
		if l3.AttemptCount != 2 {
			t.Fatalf("attempts after ignore-abandon: %d", l3.AttemptCount)
		}
		must(t, s.AbandonOrchestrationItem(ctx, it2.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: true}))
		must(t, s.AbandonOrchestrationItem(ctx, mustFetch(t, s).LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: true}))
		it4 := mustFetch(t, s)
		if it4.AttemptCount != 2 {
			t.Fatalf("orchestration attempts after ignore-abandon: %d", it4.AttemptCount)
		}
	})
}

func mustFetch(t *testing.T, s *Store) *duroxide.OrchestrationItem {
	t.Helper()
	it, err := s.FetchOrchestrationItem(context.Background(), time.Minute)
	must(t, err)
	if it == nil {
		t.Fatal("nothing to fetch")
	}
	return it
}

func TestNotificationsAcrossHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "n.db")
	rt, err := Open(ctx, path)
	must(t, err)
	defer rt.Close()
	client, err := Open(ctx, path)
	must(t, err)
	defer client.Close()

	var mu sync.Mutex
	got := map[duroxide.Queue]int{}
	stop := rt.Watch(func(q duroxide.Queue) {
		mu.Lock()
		got[q]++
		mu.Unlock()
	})
	count := func(q duroxide.Queue) int {
		mu.Lock()
		defer mu.Unlock()
		return got[q]
	}
	must(t, client.EnqueueOrchestratorItem(ctx, start("n"), 0))
	if count(duroxide.QueueOrchestrator) != 1 {
		t.Fatalf("enqueue on another handle not notified: %v", got)
	}
	it := mustFetch(t, rt)
	// A message arriving while locked: its enqueue notifies, and the ack
	// notifies again because it is now fetchable.
	must(t, client.EnqueueOrchestratorItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkExternalRaised, Instance: "n", Name: "e"}, 0))
	c := startedTurn(1)
	c.WorkerItems = []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: "n", ExecutionID: 1, ID: 2}}
	must(t, rt.AckOrchestrationItem(ctx, it.LockToken, c))
	if count(duroxide.QueueOrchestrator) != 3 || count(duroxide.QueueWorker) != 1 {
		t.Fatalf("after ack: %v", got)
	}
	it = mustFetch(t, rt)
	must(t, rt.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch",
		Status: duroxide.StatusFailed, Output: "boom", HistoryDelta: []duroxide.Event{{EventID: 2, Kind: duroxide.EventOrchestrationFailed}}}))
	if count(duroxide.QueueStatus) != 1 || count(duroxide.QueueOrchestrator) != 3 {
		t.Fatalf("after terminal ack: %v", got)
	}
	stop()
	stop()
	must(t, client.EnqueueOrchestratorItem(ctx, start("m"), 0))
	if count(duroxide.QueueOrchestrator) != 3 {
		t.Fatalf("notified after stop: %v", got)
	}
	// A separate file does not share notifications.
	other := openFile(t)
	var n atomic.Int32
	other.Watch(func(duroxide.Queue) { n.Add(1) })
	must(t, client.EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "m"}))
	if n.Load() != 0 {
		t.Fatal("notification crossed files")
	}
}

func TestConcurrentFetchersEachInstanceOnce(t *testing.T) {
	ctx := context.Background()
	s := openFile(t)
	const n = 50
	for i := range n {
		must(t, s.EnqueueOrchestratorItem(ctx, start("c"+string(rune('A'+i%26))+string(rune('a'+i/26))), 0))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				it, err := s.FetchOrchestrationItem(ctx, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if it == nil {
					return
				}
				mu.Lock()
				seen[it.Instance]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("fetched %d instances, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("%s fetched %d times", id, c)
		}
	}
}

func TestListInstancesCursor(t *testing.T) {
	ctx := context.Background()
	s := openFile(t)
	for _, id := range []string{"p-1", "p-2", "p-3", "q-1", "p-4"} {
		must(t, s.EnqueueOrchestratorItem(ctx, start(id), 0))
		it := mustFetch(t, s)
		must(t, s.AckOrchestrationItem(ctx, it.LockToken, startedTurn(1)))
	}
	var got []string
	cursor := ""
	for {
		page, err := s.ListInstances(ctx, duroxide.ListFilter{InstancePrefix: "p-", Limit: 2, Cursor: cursor})
		must(t, err)
		for _, in := range page.Instances {
			got = append(got, in.Instance)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(got) != 4 || got[0] != "p-4" || got[3] != "p-1" {
		t.Fatalf("listed %v", got)
	}
	page, err := s.ListInstances(ctx, duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusCompleted}})
	must(t, err)
	if len(page.Instances) != 0 {
		t.Fatalf("status filter: %v", page.Instances)
	}
}

// TestFanoutTwoHandles runs a runtime-like load with dispatchers on one
// handle and workers plus client on another handle of the same file: writes
// of both must serialize without busy errors, and notifications cross.
func TestFanoutTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "two.db")
	a, err := Open(ctx, path)
	must(t, err)
	defer a.Close()
	b, err := Open(ctx, path)
	must(t, err)
	defer b.Close()
	runFanout(t, a, b, 200, 2, 2, 20, 5)
	st, err := a.Stats(ctx)
	must(t, err)
	if st.Instances[duroxide.StatusCompleted] != 200 || st.OrchestratorQueue != 0 || st.WorkerQueue != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestFanoutTwoProcesses is TestFanoutTwoHandles with handles that share
// nothing in-process (as two processes would): writers then serialize on
// SQLite's own lock (BEGIN IMMEDIATE and the busy timeout) and must not
// fail; wake-ups come from polling only.
func TestFanoutTwoProcesses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "two.db")
	private := func(c *config) { c.privateHub = true }
	a, err := Open(ctx, path, private)
	must(t, err)
	defer a.Close()
	b, err := Open(ctx, path, private)
	must(t, err)
	defer b.Close()
	runFanout(t, a, b, 200, 2, 2, 20, 5)
	st, err := b.Stats(ctx)
	must(t, err)
	if st.Instances[duroxide.StatusCompleted] != 200 || st.OrchestratorQueue != 0 || st.WorkerQueue != 0 {
		t.Fatalf("stats: %+v", st)
	}
}
