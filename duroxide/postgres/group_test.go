package postgres

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// acks runs AckOrchestrationItem calls concurrently and collects results.
type acks struct {
	st      *Store
	wg      sync.WaitGroup
	mu      sync.Mutex
	results map[string]error // by label
}

// submit starts one ack and waits until it is queued behind the busy
// committer, so that the batch keeps the submission order.
func (a *acks) submit(t *testing.T, label, token string, c *duroxide.TurnCommit) {
	t.Helper()
	a.st.group.mu.Lock()
	queued := len(a.st.group.pending)
	a.st.group.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		err := a.st.AckOrchestrationItem(t.Context(), token, c)
		a.mu.Lock()
		a.results[label] = err
		a.mu.Unlock()
	}()
	waitFor(t, "the ack to be queued", func() bool {
		a.st.group.mu.Lock()
		defer a.st.group.mu.Unlock()
		return len(a.st.group.pending) == queued+1
	})
}

// occupy keeps the store's only committer busy until release is called
// (it waits for an advisory lock the test holds); the returned channel
// yields the busy call's error.
func occupy(t *testing.T, st *Store) (busy <-chan error, release func()) {
	t.Helper()
	ctx := t.Context()
	conn, err := st.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const key = 4242
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		t.Fatal(err)
	}
	release = func() {
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", key); err != nil {
			t.Error(err)
		}
		conn.Release()
	}
	done := make(chan error, 1)
	go func() {
		done <- st.group.run(ctx, "SELECT pg_advisory_lock($1), pg_advisory_unlock($1)", []any{int64(key)}, nil)
	}()
	waitFor(t, "the committer to be busy", func() bool {
		st.group.mu.Lock()
		defer st.group.mu.Unlock()
		return st.group.inflight.Load() == 1 && len(st.group.pending) == 0
	})
	return done, release
}

func firstTurn(eventID int64) *duroxide.TurnCommit {
	return &duroxide.TurnCommit{
		ExecutionID: 1, OrchestrationName: "Orch", OrchestrationVersion: "1.0.0", Status: duroxide.StatusRunning,
		HistoryDelta: []duroxide.Event{{EventID: eventID, Kind: duroxide.EventOrchestrationStarted, Name: "Orch", Input: `"in"`}},
	}
}

// TestGroupCommitIsolatesFailures queues turn acks behind a busy committer
// so that they share one transaction, with invalid lock tokens first, in
// the middle and last: every valid ack commits, every invalid one fails
// alone with ErrLockLost; then a turn whose event collides with the history
// fails alone with ErrDuplicateEvent between two that commit.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	ctx := testCtx(t)
	st := openStore(t, WithGroupCommit(1), WithPoolSize(4))

	const n = 12
	tokens := map[string]string{} // instance → lock token
	for i := range n {
		if err := st.EnqueueOrchestratorItem(ctx, start(fmt.Sprintf("g%02d", i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		it := mustFetch(t, st, time.Minute)
		tokens[it.Instance] = it.LockToken
	}

	before := st.GroupCommitStats()
	busy, release := occupy(t, st)
	a := &acks{st: st, results: map[string]error{}}
	a.submit(t, "bogus-first", "no-such-token-1", firstTurn(1))
	for i := range n {
		inst := fmt.Sprintf("g%02d", i)
		a.submit(t, inst, tokens[inst], firstTurn(1))
		if i == n/2 {
			a.submit(t, "bogus-middle", "no-such-token-2", firstTurn(1))
		}
	}
	a.submit(t, "bogus-last", "no-such-token-3", firstTurn(1))
	release()
	if err := <-busy; err != nil {
		t.Fatalf("busy call: %v", err)
	}
	a.wg.Wait()

	for label, err := range a.results {
		if len(label) > 5 && label[:5] == "bogus" {
			if !errors.Is(err, duroxide.ErrLockLost) {
				t.Errorf("ack with an invalid token (%s): %v, want ErrLockLost", label, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ack of %s: %v", label, err)
			continue
		}
		if h, err := st.ReadHistory(ctx, label, 1); err != nil || len(h) != 1 {
			t.Errorf("history of %s after its ack: %v, %v", label, h, err)
		}
	}
	after := st.GroupCommitStats()
	if after.MaxBatch != n+3 {
		t.Errorf("largest batch %d calls, want all %d acks in one", after.MaxBatch, n+3)
	}
	if got := after.Failed - before.Failed; got != 3 {
		t.Errorf("%d calls failed alone in the batch, want 3", got)
	}

	// A duplicate event between two good turns.
	for i := range 3 {
		ev := duroxide.WorkItem{Kind: duroxide.WorkExternalRaised, Instance: fmt.Sprintf("g%02d", i), ExecutionID: 1, Name: "e"}
		if err := st.EnqueueOrchestratorItem(ctx, ev, 0); err != nil {
			t.Fatal(err)
		}
	}
	tokens = map[string]string{}
	for range 3 {
		it := mustFetch(t, st, time.Minute)
		tokens[it.Instance] = it.LockToken
	}
	busy, release = occupy(t, st)
	a = &acks{st: st, results: map[string]error{}}
	a.submit(t, "g00", tokens["g00"], firstTurn(2))
	a.submit(t, "g01", tokens["g01"], firstTurn(1)) // event 1 exists
	a.submit(t, "g02", tokens["g02"], firstTurn(2))
	release()
	if err := <-busy; err != nil {
		t.Fatalf("busy call: %v", err)
	}
	a.wg.Wait()
	if err := a.results["g01"]; !errors.Is(err, duroxide.ErrDuplicateEvent) {
		t.Errorf("colliding turn: %v, want ErrDuplicateEvent", err)
	}
	for _, inst := range []string{"g00", "g02"} {
		if err := a.results[inst]; err != nil {
			t.Errorf("ack of %s next to a colliding turn: %v", inst, err)
		}
		if h, err := st.ReadHistory(ctx, inst, 1); err != nil || len(h) != 2 {
			t.Errorf("history of %s: %d events, %v; want 2", inst, len(h), err)
		}
	}
	if h, err := st.ReadHistory(ctx, "g01", 1); err != nil || len(h) != 1 {
		t.Errorf("history of the colliding instance: %d events, %v; want 1", len(h), err)
	}
	// Nothing of the colliding call stayed: its lock and message are still
	// there, so the same token commits a valid turn.
	if err := st.AckOrchestrationItem(ctx, tokens["g01"], firstTurn(2)); err != nil {
		t.Errorf("ack after the rolled-back collision: %v", err)
	}
	if h, err := st.ReadHistory(ctx, "g01", 1); err != nil || len(h) != 2 {
		t.Errorf("history of g01 after the valid ack: %d events, %v; want 2", len(h), err)
	}
}

// TestGroupCommitLoneCallAlone checks that a call that finds the committer
// idle runs at once as its own transaction, and that calls after Close
// fail for good.
func TestGroupCommitLoneCallAlone(t *testing.T) {
	ctx := testCtx(t)
	st := openStore(t, WithGroupCommit(1))
	before := st.GroupCommitStats()
	for i := range 3 {
		w := duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: fmt.Sprintf("l%d", i), ExecutionID: 1, ID: 1, Name: "A"}
		if err := st.EnqueueWorkItem(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	after := st.GroupCommitStats()
	if after.Calls-before.Calls != 3 || after.Transactions-before.Transactions != 3 || after.Batched != before.Batched {
		t.Errorf("three calls one after the other: %+v → %+v, want three lone transactions", before, after)
	}
	st.Close()
	w := duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "closed", ExecutionID: 1, ID: 1, Name: "A"}
	if err := st.EnqueueWorkItem(ctx, w); err == nil || duroxide.IsRetryable(err) {
		t.Errorf("grouped call on a closed store: %v, want a permanent error", err)
	}
}

// TestGroupCommitDefersToClientCall holds a client call in flight and
// checks that a runtime write queued meanwhile waits for it: the committer
// defers (Deferred counts it) and the write commits only once the client
// call returned. With a short cap, a client call that does not return
// holds the write back no longer than the cap.
func TestGroupCommitDefersToClientCall(t *testing.T) {
	ctx := testCtx(t)
	write := func(st *Store, inst string) <-chan error {
		done := make(chan error, 1)
		go func() {
			done <- st.EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: inst, ExecutionID: 1, ID: 1, Name: "A"})
		}()
		return done
	}
	hold := func(st *Store) (release func()) {
		inFlight, released, returned := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		go func() {
			returned <- st.client(func() error {
				close(inFlight)
				<-released
				return nil
			})
		}()
		<-inFlight
		return func() {
			close(released)
			if err := <-returned; err != nil {
				t.Errorf("client call: %v", err)
			}
		}
	}
	within := func(what string, ch <-chan error) error {
		t.Helper()
		select {
		case err := <-ch:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
			return nil
		}
	}

	st := openStore(t, WithGroupCommit(1), WithPoolSize(4))
	deferred := make(chan error, 1)
	st.group.clientCap = time.Minute
	st.group.onDefer = func() {
		select {
		case deferred <- nil:
		default:
		}
	}
	before := st.GroupCommitStats()
	release := hold(st)
	done := write(st, "held")
	_ = within("the committer to defer to the client call", deferred)
	select {
	case err := <-done:
		t.Fatalf("the write returned (%v) while the client call was in flight", err)
	default:
	}
	release()
	if err := within("the write after the client call returned", done); err != nil {
		t.Fatalf("write: %v", err)
	}
	if got := st.GroupCommitStats().Deferred - before.Deferred; got < 1 {
		t.Errorf("%d batches deferred, want at least 1", got)
	}

	capped := openStore(t, WithGroupCommit(1), WithPoolSize(4))
	capped.group.clientCap = time.Millisecond
	release = hold(capped)
	if err := within("the write while a client call hangs", write(capped, "capped")); err != nil {
		t.Errorf("write beside a client call that does not return: %v", err)
	}
	release()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
