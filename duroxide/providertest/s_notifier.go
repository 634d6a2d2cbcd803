package providertest

import (
	"fmt"
	"sync"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// The notifier scenarios run only for stores that implement
// duroxide.Notifier; they are skipped otherwise.
func init() {
	register("notifier", map[string]func(h *H){
		"orchestrator_enqueue_notifies":  ntEnqueue,
		"ack_notifies_worker_queue":      ntAckWorker,
		"worker_ack_notifies_orch":       ntWorkerAck,
		"terminal_status_notifies":       ntTerminal,
		"stop_unregisters":               ntStop,
		"several_watchers":               ntSeveral,
		"ack_with_orchestrator_items":    ntAckOrch,
		"ack_releasing_pending_messages": ntAckPending,
		"abandon_notifies":               ntAbandon,
		"first_turn_completion_status":   ntFirstTurnTerminal,
	})
}

// watcher records notifications without blocking the store.
type watcher struct {
	mu   sync.Mutex
	got  map[duroxide.Queue]int
	stop func()
}

func (h *H) watch() *watcher {
	h.t.Helper()
	n, ok := h.s.(duroxide.Notifier)
	if !ok {
		h.t.Skip("store does not implement duroxide.Notifier")
	}
	w := &watcher{got: map[duroxide.Queue]int{}}
	stop := n.Watch(func(q duroxide.Queue) {
		w.mu.Lock()
		w.got[q]++
		w.mu.Unlock()
	})
	if stop == nil {
		h.fatalf("Watch returned a nil stop function")
	}
	var once sync.Once
	w.stop = func() { once.Do(stop) }
	h.t.Cleanup(w.stop)
	return w
}

func (w *watcher) count(q duroxide.Queue) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.got[q]
}

// expect waits until q was notified more often than before.
func (h *H) expect(w *watcher, q duroxide.Queue, before int, what string) {
	h.t.Helper()
	h.eventually(2*time.Second, fmt.Sprintf("notification of queue %d after %s", q, what), func() bool {
		return w.count(q) > before
	})
}

func ntEnqueue(h *H) {
	w := h.watch()
	b := w.count(duroxide.QueueOrchestrator)
	h.orch("i").start()
	h.expect(w, duroxide.QueueOrchestrator, b, "EnqueueOrchestratorItem")
}

func ntAckWorker(h *H) {
	w := h.watch()
	o := h.orch("i")
	o.start()
	b := w.count(duroxide.QueueWorker)
	o.run(o.turn().started().activity("A"))
	h.expect(w, duroxide.QueueWorker, b, "an ack with worker items")
	b = w.count(duroxide.QueueWorker)
	h.enqueueWork(activityItem("i", 9, "B"))
	h.expect(w, duroxide.QueueWorker, b, "EnqueueWorkItem")
}

func ntWorkerAck(h *H) {
	w := h.watch()
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	b := w.count(duroxide.QueueOrchestrator)
	h.ackWork(l.LockToken, completion(l.Item, "r"))
	h.expect(w, duroxide.QueueOrchestrator, b, "AckWorkItem with a completion")
}

func ntTerminal(h *H) {
	w := h.watch()
	o := h.orch("i").create()
	b := w.count(duroxide.QueueStatus)
	o.completeNow("ok")
	h.expect(w, duroxide.QueueStatus, b, "a terminal ack")
}

func ntStop(h *H) {
	w := h.watch()
	h.orch("a").start()
	h.expect(w, duroxide.QueueOrchestrator, 0, "first enqueue")
	w.stop()
	time.Sleep(50 * time.Millisecond) // let notifications already in flight land
	b := w.count(duroxide.QueueOrchestrator)
	h.orch("b").start()
	h.enqueueWork(activityItem("b", 2, "A"))
	time.Sleep(200 * time.Millisecond)
	if n := w.count(duroxide.QueueOrchestrator); n != b {
		h.fatalf("watcher called %d more time(s) after stop", n-b)
	}
	if n := w.count(duroxide.QueueWorker); n != 0 {
		h.fatalf("watcher called for the worker queue after stop")
	}
}

func ntSeveral(h *H) {
	w1 := h.watch()
	w2 := h.watch()
	h.orch("i").start()
	h.expect(w1, duroxide.QueueOrchestrator, 0, "enqueue (watcher 1)")
	h.expect(w2, duroxide.QueueOrchestrator, 0, "enqueue (watcher 2)")
	w1.stop()
	b := w2.count(duroxide.QueueOrchestrator)
	h.orch("j").start()
	h.expect(w2, duroxide.QueueOrchestrator, b, "enqueue after the other watcher stopped")
}

func ntAckOrch(h *H) {
	w := h.watch()
	o := h.orch("p").create()
	o.poke()
	it := h.mustFetch("p")
	b := w.count(duroxide.QueueOrchestrator)
	tn := o.turn()
	tn.subOrch("p::c")
	h.ack(it.LockToken, tn.commit())
	h.expect(w, duroxide.QueueOrchestrator, b, "an ack with orchestrator items")
}

// A message that arrived while its instance was locked becomes fetchable
// when the lock is released; a dispatcher waiting for notifications must
// hear about it.
func ntAckPending(h *H) {
	w := h.watch()
	o := h.orch("i")
	o.start()
	it := h.mustFetch("i")
	o.poke() // arrives during the lock
	b := w.count(duroxide.QueueOrchestrator)
	h.ack(it.LockToken, o.turn().started().commit())
	h.expect(w, duroxide.QueueOrchestrator, b, "an ack releasing a pending message")
}

func ntAbandon(h *H) {
	w := h.watch()
	h.orch("i").start()
	it := h.mustFetch("i")
	b := w.count(duroxide.QueueOrchestrator)
	h.abandon(it.LockToken, 0, false)
	h.expect(w, duroxide.QueueOrchestrator, b, "AbandonOrchestrationItem")
	h.enqueueWork(activityItem("i", 2, "A"))
	l := h.mustFetchWork()
	b = w.count(duroxide.QueueWorker)
	h.check(h.s.AbandonWorkItem(h.ctx, l.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: false}), "AbandonWorkItem")
	h.expect(w, duroxide.QueueWorker, b, "AbandonWorkItem")
}

func ntFirstTurnTerminal(h *H) {
	w := h.watch()
	o := h.orch("i")
	o.start()
	b := w.count(duroxide.QueueStatus)
	o.run(o.turn().started().complete("at once"))
	h.expect(w, duroxide.QueueStatus, b, "a first turn that completes")
}
