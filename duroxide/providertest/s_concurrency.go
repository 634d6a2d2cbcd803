package providertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toygres/toygres/duroxide"
)

func init() {
	register("concurrency", map[string]func(h *H){
		"workers_never_share_an_item":      ccWorkersNeverShare,
		"parallel_turns_of_many_instances": ccParallelTurns,
		"runtime_like_pipeline":            ccPipeline,
		"concurrent_worker_acks_one_token": ccWorkerAckRace,
	})
}

// retry calls op until it returns a non-retryable result.
func retry(ctx context.Context, op func() error) error {
	for {
		err := op()
		if err == nil || !duroxide.IsRetryable(err) || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// Concurrent workers drain the worker queue; each item is handed to exactly
// one of them and every ack succeeds.
func ccWorkersNeverShare(h *H) {
	const items = 60
	for i := range items {
		h.enqueueWork(activityItem(fmt.Sprintf("i%d", i%7), int64(i+2), fmt.Sprintf("A%02d", i)))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range h.f.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var l *duroxide.WorkItemLease
				err := retry(h.ctx, func() (err error) {
					l, err = h.s.FetchWorkItem(h.ctx, longLock)
					return err
				})
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
				if err := retry(h.ctx, func() error { return h.s.AckWorkItem(h.ctx, l.LockToken, completion(l.Item, "r")) }); err != nil {
					h.t.Errorf("AckWorkItem(%s): %v", l.Item.Name, err)
				}
			}
		}()
	}
	wg.Wait()
	if h.t.Failed() {
		return
	}
	h.equal(len(seen), items, "distinct items fetched")
	for name, n := range seen {
		if n != 1 {
			h.fatalf("item %s handed out %d times", name, n)
		}
	}
	h.equal(h.stats().WorkerQueue, 0, "worker queue after draining")
	total := 0
	for _, b := range h.drainOrch() {
		total += len(b.Messages)
	}
	h.equal(total, items, "completions enqueued")
}

// Turns of different instances commit concurrently without interfering.
func ccParallelTurns(h *H) {
	const instances = 12
	for i := range instances {
		h.orch(fmt.Sprintf("p%02d", i)).start()
	}
	var items []*duroxide.OrchestrationItem
	for range instances {
		it := h.fetch(longLock)
		if it == nil {
			h.fatalf("fetch returned nothing")
		}
		items = append(items, it)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &orch{h: h, id: it.Instance, name: "Orch", version: "1.0.0", exec: 1}
			tn := o.turn().started().activity("A").activity("B").customStatus(ptr(it.Instance))
			<-start
			if err := retry(h.ctx, func() error { return h.s.AckOrchestrationItem(h.ctx, it.LockToken, tn.commit()) }); err != nil {
				h.t.Errorf("ack of %s: %v", it.Instance, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if h.t.Failed() {
		return
	}
	for _, it := range items {
		h.equal(kinds(h.history(it.Instance, 1)), "1:OrchestrationStarted 2:ActivityScheduled 3:ActivityScheduled 4:CustomStatusUpdated", "history of "+it.Instance)
		s, _, _ := h.customStatus(it.Instance, 0)
		if s == nil || *s != it.Instance {
			h.fatalf("custom status of %s: %v", it.Instance, s)
		}
	}
	h.equal(len(h.drainWork()), 2*instances, "worker items")
}

// Orchestrator and worker goroutines drive instances through a fan-out of
// activities the way a runtime does (state from ReadHistory, completions via
// the worker queue) until every instance completes.
func ccPipeline(h *H) {
	const instances, acts = 8, 3
	for i := range instances {
		h.orch(fmt.Sprintf("pipe%d", i)).start()
	}
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	var wg sync.WaitGroup
	var turns, lost atomic.Int32
	report := func(format string, args ...any) {
		if ctx.Err() == nil {
			h.t.Errorf(format, args...)
		}
	}
	orchLoop := func() {
		defer wg.Done()
		for ctx.Err() == nil {
			var it *duroxide.OrchestrationItem
			if err := retry(ctx, func() (err error) { it, err = h.s.FetchOrchestrationItem(ctx, longLock); return err }); err != nil {
				report("fetch: %v", err)
				return
			}
			if it == nil {
				time.Sleep(2 * time.Millisecond)
				continue
			}
			var hist []duroxide.Event
			if err := retry(ctx, func() (err error) { hist, err = h.s.ReadHistory(ctx, it.Instance, 0); return err }); err != nil {
				report("ReadHistory: %v", err)
				return
			}
			o := &orch{h: h, id: it.Instance, name: "Orch", version: "1.0.0", exec: 1}
			if n := len(hist); n > 0 {
				o.last = hist[n-1].EventID
			}
			if it.LastEventID != o.last {
				report("%s: LastEventID %d, history ends at %d", it.Instance, it.LastEventID, o.last)
			}
			tn := o.turn()
			done := 0
			for _, e := range hist {
				if e.Kind == duroxide.EventActivityCompleted {
					done++
				}
			}
			if len(hist) == 0 {
				tn.started()
				for a := range acts {
					tn.activity(fmt.Sprintf("A%d", a))
				}
			}
			for _, m := range it.Messages {
				if m.Kind == duroxide.WorkActivityCompleted {
					tn.activityDone(m.ID, m.Result)
					done++
				}
			}
			if done == acts {
				tn.complete("all done")
			}
			err := retry(ctx, func() error { return h.s.AckOrchestrationItem(ctx, it.LockToken, tn.commit()) })
			if err != nil {
				// An ack cut short by the end of the scenario (ctx
				// cancelled once every instance completed) is not lost.
				if ctx.Err() == nil {
					lost.Add(1)
				}
				report("ack of %s: %v", it.Instance, err)
				continue
			}
			turns.Add(1)
		}
	}
	workLoop := func() {
		defer wg.Done()
		for ctx.Err() == nil {
			var l *duroxide.WorkItemLease
			if err := retry(ctx, func() (err error) { l, err = h.s.FetchWorkItem(ctx, longLock); return err }); err != nil {
				report("FetchWorkItem: %v", err)
				return
			}
			if l == nil {
				time.Sleep(2 * time.Millisecond)
				continue
			}
			if err := retry(ctx, func() error { return h.s.AckWorkItem(ctx, l.LockToken, completion(l.Item, "r-"+l.Item.Name)) }); err != nil {
				report("AckWorkItem: %v", err)
			}
		}
	}
	n := max(h.f.Workers/2, 2)
	for range n {
		wg.Add(2)
		go orchLoop()
		go workLoop()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := h.s.Stats(h.ctx)
		if err == nil && st.Instances[duroxide.StatusCompleted] == instances {
			break
		}
		if time.Now().After(deadline) || h.t.Failed() {
			cancel()
			wg.Wait()
			h.fatalf("pipeline did not complete all %d instances within 30s (stats %+v, err %v)", instances, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	for i := range instances {
		id := fmt.Sprintf("pipe%d", i)
		evs := h.history(id, 1)
		if len(evs) != 2+2*acts {
			h.fatalf("%s: history %s", id, kinds(evs))
		}
		srcs := map[int64]bool{}
		for _, e := range evs {
			if e.Kind == duroxide.EventActivityCompleted {
				if srcs[e.SourceEventID] {
					h.fatalf("%s: activity %d completed twice", id, e.SourceEventID)
				}
				srcs[e.SourceEventID] = true
			}
		}
		h.equal(len(srcs), acts, id+": completed activities")
		h.equal(evs[len(evs)-1].Kind, duroxide.EventOrchestrationCompleted, id+": last event")
	}
	h.noWork("worker queue after the pipeline")
	h.noFetch("orchestrator queue after the pipeline")
	h.equal(lost.Load(), 0, "acks lost")
	if t := turns.Load(); t < instances*2 {
		h.fatalf("only %d turns for %d instances", t, instances)
	}
}

// Concurrent worker acks with one token: exactly one succeeds and exactly one
// completion is enqueued.
func ccWorkerAckRace(h *H) {
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	var ok atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range h.f.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := h.s.AckWorkItem(h.ctx, l.LockToken, completion(l.Item, fmt.Sprint(w)))
			switch {
			case err == nil:
				ok.Add(1)
			case duroxide.IsRetryable(err):
			default:
				if !errorsIsLockLost(err) {
					h.t.Errorf("losing worker ack: %v", err)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	h.equal(ok.Load(), 1, "successful acks")
	batches := h.drainOrch()
	if len(batches) != 1 || len(batches[0].Messages) != 1 {
		h.fatalf("want exactly one enqueued completion, got %d batches", len(batches))
	}
}
