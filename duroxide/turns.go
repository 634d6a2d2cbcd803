package duroxide

// The orchestration dispatcher: fetch an instance's pending messages, run
// one turn of its orchestration, commit the turn and act on the result.

import (
	"errors"
	"fmt"
	"time"
)

func (rt *Runtime) orchestrationLoop() {
	defer rt.wg.Done()
	failures := 0
	// After a turn whose fetch found no other instance ready, the slot
	// waits for a wake-up instead of fetching again: work that became
	// visible since was announced, and whoever takes a wake-up fetches.
	// Slots start waiting: the timer loop's first tick wakes one, and a
	// fetch that may have left work behind wakes the next.
	idle := true
	for !rt.stopping() {
		if idle {
			rt.idleWait(&rt.orchWake)
			idle = false
			continue
		}
		begin := time.Now()
		item, err := rt.store.FetchOrchestrationItem(rt.ctx, rt.opts.OrchestrationLockTimeout)
		rt.metrics.storeCall(opFetchOrchestrationItem, begin, err)
		if err != nil {
			if rt.stopping() {
				return
			}
			failures++
			rt.logger.Warn("fetch orchestration item failed", "error", err, "retryable", IsRetryable(err))
			rt.errorBackoff(failures)
			continue
		}
		failures = 0
		if item == nil {
			idle = true
			continue
		}
		if !item.NoMoreVisible {
			rt.orchWake.notify() // there may be more: wake another slot
		}
		rt.processItem(item)
		idle = item.NoMoreVisible
	}
}

// processItem runs one turn; it never panics.
func (rt *Runtime) processItem(item *OrchestrationItem) {
	rt.inflight.Add(1)
	defer rt.inflight.Add(-1)
	var eng *engine
	defer func() {
		if r := recover(); r != nil {
			rt.logger.Error("orchestration turn panicked; abandoning", "instance_id", item.Instance, "panic", r)
			if eng != nil {
				eng.close()
			}
			rt.abandon(item, time.Second)
		}
	}()
	// Renew the lock every half lock timeout while the turn runs, however
	// long it takes (a one-shot renewal let turns longer than 1.5 lock
	// timeouts lose their lock on every attempt).
	defer rt.keepTurnLock(item.LockToken)()

	if h := rt.interruptHeld(item.Instance); h != nil {
		// This turn runs on the stored history, without the held chain's
		// turns: give the chain's failures to the queue now rather than
		// let its commit be refused later (see hold.go).
		rt.dropHeld(h)
	}
	if item.AttemptCount > rt.opts.MaxAttempts {
		rt.poisonOrchestration(item)
		return
	}
	var commit *TurnCommit
	eng, commit = rt.runTurn(item)
	if commit == nil {
		return // abandoned or discarded inside runTurn
	}
	if rt.local != nil {
		commit.TimerBackstop = localTimerBackstop
	}
	leases, err := rt.ackTurn(item.LockToken, commit)
	if err != nil {
		rt.logger.Error("commit orchestration turn failed", "instance_id", item.Instance, "error", err)
		if eng != nil {
			eng.close()
		}
		if !errors.Is(err, ErrLockLost) {
			rt.abandon(item, 100*time.Millisecond)
		}
		return
	}
	rt.afterCommit(item, eng, commit)
	rt.dispatchLocal(leases)
}

// keepTurnLock renews a turn's lock every half lock timeout until the
// returned function is called or the lock is lost.
func (rt *Runtime) keepTurnLock(token string) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(rt.opts.OrchestrationLockTimeout / 2)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			begin := time.Now()
			err := rt.store.RenewOrchestrationItemLock(rt.ctx, token, rt.opts.OrchestrationLockTimeout)
			rt.metrics.storeCall(opRenewOrchestrationItemLock, begin, err)
			switch {
			case err == nil:
			case errors.Is(err, ErrLockLost):
				// Expired, or released by the turn's ack meanwhile. A turn
				// that really lost its lock reports it when its ack fails.
				rt.logger.Debug("renew orchestration lock: lock lost", "error", err)
				return
			default:
				rt.logger.Warn("renew orchestration lock failed", "error", err)
			}
		}
	}()
	return func() { close(done) }
}

func (rt *Runtime) ackWithRetry(token string, c *TurnCommit) error {
	var err error
	for i := 0; i < 5; i++ {
		begin := time.Now()
		err = rt.store.AckOrchestrationItem(rt.ctx, token, c)
		rt.metrics.storeCall(opAckOrchestrationItem, begin, err)
		if err == nil || !IsRetryable(err) {
			return err
		}
		time.Sleep(time.Duration(10<<i) * time.Millisecond)
	}
	return err
}

func (rt *Runtime) abandon(item *OrchestrationItem, delay time.Duration) {
	begin := time.Now()
	err := rt.store.AbandonOrchestrationItem(rt.ctx, item.LockToken, AbandonParams{Delay: delay, IgnoreAttempt: false})
	rt.metrics.storeCall(opAbandonOrchestrationItem, begin, err)
	if err != nil && !errors.Is(err, ErrLockLost) {
		rt.logger.Warn("abandon orchestration item failed", "instance_id", item.Instance, "error", err)
	}
}

func (rt *Runtime) discard(item *OrchestrationItem) {
	if err := rt.ackWithRetry(item.LockToken, &TurnCommit{}); err != nil {
		rt.logger.Warn("discard orchestration messages failed", "instance_id", item.Instance, "error", err)
	}
}

func (rt *Runtime) unregisteredDelay(attempt int) time.Duration {
	d := rt.opts.UnregisteredBackoff << min(max(attempt-1, 0), 6)
	if d > rt.opts.UnregisteredBackoffMax {
		d = rt.opts.UnregisteredBackoffMax
	}
	return d
}

// runTurn builds the engine for the item and applies its messages. It
// returns a nil commit when it has already disposed of the item.
func (rt *Runtime) runTurn(item *OrchestrationItem) (*engine, *TurnCommit) {
	msgs := item.Messages
	var eng *engine
	var begin time.Time
	if rt.tracer != nil {
		begin = time.Now()
	}
	keep := 0 // TurnCommit.KeepExecutions: set only when this turn starts a continue-as-new execution
	switch {
	case !item.Exists || (item.ExecutionStatus == StatusContinuedAsNew):
		var start *WorkItem
		var execID int64 = 1
		for i := range msgs {
			m := &msgs[i]
			if !item.Exists && m.Kind == WorkStartOrchestration {
				start = m
				break
			}
			if item.Exists && m.Kind == WorkContinueAsNew && m.ExecutionID == item.ExecutionID {
				start, execID = m, item.ExecutionID+1
				break
			}
		}
		if start == nil {
			rt.discard(item)
			return nil, nil
		}
		fn, version, ok := rt.reg.orchestration(start.Name, start.Version)
		if !ok {
			rt.logger.Warn("orchestration not registered; retrying later", "instance_id", item.Instance, "orchestration", start.Name, "version", start.Version, "attempt", item.AttemptCount)
			rt.abandon(item, rt.unregisteredDelay(item.AttemptCount))
			return nil, nil
		}
		if start.Kind == WorkContinueAsNew {
			keep = rt.keepExecutions(start.Name, version)
		}
		if old := rt.cache.take(item.Instance); old != nil {
			old.close()
		}
		by := "client"
		if start.Kind == WorkContinueAsNew {
			by = "continueAsNew"
		} else if start.ParentInstance != "" {
			by = "suborchestration"
		}
		eng = newEngine(rt, item.Instance, execID, fn)
		eng.createdAtMs = item.CreatedAtMs
		eng.beginTurn()
		eng.turnStart = begin
		started := Event{Kind: EventOrchestrationStarted, Name: start.Name, Version: version, Input: start.Input,
			ParentInstance: start.ParentInstance, ParentExecutionID: start.ParentExecutionID, ParentID: start.ParentID,
			TraceContext: start.TraceContext}
		if start.Kind == WorkContinueAsNew {
			started.CarryForward, started.CustomStatus = start.CarryForward, start.CustomStatus
		}
		if rt.tracer != nil {
			started.TraceContext = eng.startOrchSpan(parseTraceparent(start.TraceContext), start.Name, version, by)
		}
		eng.record(started)
		for i := range msgs {
			if &msgs[i] != start {
				eng.applyMessage(&msgs[i])
			}
		}
		name := start.Name
		eng.post = append(eng.post, func() { rt.metrics.start(name, version, by) })
	case item.ExecutionStatus.IsTerminal():
		rt.discard(item) // late completions, duplicate starts, events for a finished instance
		return nil, nil
	default:
		eng = rt.cache.take(item.Instance)
		if eng != nil && (eng.executionID != item.ExecutionID || eng.nextID != item.LastEventID+1 || (eng.createdAtMs != 0 && eng.createdAtMs != item.CreatedAtMs)) {
			eng.close()
			eng = nil
		}
		if eng == nil {
			readBegin := time.Now()
			history, err := rt.store.ReadHistory(rt.ctx, item.Instance, item.ExecutionID)
			rt.metrics.storeCall(opReadHistory, readBegin, err)
			if err != nil {
				rt.logger.Warn("read history failed", "instance_id", item.Instance, "error", err)
				rt.abandon(item, time.Second)
				return nil, nil
			}
			name, version := item.OrchestrationName, item.OrchestrationVersion
			if len(history) > 0 && history[0].Kind == EventOrchestrationStarted {
				name, version = history[0].Name, history[0].Version
			}
			fn, _, ok := rt.reg.orchestration(name, version)
			if !ok {
				rt.logger.Warn("orchestration version not registered; retrying later", "instance_id", item.Instance, "orchestration", name, "version", version)
				rt.abandon(item, rt.unregisteredDelay(item.AttemptCount))
				return nil, nil
			}
			eng = newEngine(rt, item.Instance, item.ExecutionID, fn)
			eng.createdAtMs = item.CreatedAtMs
			eng.replay(history)
			if rt.tracer != nil {
				eng.adoptTrace(eng.traceCtx)
			}
		}
		eng.createdAtMs = item.CreatedAtMs
		eng.beginTurn()
		eng.turnStart = begin
		for i := range msgs {
			eng.applyMessage(&msgs[i])
		}
	}
	eng.flush()
	c := eng.commit()
	c.KeepExecutions = keep
	return eng, c
}

// keepExecutions is the number of executions to keep for an orchestration
// (0: all): its WithKeepExecutions registration, else Options.KeepExecutions.
func (rt *Runtime) keepExecutions(name, version string) int {
	n, set := rt.reg.keepExecutions(name, version)
	if !set {
		n = rt.opts.KeepExecutions
	}
	return max(n, 0)
}

// commit builds the store write for the turn.
func (e *engine) commit() *TurnCommit {
	if h := e.hint(""); h != nil && len(e.delta) > 0 {
		h.observe(e.delta[0].Kind == EventOrchestrationStarted, len(e.delta))
	}
	c := &TurnCommit{
		ExecutionID:          e.executionID,
		OrchestrationName:    e.name,
		OrchestrationVersion: e.version,
		ParentInstance:       e.parentInstance,
		Status:               e.status,
		Output:               e.output,
		HistoryDelta:         e.delta,
		WorkerItems:          e.workItems,
		OrchestratorItems:    e.orchItems,
		CancelledActivities:  e.cancelled,
		CancelledTimers:      e.cancelledTimers,
	}
	if e.setCS {
		c.SetCustomStatus, c.CustomStatus = true, e.customStat
	}
	if c.Status == "" {
		c.Status = StatusRunning
	}
	return c
}

func (rt *Runtime) afterCommit(item *OrchestrationItem, eng *engine, c *TurnCommit) {
	// Metrics and logs of this turn are emitted only once it is committed, so
	// a turn that is retried after a failed commit never counts twice.
	post := eng.post
	eng.post = nil
	for _, f := range post {
		f()
	}
	rt.metrics.turn(eng.name)
	rt.metrics.historySize(eng.name, eng.nextID-1)
	if rt.tracer != nil {
		rt.turnSpan(eng, c)
	}
	if len(c.CancelledTimers) > 0 && rt.local != nil {
		rt.disarmTimers(item.Instance, c.ExecutionID, c.CancelledTimers)
	}
	if c.TimerBackstop > 0 {
		rt.armTimers(item.Instance, c)
	} else {
		for i := range c.OrchestratorItems {
			if w := &c.OrchestratorItems[i]; w.Kind == WorkTimerFired && w.FireAtMs > time.Now().UnixMilli() {
				rt.hintTimer(w.FireAtMs)
			}
		}
	}
	if len(c.CancelledActivities) > 0 {
		rt.cancelLocal(c.CancelledActivities)
	}
	if c.Status.IsTerminal() {
		eng.close()
		rt.metrics.finish(eng, c.Status)
		return
	}
	if evicted := rt.cache.put(item.Instance, eng); evicted != nil {
		evicted.close()
	}
}

// poisonOrchestration fails an instance whose messages keep failing.
func (rt *Runtime) poisonOrchestration(item *OrchestrationItem) {
	d := &ErrorDetails{Category: CategoryPoison, Message: fmt.Sprintf("orchestration %s exceeded %d attempts (max %d)", item.Instance, item.AttemptCount, rt.opts.MaxAttempts)}
	rt.logger.Error("poison orchestration message", "instance_id", item.Instance, "attempts", item.AttemptCount)
	rt.metrics.poison("orchestration")
	if old := rt.cache.take(item.Instance); old != nil {
		old.close()
	}
	now := time.Now().UnixMilli()
	c := &TurnCommit{Status: StatusFailed, Output: mustJSON(d)}
	var parent *WorkItem
	if item.Exists && !item.ExecutionStatus.IsTerminal() {
		c.ExecutionID, c.OrchestrationName, c.OrchestrationVersion = item.ExecutionID, item.OrchestrationName, item.OrchestrationVersion
		c.HistoryDelta = []Event{{EventID: item.LastEventID + 1, Kind: EventOrchestrationFailed, Error: d, TimestampMs: now}}
		if h, err := rt.store.ReadHistory(rt.ctx, item.Instance, item.ExecutionID); err == nil && len(h) > 0 && h[0].ParentInstance != "" {
			c.ParentInstance = h[0].ParentInstance
			parent = &WorkItem{Kind: WorkSubOrchFailed, Instance: h[0].ParentInstance, ExecutionID: h[0].ParentExecutionID, ID: h[0].ParentID, Error: d}
		}
	} else if !item.Exists {
		var start *WorkItem
		for i := range item.Messages {
			if item.Messages[i].Kind == WorkStartOrchestration {
				start = &item.Messages[i]
				break
			}
		}
		if start == nil {
			rt.discard(item)
			return
		}
		c.ExecutionID, c.OrchestrationName, c.OrchestrationVersion, c.ParentInstance = 1, start.Name, start.Version, start.ParentInstance
		if c.OrchestrationVersion == "" {
			c.OrchestrationVersion = "unknown"
		}
		c.HistoryDelta = []Event{
			{EventID: 1, Kind: EventOrchestrationStarted, Name: start.Name, Version: c.OrchestrationVersion, Input: start.Input, ParentInstance: start.ParentInstance, ParentExecutionID: start.ParentExecutionID, ParentID: start.ParentID, TimestampMs: now},
			{EventID: 2, Kind: EventOrchestrationFailed, Error: d, TimestampMs: now},
		}
		if start.ParentInstance != "" {
			parent = &WorkItem{Kind: WorkSubOrchFailed, Instance: start.ParentInstance, ExecutionID: start.ParentExecutionID, ID: start.ParentID, Error: d}
		}
	} else {
		rt.discard(item)
		return
	}
	if parent != nil {
		c.OrchestratorItems = append(c.OrchestratorItems, *parent)
	}
	if err := rt.ackWithRetry(item.LockToken, c); err != nil {
		rt.logger.Error("commit poison failure failed", "instance_id", item.Instance, "error", err)
	}
}
