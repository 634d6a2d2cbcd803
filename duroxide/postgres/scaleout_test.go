//go:build unix

package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/postgres"
	"github.com/toygres/toygres/duroxide/postgres/pgtest"
)

// soChild is a runtime process (TestScaleOutChild in a re-executed test binary).
type soChild struct {
	t       *testing.T
	worker  string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	outPath string
	done    chan struct{}
	waitErr error
}

func startSOChild(t *testing.T, worker, url, schema, logPath string) *soChild {
	t.Helper()
	outPath := filepath.Join(t.TempDir(), "child-"+worker+".out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleOutChild$", "-test.count=1", "-test.v", "-test.timeout=6m")
	// pgtest.EnvURL makes the child's TestMain use this cluster instead of
	// starting its own.
	cmd.Env = append(os.Environ(), pgtest.EnvURL+"="+url, soChildEnv+"="+worker,
		soURLEnv+"="+url, soSchemaEnv+"="+schema, soLogEnv+"="+logPath)
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start child %s: %v", worker, err)
	}
	c := &soChild{t: t, worker: worker, cmd: cmd, stdin: stdin, outPath: outPath, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		out.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		if !c.exited() {
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func (c *soChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *soChild) output() string {
	b, _ := os.ReadFile(c.outPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// checkOutput reports a panic or data race the child printed.
func (c *soChild) checkOutput() {
	c.t.Helper()
	b, _ := os.ReadFile(c.outPath)
	if s := string(b); strings.Contains(s, "panic:") || strings.Contains(s, "DATA RACE") {
		c.t.Errorf("child %s reported a panic or data race:\n%s", c.worker, c.output())
	}
}

// kill sends SIGKILL and checks that the process died of it.
func (c *soChild) kill() {
	c.t.Helper()
	if c.exited() {
		c.t.Fatalf("child %s exited before it was killed (%v):\n%s", c.worker, c.waitErr, c.output())
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatalf("SIGKILL child %s: %v", c.worker, err)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("child %s did not die within 10s of SIGKILL", c.worker)
	}
	ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		c.t.Fatalf("child %s ended with %v, not by SIGKILL:\n%s", c.worker, c.cmd.ProcessState, c.output())
	}
	c.checkOutput()
}

// stop closes the child's stdin, which makes it shut its runtime down, and
// checks that it exits successfully.
func (c *soChild) stop() {
	c.t.Helper()
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("child %s did not stop within 30s of closing its stdin:\n%s", c.worker, c.output())
	}
	if c.waitErr != nil {
		c.t.Errorf("child %s exited with %v:\n%s", c.worker, c.waitErr, c.output())
	}
	c.checkOutput()
}

// warnings counts the WARN and ERROR records the child logged.
func (c *soChild) warnings() (warn, errs int) {
	b, _ := os.ReadFile(c.outPath)
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(l, "level=WARN"):
			warn++
		case strings.Contains(l, "level=ERROR"):
			errs++
		}
	}
	return
}

func soKey(instance string, id int64) string { return fmt.Sprintf("%s#%d", instance, id) }

// TestScaleOutThreeProcessesSIGKILL runs three runtime processes (WorkerIDs
// w1, w2, w3; TestScaleOutChild in re-executed test binaries) on one
// schema, starts 1,000 ScalePipeline orchestrations at 100/s (5 activities
// each: 2 sequential 1 ms steps, then a fan-out of three 20 ms steps; the
// last turn takes 10 ms) and, once half of them have completed, SIGKILLs
// w2 at a moment its log shows it inside a turn and inside an activity.
//
// Each child wraps its store in soStore, which logs every lock the store
// hands out (fetch) and every call that ends it (ack, abandon) with
// wall-clock times; activities log their executions. From that log and the
// store the test checks that
//   - every orchestration completed exactly once with the right output: one
//     execution, status Completed, a well-formed history (ids 1..n, one
//     terminal event, every schedule answered once), at most one committed
//     completing turn in the log;
//   - every ActivityCompleted in history matches a logged execution, every
//     logged execution a scheduled activity, each activity was completed by
//     exactly one successful worker ack (and never leased after it), and an
//     activity ran more than once only where a lease died with w2 or was lost;
//   - activities ran in all three processes;
//   - the turns of one instance never overlapped: the interval between the
//     return of the fetch that handed out an instance lock and the start of
//     the first ack/abandon call of its token lies within the time the lock
//     was held, and no two such intervals of released locks intersect
//     (turns whose ack found the lock lost are counted separately);
//   - the locks w2 held when it died (including locks taken by fetches in
//     flight at the kill, which the server commits all the same) were taken
//     over by the survivors, and no lock of either queue was taken over
//     before it could have expired;
//   - the queues drain and the surviving processes shut down cleanly.
//
// With DUROXIDE_SCALEOUT_PROFILE=1 it also logs the time PostgreSQL spent
// in each store function.
func TestScaleOutThreeProcessesSIGKILL(t *testing.T) {
	// The kill must land while the victim holds an orchestration lock whose
	// ack has not started; turns take a few milliseconds, so a kill can
	// miss that window (every held lock's ack already in flight). Such a
	// run proves nothing about the orchestrator queue and is repeated; any
	// other failure fails the test at once.
	const attempts = 3
	for i := 1; i <= attempts; i++ {
		var tested bool
		if !t.Run(fmt.Sprintf("run%d", i), func(t *testing.T) { tested = scaleOutSIGKILL(t) }) || tested {
			return
		}
		t.Logf("run %d: the kill landed between turns of the victim; running again", i)
	}
	t.Errorf("in %d runs the kill never landed while the victim held an orchestration lock: the orchestrator queue's takeover went untested", attempts)
}

// scaleOutSIGKILL is one run of TestScaleOutThreeProcessesSIGKILL. It
// reports whether an orchestration lock of the killed process was taken
// over (the run tested the orchestrator queue).
func scaleOutSIGKILL(t *testing.T) (orchTakenOver bool) {
	const n = 1000
	cl := soCluster(t)
	schema := cl.NewSchemaName(t)
	ctx := context.Background()
	st, err := postgres.Open(ctx, cl.URL, postgres.WithSchema(schema), postgres.WithPoolSize(6))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	client := duroxide.NewClient(st)
	logPath := filepath.Join(t.TempDir(), "scaleout.log")

	workers := []string{"w1", "w2", "w3"}
	const victimIdx = 1
	victim := workers[victimIdx]
	children := make([]*soChild, len(workers))
	for i, w := range workers {
		children[i] = startSOChild(t, w, cl.URL, schema, logPath)
	}
	anyExited := func() {
		t.Helper()
		for _, c := range children {
			if c.exited() && c.worker != victim {
				t.Fatalf("child %s exited (%v):\n%s", c.worker, c.waitErr, c.output())
			}
		}
	}
	// Wait until every runtime runs, so that all three see the work.
	for deadline := time.Now().Add(30 * time.Second); ; {
		ev, err := parseSOLog(logPath)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if ev != nil && len(ev.Starts) == len(workers) {
			break
		}
		for _, c := range children {
			if c.exited() {
				t.Fatalf("child %s exited during start-up (%v):\n%s", c.worker, c.waitErr, c.output())
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the child runtimes did not start within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Start the orchestrations at a steady pace (soStartRate) rather than
	// all at once: with a backlog of 1,000 start messages in the FIFO
	// orchestrator queue every instance advances in lock-step, and by the
	// time half have completed no activity is left in flight to be taken
	// over from the killed process.
	begin := time.Now()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("so-%04d", i)
	}
	startErr := make(chan error, 1)
	var startedIn time.Duration
	go func() {
		var err error
		defer func() { startedIn = time.Since(begin); startErr <- err }()
		err = soParallelErr(n, 4, func(i int) error {
			if d := time.Until(begin.Add(time.Duration(i) * time.Second / soStartRate)); d > 0 {
				time.Sleep(d)
			}
			return client.StartOrchestration(ctx, ids[i], "ScalePipeline", i)
		})
	}()

	completed := func() (int, *duroxide.StoreStats) {
		s, err := client.Stats(ctx)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		return s.Instances[duroxide.StatusCompleted], s
	}
	for deadline := time.Now().Add(75 * time.Second); ; time.Sleep(25 * time.Millisecond) {
		anyExited()
		if c, _ := completed(); c >= n/2 {
			break
		}
		if time.Now().After(deadline) {
			c, s := completed()
			t.Fatalf("only %d/%d completed after 75s (stats %+v)", c, n, s)
		}
	}
	// Kill the victim at a moment the log shows it inside a turn fetched
	// within the last 3 ms and inside an activity fetched within the last
	// 5 ms, neither acking yet: the last turn of an instance runs
	// soFinalTurnTime and fan-out steps soFanStepTime, so the kill lands
	// before their acks and the survivors must take both locks over.
	tail := &soTail{path: logPath, worker: victim, open: map[string]soOpen{}}
	triggered := false
	trigger := time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Microsecond) {
		if err := tail.read(); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if tail.ready(now.Add(-3*time.Millisecond).UnixNano(), now.Add(-5*time.Millisecond).UnixNano()) {
			triggered = true
			break
		}
	}
	triggerWait := time.Since(trigger)
	children[victimIdx].kill()
	killAt := time.Now().UnixNano()
	atKill, statsAtKill := completed()
	halfIn := time.Since(begin)
	t.Logf("SIGKILLed %s after %v with %d/%d completed (stats %+v); log showed it holding %d orchestration locks and %d activity leases (mid-turn and mid-activity trigger met: %v, after %v)",
		victim, halfIn.Round(time.Millisecond), atKill, n, statsAtKill, tail.count("OF"), tail.count("WF"), triggered, triggerWait.Round(time.Millisecond))
	if atKill >= n {
		t.Fatal("everything completed before the kill; the test checks nothing")
	}

	for deadline := time.Now().Add(75 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		anyExited()
		c, s := completed()
		if c == n {
			break
		}
		if time.Now().After(deadline) {
			for _, ch := range children {
				t.Logf("child %s output:\n%s", ch.worker, ch.output())
			}
			t.Fatalf("only %d/%d completed 75s after the kill (stats %+v)", c, n, s)
		}
	}
	total := time.Since(begin)
	if err := <-startErr; err != nil {
		t.Fatalf("start orchestrations: %v", err)
	}
	t.Logf("started %d orchestrations in %v (paced at %d/s)", n, startedIn.Round(time.Millisecond), soStartRate)
	t.Logf("all %d completed %v after the start, %v after the kill (%.0f orchestrations/s)",
		n, total.Round(time.Millisecond), (total - halfIn).Round(time.Millisecond), float64(n)/total.Seconds())

	// Queues drain: nothing left behind by the dead process.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, s := completed()
		if s.OrchestratorQueue == 0 && s.WorkerQueue == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("queues did not drain: %d orchestrator and %d worker messages left", s.OrchestratorQueue, s.WorkerQueue)
			break
		}
	}
	for i, c := range children {
		if i != victimIdx {
			c.stop()
		}
	}
	for _, c := range children {
		w, e := c.warnings()
		ps := c.cmd.ProcessState
		t.Logf("child %s logged %d warnings and %d errors; CPU user %v, system %v", c.worker, w, e,
			ps.UserTime().Round(time.Millisecond), ps.SystemTime().Round(time.Millisecond))
	}

	if os.Getenv(soProfileEnv) != "" {
		soLogFunctionStats(t, st, schema)
	}

	// ---- Store contents: outputs, executions, histories.
	type histInfo struct {
		scheduled []int64
		completed []int64
	}
	hists := make([]histInfo, n)
	var probsMu sync.Mutex
	var probs []string
	addProb := func(p ...string) {
		probsMu.Lock()
		probs = append(probs, p...)
		probsMu.Unlock()
	}
	soParallel(t, n, 4, func(i int) error {
		id := ids[i]
		s, err := client.GetStatus(ctx, id)
		if err != nil {
			return err
		}
		var out int
		if s.Status != duroxide.StatusCompleted {
			addProb(fmt.Sprintf("%s: status %s (%v)", id, s.Status, s.Err()))
		} else if err := s.Decode(&out); err != nil {
			addProb(fmt.Sprintf("%s: decode output %q: %v", id, s.Output, err))
		} else if want := soExpected(i); out != want {
			addProb(fmt.Sprintf("%s: output %d, want %d", id, out, want))
		}
		ex, err := client.ListExecutions(ctx, id)
		if err != nil {
			return err
		}
		if len(ex) != 1 || ex[0].Status != duroxide.StatusCompleted {
			addProb(fmt.Sprintf("%s: executions %+v, want one Completed", id, ex))
		}
		h, err := client.ReadHistory(ctx, id, 0)
		if err != nil {
			return err
		}
		addProb(soCheckHistory(id, h)...)
		for _, ev := range h {
			switch ev.Kind {
			case duroxide.EventActivityScheduled:
				hists[i].scheduled = append(hists[i].scheduled, ev.EventID)
			case duroxide.EventActivityCompleted:
				hists[i].completed = append(hists[i].completed, ev.SourceEventID)
			}
		}
		if len(hists[i].scheduled) != soActivities || len(hists[i].completed) != soActivities {
			addProb(fmt.Sprintf("%s: %d activities scheduled and %d completed, want %d", id, len(hists[i].scheduled), len(hists[i].completed), soActivities))
		}
		return nil
	})
	soReport(t, "orchestration results and histories", probs)

	// ---- The event log.
	ev, err := parseSOLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Unmatched > 0 {
		t.Errorf("%d ack/abandon lines name a token no fetch line handed out", ev.Unmatched)
	}
	for _, w := range workers {
		if w != victim && !ev.Stops[w] {
			t.Errorf("worker %s did not log a clean stop", w)
		}
	}
	if ev.Stops[victim] {
		t.Errorf("the killed worker %s logged a clean stop", victim)
	}

	// Activities: every completion in history was executed; every execution
	// belongs to a scheduled activity; executions are spread over processes.
	runs := map[string][]soActivityRun{}
	perWorker := map[string]int{}
	for _, r := range ev.Runs {
		k := soKey(r.Instance, r.ActivityID)
		runs[k] = append(runs[k], r)
		perWorker[r.Worker]++
	}
	scheduled := map[string]bool{}
	probs = nil
	for i, id := range ids {
		for _, a := range hists[i].scheduled {
			scheduled[soKey(id, a)] = true
		}
		for _, a := range hists[i].completed {
			if len(runs[soKey(id, a)]) == 0 {
				probs = append(probs, fmt.Sprintf("%s: ActivityCompleted for #%d but no logged execution", id, a))
			}
		}
	}
	for k := range runs {
		if !scheduled[k] {
			probs = append(probs, fmt.Sprintf("activity %s executed but is not scheduled in any history", k))
		}
	}
	soReport(t, "activity executions vs histories", probs)
	t.Logf("activity executions: %d for %d activities; per worker %v", len(ev.Runs), len(scheduled), perWorker)
	for _, w := range workers {
		if perWorker[w] == 0 {
			t.Errorf("worker %s executed no activity; work was not spread over the processes (per worker %v)", w, perWorker)
		}
	}
	for _, r := range ev.Runs {
		if _, ok := ev.Starts[r.Worker]; !ok {
			t.Errorf("activity %s#%d ran on unknown worker %q (ActivityInfo.WorkerID)", r.Instance, r.ActivityID, r.Worker)
			break
		}
	}

	return soCheckLocks(t, ev, ids, scheduled, runs, victim, killAt)
}

// soCheckLocks analyses the locks of the event log (see
// TestScaleOutThreeProcessesSIGKILL).
func soCheckLocks(t *testing.T, ev *soEvents, ids []string, scheduled map[string]bool, runs map[string][]soActivityRun, victim string, killAt int64) (orchTakenOver bool) {
	t.Helper()
	const slack = int64(50 * time.Millisecond) // the database clock is read in whole milliseconds
	perWorker := map[string]int{}
	for _, l := range ev.OrchLocks {
		perWorker[l.Worker]++
	}
	t.Logf("orchestration items fetched per worker: %v; activity leases: %d; failed lock renewals: %d", perWorker, len(ev.WorkLocks), ev.RenewFails)
	soLogLatencies(t, ev)

	// ---- Worker-queue leases, per activity in fetch order.
	workByKey := map[string][]*soLock{}
	for _, l := range ev.WorkLocks {
		k := soKey(l.Instance, l.ActivityID)
		workByKey[k] = append(workByKey[k], l)
	}
	var probs []string
	var takeovers, inflight, ambiguous, lost int
	var lat []time.Duration
	for k, ls := range workByKey {
		if !scheduled[k] {
			probs = append(probs, fmt.Sprintf("activity %s leased but not scheduled in any history", k))
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i].FetchEnd < ls[j].FetchEnd })
		acked, amb := 0, false
		for i, l := range ls {
			if l.Outcome == "lost" {
				lost++
			}
			if l.Acked {
				acked++
				if l.Kind != string(duroxide.WorkActivityCompleted) {
					probs = append(probs, fmt.Sprintf("activity %s acked with %s", k, l.Kind))
				}
				if i != len(ls)-1 {
					probs = append(probs, fmt.Sprintf("activity %s leased again after its completion was acked: %+v then %+v", k, *l, *ls[i+1]))
				}
			}
			// The attempt count exceeds the leases logged so far: the
			// message was leased by a fetch that never logged, which only
			// the killed process can have done (fetch in flight at the kill).
			if l.Attempt > i+1 {
				if l.FetchStart < killAt {
					probs = append(probs, fmt.Sprintf("activity %s: lease %+v has attempt %d but only %d leases were logged before it, and it predates the kill", k, *l, l.Attempt, i))
				} else if i == 0 {
					inflight++
					lat = append(lat, time.Duration(l.FetchEnd-killAt))
				}
			}
			if l.released() {
				continue
			}
			if l.Worker != victim && l.Outcome == "open" {
				probs = append(probs, fmt.Sprintf("activity %s: lease %s of live worker %s never acked or abandoned", k, l.Token, l.Worker))
			}
			if i == len(ls)-1 {
				if l.Worker == victim && l.Outcome == "open" {
					ambiguous++ // its ack committed, but the process died before logging it
					amb = true
				} else {
					probs = append(probs, fmt.Sprintf("activity %s: lease %+v was never released and the activity was never leased again", k, *l))
				}
				continue
			}
			// Taken over: only once the lease could have expired.
			next := ls[i+1]
			if next.FetchEnd < l.FetchStart+int64(soActivityLockTimeout)-slack {
				probs = append(probs, fmt.Sprintf("activity %s: leased again %v after a lease that was not released (lock timeout %v): %+v then %+v",
					k, time.Duration(next.FetchEnd-l.FetchStart), soActivityLockTimeout, *l, *next))
			}
			// A takeover counts as a new delivery, except that a delivery
			// lost with its owner is not counted (migration 2): once the
			// killed worker may have been declared dead (no heartbeat for
			// DefaultDeadAfter), the next lease may have attempt 1 again.
			ownerDead := l.Worker == victim && next.FetchStart >= killAt+int64(postgres.DefaultDeadAfter-postgres.DefaultHeartbeat)-slack
			if next.Attempt < 2 && !ownerDead {
				probs = append(probs, fmt.Sprintf("activity %s: lease after an unreleased one has attempt %d: %+v then %+v", k, next.Attempt, *l, *next))
			}
			if l.Worker == victim && l.Outcome == "open" {
				takeovers++
				lat = append(lat, time.Duration(next.FetchEnd-killAt))
				if next.Worker == victim {
					probs = append(probs, fmt.Sprintf("activity %s: taken over by the dead worker", k))
				}
			}
		}
		if acked != 1 && !(acked == 0 && amb) {
			probs = append(probs, fmt.Sprintf("activity %s: %d successful completion acks, want 1", k, acked))
		}
		// More than one execution only where a lease died or was lost.
		if rs := runs[k]; len(rs) > 1 {
			explained := false
			for _, l := range ls {
				explained = explained || !l.released() || l.Attempt > 1
			}
			if !explained {
				probs = append(probs, fmt.Sprintf("activity %s ran %d times %+v without a dead or lost lease", k, len(rs), rs))
			}
		}
	}
	for k := range scheduled {
		if len(workByKey[k]) == 0 {
			probs = append(probs, fmt.Sprintf("activity %s scheduled but never leased", k))
		}
	}
	soReport(t, "activity leases", probs)
	twice := 0
	for _, rs := range runs {
		if len(rs) > 1 {
			twice++
		}
	}
	t.Logf("activity leases of %s at the kill: %d logged ones taken over, %d taken over from fetches in flight at the kill (latency after the kill %v), %d whose ack was in flight at the kill and committed anyway; %d lost leases; %d activities ran more than once",
		victim, takeovers, inflight, soLatencies(lat), ambiguous, lost, twice)
	actTakeovers := takeovers + inflight

	// ---- Orchestrator locks, per instance in fetch order.
	orchByInst := map[string][]*soLock{}
	for _, l := range ev.OrchLocks {
		orchByInst[l.Instance] = append(orchByInst[l.Instance], l)
	}
	probs = nil
	takeovers, inflight, ambiguous = 0, 0, 0
	lat = nil
	var turnsOK, turnsLost, lostOverlaps, retried int
	minGap := time.Duration(-1)
	for _, id := range ids {
		ls := orchByInst[id]
		sort.Slice(ls, func(i, j int) bool { return ls[i].FetchEnd < ls[j].FetchEnd })
		completions := 0
		var maxEnd int64
		var maxEndLock *soLock
		for i, l := range ls {
			var prev *soLock
			if i > 0 {
				prev = ls[i-1]
			}
			if l.Attempt > 1 {
				retried++
				// Messages fetched before. Either by the lock before this one,
				// which was not released (a takeover, checked below) or was
				// abandoned; or by a fetch that never logged, which only the
				// killed process can have made (in flight at the kill).
				if prev == nil || prev.Acked {
					if l.FetchStart < killAt {
						probs = append(probs, fmt.Sprintf("%s: lock %+v has attempt %d, but no earlier lock of the instance explains it and it predates the kill", id, *l, l.Attempt))
					} else {
						inflight++
						lat = append(lat, time.Duration(l.FetchEnd-killAt))
					}
				}
			}
			if l.Acked && l.Status == string(duroxide.StatusCompleted) {
				completions++
			}
			if l.released() {
				turnsOK++
				// The turn ran within [FetchEnd, EndStart], inside the time
				// its lock was held whatever the latency of the calls; no
				// other released turn of the instance may intersect it.
				if maxEndLock != nil && l.FetchEnd < maxEnd {
					probs = append(probs, fmt.Sprintf("%s: turns overlap: %s (%s) was fetched %v before %s (%s) began to release its lock",
						id, l.Token, l.Worker, time.Duration(maxEnd-l.FetchEnd), maxEndLock.Token, maxEndLock.Worker))
				} else if maxEndLock != nil && (minGap < 0 || time.Duration(l.FetchEnd-maxEnd) < minGap) {
					minGap = time.Duration(l.FetchEnd - maxEnd)
				}
				if l.EndStart > maxEnd {
					maxEnd, maxEndLock = l.EndStart, l
				}
				continue
			}
			switch l.Outcome {
			case "lost":
				turnsLost++
				for _, o := range ls {
					if o != l && o.released() && o.FetchEnd < l.EndStart && l.FetchEnd < o.EndStart {
						lostOverlaps++
						break
					}
				}
			case "open":
				if l.Worker != victim {
					probs = append(probs, fmt.Sprintf("%s: lock %s of live worker %s never acked or abandoned", id, l.Token, l.Worker))
				}
			case "err":
				probs = append(probs, fmt.Sprintf("%s: lock %s of %s: ack/abandon failed with an error other than lock lost", id, l.Token, l.Worker))
			}
			var next *soLock
			if i+1 < len(ls) {
				next = ls[i+1]
			}
			if next == nil || next.Attempt < 2 {
				// Nobody fetched its messages again: only possible if the
				// killed process's ack committed before it could log it.
				if l.Outcome == "open" && l.Worker == victim {
					ambiguous++
				} else {
					probs = append(probs, fmt.Sprintf("%s: lock %+v was not released, but its messages were not fetched again (next %+v)", id, *l, next))
				}
				continue
			}
			if next.FetchEnd < l.FetchStart+int64(soOrchLockTimeout)-slack {
				probs = append(probs, fmt.Sprintf("%s: lock taken over %v after a lock that was not released (lock timeout %v): %+v then %+v",
					id, time.Duration(next.FetchEnd-l.FetchStart), soOrchLockTimeout, *l, *next))
			}
			if l.Outcome == "open" && l.Worker == victim {
				takeovers++
				lat = append(lat, time.Duration(next.FetchEnd-killAt))
				if next.Worker == victim {
					probs = append(probs, fmt.Sprintf("%s: taken over by the dead worker", id))
				}
			}
		}
		if completions > 1 {
			probs = append(probs, fmt.Sprintf("%s: %d committed completing turns", id, completions))
		}
		if completions == 0 {
			// Only the dead worker may have committed it without logging.
			found := false
			for _, l := range ls {
				found = found || (l.Outcome == "open" && l.Worker == victim)
			}
			if !found {
				probs = append(probs, fmt.Sprintf("%s: no committed completing turn in the log", id))
			}
		}
	}
	soReport(t, "orchestration turns", probs)
	t.Logf("turns: %d released by their holder, %d whose ack found the lock lost (%d of them overlapping a released turn), %d fetches with attempt > 1; smallest gap between turns of one instance %v",
		turnsOK, turnsLost, lostOverlaps, retried, minGap)
	t.Logf("orchestration locks of %s at the kill: %d logged ones taken over, %d taken over from fetches in flight at the kill (latency after the kill %v), %d whose ack was in flight at the kill and committed anyway",
		victim, takeovers, inflight, soLatencies(lat), ambiguous)
	if takeovers+inflight == 0 {
		t.Logf("no orchestration lock of %s was taken over; the kill tested nothing on the orchestrator queue", victim)
	}
	if actTakeovers == 0 {
		t.Errorf("no activity lease of %s was taken over; the kill tested nothing on the worker queue", victim)
	}
	return takeovers+inflight > 0
}

// soLogLatencies logs percentiles of the store calls and of the turn and
// lease durations seen in the event log.
func soLogLatencies(t *testing.T, ev *soEvents) {
	t.Helper()
	var fetchO, turn, ackO, fetchW, lease, ackW []time.Duration
	for _, l := range ev.OrchLocks {
		fetchO = append(fetchO, time.Duration(l.FetchEnd-l.FetchStart))
		if l.EndStart != 0 {
			turn = append(turn, time.Duration(l.EndStart-l.FetchEnd))
			ackO = append(ackO, time.Duration(l.EndEnd-l.EndStart))
		}
	}
	for _, l := range ev.WorkLocks {
		fetchW = append(fetchW, time.Duration(l.FetchEnd-l.FetchStart))
		if l.EndStart != 0 {
			lease = append(lease, time.Duration(l.EndStart-l.FetchEnd))
			ackW = append(ackW, time.Duration(l.EndEnd-l.EndStart))
		}
	}
	t.Logf("latencies (p50/p90/p99/max): orchestration fetch %s, turn %s, ack %s; worker fetch %s, activity %s, ack %s",
		soPct(fetchO), soPct(turn), soPct(ackO), soPct(fetchW), soPct(lease), soPct(ackW))
}

func soPct(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a"
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	p := func(q float64) time.Duration { return d[int(q*float64(len(d)-1))].Round(10 * time.Microsecond) }
	return fmt.Sprintf("%v/%v/%v/%v", p(0.5), p(0.9), p(0.99), d[len(d)-1].Round(10*time.Microsecond))
}

// soLogFunctionStats logs the time PostgreSQL spent in the store's
// functions (sessions with track_functions = all).
func soLogFunctionStats(t *testing.T, st *postgres.Store, schema string) {
	t.Helper()
	time.Sleep(1500 * time.Millisecond) // let the closed sessions' statistics arrive
	rows, err := st.Pool().Query(context.Background(), `SELECT funcname, calls, total_time, self_time
		FROM pg_stat_user_functions WHERE schemaname = $1 ORDER BY total_time DESC`, schema)
	if err != nil {
		t.Logf("function statistics: %v", err)
		return
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var name string
		var calls int64
		var total, self float64
		if err := rows.Scan(&name, &calls, &total, &self); err != nil {
			t.Logf("function statistics: %v", err)
			return
		}
		fmt.Fprintf(&b, "\n  %-28s %7d calls  total %8.0f ms  self %8.0f ms  %.3f ms/call", name, calls, total, self, total/float64(max(calls, 1)))
	}
	t.Logf("time in the store's functions:%s", b.String())
}

// soParallel runs fn(0..n-1) on workers goroutines and fails on the first error.
func soParallel(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	if err := soParallelErr(n, workers, fn); err != nil {
		t.Fatal(err)
	}
}

// soParallelErr runs fn(0..n-1) on workers goroutines and returns the first error.
func soParallelErr(n, workers int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// soStartRate is how many orchestrations per second the test starts.
const soStartRate = 100

// soOpen is a lock the tailed worker holds according to the log.
type soOpen struct {
	kind     string // OF or WF
	fetchEnd int64
	ending   bool // an ack or abandon call has begun
}

// soTail follows the event log and tracks the locks one worker holds.
type soTail struct {
	path    string
	worker  string
	off     int64
	partial string
	open    map[string]soOpen // token → lock
}

func (t *soTail) read() error {
	f, err := os.Open(t.path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		k, err := f.ReadAt(buf, t.off)
		t.off += int64(k)
		data := t.partial + string(buf[:k])
		lines := strings.Split(data, "\n")
		t.partial = lines[len(lines)-1]
		for _, l := range lines[:len(lines)-1] {
			fs := strings.Fields(l)
			if len(fs) < 4 || fs[1] != t.worker {
				continue
			}
			switch fs[0] {
			case "OF":
				var end int64
				fmt.Sscan(fs[5], &end)
				t.open[fs[3]] = soOpen{kind: "OF", fetchEnd: end}
			case "WF":
				var end int64
				fmt.Sscan(fs[6], &end)
				t.open[fs[4]] = soOpen{kind: "WF", fetchEnd: end}
			case "OS", "WS":
				if o, ok := t.open[fs[2]]; ok {
					o.ending = true
					t.open[fs[2]] = o
				}
			case "OA", "OB", "WA", "WB":
				delete(t.open, fs[2])
			}
		}
		if k < len(buf) {
			if err == io.EOF {
				err = nil
			}
			return err
		}
	}
}

// ready reports whether the worker is in the middle of a turn fetched
// after turnSince and of an activity fetched after actSince, neither of
// which has begun its ack. (Killing a process while its ack is on the way
// tests nothing: the server commits the ack all the same.)
func (t *soTail) ready(turnSince, actSince int64) bool {
	orch, act := false, false
	for _, o := range t.open {
		switch {
		case o.ending:
		case o.kind == "OF" && o.fetchEnd >= turnSince:
			orch = true
		case o.kind == "WF" && o.fetchEnd >= actSince:
			act = true
		}
	}
	return orch && act
}

func (t *soTail) count(kind string) int {
	c := 0
	for _, o := range t.open {
		if o.kind == kind {
			c++
		}
	}
	return c
}

func soLatencies(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a"
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return fmt.Sprintf("min %v, max %v", d[0].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
}
