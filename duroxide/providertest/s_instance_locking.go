package providertest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("instance_locking", map[string]func(h *H){
		"exclusive_lock":                        lockExclusive,
		"unique_tokens":                         lockUniqueTokens,
		"invalid_token_keeps_original_lock":     lockInvalidToken,
		"cross_instance_isolation":              lockCrossInstance,
		"locked_instance_skipped_for_next":      lockSkipsLockedOldest,
		"batch_holds_one_instance":              lockBatchOneInstance,
		"messages_during_lock_wait":             lockMessagesDuringLock,
		"ack_deletes_only_tagged_messages":      lockAckOnlyTagged,
		"abandon_keeps_queue_order":             lockAbandonOrder,
		"concurrent_fetchers_distinct":          lockConcurrentDistinct,
		"contention_single_winner":              lockContentionSingleWinner,
		"no_overlapping_holders_under_load":     lockNoOverlap,
		"crashed_holder_recovered_after_expiry": lockCrashedHolder,
	})
}

func lockExclusive(h *H) {
	h.orch("i").start()
	it := h.mustFetchLock("i", h.lock)
	h.noFetch("second fetch while locked")
	sleepUntil(time.Now().Add(h.lock))
	again := h.fetchEventually("i", longLock)
	if again.LockToken == it.LockToken {
		h.fatalf("fetch after expiry reused token %q", it.LockToken)
	}
	h.equal(msgKinds(again.Messages), "StartOrchestration(Orch)", "batch after expiry")
}

func lockUniqueTokens(h *H) {
	seen := map[string]bool{}
	for i := range 5 {
		h.orch(fmt.Sprintf("i%d", i)).start()
	}
	var items []*duroxide.OrchestrationItem
	for range 5 {
		it := h.fetch(longLock)
		if it == nil {
			h.fatalf("fetch returned nothing with unlocked instances left")
		}
		if seen[it.LockToken] {
			h.fatalf("lock token %q handed out twice", it.LockToken)
		}
		seen[it.LockToken] = true
		items = append(items, it)
	}
	h.noFetch("all instances locked")
	// Re-locking the same instance yields a fresh token too.
	h.abandon(items[0].LockToken, 0, false)
	again := h.mustFetch(items[0].Instance)
	if seen[again.LockToken] {
		h.fatalf("refetch after abandon reused token %q", again.LockToken)
	}
}

func lockInvalidToken(h *H) {
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	h.wantErr(h.s.AckOrchestrationItem(h.ctx, it.LockToken+"x", o.turn().started().commit()), duroxide.ErrLockLost, "ack with altered token")
	h.wantErr(h.s.AbandonOrchestrationItem(h.ctx, "", duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), duroxide.ErrLockLost, "abandon with empty token")
	h.wantErr(h.s.RenewOrchestrationItemLock(h.ctx, "bogus", time.Second), duroxide.ErrLockLost, "renew with bogus token")
	h.noFetch("original lock survives")
	h.ack(it.LockToken, o.turn().started().commit())
	h.info("i")
}

func lockCrossInstance(h *H) {
	h.orch("a").start()
	h.orch("b").start()
	a := h.mustFetch("a")
	b := h.mustFetch("b") // a's lock does not block b
	h.noFetch("both locked")
	h.abandon(b.LockToken, 0, false)
	h.mustFetch("b")
	h.ack(a.LockToken, emptyCommit(a)) // releasing a leaves b locked
	h.noFetch("a consumed, b locked")
}

// The oldest message belongs to a locked instance: the fetch returns the
// next instance instead of nothing.
func lockSkipsLockedOldest(h *H) {
	h.orch("a").start()
	h.mustFetch("a")
	h.enqueue(raised("a", "late", "")) // oldest visible message, instance locked
	h.orch("b").start()
	it := h.mustFetch("b")
	h.equal(len(it.Messages), 1, "b's batch size")
	h.noFetch("a locked, b locked")
}

func lockBatchOneInstance(h *H) {
	h.enqueue(raised("a", "1", ""))
	h.enqueue(raised("b", "2", ""))
	h.enqueue(raised("a", "3", ""))
	h.enqueue(raised("b", "4", ""))
	a := h.mustFetch("a")
	h.equal(msgKinds(a.Messages), "ExternalRaised(1) ExternalRaised(3)", "a's batch")
	b := h.mustFetch("b")
	h.equal(msgKinds(b.Messages), "ExternalRaised(2) ExternalRaised(4)", "b's batch")
}

// Completions that arrive while an instance is locked are not fetchable by
// anyone; after the lock expires they come back in one batch with the
// original messages, in queue order.
func lockMessagesDuringLock(h *H) {
	h.orch("i").start()
	h.mustFetchLock("i", h.lock)
	for i := range 3 {
		h.enqueue(duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: "i", ExecutionID: 1, ID: int64(i + 2), Result: fmt.Sprint(i)})
	}
	h.noFetch("completions of a locked instance")
	sleepUntil(time.Now().Add(h.lock))
	it := h.fetchEventually("i", longLock)
	h.equal(msgKinds(it.Messages), "StartOrchestration(Orch) ActivityCompleted ActivityCompleted ActivityCompleted", "batch after expiry")
	for i, m := range it.Messages[1:] {
		h.equal(m.ID, i+2, "completion order")
	}
}

func lockAckOnlyTagged(h *H) {
	o := h.orch("i")
	o.start()
	h.enqueue(raised("i", "early", ""))
	it := h.mustFetch("i")
	h.equal(len(it.Messages), 2, "tagged messages")
	h.enqueue(raised("i", "during", ""))
	h.ack(it.LockToken, o.turn().started().commit())
	next := h.mustFetch("i")
	h.equal(msgKinds(next.Messages), "ExternalRaised(during)", "batch after ack")
	h.equal(next.AttemptCount, 1, "attempt count of the untagged message")
}

func lockAbandonOrder(h *H) {
	h.enqueue(raised("i", "1", ""))
	h.enqueue(raised("i", "2", ""))
	it := h.mustFetch("i")
	h.enqueue(raised("i", "3", ""))
	h.abandon(it.LockToken, 0, false)
	again := h.mustFetch("i")
	h.equal(msgKinds(again.Messages), "ExternalRaised(1) ExternalRaised(2) ExternalRaised(3)", "batch after abandon")
}

// N goroutines fetch concurrently from 10 instances: every instance is
// handed out exactly once.
func lockConcurrentDistinct(h *H) {
	const instances = 10
	for i := range instances {
		h.orch(fmt.Sprintf("i%02d", i)).start()
	}
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range h.f.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				it, err := h.s.FetchOrchestrationItem(h.ctx, longLock)
				if err != nil {
					if duroxide.IsRetryable(err) {
						continue
					}
					h.t.Errorf("concurrent fetch: %v", err)
					return
				}
				if it == nil {
					return
				}
				mu.Lock()
				got[it.Instance]++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if h.t.Failed() {
		return
	}
	h.equal(len(got), instances, "instances fetched")
	for id, n := range got {
		if n != 1 {
			h.fatalf("instance %s fetched %d times while locked", id, n)
		}
	}
}

func lockContentionSingleWinner(h *H) {
	for round := range 5 {
		id := fmt.Sprintf("hot%d", round)
		h.orch(id).start()
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range h.f.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				it, err := h.s.FetchOrchestrationItem(h.ctx, longLock)
				if err != nil && !duroxide.IsRetryable(err) {
					h.t.Errorf("fetch: %v", err)
				}
				if it != nil {
					wins.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if w := wins.Load(); w != 1 {
			h.fatalf("round %d: %d fetchers locked the single instance, want 1", round, w)
		}
	}
}

// Workers run fetch/ack loops over instances that keep receiving messages;
// no two workers ever hold the same instance, and every message is
// processed exactly once.
func lockNoOverlap(h *H) {
	const instances, perInstance = 6, 8
	var total atomic.Int32
	holders := map[string]int{}
	processed := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	done := make(chan struct{})
	var stop sync.Once
	finish := func() { stop.Do(func() { close(done) }) }
	// Producer: enqueue messages over time.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := range perInstance {
			for i := range instances {
				err := h.s.EnqueueOrchestratorItem(h.ctx, raised(fmt.Sprintf("i%d", i), fmt.Sprint(n), ""), 0)
				if err != nil {
					h.t.Errorf("enqueue: %v", err)
					return
				}
			}
		}
	}()
	for range h.f.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				it, err := h.s.FetchOrchestrationItem(h.ctx, longLock)
				if err != nil {
					if !duroxide.IsRetryable(err) {
						h.t.Errorf("fetch: %v", err)
						finish()
						return
					}
					continue
				}
				if it == nil {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				mu.Lock()
				holders[it.Instance]++
				if holders[it.Instance] > 1 {
					h.t.Errorf("instance %s held by %d workers at once", it.Instance, holders[it.Instance])
				}
				for _, m := range it.Messages {
					processed[it.Instance+"/"+m.Name]++
				}
				mu.Unlock()
				time.Sleep(time.Millisecond) // hold the lock for a moment
				mu.Lock()
				holders[it.Instance]--
				mu.Unlock()
				for {
					err = h.s.AckOrchestrationItem(h.ctx, it.LockToken, emptyCommit(it))
					if err == nil || !duroxide.IsRetryable(err) {
						break
					}
				}
				if err != nil {
					h.t.Errorf("ack: %v", err)
					finish()
					return
				}
				if total.Add(int32(len(it.Messages))) == instances*perInstance {
					finish()
				}
			}
		}()
	}
	wgDone := make(chan struct{})
	go func() { wg.Wait(); close(wgDone) }()
	select {
	case <-wgDone:
	case <-time.After(30 * time.Second):
		finish()
		<-wgDone
		h.fatalf("processed %d of %d messages within 30s", total.Load(), instances*perInstance)
	}
	if h.t.Failed() {
		return
	}
	h.equal(len(processed), instances*perInstance, "distinct messages processed")
	for k, n := range processed {
		if n != 1 {
			h.fatalf("message %s processed %d times", k, n)
		}
	}
}

func lockCrashedHolder(h *H) {
	h.orch("i").start()
	earliest := time.Now().Add(h.lock) // the lock cannot expire before this
	h.mustFetchLock("i", h.lock)       // the holder "crashes"
	deadline := time.Now().Add(h.lock) // nor after this
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range h.f.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline.Add(3 * time.Second)) {
				it, err := h.s.FetchOrchestrationItem(h.ctx, longLock)
				if err != nil && !duroxide.IsRetryable(err) {
					h.t.Errorf("fetch: %v", err)
					return
				}
				if it != nil {
					if early := earliest.Sub(time.Now()); early > 5*time.Millisecond {
						h.t.Errorf("instance re-locked %v before the crashed holder's lock expired", early)
					}
					wins.Add(1)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if w := wins.Load(); w != 1 {
		h.fatalf("%d fetchers acquired the expired lock, want exactly 1", w)
	}
}
