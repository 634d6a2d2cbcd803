package local

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/internal/dataplane"
)

// Supervision configures how the driver watches the servers it started or
// adopted and restarts those that die (crash, SIGKILL, OOM kill). The zero
// value supervises with the defaults below.
//
// A server found dead is restarted after a backoff that doubles with each
// death within CrashLoopWindow (Backoff, 2×Backoff, … up to MaxBackoff). A
// failed restart counts as a death. When CrashLoopDeaths deaths fall within
// CrashLoopWindow the server is in a crash loop: the supervisor reports it
// and stops restarting it until Readopt or Deploy starts it successfully.
type Supervision struct {
	// Disabled turns supervision off: dead servers stay down until Adopt,
	// Readopt or Deploy.
	Disabled bool
	// PollInterval is how often the postmaster is checked (default 250 ms).
	PollInterval time.Duration
	// Backoff is the delay before the first restart (default 500 ms).
	Backoff time.Duration
	// MaxBackoff caps the delay (default 30 s).
	MaxBackoff time.Duration
	// CrashLoopDeaths is how many deaths within CrashLoopWindow make a
	// crash loop (default 5).
	CrashLoopDeaths int
	// CrashLoopWindow is the crash-loop window (default 2 min).
	CrashLoopWindow time.Duration
}

// Defaults of Supervision.
const (
	DefaultPollInterval    = 250 * time.Millisecond
	DefaultBackoff         = 500 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
	DefaultCrashLoopDeaths = 5
	DefaultCrashLoopWindow = 2 * time.Minute
)

// Metric names of the supervision counters, labelled by instance.
const (
	MetricRestarts       = dataplane.MetricRestarts
	MetricRestartFailure = "toygres_instance_restart_failures_total"
	MetricCrashLoops     = "toygres_instance_crash_loops_total"
)

// supervisor is the driver's supervision state.
type supervisor struct {
	opts    Supervision
	onEvent func(dataplane.Event)

	restarts, failures, loops *prometheus.CounterVec

	mu     sync.Mutex
	closed bool
	byName map[string]*watch
	wg     sync.WaitGroup
}

// watch is the supervision of one instance by one goroutine. It ends when
// its context is cancelled (Delete, a new watch, Close), when the instance
// disappears, or in a crash loop (the watch then stays in byName so that
// Status reports the loop).
type watch struct {
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	// primary is the primary's server id when the watch began (every
	// change of roles begins a new watch).
	primary string

	// Guarded by supervisor.mu.
	servers map[string]*serverWatch
}

// serverWatch is the supervision state of one server of an instance.
type serverWatch struct {
	phase   string // "", PhaseRestarting, PhaseCrashLoop, PhasePrimaryDown
	message string
	deaths  []time.Time // within the crash-loop window
}

// server returns the state of server id; the caller holds supervisor.mu.
func (w *watch) server(id string) *serverWatch {
	sw := w.servers[id]
	if sw == nil {
		sw = &serverWatch{}
		w.servers[id] = sw
	}
	return sw
}

func (s *supervisor) init(opts Options) error {
	s.opts = opts.Supervision
	if s.opts.PollInterval <= 0 {
		s.opts.PollInterval = DefaultPollInterval
	}
	if s.opts.Backoff <= 0 {
		s.opts.Backoff = DefaultBackoff
	}
	if s.opts.MaxBackoff <= 0 {
		s.opts.MaxBackoff = DefaultMaxBackoff
	}
	if s.opts.MaxBackoff < s.opts.Backoff {
		s.opts.MaxBackoff = s.opts.Backoff
	}
	if s.opts.CrashLoopDeaths <= 0 {
		s.opts.CrashLoopDeaths = DefaultCrashLoopDeaths
	}
	if s.opts.CrashLoopWindow <= 0 {
		s.opts.CrashLoopWindow = DefaultCrashLoopWindow
	}
	s.onEvent = opts.OnEvent
	s.byName = map[string]*watch{}
	var err error
	if s.restarts, err = counter(opts.Metrics, MetricRestarts, dataplane.RestartsHelp); err != nil {
		return err
	}
	if s.failures, err = counter(opts.Metrics, MetricRestartFailure, "Failed restarts of instance servers that had died."); err != nil {
		return err
	}
	if s.loops, err = counter(opts.Metrics, MetricCrashLoops, "Crash loops detected (the supervisor stopped restarting the server)."); err != nil {
		return err
	}
	return nil
}

// counter makes a counter by instance and registers it with reg (if any),
// reusing one already registered under the same name (several drivers, or a
// driver made again, on one registry).
func counter(reg prometheus.Registerer, name, help string) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"instance"})
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("local: register metric %s: %w", name, err)
	}
	return c, nil
}

// supervise (re)starts the supervision of a running instance with a clean
// history (clearing a crash loop): one goroutine per server that should
// run (primary and standbys, as the metadata says). The caller holds the
// instance lock.
func (d *Driver) supervise(p paths) {
	s := &d.sup
	if s.opts.Disabled {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if old := s.byName[p.name]; old != nil {
		old.cancel() // it rechecks its context under the instance lock, which we hold
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watch{name: p.name, ctx: ctx, cancel: cancel, primary: "0", servers: map[string]*serverWatch{}}
	ids := []string{"0"}
	if m, err := readMeta(p.meta); err == nil {
		ids = ids[:0]
		for _, srv := range m.servers() {
			switch srv.Role {
			case dataplane.RolePrimary:
				w.primary = srv.ID
			case dataplane.RoleStandby:
			default:
				continue // fenced and building servers are not started
			}
			ids = append(ids, srv.ID)
		}
	}
	s.byName[p.name] = w
	for _, id := range ids {
		s.wg.Add(1)
		go d.watchLoop(w, p, id)
	}
}

// unsupervise ends the supervision of an instance (before an intentional
// stop). It does not wait: the watch gives up once it holds the instance
// lock and sees its context cancelled.
func (d *Driver) unsupervise(name string) {
	s := &d.sup
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.byName[name]; w != nil {
		w.cancel()
		delete(s.byName, name)
	}
}

// Close ends the supervision of every instance and waits for the
// supervisor's goroutines to return. The servers keep running; the driver
// stays usable but supervises nothing more.
func (d *Driver) Close() error {
	s := &d.sup
	s.mu.Lock()
	s.closed = true
	for name, w := range s.byName {
		w.cancel()
		delete(s.byName, name)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Supervised reports the phase of each supervised instance as the
// supervisor sees it: "" (running, or being watched), PhaseRestarting or
// PhaseCrashLoop.
func (d *Driver) Supervised() map[string]string {
	s := &d.sup
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.byName))
	for name, w := range s.byName {
		out[name] = w.server(w.primary).phase
	}
	return out
}

// view returns the supervisor's phase and message of an instance whose
// primary is not running, or "" when it has nothing to say.
func (s *supervisor) view(name string) (phase, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.byName[name]; w != nil {
		sw := w.server(w.primary)
		return sw.phase, sw.message
	}
	return "", ""
}

func (s *supervisor) set(w *watch, id, phase, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := w.server(id)
	sw.phase, sw.message = phase, message
}

// drop forgets a watch that ends on its own, unless a newer one replaced it.
func (s *supervisor) drop(w *watch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byName[w.name] == w {
		delete(s.byName, w.name)
	}
}

// died records a death and returns the deaths within the window.
func (s *supervisor) died(w *watch, id string, now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := w.server(id)
	keep := sw.deaths[:0]
	for _, t := range sw.deaths {
		if now.Sub(t) < s.opts.CrashLoopWindow {
			keep = append(keep, t)
		}
	}
	sw.deaths = append(keep, now)
	return len(sw.deaths)
}

// forget removes the last recorded death.
func (s *supervisor) forget(w *watch, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := w.server(id)
	if n := len(sw.deaths); n > 0 {
		sw.deaths = sw.deaths[:n-1]
	}
}

// backoff is the delay before the restart following the n-th death.
func (s *supervisor) backoff(n int) time.Duration {
	b := s.opts.Backoff
	for i := 1; i < n && b < s.opts.MaxBackoff; i++ {
		b *= 2
	}
	return min(b, s.opts.MaxBackoff)
}

// watchLoop polls the instance's postmaster and restarts it when it dies.
// The postmaster runs as another account and is no child of ours, so it
// cannot be waited for; readPostmaster checks the process is alive (not a
// zombie) and still this server (pid reuse).
func (d *Driver) watchLoop(w *watch, p paths, id string) {
	defer d.sup.wg.Done()
	sp := d.serverPaths(p.name, id)
	t := time.NewTicker(d.sup.opts.PollInterval)
	defer t.Stop()
	for {
		// A death counts once seen on two polls in a row: a pid file read
		// while the server rewrites it must not look like one.
		for seen := 0; seen < 2; {
			if readPostmaster(sp.data).running {
				seen = 0
			} else {
				seen++
			}
			select {
			case <-w.ctx.Done():
				return
			case <-t.C:
			}
		}
		if !d.revive(w, p, id) {
			return
		}
	}
}

// revive restarts a server found dead, with backoff, until it runs again
// (true) or the watch ends (false): cancelled, instance gone or being
// deleted, or crash loop. Every decision is made under the instance lock,
// so it never races Deploy, Delete or Readopt; events are emitted without it.
func (d *Driver) revive(w *watch, p paths, id string) bool {
	s := &d.sup
	sp := d.serverPaths(p.name, id)
	for {
		unlock := d.lock(p.name)
		if w.ctx.Err() != nil {
			unlock()
			return false
		}
		m, err := readMeta(p.meta)
		if err != nil || deleting(p) {
			// Removed (or being removed) behind this driver's back.
			unlock()
			s.drop(w)
			d.log.Warn("instance gone; supervision ends", "instance", p.name)
			return false
		}
		srv, ok := m.lookup(id)
		if !ok || (srv.Role != dataplane.RolePrimary && srv.Role != dataplane.RoleStandby) {
			unlock() // removed or fenced meanwhile: not to be restarted
			return false
		}
		if readPostmaster(sp.data).running {
			s.set(w, id, "", "")
			unlock()
			return true // started by someone else meanwhile
		}
		last := ""
		if l := tailLinesQuiet(sp, 1); len(l) > 0 {
			last = "; last log line: " + l[0]
		}
		if srv.Role == dataplane.RolePrimary && m.hasStandbys() {
			// Restarting it would race a failover: leave it to the
			// failover orchestration (Fence, Promote, Rebuild).
			msg := fmt.Sprintf("primary server %s died; not restarting it: the instance has standbys, one is to be promoted%s", id, last)
			s.set(w, id, PhasePrimaryDown, msg)
			unlock()
			d.emit(dataplane.Event{Instance: p.name, Server: id, Kind: dataplane.EventPrimaryDown, Message: msg, Attempt: 1})
			return false
		}
		n := s.died(w, id, time.Now())
		if n >= s.opts.CrashLoopDeaths {
			msg := fmt.Sprintf("server %s died %d times within %v; not restarting it until Readopt or Deploy succeeds%s", id, n, s.opts.CrashLoopWindow, last)
			s.set(w, id, PhaseCrashLoop, msg)
			unlock()
			s.loops.WithLabelValues(p.name).Inc()
			d.emit(dataplane.Event{Instance: p.name, Server: id, Kind: dataplane.EventCrashLoop, Message: msg, Attempt: n})
			return false
		}
		delay := s.backoff(n)
		s.set(w, id, PhaseRestarting, fmt.Sprintf("server died (%d within %v); restarting in %v%s", n, s.opts.CrashLoopWindow, delay, last))
		unlock()
		d.log.Warn("server died; restarting", "instance", p.name, "server", id, "deaths", n, "delay", delay)

		timer := time.NewTimer(delay)
		select {
		case <-w.ctx.Done():
			timer.Stop()
			return false
		case <-timer.C:
		}

		unlock = d.lock(p.name)
		if w.ctx.Err() != nil {
			unlock()
			return false
		}
		started, err := d.restartLocked(w.ctx, p, id)
		if err != nil {
			if w.ctx.Err() != nil {
				unlock()
				return false
			}
			s.set(w, id, PhaseRestarting, "restart failed: "+err.Error())
			unlock()
			s.failures.WithLabelValues(p.name).Inc()
			d.emit(dataplane.Event{Instance: p.name, Server: id, Kind: dataplane.EventRestartFailed, Message: err.Error(), Attempt: n})
			continue // counts as another death
		}
		if !started {
			s.forget(w, id) // running after all: no death to count
		}
		s.set(w, id, "", "")
		unlock()
		if started {
			s.restarts.WithLabelValues(p.name).Inc()
			d.emit(dataplane.Event{Instance: p.name, Server: id, Kind: dataplane.EventRestart, Message: "server " + id + " restarted after it died" + last, Attempt: n})
		}
		return true
	}
}

// restartLocked starts server id of an instance again; the caller holds
// the instance lock.
func (d *Driver) restartLocked(ctx context.Context, p paths, id string) (bool, error) {
	m, err := readMeta(p.meta)
	if err != nil {
		return false, err
	}
	if !m.Initialized {
		return false, fmt.Errorf("local: restart %s: cluster not initialized", p.name)
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		return false, fmt.Errorf("local: restart %s: %w", p.name, err)
	}
	return d.start(ctx, m, d.serverPaths(p.name, id), in)
}

// emit logs, and hands an event to Options.OnEvent.
func (d *Driver) emit(ev dataplane.Event) {
	ev.Time = time.Now().UTC()
	level := d.log.Warn
	if ev.Kind != dataplane.EventRestart {
		level = d.log.Error
	}
	level("supervision event", "instance", ev.Instance, "kind", string(ev.Kind), "attempt", ev.Attempt, "message", ev.Message)
	if d.sup.onEvent != nil {
		d.sup.onEvent(ev)
	}
}
