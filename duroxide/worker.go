package duroxide

// The activity worker: lease activity work items, run them under their
// policy's attempt timeout, and report each outcome.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"
)

// ActivityInfo describes the activity call an activity function is serving.
type ActivityInfo struct {
	Instance          string
	ExecutionID       int64
	ActivityID        int64 // the ActivityScheduled event id
	ActivityName      string
	OrchestrationName string
	Attempt           int // delivery attempt of this message (1 on first delivery)
	WorkerID          string
}

type activityInfoKey struct{}

// ActivityInfoFromContext returns the ActivityInfo of an activity's context.
func ActivityInfoFromContext(ctx context.Context) (ActivityInfo, bool) {
	ai, ok := ctx.Value(activityInfoKey{}).(ActivityInfo)
	return ai, ok
}

func (rt *Runtime) workerLoop() {
	w := &workerState{}
	defer func() {
		if !w.handedOver.Load() {
			rt.wg.Done()
		}
	}()
	failures := 0
	// After an activity handed over in memory the worker waits for the next
	// hand-over or a wake-up instead of fetching: the queue's own work is
	// announced (a wake-up that came while every worker was busy stays
	// pending), and an empty fetch per local activity would double its cost.
	// Workers start that way too: the timer loop's first tick wakes one,
	// and each fetch that finds work wakes the next, so a runtime that
	// starts on an empty queue makes one fetch, not one per worker.
	idle := true
	for !rt.stopping() {
		select {
		case l := <-rt.localWork:
			rt.runChain(l, w)
			idle = true
			continue
		default:
		}
		if idle {
			// A wake-up is a baton: whoever takes it must fetch.
			select {
			case <-rt.workWake.ch:
				idle = false
			case l := <-rt.localWork:
				rt.runChain(l, w)
				continue
			case <-rt.stopCh:
				continue
			}
		}
		begin := time.Now()
		lease, err := rt.store.FetchWorkItem(rt.ctx, rt.opts.ActivityLockTimeout)
		rt.metrics.storeCall(opFetchWorkItem, begin, err)
		if err != nil {
			if rt.stopping() {
				return
			}
			failures++
			rt.logger.Warn("fetch work item failed", "error", err, "retryable", IsRetryable(err))
			rt.errorBackoff(failures)
			continue
		}
		failures = 0
		if lease == nil {
			idle = true
			continue
		}
		rt.workWake.notify()
		rt.localFree.Add(-1)
		sl := &slot{rt: rt, w: w}
		next := rt.runActivity(lease, sl)
		sl.release()
		if len(next) > 0 {
			rt.runChain(rt.takeFirst(next), w)
		}
	}
}

// runChain runs a leased activity and then, one after the other, the first
// of the activities that each completion's turn leased to this runtime (the
// others are handed to the other workers): the next step of a sequence
// stays on this goroutine.
func (rt *Runtime) runChain(l *localLease, w *workerState) {
	for l != nil {
		next := rt.runLocal(l, w)
		l = nil
		if len(next) > 0 {
			if rt.stopping() {
				rt.dispatchLocal(next)
				return
			}
			l = rt.takeFirst(next)
		}
	}
}

// slot is the place among localFree that a running activity holds, on the
// goroutine of worker w; it is given back once, when the activity's
// function has returned and before its completion's turn leases the next
// activities (so that the next step of a sequence always finds one), when
// the worker gives the activity up, or at the latest when the run ends.
type slot struct {
	rt   *Runtime
	w    *workerState
	done atomic.Bool
}

func (s *slot) release() {
	if s.done.CompareAndSwap(false, true) {
		s.rt.localFree.Add(1)
	}
}

// takeFirst dispatches all leases but the first and returns that one.
func (rt *Runtime) takeFirst(leases []WorkItemLease) *localLease {
	rt.dispatchLocal(leases[1:])
	return &localLease{lease: &leases[0], at: time.Now()}
}

func (rt *Runtime) cancelLocal(refs []ActivityRef) {
	rt.runningMu.Lock()
	defer rt.runningMu.Unlock()
	for _, r := range refs {
		if run, ok := rt.running[r]; ok {
			run.cancel()
		}
	}
}

// runActivity runs a leased activity that holds sl and reports its
// outcome; it returns the leases its completion's turn took for this
// runtime (see complete).
func (rt *Runtime) runActivity(lease *WorkItemLease, sl *slot) []WorkItemLease {
	item := &lease.Item
	log := func() *slog.Logger { return rt.activityLogger(item) }
	if lease.AttemptCount > rt.opts.MaxAttempts {
		d := &ErrorDetails{Category: CategoryPoison, Message: fmt.Sprintf("activity %s#%d exceeded %d attempts (max %d)", item.Name, item.ID, lease.AttemptCount, rt.opts.MaxAttempts)}
		log().Error("poison activity message", "attempts", lease.AttemptCount)
		rt.metrics.poison("activity")
		rt.ackWork(lease, &WorkItem{Kind: WorkActivityFailed, Instance: item.Instance, ExecutionID: item.ExecutionID, ID: item.ID, Error: d})
		return nil
	}
	fn, ok := rt.reg.activity(item.Name)
	if !ok {
		log().Warn("activity not registered; retrying later", "attempt", lease.AttemptCount)
		if err := rt.store.AbandonWorkItem(rt.ctx, lease.LockToken, AbandonParams{Delay: rt.unregisteredDelay(lease.AttemptCount), IgnoreAttempt: false}); err != nil {
			log().Warn("abandon work item failed", "error", err)
		}
		return nil
	}
	br := rt.breakerFor(item.Name, item.Input)
	probe := false
	if br != nil {
		ok, p, halfOpenAt, from, to := br.allow()
		rt.circuitTransition(br, from, to)
		if !ok {
			err := &CircuitOpenError{Activity: item.Name, Key: br.key, HalfOpenAt: halfOpenAt}
			rt.metrics.circuitRejected(item.Name, br.key)
			if rt.tracer != nil {
				_, span := rt.startActivitySpan(rt.ctx, lease)
				endActivitySpan(span, "circuit_open", err)
			}
			log().Info("activity attempt failed fast: circuit breaker open", "circuit_key", br.key, "half_open_at", halfOpenAt)
			sl.release()
			return rt.complete(lease, &WorkItem{Kind: WorkActivityFailed, Instance: item.Instance, ExecutionID: item.ExecutionID, ID: item.ID,
				Error: detailsFromError(err)})
		}
		probe = p
	}
	ref := ActivityRef{Instance: item.Instance, ExecutionID: item.ExecutionID, ActivityID: item.ID}
	ctx, cancel := context.WithCancel(context.WithValue(rt.ctx, activityInfoKey{}, ActivityInfo{
		Instance: item.Instance, ExecutionID: item.ExecutionID, ActivityID: item.ID, ActivityName: item.Name,
		OrchestrationName: item.OrchestrationName, Attempt: lease.AttemptCount, WorkerID: rt.opts.WorkerID}))
	defer cancel()
	r := &activityRun{rt: rt, lease: lease, sl: sl, ref: ref, cancel: cancel, br: br, probe: probe}
	if rt.tracer != nil {
		ctx, r.span = rt.startActivitySpan(ctx, lease)
	}
	rt.runningMu.Lock()
	rt.running[ref] = r
	rt.runningMu.Unlock()

	// The function runs on this goroutine; what must happen meanwhile runs
	// on timers: the lease's renewal and, once the activity is cancelled,
	// the end of its grace period (see activityRun).
	r.begin = time.Now()
	r.armRenewal()
	stopWatch := context.AfterFunc(ctx, r.cancelled)
	res, err := r.call(ctx, fn, item.Input)
	stopWatch()
	r.stopRenewal()
	if !r.state.CompareAndSwap(runRunning, runReturned) {
		// Given up after its grace period: another goroutine has taken
		// this worker's place (see activityRun.giveUp).
		runtime.Goexit()
	}
	rt.untrack(r)
	if r.lost.Load() || ctx.Err() != nil {
		// Cancelled (lock lost, instance cancelled, select loser, or
		// shutdown): the result is dropped.
		r.dropped(err)
		return nil
	}
	comp := &WorkItem{Instance: item.Instance, ExecutionID: item.ExecutionID, ID: item.ID}
	outcomeLabel := "success"
	if err != nil {
		comp.Kind, comp.Error = WorkActivityFailed, detailsFromError(err)
		outcomeLabel = "failure"
		if comp.Error.Timeout {
			outcomeLabel = "timeout"
		}
	} else {
		comp.Kind, comp.Result = WorkActivityCompleted, res
	}
	r.observe(outcomeLabel, err)
	if br != nil {
		from, to := br.record(probe, err != nil && br.cfg.IsFailure(err))
		rt.circuitTransition(br, from, to)
	}
	sl.release()
	return rt.complete(lease, comp)
}

func (rt *Runtime) ackWork(lease *WorkItemLease, comp *WorkItem) {
	var err error
	for i := 0; i < 5; i++ {
		begin := time.Now()
		err = rt.store.AckWorkItem(rt.ctx, lease.LockToken, comp)
		rt.metrics.storeCall(opAckWorkItem, begin, err)
		if err == nil || !IsRetryable(err) {
			break
		}
		time.Sleep(time.Duration(10<<i) * time.Millisecond)
	}
	if err != nil {
		if errors.Is(err, ErrLockLost) {
			rt.logger.Info("activity result dropped: its message was cancelled or taken over", "instance_id", lease.Item.Instance, "activity", lease.Item.Name, "activity_id", lease.Item.ID)
			return
		}
		rt.logger.Warn("ack work item failed", "instance_id", lease.Item.Instance, "activity", lease.Item.Name, "error", err)
		_ = rt.store.AbandonWorkItem(rt.ctx, lease.LockToken, AbandonParams{Delay: 100 * time.Millisecond, IgnoreAttempt: false})
	}
}
