package duroxide

// Wake-ups and the timer loop.

import (
	"time"
)

// wakeup hands a "there may be work" baton to one idle dispatcher slot.
// A slot that finds work passes the baton on, so a burst wakes as many slots
// as it needs, while an idle notification costs one fetch, not one per slot.
type wakeup struct{ ch chan struct{} }

func (w *wakeup) init() { w.ch = make(chan struct{}, 1) }

func (w *wakeup) notify() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// timerLoop wakes dispatchers when delayed messages (durable timers,
// abandoned items) come due, and polls as a fallback for work written by
// processes whose writes the store does not announce.
func (rt *Runtime) timerLoop() {
	defer rt.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-rt.stopCh:
			return
		case <-rt.timerHint:
		case <-t.C:
			rt.orchWake.notify()
			rt.workWake.notify()
		}
		next := time.Now().Add(rt.opts.PollInterval)
		for _, q := range []Queue{QueueOrchestrator, QueueWorker} {
			if at, ok, err := rt.store.NextVisibleAt(rt.ctx, q); err == nil && ok && at.Before(next) {
				next = at
			}
		}
		if h := time.UnixMilli(rt.earliestHint.Swap(0)); h.After(time.Unix(0, 0)) && h.Before(next) {
			next = h
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		d := time.Until(next)
		if d < 0 {
			d = 0
		}
		t.Reset(d)
	}
}

// hintTimer tells the timer loop about a delayed message this runtime wrote.
func (rt *Runtime) hintTimer(fireAtMs int64) {
	for {
		cur := rt.earliestHint.Load()
		if cur != 0 && cur <= fireAtMs {
			break
		}
		if rt.earliestHint.CompareAndSwap(cur, fireAtMs) {
			break
		}
	}
	select {
	case rt.timerHint <- struct{}{}:
	default:
	}
}
