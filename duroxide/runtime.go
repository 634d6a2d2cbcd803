package duroxide

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
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
	// RetryPolicies sets the default retry policy of activities by name,
	// overriding WithDefaultRetry (see there): configuration read at run
	// time, e.g. from a file. A sequence that already started keeps the
	// policy recorded in its history.
	RetryPolicies map[string]RetryPolicy
	// CircuitBreakers puts circuit breakers in front of activities by name,
	// overriding WithCircuitBreaker.
	CircuitBreakers map[string]CircuitBreakerConfig
	// TracerProvider, when set, receives OpenTelemetry spans: one per
	// orchestration execution, per committed turn and per activity attempt,
	// continuing the trace of the span in StartOrchestration's ctx across
	// processes and restarts (see Tracing in the package doc). Nil (the
	// default) traces nothing, at the cost of a nil check.
	TracerProvider trace.TracerProvider
	// ChangeVersions pins, by GetVersion change id, the version that new
	// executions record for that change: min(pin, the code's maxSupported)
	// instead of maxSupported. It makes a change a two-step rolling
	// upgrade: first deploy code that supports both versions with the pin
	// on the old one, so no instance records the new version while workers
	// running the old code may still replay it; once every worker runs the
	// new code, drop the pin. (The old code must call GetVersion for the
	// change already, e.g. when moving from version 1 to 2: code without the
	// call cannot replay a history holding its marker, whatever version it
	// records.) A pin of VersionBeforeChange also lets a test run the old
	// branch on new executions (duroxidetest.WithChangeVersion). A pin applies to every orchestration that uses
	// the change id and never alters a version already recorded. A pin below
	// the call's minSupported fails the executions that reach the call.
	ChangeVersions map[string]int
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
	tracer  trace.Tracer // nil: no tracing

	deltaHints sync.Map // orchestration name → *deltaHint (engine.appendDelta)

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
	running   map[ActivityRef]*activityRun

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
	held      map[string]*heldTurn    // instance → its turns waiting for a short timer or an attempt run in memory (see hold.go); under inlineMu
	chains    atomic.Uint64           // numbers held chains

	// Local timers: timers of this runtime's turns, fired in process.
	timersMu      sync.Mutex
	timers        map[timerKey]localTimer
	timersStopped bool
	timersWG      sync.WaitGroup

	breakers breakers
	stats    retryStats
}

// Start starts a runtime on store with the registered orchestrations and
// activities. Call Shutdown to stop it.
func Start(ctx context.Context, store Store, reg *Registry, opts Options) (*Runtime, error) {
	if store == nil || reg == nil {
		return nil, errors.New("duroxide: start runtime: store and registry are required")
	}
	opts.withDefaults()
	opts.ChangeVersions = maps.Clone(opts.ChangeVersions) // turns read it concurrently
	for name, p := range opts.RetryPolicies {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("duroxide: start runtime: retry policy of activity %s: %w", name, err)
		}
	}
	for name, c := range opts.CircuitBreakers {
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("duroxide: start runtime: circuit breaker of activity %s: %w", name, err)
		}
	}
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
		running: map[ActivityRef]*activityRun{},
		tracer:  newTracer(opts.TracerProvider),
	}
	rt.orchWake.init()
	rt.workWake.init()
	if ld, ok := store.(LocalDispatcher); ok && !opts.DisableLocalDispatch {
		rt.local = ld
	}
	rt.localWork = make(chan *localLease, 2*opts.ActivityConcurrency)
	rt.localFree.Store(int64(2 * opts.ActivityConcurrency))
	rt.inline = map[string]*inlineBatch{}
	rt.held = map[string]*heldTurn{}
	rt.timers = map[timerKey]localTimer{}
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
			rt.releaseHeld()
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
