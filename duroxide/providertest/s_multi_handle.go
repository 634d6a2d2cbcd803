package providertest

import (
	"fmt"
	"sync"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// The multi_handle scenarios run only when Factory.Reopen is set: they use
// two handles on one database the way two runtime processes would.
func init() {
	register("multi_handle", map[string]func(h *H){
		"writes_visible_across_handles":         mhVisible,
		"instance_lock_held_across_handles":     mhLock,
		"fetchers_on_both_handles_distinct":     mhConcurrentFetch,
		"worker_items_exclusive_across_handles": mhWorkers,
		"crashed_process_lock_expires":          mhCrash,
	})
}

func mhVisible(h *H) {
	b := h.reopen()
	o := h.orch("i")
	o.createWithActivities(1)
	h.equal(b.info("i").Status, duroxide.StatusRunning, "status read through the other handle")
	b.historyLen("i", 1, 2)
	l := b.mustFetchWork()
	b.ackWork(l.LockToken, completion(l.Item, "r"))
	it := h.mustFetch("i")
	h.equal(msgKinds(it.Messages), "ActivityCompleted", "completion acked through the other handle")
}

func mhLock(h *H) {
	b := h.reopen()
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	b.noFetch("instance locked through the other handle")
	o.poke()
	b.noFetch("instance locked through the other handle")
	h.ack(it.LockToken, o.turn().started().commit())
	next := b.mustFetch("i")
	h.equal(msgKinds(next.Messages), "ExternalRaised(poke)", "batch fetched through the other handle")
}

func mhConcurrentFetch(h *H) {
	b := h.reopen()
	const instances = 12
	for i := range instances {
		h.orch(fmt.Sprintf("i%02d", i)).start()
	}
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range h.f.Workers {
		st := h.s
		if w%2 == 1 {
			st = b.s
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				var it *duroxide.OrchestrationItem
				err := retry(h.ctx, func() (err error) { it, err = st.FetchOrchestrationItem(h.ctx, longLock); return err })
				if err != nil {
					h.t.Errorf("fetch: %v", err)
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
			h.fatalf("instance %s locked %d times across handles", id, n)
		}
	}
}

func mhWorkers(h *H) {
	b := h.reopen()
	const items = 30
	for i := range items {
		h.enqueueWork(activityItem("i", int64(i+2), fmt.Sprintf("A%02d", i)))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := range h.f.Workers {
		st := h.s
		if w%2 == 1 {
			st = b.s
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var l *duroxide.WorkItemLease
				err := retry(h.ctx, func() (err error) { l, err = st.FetchWorkItem(h.ctx, longLock); return err })
				if err != nil {
					h.t.Errorf("FetchWorkItem: %v", err)
					return
				}
				if l == nil {
					return
				}
				mu.Lock()
				seen[l.Item.Name]++
				mu.Unlock()
				if err := retry(h.ctx, func() error { return st.AckWorkItem(h.ctx, l.LockToken, nil) }); err != nil {
					h.t.Errorf("AckWorkItem: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if h.t.Failed() {
		return
	}
	h.equal(len(seen), items, "distinct items")
	for name, n := range seen {
		if n != 1 {
			h.fatalf("item %s handed out %d times across handles", name, n)
		}
	}
}

// A process that dies holding locks loses them at expiry; the other process
// picks the work up.
func mhCrash(h *H) {
	b := h.reopen()
	h.orch("i").start()
	h.enqueueWork(activityItem("i", 2, "A"))
	h.mustFetchLock("i", h.lock)
	h.mustFetchWorkLock(h.lock)
	b.noFetch("locked by the crashed process")
	b.noWork("locked by the crashed process")
	sleepUntil(time.Now().Add(h.lock))
	it := b.fetchEventually("i", longLock)
	h.equal(it.AttemptCount, 2, "attempt count after the crash")
	l := b.fetchWorkEventually(longLock)
	h.equal(l.AttemptCount, 2, "worker attempt count after the crash")
}
