package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func start(instance string) duroxide.WorkItem {
	return duroxide.WorkItem{Kind: duroxide.WorkStartOrchestration, Instance: instance, ExecutionID: 1, Name: "Orch", Version: "1.0.0", Input: `"in"`}
}

func mustFetch(t *testing.T, st *Store, lock time.Duration) *duroxide.OrchestrationItem {
	t.Helper()
	it, err := st.FetchOrchestrationItem(testCtx(t), lock)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if it == nil {
		t.Fatal("fetch: nothing available")
	}
	return it
}

func TestRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	st := openStore(t)

	if it, err := st.FetchOrchestrationItem(ctx, time.Minute); err != nil || it != nil {
		t.Fatalf("empty fetch = %v, %v", it, err)
	}
	if err := st.EnqueueOrchestratorItem(ctx, start("i1"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetInstance(ctx, "i1"); !errors.Is(err, duroxide.ErrNotFound) {
		t.Fatalf("enqueue created the instance: %v", err)
	}
	it := mustFetch(t, st, time.Minute)
	if it.Instance != "i1" || it.Exists || it.AttemptCount != 1 || len(it.Messages) != 1 || it.Messages[0].Kind != duroxide.WorkStartOrchestration {
		t.Fatalf("item = %+v", it)
	}
	status := "half"
	fire := time.Now().Add(300 * time.Millisecond).UnixMilli()
	err := st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{
		ExecutionID: 1, OrchestrationName: "Orch", OrchestrationVersion: "1.0.0", Status: duroxide.StatusRunning,
		HistoryDelta: []duroxide.Event{
			{EventID: 1, Kind: duroxide.EventOrchestrationStarted, Name: "Orch", Input: `"in"`},
			{EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "A", Input: `"x"`},
			{EventID: 3, Kind: duroxide.EventTimerCreated, FireAtMs: fire},
		},
		WorkerItems:       []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: "i1", ExecutionID: 1, ID: 2, Name: "A", Input: `"x"`}},
		OrchestratorItems: []duroxide.WorkItem{{Kind: duroxide.WorkTimerFired, Instance: "i1", ExecutionID: 1, ID: 3, FireAtMs: fire}},
		SetCustomStatus:   true, CustomStatus: &status,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1}); !errors.Is(err, duroxide.ErrLockLost) || !errors.As(err, new(*Error)) {
		t.Fatalf("second ack: %v", err)
	}
	at, ok, err := st.NextVisibleAt(ctx, duroxide.QueueOrchestrator)
	if err != nil || !ok || at.Before(time.Now()) || at.After(time.Now().Add(time.Second)) {
		t.Fatalf("NextVisibleAt = %v %v %v", at, ok, err)
	}
	if _, ok, _ := st.NextVisibleAt(ctx, duroxide.QueueWorker); ok {
		t.Fatal("worker queue has a delayed message")
	}

	lease, err := st.FetchWorkItem(ctx, time.Minute)
	if err != nil || lease == nil || lease.Item.Name != "A" || lease.AttemptCount != 1 {
		t.Fatalf("work = %+v, %v", lease, err)
	}
	if l2, err := st.FetchWorkItem(ctx, time.Minute); err != nil || l2 != nil {
		t.Fatalf("locked work item handed out twice: %+v %v", l2, err)
	}
	if err := st.RenewWorkItemLock(ctx, lease.LockToken, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.AckWorkItem(ctx, lease.LockToken, &duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: "i1", ExecutionID: 1, ID: 2, Result: `"y"`}); err != nil {
		t.Fatal(err)
	}
	if err := st.RenewWorkItemLock(ctx, lease.LockToken, time.Minute); !errors.Is(err, duroxide.ErrLockLost) {
		t.Fatalf("renew after ack: %v", err)
	}

	it = mustFetch(t, st, time.Minute)
	if !it.Exists || it.ExecutionID != 1 || it.LastEventID != 3 || it.ExecutionStatus != duroxide.StatusRunning ||
		it.OrchestrationName != "Orch" || it.OrchestrationVersion != "1.0.0" || it.CreatedAtMs == 0 ||
		len(it.Messages) != 1 || it.Messages[0].Kind != duroxide.WorkActivityCompleted {
		t.Fatalf("second item = %+v", it)
	}
	if err := st.RenewOrchestrationItemLock(ctx, it.LockToken, time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(time.UnixMilli(fire)) + 50*time.Millisecond)
	// The timer is visible now but the instance is locked.
	if x, err := st.FetchOrchestrationItem(ctx, time.Minute); err != nil || x != nil {
		t.Fatalf("locked instance fetched: %+v %v", x, err)
	}
	err = st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{
		ExecutionID: 1, Status: duroxide.StatusRunning,
		HistoryDelta: []duroxide.Event{{EventID: 4, Kind: duroxide.EventActivityCompleted, SourceEventID: 2, Result: `"y"`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	it = mustFetch(t, st, time.Minute)
	if len(it.Messages) != 1 || it.Messages[0].Kind != duroxide.WorkTimerFired {
		t.Fatalf("third item = %+v", it)
	}
	err = st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{
		ExecutionID: 1, Status: duroxide.StatusCompleted, Output: `"done"`,
		HistoryDelta: []duroxide.Event{
			{EventID: 5, Kind: duroxide.EventTimerFired, SourceEventID: 3, FireAtMs: fire},
			{EventID: 6, Kind: duroxide.EventOrchestrationCompleted, Result: `"done"`},
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	h, err := st.ReadHistory(ctx, "i1", 0)
	if err != nil || len(h) != 6 || h[0].Kind != duroxide.EventOrchestrationStarted || h[5].Result != `"done"` || h[2].FireAtMs != fire {
		t.Fatalf("history = %v, %v", h, err)
	}
	if h, err := st.ReadHistory(ctx, "nope", 0); err != nil || h == nil || len(h) != 0 {
		t.Fatalf("unknown history = %#v, %v", h, err)
	}
	info, err := st.GetInstance(ctx, "i1")
	if err != nil || info.Status != duroxide.StatusCompleted || info.Output != `"done"` || info.CustomStatus == nil ||
		*info.CustomStatus != "half" || info.CustomStatusVersion != 1 || info.CreatedAt.IsZero() {
		t.Fatalf("info = %+v, %v", info, err)
	}
	cs, err := st.GetCustomStatus(ctx, "i1", 0)
	if err != nil || !cs.Changed || cs.Version != 1 || *cs.Value != "half" {
		t.Fatalf("custom status = %+v, %v", cs, err)
	}
	if cs, _ := st.GetCustomStatus(ctx, "i1", 1); cs.Changed {
		t.Fatal("custom status changed at version 1")
	}
	execs, err := st.ListExecutions(ctx, "i1")
	if err != nil || len(execs) != 1 || execs[0].EventCount != 6 || execs[0].CompletedAt.IsZero() {
		t.Fatalf("executions = %+v, %v", execs, err)
	}
	stats, err := st.Stats(ctx)
	if err != nil || stats.Instances[duroxide.StatusCompleted] != 1 || stats.OrchestratorQueue != 0 || stats.WorkerQueue != 0 {
		t.Fatalf("stats = %+v, %v", stats, err)
	}
	res, err := st.DeleteInstances(ctx, duroxide.DeleteParams{IDs: []string{"i1"}, Force: false})
	if err != nil || res.InstancesDeleted != 1 || res.EventsDeleted != 6 || res.ExecutionsDeleted != 1 {
		t.Fatalf("delete = %+v, %v", res, err)
	}
}

func TestDuplicateEventRollsBack(t *testing.T) {
	ctx := testCtx(t)
	st := openStore(t)
	if err := st.EnqueueOrchestratorItem(ctx, start("d"), 0); err != nil {
		t.Fatal(err)
	}
	it := mustFetch(t, st, time.Minute)
	err := st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{
		ExecutionID: 1, OrchestrationName: "Orch", Status: duroxide.StatusRunning,
		HistoryDelta: []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}, {EventID: 1, Kind: duroxide.EventTimerCreated}},
		WorkerItems:  []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: "d", ID: 1}},
	})
	if !errors.Is(err, duroxide.ErrDuplicateEvent) || duroxide.IsRetryable(err) {
		t.Fatalf("ack = %v", err)
	}
	if _, err := st.GetInstance(ctx, "d"); !errors.Is(err, duroxide.ErrNotFound) {
		t.Fatalf("instance created by failed ack: %v", err)
	}
	if l, _ := st.FetchWorkItem(ctx, time.Minute); l != nil {
		t.Fatal("worker item of failed ack enqueued")
	}
	// The lock is still held.
	if err := st.RenewOrchestrationItemLock(ctx, it.LockToken, time.Minute); err != nil {
		t.Fatal(err)
	}
}

func TestListInstancesPaging(t *testing.T) {
	ctx := testCtx(t)
	st := openStore(t)
	for i := range 7 {
		id := fmt.Sprintf("p-%d", i)
		if err := st.EnqueueOrchestratorItem(ctx, start(id), 0); err != nil {
			t.Fatal(err)
		}
		it := mustFetch(t, st, time.Minute)
		status := duroxide.StatusRunning
		if i%2 == 0 {
			status = duroxide.StatusCompleted
		}
		if err := st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", Status: status,
			HistoryDelta: []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	var all []string
	cursor := ""
	for {
		page, err := st.ListInstances(ctx, duroxide.ListFilter{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range page.Instances {
			all = append(all, in.Instance)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if fmt.Sprint(all) != "[p-6 p-5 p-4 p-3 p-2 p-1 p-0]" {
		t.Fatalf("pages = %v", all)
	}
	page, err := st.ListInstances(ctx, duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusCompleted}, InstancePrefix: "p-", OrchestrationName: "Orch"})
	if err != nil || len(page.Instances) != 4 {
		t.Fatalf("completed = %+v, %v", page, err)
	}
	res, err := st.DeleteInstancesBulk(ctx, duroxide.BulkDeleteFilter{Limit: 3})
	if err != nil || res.InstancesDeleted != 3 {
		t.Fatalf("bulk = %+v %v", res, err)
	}
}

// Several goroutines on several *Store handles fetch concurrently: an
// instance never has two holders, and every message is processed once.
func TestConcurrentFetchSeveralHandles(t *testing.T) {
	ctx := testCtx(t)
	schema := cluster.NewSchemaName(t)
	stores := []*Store{openSchema(t, schema), openSchema(t, schema), openSchema(t, schema)}
	const instances, perInstance = 30, 4
	for i := range instances {
		for j := range perInstance {
			it := duroxide.WorkItem{Kind: duroxide.WorkExternalRaised, Instance: fmt.Sprintf("c-%d", i), Name: fmt.Sprint(j)}
			if err := stores[0].EnqueueOrchestratorItem(ctx, it, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	var (
		mu        sync.Mutex
		held      = map[string]bool{}
		processed = map[string]int{}
		total     atomic.Int64
		emptyRuns atomic.Int64
		wg        sync.WaitGroup
	)
	for g := range 9 {
		st := stores[g%len(stores)]
		wg.Go(func() {
			for total.Load() < instances*perInstance {
				it, err := st.FetchOrchestrationItem(ctx, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if it == nil {
					emptyRuns.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				mu.Lock()
				if held[it.Instance] {
					t.Errorf("instance %s fetched while held", it.Instance)
				}
				held[it.Instance] = true
				processed[it.Instance] += len(it.Messages)
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				held[it.Instance] = false
				mu.Unlock()
				if err := st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", Status: duroxide.StatusRunning}); err != nil {
					t.Error(err)
					return
				}
				total.Add(int64(len(it.Messages)))
			}
		})
	}
	wg.Wait()
	if total.Load() != instances*perInstance {
		t.Fatalf("processed %d messages, want %d", total.Load(), instances*perInstance)
	}
	for i := range instances {
		if n := processed[fmt.Sprintf("c-%d", i)]; n != perInstance {
			t.Errorf("instance c-%d: %d messages", i, n)
		}
	}
	t.Logf("empty fetches: %d", emptyRuns.Load())
}

// With many ready instances and concurrent fetchers, no fetch returns
// nothing while work is available (the race the Rust provider fixed).
func TestConcurrentFetchNeverEmptyWhileWorkAvailable(t *testing.T) {
	ctx := testCtx(t)
	schema := cluster.NewSchemaName(t)
	a, b := openSchema(t, schema), openSchema(t, schema)
	const n = 16
	for i := range n {
		if err := a.EnqueueOrchestratorItem(ctx, start(fmt.Sprintf("r-%d", i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg    sync.WaitGroup
		got   sync.Map
		count atomic.Int64
	)
	for g := range n {
		st := []*Store{a, b}[g%2]
		wg.Go(func() {
			it, err := st.FetchOrchestrationItem(ctx, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			if it == nil {
				t.Error("fetch returned nothing although instances were available")
				return
			}
			if _, dup := got.LoadOrStore(it.Instance, true); dup {
				t.Errorf("instance %s fetched twice", it.Instance)
			}
			count.Add(1)
		})
	}
	wg.Wait()
	if count.Load() != n {
		t.Fatalf("fetched %d of %d", count.Load(), n)
	}
}

func TestConcurrentWorkerFetch(t *testing.T) {
	ctx := testCtx(t)
	schema := cluster.NewSchemaName(t)
	stores := []*Store{openSchema(t, schema), openSchema(t, schema)}
	const n = 60
	for i := range n {
		if err := stores[0].EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "w", ExecutionID: 1, ID: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		seen sync.Map
		done atomic.Int64
		wg   sync.WaitGroup
	)
	for g := range 8 {
		st := stores[g%2]
		wg.Go(func() {
			for done.Load() < n {
				l, err := st.FetchWorkItem(ctx, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if l == nil {
					continue
				}
				if _, dup := seen.LoadOrStore(l.Item.ID, true); dup {
					t.Errorf("work item %d delivered twice", l.Item.ID)
				}
				if err := st.AckWorkItem(ctx, l.LockToken, nil); err != nil {
					t.Error(err)
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if done.Load() != n {
		t.Fatalf("done %d", done.Load())
	}
}

func TestLockExpiryTakeoverAcrossHandles(t *testing.T) {
	ctx := testCtx(t)
	schema := cluster.NewSchemaName(t)
	a, b := openSchema(t, schema), openSchema(t, schema)
	if err := a.EnqueueOrchestratorItem(ctx, start("x"), 0); err != nil {
		t.Fatal(err)
	}
	it := mustFetch(t, a, 300*time.Millisecond)
	if x, _ := b.FetchOrchestrationItem(ctx, time.Minute); x != nil {
		t.Fatal("b fetched a locked instance")
	}
	time.Sleep(400 * time.Millisecond)
	it2 := mustFetch(t, b, time.Minute)
	if it2.LockToken == it.LockToken || it2.AttemptCount != 2 {
		t.Fatalf("takeover = %+v", it2)
	}
	if err := a.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1}); !errors.Is(err, duroxide.ErrLockLost) {
		t.Fatalf("stale ack: %v", err)
	}
	if err := a.AbandonOrchestrationItem(ctx, it.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}); !errors.Is(err, duroxide.ErrLockLost) {
		t.Fatalf("stale abandon: %v", err)
	}
	if err := b.AbandonOrchestrationItem(ctx, it2.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: true}); err != nil {
		t.Fatal(err)
	}
	it3 := mustFetch(t, a, time.Minute)
	if it3.AttemptCount != 2 {
		t.Fatalf("attempt after ignore-attempt abandon = %d", it3.AttemptCount)
	}

	// Worker lock expiry.
	if err := a.EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "x", ID: 9}); err != nil {
		t.Fatal(err)
	}
	l1, err := a.FetchWorkItem(ctx, 200*time.Millisecond)
	if err != nil || l1 == nil {
		t.Fatal(l1, err)
	}
	time.Sleep(300 * time.Millisecond)
	l2, err := b.FetchWorkItem(ctx, time.Minute)
	if err != nil || l2 == nil || l2.AttemptCount != 2 {
		t.Fatalf("worker takeover = %+v, %v", l2, err)
	}
	if err := a.AckWorkItem(ctx, l1.LockToken, nil); !errors.Is(err, duroxide.ErrLockLost) {
		t.Fatalf("stale worker ack: %v", err)
	}
}

func TestConcurrentMigrations(t *testing.T) {
	ctx := testCtx(t)
	schema := cluster.NewSchemaName(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			st, err := Open(ctx, cluster.URL, WithSchema(schema), WithPoolSize(2))
			if err != nil {
				errs <- err
				return
			}
			st.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := openSchema(t, schema)
	var n, max int
	if err := st.pool.QueryRow(ctx, "SELECT count(*), max(version) FROM "+st.q+".schema_migrations").Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != LatestSchemaVersion() || max != LatestSchemaVersion() {
		t.Fatalf("schema_migrations: %d rows, max %d; want %d", n, max, LatestSchemaVersion())
	}
}

func TestSchemaIsolation(t *testing.T) {
	ctx := testCtx(t)
	a, b := openStore(t), openStore(t)
	if err := a.EnqueueOrchestratorItem(ctx, start("iso"), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "iso"}); err != nil {
		t.Fatal(err)
	}
	if it, err := b.FetchOrchestrationItem(ctx, time.Minute); err != nil || it != nil {
		t.Fatalf("b sees a's orchestrator queue: %v %v", it, err)
	}
	if l, err := b.FetchWorkItem(ctx, time.Minute); err != nil || l != nil {
		t.Fatalf("b sees a's worker queue: %v %v", l, err)
	}
	if mustFetch(t, a, time.Minute).Instance != "iso" {
		t.Fatal("wrong instance")
	}
	// Notifications are per schema too.
	var bCalls atomic.Int64
	stop := b.Watch(func(duroxide.Queue) { bCalls.Add(1) })
	defer stop()
	<-b.notify.ready()
	time.Sleep(50 * time.Millisecond)
	before := bCalls.Load()
	if err := a.EnqueueOrchestratorItem(ctx, start("iso2"), 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if bCalls.Load() != before {
		t.Fatal("b notified of a write in a's schema")
	}
}

func TestInvalidSchemaName(t *testing.T) {
	for _, name := range []string{"", "Upper", "a-b", "1abc", `x"y`} {
		if _, err := Open(testCtx(t), cluster.URL, WithSchema(name)); err == nil {
			t.Errorf("schema %q accepted", name)
		}
	}
}

func TestNotifyLatency(t *testing.T) {
	ctx := testCtx(t)
	schema := cluster.NewSchemaName(t)
	runtime, client := openSchema(t, schema), openSchema(t, schema)
	got := make(chan duroxide.Queue, 100)
	stop := runtime.Watch(func(q duroxide.Queue) {
		select {
		case got <- q:
		default:
		}
	})
	defer stop()
	select {
	case <-runtime.notify.ready():
	case <-ctx.Done():
		t.Fatal("listener never connected")
	}
	// Drain anything sent before.
	time.Sleep(20 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	wait := func(want duroxide.Queue, sent time.Time) time.Duration {
		t.Helper()
		for {
			select {
			case q := <-got:
				if q == want {
					return time.Since(sent)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("no notification for queue %d", want)
			}
		}
	}
	var worst time.Duration
	for i := range 5 {
		sent := time.Now()
		if err := client.EnqueueOrchestratorItem(ctx, start(fmt.Sprintf("n-%d", i)), 0); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, wait(duroxide.QueueOrchestrator, sent))
	}
	sent := time.Now()
	if err := client.EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "n-0"}); err != nil {
		t.Fatal(err)
	}
	worst = max(worst, wait(duroxide.QueueWorker, sent))

	it := mustFetch(t, client, time.Minute)
	sent = time.Now()
	if err := client.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", Status: duroxide.StatusFailed, Output: "boom"}); err != nil {
		t.Fatal(err)
	}
	worst = max(worst, wait(duroxide.QueueStatus, sent))
	t.Logf("worst notification latency: %v", worst)
	if worst > 250*time.Millisecond {
		t.Errorf("notification latency %v", worst)
	}

	// After stop, the watcher is not called any more.
	stop()
	time.Sleep(20 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	if err := client.EnqueueOrchestratorItem(ctx, start("after-stop"), 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if len(got) != 0 {
		t.Fatal("stopped watcher called")
	}
}

// The database restarts: calls fail with retryable errors while it is
// down, the pool reconnects afterwards, and the listener reconnects and
// wakes its watchers.
func TestRestart(t *testing.T) {
	if cluster.External() {
		t.Skip("cannot restart an external server")
	}
	ctx := testCtx(t)
	st := openStore(t)
	woke := make(chan duroxide.Queue, 100)
	stop := st.Watch(func(q duroxide.Queue) {
		select {
		case woke <- q:
		default:
		}
	})
	defer stop()
	<-st.notify.ready()
	if err := st.EnqueueOrchestratorItem(ctx, start("r"), 0); err != nil {
		t.Fatal(err)
	}
	it := mustFetch(t, st, time.Minute)

	time.Sleep(20 * time.Millisecond)
	for len(woke) > 0 {
		<-woke
	}
	if err := cluster.StopServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			cluster.StartServer(context.Background())
		}
	}()
	_, err := st.FetchOrchestrationItem(ctx, time.Minute)
	if err == nil || !duroxide.IsRetryable(err) {
		t.Fatalf("fetch while down: %v (retryable=%v)", err, duroxide.IsRetryable(err))
	}
	err = st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", Status: duroxide.StatusRunning})
	if err == nil || !duroxide.IsRetryable(err) {
		t.Fatalf("ack while down: %v (retryable=%v)", err, duroxide.IsRetryable(err))
	}
	t.Logf("error while down: %v", err)

	if err := cluster.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// The store works again, possibly after a few retryable failures on
	// connections that died with the old server.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", Status: duroxide.StatusRunning,
			HistoryDelta: []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}}})
		if err == nil {
			break
		}
		if !duroxide.IsRetryable(err) || time.Now().After(deadline) {
			t.Fatalf("ack after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	info, err := st.GetInstance(ctx, "r")
	if err != nil || info.Status != duroxide.StatusRunning {
		t.Fatalf("after restart: %+v %v", info, err)
	}
	// The listener reconnected and woke the watcher.
	select {
	case <-woke:
	case <-time.After(15 * time.Second):
		t.Fatal("listener did not wake watchers after reconnecting")
	}
	<-st.notify.ready()
	if err := st.EnqueueOrchestratorItem(ctx, start("r2"), 0); err != nil {
		t.Fatal(err)
	}
	for notified := false; !notified; {
		select {
		case q := <-woke:
			notified = q == duroxide.QueueOrchestrator
		case <-time.After(5 * time.Second):
			t.Fatal("no notification after reconnect")
		}
	}

	// A quick restart under a warm pool: every call succeeds or fails
	// retryably, and the store recovers.
	for range 4 {
		if _, err := st.Stats(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := cluster.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	failures := 0
	for ok := 0; ok < 5; {
		_, err := st.FetchOrchestrationItem(ctx, time.Minute)
		if err == nil {
			_, err = st.Stats(ctx)
		}
		switch {
		case err == nil:
			ok++
		case duroxide.IsRetryable(err):
			failures++
			t.Logf("after restart: %v", err)
			if failures > 50 {
				t.Fatalf("still failing after restart: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		default:
			t.Fatalf("non-retryable error after restart: %v", err)
		}
	}
	t.Logf("retryable failures after a warm restart: %d", failures)
}

func TestDeleteTreeAndZombieAck(t *testing.T) {
	ctx := testCtx(t)
	st := openStore(t)
	ack := func(it *duroxide.OrchestrationItem, c duroxide.TurnCommit) {
		t.Helper()
		if err := st.AckOrchestrationItem(ctx, it.LockToken, &c); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.EnqueueOrchestratorItem(ctx, start("root"), 0); err != nil {
		t.Fatal(err)
	}
	it := mustFetch(t, st, time.Minute)
	child := start("root::child")
	child.ParentInstance, child.ParentExecutionID, child.ParentID = "root", 1, 2
	pending := start("root::pending")
	pending.ParentInstance = "root"
	ack(it, duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", Status: duroxide.StatusRunning,
		HistoryDelta:      []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}},
		OrchestratorItems: []duroxide.WorkItem{child, pending}})
	// Run the child's first turn only.
	var childItem, pendingItem *duroxide.OrchestrationItem
	for range 2 {
		x := mustFetch(t, st, time.Minute)
		if x.Instance == "root::child" {
			childItem = x
		} else {
			pendingItem = x
		}
	}
	ack(childItem, duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", ParentInstance: "root", Status: duroxide.StatusRunning,
		HistoryDelta: []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}}})
	if kids, err := st.ListChildren(ctx, "root"); err != nil || len(kids) != 1 || kids[0] != "root::child" {
		t.Fatalf("children = %v %v", kids, err)
	}
	if _, err := st.DeleteInstances(ctx, duroxide.DeleteParams{IDs: []string{"root::child"}, Force: true}); !errors.Is(err, duroxide.ErrIsSubOrchestration) {
		t.Fatalf("delete child: %v", err)
	}
	if _, err := st.DeleteInstances(ctx, duroxide.DeleteParams{IDs: []string{"root"}, Force: false}); !errors.Is(err, duroxide.ErrInstanceRunning) {
		t.Fatalf("delete running: %v", err)
	}
	if _, err := st.DeleteInstances(ctx, duroxide.DeleteParams{IDs: []string{"nope"}, Force: true}); !errors.Is(err, duroxide.ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
	res, err := st.DeleteInstances(ctx, duroxide.DeleteParams{IDs: []string{"root"}, Force: true})
	if err != nil || res.InstancesDeleted != 2 || res.EventsDeleted != 2 || res.QueueMessagesDeleted != 1 {
		t.Fatalf("delete tree = %+v %v", res, err)
	}
	// The pending child's in-flight first turn must not re-create it.
	err = st.AckOrchestrationItem(ctx, pendingItem.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", ParentInstance: "root", Status: duroxide.StatusRunning})
	if !errors.Is(err, duroxide.ErrLockLost) {
		t.Fatalf("zombie ack: %v", err)
	}
	if page, _ := st.ListInstances(ctx, duroxide.ListFilter{}); len(page.Instances) != 0 {
		t.Fatalf("left: %+v", page.Instances)
	}
}

func TestPrune(t *testing.T) {
	ctx := testCtx(t)
	st := openStore(t)
	if err := st.EnqueueOrchestratorItem(ctx, start("cn"), 0); err != nil {
		t.Fatal(err)
	}
	for exec := int64(1); exec <= 4; exec++ {
		it := mustFetch(t, st, time.Minute)
		c := duroxide.TurnCommit{ExecutionID: exec, OrchestrationName: "Orch", Status: duroxide.StatusContinuedAsNew, Output: "next",
			HistoryDelta:      []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}, {EventID: 2, Kind: duroxide.EventOrchestrationContinuedAsNew}},
			OrchestratorItems: []duroxide.WorkItem{{Kind: duroxide.WorkContinueAsNew, Instance: "cn", ExecutionID: exec}}}
		if exec == 4 {
			c.Status, c.OrchestratorItems = duroxide.StatusRunning, nil
			c.HistoryDelta = c.HistoryDelta[:1]
		}
		if err := st.AckOrchestrationItem(ctx, it.LockToken, &c); err != nil {
			t.Fatal(err)
		}
	}
	if h, _ := st.ReadHistory(ctx, "cn", 2); len(h) != 2 {
		t.Fatalf("exec 2 history = %v", h)
	}
	res, err := st.PruneExecutions(ctx, "cn", duroxide.PruneOptions{KeepLast: 2})
	if err != nil || res.ExecutionsDeleted != 2 || res.EventsDeleted != 4 {
		t.Fatalf("prune = %+v %v", res, err)
	}
	execs, _ := st.ListExecutions(ctx, "cn")
	if len(execs) != 2 || execs[0].ExecutionID != 3 {
		t.Fatalf("left = %+v", execs)
	}
	if _, err := st.PruneExecutions(ctx, "nope", duroxide.PruneOptions{}); !errors.Is(err, duroxide.ErrNotFound) {
		t.Fatalf("prune unknown: %v", err)
	}
}

func TestClosedStoreErrors(t *testing.T) {
	st := openStore(t)
	st.Close()
	_, err := st.FetchOrchestrationItem(context.Background(), time.Second)
	if err == nil || duroxide.IsRetryable(err) {
		t.Fatalf("fetch on closed store: %v", err)
	}
	stop := st.Watch(func(duroxide.Queue) {})
	stop()
}

// A slow round trip must not move a timer's visible time when the clocks
// agree, and a real skew between the clocks must still be corrected.
func TestVisibleAtAcrossASlowRoundTrip(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	t1 := t0.Add(14 * time.Millisecond) // a round trip slowed by load
	at := t0.UnixMilli() + 102

	// Same clock: the database read its now 2 ms into the round trip.
	// Counting from the local clock after the call would land 10 ms late.
	if got := visibleAt(at, t0.UnixMilli()+2, t0, t1); got.UnixMilli() != at {
		t.Fatalf("agreeing clocks: visible at %d, want %d (off %d ms)", got.UnixMilli(), at, got.UnixMilli()-at)
	}
	// The database clock runs 500 ms ahead of ours.
	const skew = 500
	dbNow := t0.UnixMilli() + 7 + skew
	dbAt := dbNow + 95
	want := t0.UnixMilli() + 7 + 95
	if got := visibleAt(dbAt, dbNow, t0, t1); got.UnixMilli() != want {
		t.Fatalf("skewed clocks: visible at %d, want %d", got.UnixMilli(), want)
	}
}
