package web

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
)

// Instance states and health values in display order.
var (
	allStates   = []cms.State{cms.StateCreating, cms.StateRunning, cms.StateFailed, cms.StateDeleting, cms.StateDeleted}
	allHealth   = []cms.Health{cms.HealthHealthy, cms.HealthUnhealthy, cms.HealthUnknown}
	allStatuses = []duroxide.Status{duroxide.StatusRunning, duroxide.StatusCompleted, duroxide.StatusFailed, duroxide.StatusCancelled}
)

// count is one labelled number.
type count struct {
	Key string
	N   int
}

// counts are the instance and orchestration totals of the dashboard and
// the System page: CMS Counts and the store's Stats.
type counts struct {
	Instances       int // every record, deleted included
	Active          int // not deleted
	ByState         []count
	ByHealth        []count // running instances only
	Running         int
	Orchestrations  int
	ByStatus        []count
	RunningOrch     int
	OrchQueue       int
	WorkerQueue     int
	RunningActivity int // activities executing in this runtime now
	ActiveTurns     int // orchestration turns in progress in this runtime
	ActConcurrency  int
	OrchConcurrency int
}

func (c *Console) counts(ctx context.Context) (*counts, error) {
	ic, err := c.app.InstanceCounts(ctx)
	if err != nil {
		return nil, err
	}
	st, err := c.app.Orchestrations().Stats(ctx)
	if err != nil {
		return nil, err
	}
	out := &counts{OrchQueue: st.OrchestratorQueue, WorkerQueue: st.WorkerQueue}
	for _, s := range allStates {
		n := ic.ByState[s]
		out.ByState = append(out.ByState, count{string(s), n})
		out.Instances += n
		if s != cms.StateDeleted {
			out.Active += n
		}
	}
	out.Running = ic.ByState[cms.StateRunning]
	for _, h := range allHealth {
		out.ByHealth = append(out.ByHealth, count{string(h), ic.ByHealth[h]})
	}
	for _, s := range allStatuses {
		out.ByStatus = append(out.ByStatus, count{string(s), st.Instances[s]})
	}
	for _, n := range st.Instances {
		out.Orchestrations += n
	}
	out.RunningOrch = st.Instances[duroxide.StatusRunning]
	if rt := c.app.Runtime(); rt.Running() {
		set := rt.Settings()
		out.RunningActivity, out.ActiveTurns = rt.RunningActivities(), rt.ActiveTurns()
		out.ActConcurrency, out.OrchConcurrency = set.ActivityConcurrency, set.OrchestrationConcurrency
	}
	return out, nil
}

// eventRow is a CMS event with its instance's user name.
type eventRow struct {
	cms.Event
	Name string // user name (internal name without its -<8 hex> suffix)
}

// userName derives an instance's user name from its internal name
// (<name>-<8 hex>, see app.CreateInstance).
func userName(internal string) string {
	if i := strings.LastIndexByte(internal, '-'); i > 0 && len(internal)-i-1 == 8 {
		return internal[:i]
	}
	return internal
}

type dashboardData struct {
	Counts *counts
	Active []orchRow
	Events []eventRow
	Retry  retryView
	At     time.Time
}

func (c *Console) handleDashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := dashboardData{At: time.Now().UTC()}
	var err error
	if d.Counts, err = c.counts(ctx); err != nil {
		c.internal(w, r, err)
		return
	}
	page, err := c.app.Orchestrations().List(ctx, duroxide.ListFilter{Statuses: []duroxide.Status{duroxide.StatusRunning}, Limit: 10})
	if err != nil {
		c.internal(w, r, err)
		return
	}
	for i := range page.Instances {
		d.Active = append(d.Active, orchRowOf(&page.Instances[i]))
	}
	evs, err := c.app.RecentEvents(ctx, 15)
	if err != nil {
		c.internal(w, r, err)
		return
	}
	for _, e := range evs {
		d.Events = append(d.Events, eventRow{Event: e, Name: userName(e.Instance)})
	}
	d.Retry = c.retries.view(time.Now())
	c.render(w, r, http.StatusOK, "dashboard", "Dashboard", "dashboard", d)
}

// Retry rate. The duroxide counters are read from the metrics registry
// (Gather); the console keeps samples in memory, taken whenever the
// dashboard or the System page is rendered or polled, and computes the rate
// over the last retryWindow (or since the oldest sample, if younger).
const (
	retryWindow    = 5 * time.Minute
	sampleSpacing  = 2 * time.Second
	sampleLifetime = retryWindow + 2*time.Minute
)

type metricSample struct {
	at         time.Time
	retries    float64
	execs      float64
	byActivity map[string]float64 // retries by activity
}

type retrySampler struct {
	reg *prometheus.Registry

	mu      sync.Mutex
	samples []metricSample
}

// activityStat are one activity's counters since the process started.
type activityStat struct {
	Name          string
	Executions    float64 // every attempt
	Failures      float64 // attempts that failed or timed out
	Retries       float64 // attempts 2 and later
	RetryFailures float64 // retry attempts that failed again
	Exhausted     float64 // retry sequences that gave up
	Recent        float64 // retries within the window
}

// retryView is the retry section of the dashboard.
type retryView struct {
	Available     bool // the registry is there
	Total         float64
	Executions    float64
	Exhausted     float64
	Window        time.Duration
	WindowRetries float64
	WindowExecs   float64
	PerMinute     float64
	Ratio         float64 // retries per activity execution in the window, %
	Activities    []activityStat
}

func newRetrySampler(reg *prometheus.Registry, now time.Time) *retrySampler {
	s := &retrySampler{reg: reg}
	if reg != nil {
		if stats, ok := s.gather(); ok {
			s.samples = append(s.samples, sampleOf(now, stats))
		}
	}
	return s
}

// gather reads the duroxide activity counters.
func (s *retrySampler) gather() (map[string]*activityStat, bool) {
	mfs, err := s.reg.Gather()
	if err != nil && len(mfs) == 0 {
		return nil, false
	}
	stats := map[string]*activityStat{}
	get := func(name string) *activityStat {
		if st, ok := stats[name]; ok {
			return st
		}
		st := &activityStat{Name: name}
		stats[name] = st
		return st
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "duroxide_activity_retries_total", "duroxide_activity_executions_total", "duroxide_activity_retry_exhausted_total":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			v := m.GetCounter().GetValue()
			st := get(labels["activity_name"])
			switch mf.GetName() {
			case "duroxide_activity_retries_total":
				st.Retries += v
				if labels["status"] != "success" {
					st.RetryFailures += v
				}
			case "duroxide_activity_executions_total":
				st.Executions += v
				if o := labels["outcome"]; o == "failure" || o == "timeout" {
					st.Failures += v
				}
			case "duroxide_activity_retry_exhausted_total":
				st.Exhausted += v
			}
		}
	}
	return stats, true
}

func sampleOf(at time.Time, stats map[string]*activityStat) metricSample {
	s := metricSample{at: at, byActivity: map[string]float64{}}
	for name, st := range stats {
		s.retries += st.Retries
		s.execs += st.Executions
		s.byActivity[name] = st.Retries
	}
	return s
}

// view samples the counters and computes the retry section.
func (s *retrySampler) view(now time.Time) retryView {
	if s.reg == nil {
		return retryView{}
	}
	stats, ok := s.gather()
	if !ok {
		return retryView{}
	}
	cur := sampleOf(now, stats)
	s.mu.Lock()
	if n := len(s.samples); n == 0 || now.Sub(s.samples[n-1].at) >= sampleSpacing {
		s.samples = append(s.samples, cur)
	}
	// Drop samples too old to matter, keeping the newest one at or before
	// the window's start as the baseline.
	cut := 0
	for i := range s.samples {
		if now.Sub(s.samples[i].at) > sampleLifetime && i+1 < len(s.samples) && now.Sub(s.samples[i+1].at) >= retryWindow {
			cut = i + 1
		}
	}
	s.samples = s.samples[cut:]
	base := s.samples[0]
	for _, sm := range s.samples {
		if now.Sub(sm.at) >= retryWindow {
			base = sm
		}
	}
	s.mu.Unlock()

	v := retryView{Available: true, Window: now.Sub(base.at)}
	for _, st := range stats {
		v.Total += st.Retries
		v.Executions += st.Executions
		v.Exhausted += st.Exhausted
		st.Recent = st.Retries - base.byActivity[st.Name]
		if st.Executions > 0 || st.Retries > 0 {
			v.Activities = append(v.Activities, *st)
		}
	}
	v.WindowRetries = cur.retries - base.retries
	v.WindowExecs = cur.execs - base.execs
	if v.Window >= time.Second {
		v.PerMinute = v.WindowRetries / v.Window.Minutes()
	}
	if v.WindowExecs > 0 {
		v.Ratio = 100 * v.WindowRetries / v.WindowExecs
	}
	sort.Slice(v.Activities, func(i, j int) bool {
		a, b := v.Activities[i], v.Activities[j]
		if a.Retries != b.Retries {
			return a.Retries > b.Retries
		}
		return a.Name < b.Name
	})
	return v
}
