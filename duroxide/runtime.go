package duroxide

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Runtime. The zero value of every field means its default.
type Options struct {
	// OrchestrationConcurrency is the number of orchestration turns processed
	// at once (default 4).
	OrchestrationConcurrency int
	// ActivityConcurrency is the number of activities run at once (default 16).
	ActivityConcurrency int
	// OrchestrationLockTimeout is how long a turn holds its instance before
	// another runtime may take it over (default 5s; renewed while a turn runs).
	OrchestrationLockTimeout time.Duration
	// ActivityLockTimeout is how long an activity holds its message before
	// another worker may take it over (default 30s; renewed while it runs).
	ActivityLockTimeout time.Duration
	// MaxAttempts is how many times a message may be fetched before it is
	// treated as poison and its instance failed (default 10).
	MaxAttempts int
	// PollInterval is the fallback poll period for work the store did not
	// announce (default 1s). Work written through a store that implements
	// Notifier, and timers, are picked up without waiting for it.
	PollInterval time.Duration
	// CancellationGracePeriod is how long a cancelled activity may keep
	// running before its result is abandoned (default 10s).
	CancellationGracePeriod time.Duration
	// UnregisteredBackoff is the first delay before retrying a message whose
	// orchestration or activity is not registered here; it doubles up to
	// UnregisteredBackoffMax (defaults 1s and 60s).
	UnregisteredBackoff, UnregisteredBackoffMax time.Duration
	// CacheSize is the number of live orchestration instances kept in memory
	// between turns (default 2048; negative disables the cache). A cached
	// instance's next turn applies only new events instead of replaying its
	// history.
	CacheSize int
	// Logger receives runtime logs (default slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, receives the runtime's Prometheus collectors. The
	// runtime never registers on the global registry by itself. A later
	// runtime on the same Registerer keeps counting on the same collectors.
	Metrics prometheus.Registerer
	// WorkerID names this runtime in logs and activity contexts (default host-pid).
	WorkerID string
	// KeepExecutions bounds continue-as-new chains: when positive, the turn
	// that starts a new execution after ContinueAsNew also deletes the
	// instance's executions older than the newest KeepExecutions (with their
	// history), atomically with that turn (TurnCommit.KeepExecutions). The
	// current execution and Running ones are never deleted; ListExecutions
	// and ReadHistory no longer return pruned ones. Zero (the default) keeps
	// every execution. WithKeepExecutions overrides it per orchestration.
	// Executions of an instance started before the option was set go at its
	// next continue-as-new.
	KeepExecutions int
	// ExclusiveStore declares that this process is the store's only user
	// (for example it holds an exclusive lock on the database's directory).
	// Start then takes back every lease held by other store handles, which
	// can only be previous, dead incarnations of this process: their
	// unfinished turns and activities run again at once, instead of after
	// their owner's dead-after period, and without counting the lost
	// deliveries as attempts. The store must implement LeaseReclaimer.
	// Never set it for a store shared by several processes.
	ExclusiveStore bool
	// DisableLocalDispatch turns off the shortcuts of a store that
	// implements LocalDispatcher: activities scheduled by a turn of this
	// runtime are then fetched from the worker queue, and their completions
	// go through the orchestrator queue, as with any other store.
	DisableLocalDispatch bool
}

func (o *Options) withDefaults() {
	if o.OrchestrationConcurrency <= 0 {
		o.OrchestrationConcurrency = 4
	}
	if o.ActivityConcurrency <= 0 {
		o.ActivityConcurrency = 16
	}
	if o.OrchestrationLockTimeout <= 0 {
		o.OrchestrationLockTimeout = 5 * time.Second
	}
	if o.ActivityLockTimeout <= 0 {
		o.ActivityLockTimeout = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.CancellationGracePeriod <= 0 {
		o.CancellationGracePeriod = 10 * time.Second
	}
	if o.UnregisteredBackoff <= 0 {
		o.UnregisteredBackoff = time.Second
	}
	if o.UnregisteredBackoffMax <= 0 {
		o.UnregisteredBackoffMax = 60 * time.Second
	}
	if o.CacheSize == 0 {
		o.CacheSize = 2048
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.WorkerID == "" {
		h, _ := os.Hostname()
		o.WorkerID = h + "-" + strconv.Itoa(os.Getpid())
	}
}

// Runtime runs orchestrations and activities from a Store. Several runtimes
// (in one process or many) may share a store that supports it; each
// instance's turns run on one runtime at a time.
type Runtime struct {
	store   Store
	reg     *Registry
	opts    Options
	logger  *slog.Logger
	metrics *metrics

	ctx    context.Context // cancelled at hard stop
	cancel context.CancelFunc
	stopCh chan struct{} // closed when Shutdown begins
	wg     sync.WaitGroup
	actWG  sync.WaitGroup

	orchWake     wakeup
	workWake     wakeup
	timerHint    chan struct{}
	earliestHint atomic.Int64 // earliest FireAtMs written since the timer loop last looked
	stopWatch    func()

	cache *engineCache

	runningMu sync.Mutex
	running   map[ActivityRef]context.CancelFunc

	shutdownOnce sync.Once
	inflight     atomic.Int64

	// Local dispatch (see LocalDispatcher); local is nil without it.
	// localFree counts, out of twice ActivityConcurrency, the activities
	// neither running nor leased and waiting in localWork; a turn leases at
	// most that many of its activities to this runtime (a worker is then
	// busy for at most one activity before it takes a waiting one).
	local     LocalDispatcher
	localWork chan *localLease
	localFree atomic.Int64
	inlineMu  sync.Mutex
	inline    map[string]*inlineBatch // instance → completions waiting for the instance's in-flight inline turn

	// Local timers: timers of this runtime's turns, fired in process.
	timersMu      sync.Mutex
	timers        map[timerKey]*time.Timer
	timersStopped bool
	timersWG      sync.WaitGroup
}

// Start starts a runtime on store with the registered orchestrations and
// activities. Call Shutdown to stop it.
func Start(ctx context.Context, store Store, reg *Registry, opts Options) (*Runtime, error) {
	if store == nil || reg == nil {
		return nil, errors.New("duroxide: start runtime: store and registry are required")
	}
	opts.withDefaults()
	if opts.ExclusiveStore {
		r, ok := store.(LeaseReclaimer)
		if !ok {
			return nil, fmt.Errorf("duroxide: start runtime: ExclusiveStore is set but the store (%T) does not implement LeaseReclaimer", store)
		}
		n, err := r.ReclaimLeases(ctx)
		if err != nil {
			return nil, fmt.Errorf("duroxide: start runtime: reclaim leases: %w", err)
		}
		if n > 0 {
			opts.Logger.Info("took back the leases of previous store owners", "owners", n)
		}
	}
	rt := &Runtime{
		store:   store,
		reg:     reg,
		opts:    opts,
		logger:  opts.Logger,
		stopCh:  make(chan struct{}),
		cache:   newEngineCache(opts.CacheSize),
		running: map[ActivityRef]context.CancelFunc{},
	}
	rt.orchWake.init()
	rt.workWake.init()
	if ld, ok := store.(LocalDispatcher); ok && !opts.DisableLocalDispatch {
		rt.local = ld
	}
	rt.localWork = make(chan *localLease, 2*opts.ActivityConcurrency)
	rt.localFree.Store(int64(2 * opts.ActivityConcurrency))
	rt.inline = map[string]*inlineBatch{}
	rt.timers = map[timerKey]*time.Timer{}
	rt.timerHint = make(chan struct{}, 1)
	m, err := newMetrics(opts.Metrics, store)
	if err != nil {
		return nil, fmt.Errorf("duroxide: start runtime: %w", err)
	}
	rt.metrics = m
	m.initActivities(reg.ActivityNames())
	rt.ctx, rt.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if n, ok := store.(Notifier); ok {
		rt.stopWatch = n.Watch(func(q Queue) {
			switch q {
			case QueueOrchestrator:
				rt.orchWake.notify()
			case QueueWorker:
				rt.workWake.notify()
			}
		})
	}
	rt.wg.Add(1)
	go rt.timerLoop()
	for i := 0; i < opts.OrchestrationConcurrency; i++ {
		rt.wg.Add(1)
		go rt.orchestrationLoop()
	}
	for i := 0; i < opts.ActivityConcurrency; i++ {
		rt.wg.Add(1)
		go rt.workerLoop()
	}
	rt.logger.Info("duroxide runtime started", "worker_id", opts.WorkerID,
		"orchestration_concurrency", opts.OrchestrationConcurrency, "activity_concurrency", opts.ActivityConcurrency)
	return rt, nil
}

// Client returns a client over the runtime's store. With a store that
// implements LocalDispatcher its StartOrchestration runs the new
// instance's first turn in the calling goroutine and commits it with the
// instance's creation, in one transaction, instead of queueing a start
// message (the turn is not counted against OrchestrationConcurrency).
func (rt *Runtime) Client() *Client { return &Client{store: rt.store, rt: rt} }

// Store returns the runtime's store.
func (rt *Runtime) Store() Store { return rt.store }

// Settings returns the options the runtime runs with, defaults applied:
// its worker id, concurrency, lock timeouts, poll interval and limits.
func (rt *Runtime) Settings() Options { return rt.opts }

// RunningActivities is the number of activities executing in this runtime
// now (at most Settings().ActivityConcurrency).
func (rt *Runtime) RunningActivities() int {
	rt.runningMu.Lock()
	defer rt.runningMu.Unlock()
	return len(rt.running)
}

// ActiveTurns is the number of orchestration turns this runtime is
// processing now (at most Settings().OrchestrationConcurrency).
func (rt *Runtime) ActiveTurns() int { return int(rt.inflight.Load()) }

// Shutdown stops fetching new work and waits for in-flight turns and
// activities to finish until ctx ends. Activities still running then are
// cancelled and their messages released so another runtime can take them at
// once; nothing is lost either way.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	var err error
	rt.shutdownOnce.Do(func() {
		close(rt.stopCh)
		if rt.local != nil {
			rt.stopTimers()
		}
		done := make(chan struct{})
		go func() { rt.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
			rt.cancel() // cancels running activities; their loops release the leases
			<-done
		}
		rt.cancel()
		rt.releaseLocal()
		if rt.stopWatch != nil {
			rt.stopWatch()
		}
		rt.cache.closeAll()
		rt.logger.Info("duroxide runtime stopped", "worker_id", rt.opts.WorkerID)
	})
	return err
}

func (rt *Runtime) stopping() bool {
	select {
	case <-rt.stopCh:
		return true
	default:
		return false
	}
}

// idleWait sleeps until a dispatcher baton arrives or shutdown.
func (rt *Runtime) idleWait(w *wakeup) {
	select {
	case <-w.ch:
	case <-rt.stopCh:
	}
}

// errorBackoff sleeps after a store error.
func (rt *Runtime) errorBackoff(n int) {
	d := time.Duration(50<<min(n, 6)) * time.Millisecond
	if d > 3*time.Second {
		d = 3 * time.Second
	}
	select {
	case <-time.After(d):
	case <-rt.stopCh:
	}
}

// ---------------------------------------------------------------------------
// Orchestration dispatcher.

func (rt *Runtime) orchestrationLoop() {
	defer rt.wg.Done()
	failures := 0
	// After a turn whose fetch found no other instance ready, the slot
	// waits for a wake-up instead of fetching again: work that became
	// visible since was announced, and whoever takes a wake-up fetches.
	idle := false
	for !rt.stopping() {
		if idle {
			rt.idleWait(&rt.orchWake)
			idle = false
			continue
		}
		item, err := rt.store.FetchOrchestrationItem(rt.ctx, rt.opts.OrchestrationLockTimeout)
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
			err := rt.store.RenewOrchestrationItemLock(rt.ctx, token, rt.opts.OrchestrationLockTimeout)
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
		err = rt.store.AckOrchestrationItem(rt.ctx, token, c)
		if err == nil || !IsRetryable(err) {
			return err
		}
		time.Sleep(time.Duration(10<<i) * time.Millisecond)
	}
	return err
}

func (rt *Runtime) abandon(item *OrchestrationItem, delay time.Duration) {
	if err := rt.store.AbandonOrchestrationItem(rt.ctx, item.LockToken, delay, false); err != nil && !errors.Is(err, ErrLockLost) {
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
		eng = newEngine(rt, item.Instance, execID, fn)
		eng.createdAtMs = item.CreatedAtMs
		eng.beginTurn()
		started := Event{Kind: EventOrchestrationStarted, Name: start.Name, Version: version, Input: start.Input,
			ParentInstance: start.ParentInstance, ParentExecutionID: start.ParentExecutionID, ParentID: start.ParentID}
		if start.Kind == WorkContinueAsNew {
			started.CarryForward, started.CustomStatus = start.CarryForward, start.CustomStatus
		}
		eng.record(started)
		for i := range msgs {
			if &msgs[i] != start {
				eng.applyMessage(&msgs[i])
			}
		}
		by := "client"
		if start.Kind == WorkContinueAsNew {
			by = "continueAsNew"
		} else if start.ParentInstance != "" {
			by = "suborchestration"
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
			history, err := rt.store.ReadHistory(rt.ctx, item.Instance, item.ExecutionID)
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
		}
		eng.createdAtMs = item.CreatedAtMs
		eng.beginTurn()
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

// ---------------------------------------------------------------------------
// Activity worker.

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
	idle := false
	for !rt.stopping() {
		select {
		case l := <-rt.localWork:
			rt.runLocal(l)
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
				rt.runLocal(l)
				continue
			case <-rt.stopCh:
				continue
			}
		}
		lease, err := rt.store.FetchWorkItem(rt.ctx, rt.opts.ActivityLockTimeout)
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
		rt.runActivity(lease)
		rt.localFree.Add(1)
	}
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

func (rt *Runtime) runActivity(lease *WorkItemLease) {
	item := &lease.Item
	log := rt.logger.With("instance_id", item.Instance, "activity", item.Name, "activity_id", item.ID)
	if lease.AttemptCount > rt.opts.MaxAttempts {
		d := &ErrorDetails{Category: CategoryPoison, Message: fmt.Sprintf("activity %s#%d exceeded %d attempts (max %d)", item.Name, item.ID, lease.AttemptCount, rt.opts.MaxAttempts)}
		log.Error("poison activity message", "attempts", lease.AttemptCount)
		rt.metrics.poison("activity")
		rt.ackWork(lease, &WorkItem{Kind: WorkActivityFailed, Instance: item.Instance, ExecutionID: item.ExecutionID, ID: item.ID, Error: d})
		return
	}
	fn, ok := rt.reg.activity(item.Name)
	if !ok {
		log.Warn("activity not registered; retrying later", "attempt", lease.AttemptCount)
		if err := rt.store.AbandonWorkItem(rt.ctx, lease.LockToken, rt.unregisteredDelay(lease.AttemptCount), false); err != nil {
			log.Warn("abandon work item failed", "error", err)
		}
		return
	}
	ref := ActivityRef{Instance: item.Instance, ExecutionID: item.ExecutionID, ActivityID: item.ID}
	ctx, cancel := context.WithCancel(context.WithValue(rt.ctx, activityInfoKey{}, ActivityInfo{
		Instance: item.Instance, ExecutionID: item.ExecutionID, ActivityID: item.ID, ActivityName: item.Name,
		OrchestrationName: item.OrchestrationName, Attempt: lease.AttemptCount, WorkerID: rt.opts.WorkerID}))
	defer cancel()
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

	renewEvery := rt.opts.ActivityLockTimeout / 3
	ticker := time.NewTicker(renewEvery)
	defer ticker.Stop()
	var out outcome
	lost := false
wait:
	for {
		select {
		case out = <-done:
			break wait
		case <-ticker.C:
			if err := rt.store.RenewWorkItemLock(rt.ctx, lease.LockToken, rt.opts.ActivityLockTimeout); err != nil {
				if errors.Is(err, ErrLockLost) {
					log.Info("activity lock lost (cancelled or expired); cancelling activity")
					lost = true
					cancel()
					break wait
				}
				log.Warn("renew work item lock failed", "error", err)
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
				log.Warn("cancelled activity did not return within the grace period; abandoning its result")
			}
			grace.Stop()
		}
		rt.metrics.activity(item.Name, "cancelled", time.Since(begin))
		if rt.ctx.Err() != nil && !lost {
			// Runtime stopping: release the message for another worker now.
			_ = rt.store.AbandonWorkItem(context.Background(), lease.LockToken, 0, true)
			return
		}
		_ = rt.store.AckWorkItem(rt.ctx, lease.LockToken, nil)
		return
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
	rt.complete(lease, comp)
}

func (rt *Runtime) ackWork(lease *WorkItemLease, comp *WorkItem) {
	var err error
	for i := 0; i < 5; i++ {
		err = rt.store.AckWorkItem(rt.ctx, lease.LockToken, comp)
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
		_ = rt.store.AbandonWorkItem(rt.ctx, lease.LockToken, 100*time.Millisecond, false)
	}
}

// ---------------------------------------------------------------------------
// Wake-ups.

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

// ---------------------------------------------------------------------------
// Engine cache (LRU).

type engineCache struct {
	mu    sync.Mutex
	max   int
	items map[string]*cacheEntry
	head  *cacheEntry // most recent
	tail  *cacheEntry
}

type cacheEntry struct {
	key        string
	e          *engine
	prev, next *cacheEntry
}

func newEngineCache(max int) *engineCache {
	return &engineCache{max: max, items: map[string]*cacheEntry{}}
}

func (c *engineCache) unlink(n *cacheEntry) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		c.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		c.tail = n.prev
	}
	n.prev, n.next = nil, nil
}

// take removes and returns the cached engine of an instance.
func (c *engineCache) take(key string) *engine {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.items[key]
	if !ok {
		return nil
	}
	c.unlink(n)
	delete(c.items, key)
	return n.e
}

// put caches an engine and returns one evicted to make room, if any.
func (c *engineCache) put(key string, e *engine) *engine {
	if c.max < 0 {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var evicted *engine
	if old, ok := c.items[key]; ok {
		c.unlink(old)
		if old.e != e {
			evicted = old.e
		}
	}
	n := &cacheEntry{key: key, e: e, next: c.head}
	if c.head != nil {
		c.head.prev = n
	}
	c.head = n
	if c.tail == nil {
		c.tail = n
	}
	c.items[key] = n
	if len(c.items) > c.max && c.tail != nil && evicted == nil {
		t := c.tail
		c.unlink(t)
		delete(c.items, t.key)
		evicted = t.e
	}
	return evicted
}

func (c *engineCache) closeAll() {
	c.mu.Lock()
	items := c.items
	c.items, c.head, c.tail = map[string]*cacheEntry{}, nil, nil
	c.mu.Unlock()
	for _, n := range items {
		n.e.close()
	}
}
