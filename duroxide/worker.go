package duroxide

// The activity worker: lease activity work items, run them under their
// policy's attempt timeout, and report each outcome.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
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
	defer rt.wg.Done()
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
			rt.runChain(l)
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
				rt.runChain(l)
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
		sl := &slot{rt: rt}
		next := rt.runActivity(lease, sl)
		sl.release()
		if len(next) > 0 {
			rt.runChain(rt.takeFirst(next))
		}
	}
}

// runChain runs a leased activity and then, one after the other, the first
// of the activities that each completion's turn leased to this runtime (the
// others are handed to the other workers): the next step of a sequence
// stays on this goroutine.
func (rt *Runtime) runChain(l *localLease) {
	for l != nil {
		next := rt.runLocal(l)
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

// slot is the place among localFree that a running activity holds; it is
// given back once, when the activity's function has returned and before
// its completion's turn leases the next activities (so that the next step
// of a sequence always finds one), or at the latest when the run ends.
type slot struct {
	rt   *Runtime
	done bool
}

func (s *slot) release() {
	if !s.done {
		s.done = true
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
		if cancel, ok := rt.running[r]; ok {
			cancel()
		}
	}
}

// runActivity runs a leased activity that holds sl and reports its
// outcome; it returns the leases its completion's turn took for this
// runtime (see complete).
func (rt *Runtime) runActivity(lease *WorkItemLease, sl *slot) []WorkItemLease {
	item := &lease.Item
	// Built only when something is logged: With copies the handler.
	log := func() *slog.Logger {
		return rt.logger.With("instance_id", item.Instance, "activity", item.Name, "activity_id", item.ID)
	}
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
	var span trace.Span
	if rt.tracer != nil {
		ctx, span = rt.startActivitySpan(ctx, lease)
	}
	rt.runningMu.Lock()
	rt.running[ref] = cancel
	rt.runningMu.Unlock()
	defer func() {
		rt.runningMu.Lock()
		delete(rt.running, ref)
		rt.runningMu.Unlock()
	}()

	type outcome struct {
		res string
		err error
	}
	done := make(chan outcome, 1)
	begin := time.Now()
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- outcome{err: fmt.Errorf("activity panicked: %v", r)}
			}
		}()
		res, err := fn(ctx, item.Input)
		done <- outcome{res, err}
	}()

	ticker := rt.renewTicker()
	defer rt.renewTickers.Put(ticker)
	defer ticker.Stop()
	var out outcome
	lost := false
wait:
	for {
		select {
		case out = <-done:
			break wait
		case <-ticker.C:
			renewBegin := time.Now()
			err := rt.store.RenewWorkItemLock(rt.ctx, lease.LockToken, rt.opts.ActivityLockTimeout)
			rt.metrics.storeCall(opRenewWorkItemLock, renewBegin, err)
			if err != nil {
				if errors.Is(err, ErrLockLost) {
					log().Info("activity lock lost (cancelled or expired); cancelling activity")
					lost = true
					cancel()
					break wait
				}
				log().Warn("renew work item lock failed", "error", err)
			}
		case <-ctx.Done():
			break wait
		}
	}
	if lost || ctx.Err() != nil {
		// Cancelled (lock lost, instance cancelled, select loser, or
		// shutdown): give the function its grace period, then drop the result.
		if len(done) == 0 {
			grace := time.NewTimer(rt.opts.CancellationGracePeriod)
			select {
			case out = <-done:
			case <-grace.C:
				log().Warn("cancelled activity did not return within the grace period; abandoning its result")
			}
			grace.Stop()
		}
		rt.metrics.activity(item.Name, "cancelled", time.Since(begin))
		if span != nil {
			endActivitySpan(span, "cancelled", out.err)
		}
		if br != nil {
			br.release(probe)
		}
		if lease.memRun != 0 {
			return nil // run in memory: there is no message to release
		}
		if rt.ctx.Err() != nil && !lost {
			// Runtime stopping: release the message for another worker now.
			_ = rt.store.AbandonWorkItem(context.Background(), lease.LockToken, AbandonParams{Delay: 0, IgnoreAttempt: true})
			return nil
		}
		_ = rt.store.AckWorkItem(rt.ctx, lease.LockToken, nil)
		return nil
	}
	comp := &WorkItem{Instance: item.Instance, ExecutionID: item.ExecutionID, ID: item.ID}
	outcomeLabel := "success"
	if out.err != nil {
		comp.Kind, comp.Error = WorkActivityFailed, detailsFromError(out.err)
		outcomeLabel = "failure"
		if comp.Error.Timeout {
			outcomeLabel = "timeout"
		}
	} else {
		comp.Kind, comp.Result = WorkActivityCompleted, out.res
	}
	rt.metrics.activity(item.Name, outcomeLabel, time.Since(begin))
	if span != nil {
		endActivitySpan(span, outcomeLabel, out.err)
	}
	if br != nil {
		from, to := br.record(probe, out.err != nil && br.cfg.IsFailure(out.err))
		rt.circuitTransition(br, from, to)
	}
	sl.release()
	return rt.complete(lease, comp)
}

// renewTicker returns a ticker of the activity lease renewal period, from
// rt.renewTickers (put it back stopped): a ticker per activity run would
// allocate one every step of a sequence.
func (rt *Runtime) renewTicker() *time.Ticker {
	every := rt.opts.ActivityLockTimeout / 3
	if t, ok := rt.renewTickers.Get().(*time.Ticker); ok {
		t.Reset(every) // stopped when put back: no tick is pending (Go 1.23 timers)
		return t
	}
	return time.NewTicker(every)
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
