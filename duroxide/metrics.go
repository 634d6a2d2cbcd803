package duroxide

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the runtime's Prometheus collectors. A nil *metrics (no
// Registerer configured) records nothing.
type metrics struct {
	orchStarts      *prometheus.CounterVec
	orchCompletions *prometheus.CounterVec
	orchFailures    *prometheus.CounterVec
	orchDuration    *prometheus.HistogramVec
	orchCAN         *prometheus.CounterVec
	orchTurns       *prometheus.CounterVec
	orchPoison      prometheus.Counter
	actPoison       prometheus.Counter
	actExec         *prometheus.CounterVec
	actDuration     *prometheus.HistogramVec
	retries         *prometheus.CounterVec
	retryExhausted  *prometheus.CounterVec
	successAttempt  *prometheus.HistogramVec
	seqDuration     *prometheus.HistogramVec
	circState       *prometheus.GaugeVec
	circTransitions *prometheus.CounterVec
	circRejected    *prometheus.CounterVec
	historyEvents   *prometheus.HistogramVec
	storeDuration   *prometheus.HistogramVec
	storeErrors     *prometheus.CounterVec
	// Per-operation children of storeDuration and storeErrors, resolved
	// once so timing a store call looks up no labels.
	storeObs  [numStoreOps]prometheus.Observer
	storeErrs [numStoreOps]prometheus.Counter
}

// storeOp names a store call the runtime times.
type storeOp int

const (
	opFetchOrchestrationItem storeOp = iota
	opAckOrchestrationItem
	opAbandonOrchestrationItem
	opRenewOrchestrationItemLock
	opReadHistory
	opFetchWorkItem
	opAckWorkItem
	opAbandonWorkItem
	opRenewWorkItemLock
	opStartTurn
	opCommitActivityTurn
	opAckOrchestrationItemLocal
	numStoreOps
)

var storeOpNames = [numStoreOps]string{
	"fetch_orchestration_item", "ack_orchestration_item", "abandon_orchestration_item", "renew_orchestration_item_lock",
	"read_history", "fetch_work_item", "ack_work_item", "abandon_work_item", "renew_work_item_lock",
	"start_turn", "commit_activity_turn", "ack_orchestration_item_local",
}

// storeCall records one store call begun at begin. ErrLockLost is the
// protocol's answer to a lock that expired or was released, not a store
// failure, and is not counted as an error.
func (m *metrics) storeCall(op storeOp, begin time.Time, err error) {
	if m == nil {
		return
	}
	m.storeObs[op].Observe(time.Since(begin).Seconds())
	if err != nil && !errors.Is(err, ErrLockLost) {
		m.storeErrs[op].Inc()
	}
}

// historySize records the length of an execution's history after a turn.
func (m *metrics) historySize(name string, events int64) {
	if m != nil {
		m.historyEvents.WithLabelValues(name).Observe(float64(events))
	}
}

func newMetrics(reg prometheus.Registerer, store Store) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{}
	m.orchStarts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_orchestration_starts_total",
		Help: "Executions started, once per execution: initiated_by is client, suborchestration or continueAsNew."},
		[]string{"orchestration_name", "version", "initiated_by"})
	m.orchCompletions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_orchestration_completions_total",
		Help: "Executions that ended, by status (success, failed, cancelled, continuedAsNew)."},
		[]string{"orchestration_name", "version", "status"})
	m.orchFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_orchestration_failures_total",
		Help: "Failed executions by error type (app_error, config_error, poison, cancelled, infrastructure_error)."},
		[]string{"orchestration_name", "version", "error_type"})
	m.orchDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duroxide_orchestration_duration_seconds",
		Help:    "Time from an instance's creation to the end of an execution.",
		Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600}},
		[]string{"orchestration_name", "version", "status"})
	m.orchCAN = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_orchestration_continue_as_new_total",
		Help: "Executions that continued as new."}, []string{"orchestration_name"})
	m.orchTurns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_orchestration_turns_total",
		Help: "Orchestration turns committed."}, []string{"orchestration_name"})
	m.orchPoison = prometheus.NewCounter(prometheus.CounterOpts{Name: "duroxide_orchestration_poison_total",
		Help: "Orchestration messages failed as poison."})
	m.actPoison = prometheus.NewCounter(prometheus.CounterOpts{Name: "duroxide_activity_poison_total",
		Help: "Activity messages failed as poison."})
	m.actExec = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_activity_executions_total",
		Help: "Activity executions (every attempt) by outcome (success, failure, timeout, cancelled)."},
		[]string{"activity_name", "outcome"})
	m.actDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duroxide_activity_duration_seconds",
		Help:    "Duration of every activity execution, retries included.",
		Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}},
		[]string{"activity_name", "outcome"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_activity_retries_total",
		Help: "Retry attempts (attempt 2 and later) of activities under a retry policy, by outcome (success, failure, timeout)."},
		[]string{"activity_name", "status"})
	m.retryExhausted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_activity_retry_exhausted_total",
		Help: "Retry sequences that gave up."}, []string{"activity_name"})
	m.successAttempt = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duroxide_activity_success_attempt",
		Help:    "The attempt on which retry sequences of an activity succeeded (1 = first try).",
		Buckets: []float64{1, 2, 3, 4, 5, 6, 8, 10, 15, 20}},
		[]string{"activity_name"})
	m.seqDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duroxide_activity_sequence_duration_seconds",
		Help:    "Time from the first attempt of a retry sequence to its end, waits included, by outcome (success, exhausted, failed).",
		Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600}},
		[]string{"activity_name", "outcome"})
	m.circState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "duroxide_circuit_state",
		Help: "State of an activity's circuit breaker: 0 closed, 1 open, 2 half-open."},
		[]string{"activity_name", "key"})
	m.circTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_circuit_transitions_total",
		Help: "Circuit breaker state changes, by the state entered (open, half_open, closed)."},
		[]string{"activity_name", "key", "to"})
	m.circRejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_circuit_rejected_total",
		Help: "Activity attempts failed fast by an open circuit breaker, without calling the activity."},
		[]string{"activity_name", "key"})
	m.historyEvents = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duroxide_orchestration_history_events",
		Help:    "Events in an execution's history after each committed turn.",
		Buckets: []float64{2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}},
		[]string{"orchestration_name"})
	m.storeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duroxide_store_operation_duration_seconds",
		Help:    "Latency of the runtime's store calls, by operation (every call, failed ones included).",
		Buckets: []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}},
		[]string{"op"})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_store_operation_errors_total",
		Help: "Failed store calls of the runtime, by operation (ErrLockLost is not a failure)."},
		[]string{"op"})
	gauges := newStoreGauges(store)
	// Register each collector; when a previous runtime in this process
	// already registered one on the same Registerer, keep counting on it.
	var err error
	reuse := func(c prometheus.Collector) prometheus.Collector {
		if err != nil {
			return c
		}
		if rerr := reg.Register(c); rerr != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(rerr, &are) {
				return are.ExistingCollector
			}
			err = rerr
		}
		return c
	}
	m.orchStarts = reuse(m.orchStarts).(*prometheus.CounterVec)
	m.orchCompletions = reuse(m.orchCompletions).(*prometheus.CounterVec)
	m.orchFailures = reuse(m.orchFailures).(*prometheus.CounterVec)
	m.orchDuration = reuse(m.orchDuration).(*prometheus.HistogramVec)
	m.orchCAN = reuse(m.orchCAN).(*prometheus.CounterVec)
	m.orchTurns = reuse(m.orchTurns).(*prometheus.CounterVec)
	m.orchPoison = reuse(m.orchPoison).(prometheus.Counter)
	m.actPoison = reuse(m.actPoison).(prometheus.Counter)
	m.actExec = reuse(m.actExec).(*prometheus.CounterVec)
	m.actDuration = reuse(m.actDuration).(*prometheus.HistogramVec)
	m.retries = reuse(m.retries).(*prometheus.CounterVec)
	m.retryExhausted = reuse(m.retryExhausted).(*prometheus.CounterVec)
	m.successAttempt = reuse(m.successAttempt).(*prometheus.HistogramVec)
	m.seqDuration = reuse(m.seqDuration).(*prometheus.HistogramVec)
	m.circState = reuse(m.circState).(*prometheus.GaugeVec)
	m.circTransitions = reuse(m.circTransitions).(*prometheus.CounterVec)
	m.circRejected = reuse(m.circRejected).(*prometheus.CounterVec)
	m.historyEvents = reuse(m.historyEvents).(*prometheus.HistogramVec)
	m.storeDuration = reuse(m.storeDuration).(*prometheus.HistogramVec)
	m.storeErrors = reuse(m.storeErrors).(*prometheus.CounterVec)
	if g, ok := reuse(gauges).(*storeGauges); ok {
		g.setStore(store)
	}
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	for op, name := range storeOpNames {
		m.storeObs[op] = m.storeDuration.WithLabelValues(name)
		m.storeErrs[op] = m.storeErrors.WithLabelValues(name)
	}
	return m, nil
}

func (m *metrics) start(name, version, by string) {
	if m != nil {
		m.orchStarts.WithLabelValues(name, version, by).Inc()
	}
}

func (m *metrics) poison(kind string) {
	if m == nil {
		return
	}
	if kind == "activity" {
		m.actPoison.Inc()
	} else {
		m.orchPoison.Inc()
	}
}

func (m *metrics) activity(name, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.actExec.WithLabelValues(name, outcome).Inc()
	m.actDuration.WithLabelValues(name, outcome).Observe(d.Seconds())
}

func (m *metrics) retry(name, status string) {
	if m != nil {
		m.retries.WithLabelValues(name, status).Inc()
	}
}

func (m *metrics) exhausted(name string) {
	if m != nil {
		m.retryExhausted.WithLabelValues(name).Inc()
	}
}

func (m *metrics) sequence(name, outcome string, attempt int, d time.Duration) {
	if m == nil {
		return
	}
	if outcome == "success" {
		m.successAttempt.WithLabelValues(name).Observe(float64(attempt))
	}
	m.seqDuration.WithLabelValues(name, outcome).Observe(d.Seconds())
}

func (m *metrics) circuitState(name, key string, st CircuitState) {
	if m != nil {
		m.circState.WithLabelValues(name, key).Set(float64(st))
	}
}

func (m *metrics) circuitTransition(name, key string, to CircuitState) {
	if m != nil {
		m.circState.WithLabelValues(name, key).Set(float64(to))
		m.circTransitions.WithLabelValues(name, key, to.String()).Inc()
	}
}

func (m *metrics) circuitRejected(name, key string) {
	if m != nil {
		m.circRejected.WithLabelValues(name, key).Inc()
	}
}

func (m *metrics) turn(name string) {
	if m != nil {
		m.orchTurns.WithLabelValues(name).Inc()
	}
}

// finish records the end of an execution.
func (m *metrics) finish(e *engine, st Status) {
	if m == nil {
		return
	}
	label := map[Status]string{StatusCompleted: "success", StatusFailed: "failed", StatusCancelled: "cancelled", StatusContinuedAsNew: "continuedAsNew"}[st]
	m.orchCompletions.WithLabelValues(e.name, e.version, label).Inc()
	if st == StatusContinuedAsNew {
		m.orchCAN.WithLabelValues(e.name).Inc()
		return
	}
	since := e.createdAtMs
	if since == 0 {
		since = e.startedMs
	}
	m.orchDuration.WithLabelValues(e.name, e.version, label).Observe(time.Since(time.UnixMilli(since)).Seconds())
	if st == StatusFailed || st == StatusCancelled {
		et := "app_error"
		if e.failure != nil {
			switch e.failure.Category {
			case CategoryConfiguration:
				et = "config_error"
			case CategoryPoison:
				et = "poison"
			case CategoryInfrastructure:
				et = "infrastructure_error"
			case CategoryCancelled:
				et = "cancelled"
			}
		}
		m.orchFailures.WithLabelValues(e.name, e.version, et).Inc()
	}
}

// storeGauges reads queue depths and instance counts from the store when
// scraped (at most once a second).
type storeGauges struct {
	store  Store // guarded by mu
	active *prometheus.Desc
	orchQ  *prometheus.Desc
	workQ  *prometheus.Desc
	byStat *prometheus.Desc

	mu     sync.Mutex
	last   time.Time
	cached *StoreStats
}

func newStoreGauges(s Store) *storeGauges {
	return &storeGauges{
		store:  s,
		active: prometheus.NewDesc("duroxide_active_orchestrations", "Instances whose current execution is running.", nil, nil),
		orchQ:  prometheus.NewDesc("duroxide_orchestrator_queue_depth", "Messages in the orchestrator queue.", nil, nil),
		workQ:  prometheus.NewDesc("duroxide_worker_queue_depth", "Messages in the worker queue.", nil, nil),
		byStat: prometheus.NewDesc("duroxide_instances", "Instances by status of their current execution.", []string{"status"}, nil),
	}
}

func (g *storeGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.active
	ch <- g.orchQ
	ch <- g.workQ
	ch <- g.byStat
}

func (g *storeGauges) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	if g.cached == nil || time.Since(g.last) > time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := g.store.Stats(ctx)
		if err != nil {
			st = nil
		}
		cancel()
		if err == nil {
			g.cached, g.last = st, time.Now()
		}
	}
	st := g.cached
	g.mu.Unlock()
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(g.active, prometheus.GaugeValue, float64(st.Instances[StatusRunning]))
	ch <- prometheus.MustNewConstMetric(g.orchQ, prometheus.GaugeValue, float64(st.OrchestratorQueue))
	ch <- prometheus.MustNewConstMetric(g.workQ, prometheus.GaugeValue, float64(st.WorkerQueue))
	for _, s := range []Status{StatusRunning, StatusCompleted, StatusFailed, StatusCancelled} {
		ch <- prometheus.MustNewConstMetric(g.byStat, prometheus.GaugeValue, float64(st.Instances[s]), string(s))
	}
}

// setStore points the gauges at the newest runtime's store.
func (g *storeGauges) setStore(s Store) {
	g.mu.Lock()
	g.store, g.cached = s, nil
	g.mu.Unlock()
}

// initActivities creates the per-activity series at zero, so a counter's
// first increment is a visible step for rate() instead of a new series that
// Prometheus reads as starting at 1 (the seed's "dashboard showed zero").
func (m *metrics) initActivities(names []string) {
	if m == nil {
		return
	}
	for _, n := range names {
		for _, st := range []string{"success", "failure", "timeout"} {
			m.retries.WithLabelValues(n, st)
		}
		m.retryExhausted.WithLabelValues(n)
		for _, o := range []string{"success", "failure", "timeout", "cancelled"} {
			m.actExec.WithLabelValues(n, o)
		}
	}
}
