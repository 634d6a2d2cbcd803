package duroxide

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// An activity function runs on the goroutine of the worker that took it:
// starting a goroutine per attempt, and waiting for it, wakes another
// thread at every step of a sequence, which costs more than the step's own
// work on a small machine. What has to happen while the function runs is
// left to timers:
//
//   - the lease is renewed every third of the lock timeout
//     (activityRun.renewLease); a lease found lost cancels the activity;
//   - once its context is cancelled (lease lost, instance cancelled, select
//     loser, shutdown), the activity has the cancellation grace period to
//     return. If it does not, the worker gives up on it
//     (activityRun.giveUp): its result is dropped, its lease released as
//     it would be after a late return, and a new goroutine takes the
//     worker's place. The old one ends when the function returns.

// activityRun states.
const (
	runRunning int32 = iota
	runReturned
	runAbandoned
)

// activityRun is one attempt of an activity running on a worker.
type activityRun struct {
	rt     *Runtime
	lease  *WorkItemLease
	sl     *slot
	ref    ActivityRef
	cancel context.CancelFunc
	br     *breaker
	probe  bool
	span   trace.Span
	begin  time.Time

	mu    sync.Mutex  // guards renew, which the renewal re-arms from its own goroutine
	renew *time.Timer // nil until armed

	state atomic.Int32 // runRunning until the function returns or the worker gives up
	lost  atomic.Bool  // a renewal found the lease lost
}

// call runs fn, turning a panic into an error. An activity that calls
// runtime.Goexit ends the worker's goroutine: the worker gives it up at
// once (its lease goes back to the queue as a failed delivery).
func (r *activityRun) call(ctx context.Context, fn activityFunc, input string) (res string, err error) {
	returned := false
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("activity panicked: %v", p)
			return
		}
		if !returned {
			r.giveUp("activity called runtime.Goexit; releasing its message for another attempt", false)
		}
	}()
	res, err = fn(ctx, input)
	returned = true
	return res, err
}

// renewLease renews the lease while the function runs (a timer's
// callback, re-armed after each renewal).
func (r *activityRun) renewLease() {
	if r.state.Load() != runRunning {
		return
	}
	rt := r.rt
	begin := time.Now()
	err := rt.store.RenewWorkItemLock(rt.ctx, r.lease.LockToken, rt.opts.ActivityLockTimeout)
	rt.metrics.storeCall(opRenewWorkItemLock, begin, err)
	switch {
	case errors.Is(err, ErrLockLost):
		r.log().Info("activity lock lost (cancelled or expired); cancelling activity")
		r.lost.Store(true)
		r.cancel()
		return
	case err != nil:
		r.log().Warn("renew work item lock failed", "error", err)
	}
	r.mu.Lock()
	if r.state.Load() == runRunning {
		r.renew.Reset(rt.opts.ActivityLockTimeout / 3)
	}
	r.mu.Unlock()
}

// armRenewal starts the lease renewals.
func (r *activityRun) armRenewal() {
	r.mu.Lock()
	r.renew = time.AfterFunc(r.rt.opts.ActivityLockTimeout/3, r.renewLease)
	r.mu.Unlock()
}

// stopRenewal ends them.
func (r *activityRun) stopRenewal() {
	r.mu.Lock()
	r.renew.Stop()
	r.mu.Unlock()
}

// cancelled runs when the activity's context is cancelled while its
// function runs: the grace period starts.
func (r *activityRun) cancelled() {
	time.AfterFunc(r.rt.opts.CancellationGracePeriod, func() {
		r.giveUp("cancelled activity did not return within the grace period; abandoning its result", true)
	})
}

// giveUp abandons the running function, unless it returned meanwhile:
// what the worker does with a cancelled activity's lease is done now, and
// a new goroutine takes the worker's place. cancelled tells a cancelled
// activity (its delivery treated as after a late return) from one that
// ended its goroutine (its delivery counted as a failed attempt).
func (r *activityRun) giveUp(why string, cancelled bool) {
	if !r.state.CompareAndSwap(runRunning, runAbandoned) {
		return
	}
	r.stopRenewal()
	r.log().Warn(why)
	r.rt.untrack(r)
	r.cancel()
	if cancelled {
		r.dropped(nil)
	} else {
		r.end("failure", errors.New("activity called runtime.Goexit"))
		if r.lease.memRun == 0 {
			_ = r.rt.store.AbandonWorkItem(context.Background(), r.lease.LockToken, AbandonParams{Delay: 0, IgnoreAttempt: false})
		}
	}
	r.sl.release()
	r.sl.w.handOver(r.rt)
}

// dropped ends an attempt whose result is not reported (cancelled): its
// message is acknowledged without a result, or released for another
// runtime at shutdown.
func (r *activityRun) dropped(err error) {
	rt := r.rt
	r.end("cancelled", err)
	if r.lease.memRun != 0 {
		return // run in memory: there is no message to release
	}
	if rt.ctx.Err() != nil && !r.lost.Load() {
		// Runtime stopping: release the message for another worker now.
		_ = rt.store.AbandonWorkItem(context.Background(), r.lease.LockToken, AbandonParams{Delay: 0, IgnoreAttempt: true})
		return
	}
	_ = rt.store.AckWorkItem(rt.ctx, r.lease.LockToken, nil)
}

// end records the attempt's metrics, span and circuit breaker slot for an
// outcome that is not reported to the orchestration.
func (r *activityRun) end(outcome string, err error) {
	r.observe(outcome, err)
	if r.br != nil {
		r.br.release(r.probe)
	}
}

// observe records the attempt's duration and outcome (metrics, span).
func (r *activityRun) observe(outcome string, err error) {
	r.rt.metrics.activity(r.lease.Item.Name, outcome, time.Since(r.begin))
	if r.span != nil {
		endActivitySpan(r.span, outcome, err)
	}
}

func (r *activityRun) log() *slog.Logger { return r.rt.activityLogger(&r.lease.Item) }

// activityLogger is the logger of an activity attempt; build it only when
// something is logged (With copies the handler).
func (rt *Runtime) activityLogger(item *WorkItem) *slog.Logger {
	return rt.logger.With("instance_id", item.Instance, "activity", item.Name, "activity_id", item.ID)
}

// untrack removes r from rt.running, if the entry is still its own (a
// later attempt of the same activity may have replaced it).
func (rt *Runtime) untrack(r *activityRun) {
	rt.runningMu.Lock()
	defer rt.runningMu.Unlock()
	if rt.running[r.ref] == r {
		delete(rt.running, r.ref)
	}
}

// workerState is a worker goroutine's identity: handedOver once another
// goroutine took its place (its activity was given up while it still ran).
type workerState struct {
	handedOver atomic.Bool
}

// handOver gives the worker's place to a new goroutine, which inherits its
// count in rt.wg (and ends at once if the runtime is stopping).
func (w *workerState) handOver(rt *Runtime) {
	w.handedOver.Store(true)
	go rt.workerLoop()
}
