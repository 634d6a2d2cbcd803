//go:build unix

package duroxide_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// Crash-recovery tests. Each one runs a runtime in a real child process (the
// test binary re-executed to run only TestCrashChild, see
// crashchild_test.go), kills it with SIGKILL at a chosen point, then starts
// a new runtime in this process on the same SQLite file and checks what it
// makes of the state the dead process left behind.

// crashChild is a running helper process.
type crashChild struct {
	t       *testing.T
	cmd     *exec.Cmd
	outPath string
	done    chan struct{} // closed when the process has exited
	waitErr error
}

// startCrashChild starts the helper process on dbPath with the activity log
// at logPath.
func startCrashChild(t *testing.T, mode, dbPath, logPath string) *crashChild {
	t.Helper()
	outPath := filepath.Join(t.TempDir(), "child-"+mode+".out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+mode, crashChildDBEnv+"="+dbPath, crashLogEnv+"="+logPath)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start helper process: %v", err)
	}
	c := &crashChild{t: t, cmd: cmd, outPath: outPath, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		out.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func (c *crashChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// output returns the tail of what the helper wrote.
func (c *crashChild) output() string {
	b, _ := os.ReadFile(c.outPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// kill sends SIGKILL and checks that the process died of it (and not, say,
// of an error earlier).
func (c *crashChild) kill() {
	c.t.Helper()
	if c.exited() {
		c.t.Fatalf("helper process exited before it was killed (%v); its output:\n%s", c.waitErr, c.output())
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatalf("SIGKILL helper process: %v", err)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.t.Fatal("helper process did not die within 10s of SIGKILL")
	}
	ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		c.t.Fatalf("helper process ended with %v, not by SIGKILL; its output:\n%s", c.cmd.ProcessState, c.output())
	}
	if out, _ := os.ReadFile(c.outPath); strings.Contains(string(out), "DATA RACE") || strings.Contains(string(out), "panic:") {
		c.t.Errorf("helper process reported a data race or panic before it was killed:\n%s", c.output())
	}
}

// pollChild polls cond every interval until it holds. It fails the test if
// the helper exits meanwhile or after timeout.
func (c *crashChild) poll(what string, timeout, interval time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if c.exited() {
			c.t.Fatalf("helper process exited (%v) while waiting for %s; its output:\n%s", c.waitErr, what, c.output())
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s; helper output:\n%s", timeout, what, c.output())
		}
		time.Sleep(interval)
	}
}

func openCrashStore(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return st
}

// restartRuntime starts a runtime in this process on store, with the same
// code as the helper and short poll and lock timeouts. It is shut down when
// the test ends.
func restartRuntime(t *testing.T, store *sqlite.Store, alog *activityLog) *duroxide.Runtime {
	t.Helper()
	rt, err := duroxide.Start(context.Background(), store, crashRegistry(alog), duroxide.Options{
		OrchestrationConcurrency: 4,
		ActivityConcurrency:      8,
		OrchestrationLockTimeout: 2 * time.Second,
		ActivityLockTimeout:      2 * time.Second,
		PollInterval:             50 * time.Millisecond,
		Logger:                   quietLogger(),
	})
	if err != nil {
		t.Fatalf("restart runtime: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rt.Shutdown(ctx)
	})
	return rt
}

// restartWithLog starts a runtime on store that logs its activities to
// logPath, as the process restarted after a SIGKILL would.
func restartWithLog(t *testing.T, store *sqlite.Store, logPath string) *duroxide.Runtime {
	t.Helper()
	alog, err := openActivityLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close() })
	return restartRuntime(t, store, alog)
}

// crashPaths returns a fresh database path and activity log path.
func crashPaths(t *testing.T) (db, log string) {
	dir := t.TempDir()
	return filepath.Join(dir, "crash.db"), filepath.Join(dir, "activities.log")
}

func readHistory(t *testing.T, c *duroxide.Client, id string) []duroxide.Event {
	t.Helper()
	h, err := c.ReadHistory(context.Background(), id, 0)
	if err != nil {
		t.Fatalf("history of %s: %v", id, err)
	}
	return h
}

func waitDone(t *testing.T, c *duroxide.Client, id string, timeout time.Duration) *duroxide.OrchestrationStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := c.WaitForCompletion(ctx, id)
	if err != nil {
		h, _ := c.ReadHistory(context.Background(), id, 0)
		t.Fatalf("wait for %s: %v; history: %v", id, err, h)
	}
	return st
}

// checkWellFormed checks one execution's history: event ids 1..n in order
// without gaps or duplicates, OrchestrationStarted first, exactly one
// terminal event and it is the last, and every completion answers an
// earlier schedule of the right kind that has no other completion.
func checkWellFormed(t *testing.T, id string, h []duroxide.Event) {
	t.Helper()
	if len(h) == 0 {
		t.Fatalf("%s: empty history", id)
	}
	if h[0].Kind != duroxide.EventOrchestrationStarted {
		t.Errorf("%s: first event is %s", id, h[0])
	}
	terminals := 0
	kinds := map[int64]duroxide.EventKind{}
	answered := map[int64]bool{}
	for i, ev := range h {
		if ev.EventID != int64(i+1) {
			t.Errorf("%s: event %d has id %d (history %v)", id, i+1, ev.EventID, h)
		}
		switch ev.Kind {
		case duroxide.EventActivityScheduled, duroxide.EventTimerCreated, duroxide.EventSubOrchestrationScheduled:
			kinds[ev.EventID] = ev.Kind
		case duroxide.EventActivityCompleted, duroxide.EventActivityFailed, duroxide.EventTimerFired:
			want := duroxide.EventActivityScheduled
			if ev.Kind == duroxide.EventTimerFired {
				want = duroxide.EventTimerCreated
			}
			if kinds[ev.SourceEventID] != want {
				t.Errorf("%s: %s answers event %d, which is %q", id, ev, ev.SourceEventID, kinds[ev.SourceEventID])
			}
			if answered[ev.SourceEventID] {
				t.Errorf("%s: event %d has a second completion %s", id, ev.SourceEventID, ev)
			}
			answered[ev.SourceEventID] = true
		}
		if ev.Kind.IsTerminal() {
			terminals++
			if i != len(h)-1 {
				t.Errorf("%s: terminal event %s is not the last of %d", id, ev, len(h))
			}
		}
	}
	if terminals != 1 {
		t.Errorf("%s: %d terminal events, want 1 (history %v)", id, terminals, h)
	}
}

// checkSingleExecution checks that the instance completed exactly once: one
// execution, Completed, whose history has one OrchestrationCompleted.
func checkSingleExecution(t *testing.T, c *duroxide.Client, id string, h []duroxide.Event) {
	t.Helper()
	ex, err := c.ListExecutions(context.Background(), id)
	if err != nil {
		t.Fatalf("executions of %s: %v", id, err)
	}
	if len(ex) != 1 || ex[0].Status != duroxide.StatusCompleted {
		t.Errorf("%s: executions = %+v, want one Completed", id, ex)
	}
	if n := countKind(h, duroxide.EventOrchestrationCompleted); n != 1 {
		t.Errorf("%s: %d OrchestrationCompleted events, want 1", id, n)
	}
}

// checkQueuesDrain waits (at most 5s) until the worker queue is empty and
// the orchestrator queue holds exactly wantOrch messages (timers not yet
// due), i.e. until the crash left no orphaned work behind.
func checkQueuesDrain(t *testing.T, c *duroxide.Client, wantOrch int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.Stats(context.Background())
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if st.WorkerQueue == 0 && st.OrchestratorQueue == wantOrch {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("queues did not drain: %d worker and %d orchestrator messages left, want 0 and %d", st.WorkerQueue, st.OrchestratorQueue, wantOrch)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------

// TestCrashRecoverySIGKILL kills a runtime process with SIGKILL while 40
// orchestrations are half-way through their activities, restarts a runtime
// on the same SQLite file and checks that every orchestration completes
// exactly once with the right result, that no activity whose completion was
// already in history runs again, and that activities caught in flight run
// at most twice.
func TestCrashRecoverySIGKILL(t *testing.T) {
	const instances = 40
	const total = instances * crashPipelineSteps
	dbPath, logPath := crashPaths(t)

	store := openCrashStore(t, dbPath)
	client := duroxide.NewClient(store)
	ids := make([]string, instances)
	for i := range ids {
		ids[i] = fmt.Sprintf("pipeline-%02d", i)
		if err := client.StartOrchestration(context.Background(), ids[i], "CrashPipeline", i); err != nil {
			t.Fatal(err)
		}
	}

	child := startCrashChild(t, "pipeline", dbPath, logPath)
	completedNow := func() int {
		n := 0
		for _, id := range ids {
			h, err := client.ReadHistory(context.Background(), id, 0)
			if err != nil {
				t.Fatalf("history of %s: %v", id, err)
			}
			n += countKind(h, duroxide.EventActivityCompleted) + countKind(h, duroxide.EventActivityFailed)
		}
		return n
	}
	child.poll("half of the activities to complete", 30*time.Second, 5*time.Millisecond, func() bool {
		return completedNow() >= total/2
	})
	child.kill()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	// What the dead process left behind, read from a freshly opened store as
	// a restarted process would see it.
	store = openCrashStore(t, dbPath)
	defer store.Close()
	client = duroxide.NewClient(store)
	completedBefore := map[string]bool{}
	scheduledBefore, finishedBefore := 0, 0
	for _, id := range ids {
		h := readHistory(t, client, id)
		for _, ev := range h {
			switch ev.Kind {
			case duroxide.EventActivityScheduled:
				scheduledBefore++
			case duroxide.EventActivityCompleted, duroxide.EventActivityFailed:
				completedBefore[actKey(id, ev.SourceEventID)] = true
			case duroxide.EventOrchestrationCompleted:
				finishedBefore++
			}
		}
	}
	linesBefore, err := readActivityLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("at the SIGKILL: %d/%d activities completed in history, %d scheduled, %d started (log lines), %d/%d instances finished",
		len(completedBefore), total, scheduledBefore, len(linesBefore), finishedBefore, instances)
	if len(completedBefore) == 0 || len(completedBefore) >= total || finishedBefore == instances {
		t.Fatalf("the kill did not land mid-way (%d of %d activities completed); the test checks nothing", len(completedBefore), total)
	}
	// Every completion in history was logged at its start (the log line is
	// fsynced before the activity runs).
	startedBefore := map[string]int{}
	for _, l := range linesBefore {
		startedBefore[l.key()]++
	}
	for k := range completedBefore {
		if startedBefore[k] == 0 {
			t.Errorf("activity %s has a completion in history but never logged its start", k)
		}
	}

	restartAt := time.Now()
	rt := restartWithLog(t, store, logPath)
	for i, id := range ids {
		st := waitDone(t, rt.Client(), id, 30*time.Second)
		var out int
		expectCompleted(t, st, &out)
		if want := crashPipelineExpected(i); out != want {
			t.Errorf("%s: output %d, want %d", id, out, want)
		}
	}
	t.Logf("all %d instances completed %v after the restart", instances, time.Since(restartAt).Round(time.Millisecond))
	checkQueuesDrain(t, client, 0)

	lines, err := readActivityLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]int{}
	pids := map[string][]int{}
	for _, l := range lines {
		runs[l.key()]++
		pids[l.key()] = append(pids[l.key()], l.Pid)
	}
	scheduled := map[string]bool{}
	for _, id := range ids {
		h := readHistory(t, client, id)
		checkWellFormed(t, id, h)
		checkSingleExecution(t, client, id, h)
		if n := countKind(h, duroxide.EventActivityScheduled); n != crashPipelineSteps {
			t.Errorf("%s: %d activities scheduled, want %d", id, n, crashPipelineSteps)
		}
		if n := countKind(h, duroxide.EventActivityCompleted); n != crashPipelineSteps {
			t.Errorf("%s: %d activities completed, want %d", id, n, crashPipelineSteps)
		}
		for _, ev := range h {
			if ev.Kind == duroxide.EventActivityScheduled {
				scheduled[actKey(id, ev.EventID)] = true
			}
		}
	}
	var twice []string
	for k := range scheduled {
		switch n := runs[k]; {
		case n == 0:
			t.Errorf("activity %s completed but never ran", k)
		case completedBefore[k] && n != 1:
			t.Errorf("activity %s had completed before the crash but ran %d times", k, n)
		case n > 2:
			t.Errorf("activity %s ran %d times; at most 2 expected after one crash", k, n)
		case n == 2:
			twice = append(twice, k)
			// The dead process started it; the restarted runtime ran it again.
			if p := pids[k]; p[0] != child.cmd.Process.Pid || p[1] != os.Getpid() {
				t.Errorf("activity %s ran twice in processes %v, want helper %d then restarted runtime %d", k, p, child.cmd.Process.Pid, os.Getpid())
			}
		}
	}
	for k := range runs {
		if !scheduled[k] {
			t.Errorf("activity %s ran but is not in any history", k)
		}
	}
	sort.Strings(twice)
	// Only activities the dead process had leased can run twice, and it
	// leased at most ActivityConcurrency at a time.
	if len(twice) > crashChildActivityConcurrency {
		t.Errorf("%d activities ran twice (%v); at most %d were in flight at the crash", len(twice), twice, crashChildActivityConcurrency)
	}
	t.Logf("%d activity executions for %d activities; run twice (in flight at the crash): %v", len(lines), total, twice)
}

// TestRetryBackoffSurvivesSIGKILL kills the runtime process while a retry
// policy's backoff timer is pending and checks that, after a restart, the
// retry runs when the original timer was due (the wait continues with the
// time that was left instead of starting over), exactly once, and that the
// failed attempt is not repeated.
//
// The issue describes a 30s backoff; the test uses 5s (and 2s for a timer
// that falls due while no runtime is running) to stay short. What matters is
// that a wait restarted from zero at the restart would be detectably late:
// by 3s for the 5s timer (restarted 2s before it is due) and by 2s for the
// 2s one (due 1s before the restart), both more than the allowed slack.
func TestRetryBackoffSurvivesSIGKILL(t *testing.T) {
	const (
		longBackoff  = 5 * time.Second
		shortBackoff = 2 * time.Second
		// downtime is how long after the long timer's creation the runtime
		// stays dead; the long timer then has 2s left, and a timer restarted
		// at the restart would be 3s late.
		downtime = 3 * time.Second
		// slack is how late after its due time (or after the restart, if
		// that is later) a retry may start; it is typically a few ms.
		slack = 1500 * time.Millisecond
	)
	dbPath, logPath := crashPaths(t)
	store := openCrashStore(t, dbPath)
	client := duroxide.NewClient(store)
	cases := []struct {
		id      string
		backoff time.Duration
	}{
		{"retry-pending", longBackoff}, // still pending at the restart
		{"retry-due", shortBackoff},    // falls due while the runtime is dead
	}
	for _, c := range cases {
		if err := client.StartOrchestration(context.Background(), c.id, "CrashRetry",
			retryInput{Payload: c.id, BackoffMs: int(c.backoff / time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}

	child := startCrashChild(t, "retry", dbPath, logPath)
	// backoffTimer returns the TimerCreated that follows the first
	// ActivityFailed, if any.
	backoffTimer := func(h []duroxide.Event) (duroxide.Event, bool) {
		failed := false
		for _, ev := range h {
			if ev.Kind == duroxide.EventActivityFailed {
				failed = true
			}
			if failed && ev.Kind == duroxide.EventTimerCreated {
				return ev, true
			}
		}
		return duroxide.Event{}, false
	}
	timers := map[string]duroxide.Event{}
	child.poll("the backoff timers to be created", 30*time.Second, 5*time.Millisecond, func() bool {
		for _, c := range cases {
			if _, ok := timers[c.id]; ok {
				continue
			}
			h, err := client.ReadHistory(context.Background(), c.id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if ev, ok := backoffTimer(h); ok {
				timers[c.id] = ev
			}
		}
		return len(timers) == len(cases)
	})
	child.kill()
	killedAt := time.Now()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	long := timers["retry-pending"]
	lines, err := readActivityLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != len(cases) {
		t.Fatalf("before the restart the log has %d executions, want %d (one failed attempt each): %+v", len(lines), len(cases), lines)
	}

	// The deliberate downtime: the runtime stays dead for a while.
	time.Sleep(time.Until(time.UnixMilli(long.TimestampMs).Add(downtime)))
	if now := time.Now().UnixMilli(); now >= long.FireAtMs || now < timers["retry-due"].FireAtMs {
		t.Fatalf("restart at %d is not between the timers' due times (%d, %d)", now, timers["retry-due"].FireAtMs, long.FireAtMs)
	}

	store = openCrashStore(t, dbPath)
	defer store.Close()
	restartAt := time.Now()
	rt := restartWithLog(t, store, logPath)
	client = rt.Client()
	for _, c := range cases {
		st := waitDone(t, client, c.id, 30*time.Second)
		var out string
		expectCompleted(t, st, &out)
		if want := c.id + " ok on attempt 2"; out != want {
			t.Errorf("%s: output %q, want %q", c.id, out, want)
		}
	}
	checkQueuesDrain(t, client, 0)
	t.Logf("killed %v after the timers were created, restarted %v later", killedAt.Sub(time.UnixMilli(long.TimestampMs)).Round(time.Millisecond), restartAt.Sub(killedAt).Round(time.Millisecond))

	lines, err = readActivityLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		timer := timers[c.id]
		var runs []logLine
		for _, l := range lines {
			if l.Instance == c.id {
				runs = append(runs, l)
			}
		}
		if len(runs) != 2 {
			t.Errorf("%s: Flaky ran %d times, want 2 (the failed attempt must not run again): %+v", c.id, len(runs), runs)
			continue
		}
		first, second := runs[0], runs[1]
		if first.Pid != child.cmd.Process.Pid || first.Tag != "attempt-1" {
			t.Errorf("%s: first execution %+v, want attempt-1 in the helper (pid %d)", c.id, first, child.cmd.Process.Pid)
		}
		if second.Pid != os.Getpid() || second.Tag != "attempt-2" {
			t.Errorf("%s: second execution %+v, want attempt-2 in the restarted runtime (pid %d)", c.id, second, os.Getpid())
		}
		// The retry waits for the timer created before the crash...
		if second.AtMs < timer.FireAtMs {
			t.Errorf("%s: retry started at %d, %dms before its backoff timer was due (%d)", c.id, second.AtMs, timer.FireAtMs-second.AtMs, timer.FireAtMs)
		}
		// ...and no longer than needed: when it was due, or at the restart
		// if it fell due while no runtime was running.
		due := max(timer.FireAtMs, restartAt.UnixMilli())
		if late := time.Duration(second.AtMs-due) * time.Millisecond; late > slack {
			t.Errorf("%s: retry started %v after it was due (timer due %d, restart %d); the backoff seems to have restarted",
				c.id, late, timer.FireAtMs, restartAt.UnixMilli())
		} else {
			t.Logf("%s: backoff %v, retry started %dms after the timer was due (restart %+dms relative to due time)",
				c.id, c.backoff, second.AtMs-timer.FireAtMs, restartAt.UnixMilli()-timer.FireAtMs)
		}

		h := readHistory(t, client, c.id)
		checkWellFormed(t, c.id, h)
		checkSingleExecution(t, client, c.id, h)
		for kind, want := range map[duroxide.EventKind]int{
			duroxide.EventActivityScheduled: 2,
			duroxide.EventActivityFailed:    1,
			duroxide.EventActivityCompleted: 1,
			duroxide.EventTimerCreated:      1,
			duroxide.EventTimerFired:        1,
		} {
			if n := countKind(h, kind); n != want {
				t.Errorf("%s: %d %s events, want %d (history %v)", c.id, n, kind, want, h)
			}
		}
		for i, ev := range h {
			switch ev.Kind {
			case duroxide.EventTimerCreated:
				if ev.EventID != timer.EventID || ev.FireAtMs != timer.FireAtMs {
					t.Errorf("%s: timer %+v changed after the restart (was %+v)", c.id, ev, timer)
				}
			case duroxide.EventTimerFired:
				if ev.SourceEventID != timer.EventID {
					t.Errorf("%s: TimerFired answers %d, want %d", c.id, ev.SourceEventID, timer.EventID)
				}
				if ev.TimestampMs < timer.FireAtMs {
					t.Errorf("%s: timer fired at %d, before its due time %d", c.id, ev.TimestampMs, timer.FireAtMs)
				}
				// The second attempt is scheduled after the timer fired.
				if i+1 >= len(h) || h[i+1].Kind != duroxide.EventActivityScheduled {
					t.Errorf("%s: TimerFired is not followed by the retry's ActivityScheduled: %v", c.id, h)
				}
			}
		}
	}
}

// TestHeldFailureLostToSIGKILL kills the runtime while a failed attempt is
// held for a short backoff (see hold.go): the failure was never committed,
// so after the restart the attempt runs again (here it then succeeds) and
// history shows one attempt; nothing else is lost or doubled.
func TestHeldFailureLostToSIGKILL(t *testing.T) {
	const id = "retry-held"
	dbPath, logPath := crashPaths(t)
	store := openCrashStore(t, dbPath)
	client := duroxide.NewClient(store)
	// A 600 ms backoff is held: within a chain's second, and within a third
	// of the helper's 2 s activity lock timeout.
	if err := client.StartOrchestration(context.Background(), id, "CrashRetry", retryInput{Payload: id, BackoffMs: 600}); err != nil {
		t.Fatal(err)
	}
	child := startCrashChild(t, "retry", dbPath, logPath)
	child.poll("the first attempt", 30*time.Second, 2*time.Millisecond, func() bool {
		lines, err := readActivityLog(logPath)
		if err != nil {
			t.Fatal(err)
		}
		return len(lines) == 1
	})
	// The attempt fails right after its log line: kill the helper well inside
	// the backoff. A failure committed at once would be in history now.
	time.Sleep(100 * time.Millisecond)
	child.kill()
	if h := readHistory(t, client, id); countKind(h, duroxide.EventActivityFailed) != 0 {
		t.Fatalf("the failure was committed before its backoff ended (no hold to lose): %v", h)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	store = openCrashStore(t, dbPath)
	defer store.Close()
	rt := restartWithLog(t, store, logPath)
	client = rt.Client()
	var out string
	expectCompleted(t, waitDone(t, client, id, 30*time.Second), &out)
	if want := id + " ok on attempt 2"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	checkQueuesDrain(t, client, 0)
	lines, err := readActivityLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].Pid != child.cmd.Process.Pid || lines[1].Pid != os.Getpid() {
		t.Errorf("Flaky executions %+v, want one in the helper (pid %d) and one after the restart (pid %d)", lines, child.cmd.Process.Pid, os.Getpid())
	}
	h := readHistory(t, client, id)
	checkWellFormed(t, id, h)
	checkSingleExecution(t, client, id, h)
	for kind, want := range map[duroxide.EventKind]int{
		duroxide.EventActivityScheduled: 1,
		duroxide.EventActivityFailed:    0,
		duroxide.EventTimerCreated:      0,
		duroxide.EventActivityCompleted: 1,
	} {
		if n := countKind(h, kind); n != want {
			t.Errorf("%d %s events, want %d (history %v)", n, kind, want, h)
		}
	}
}

// TestCrashDuringTimerRecovery kills the runtime process while instances
// wait on durable timers and external events, raises some events while no
// runtime runs and others after the restart, and checks that every timer
// fires exactly once and not before it is due, and that every event is
// delivered exactly once.
func TestCrashDuringTimerRecovery(t *testing.T) {
	dbPath, logPath := crashPaths(t)
	store := openCrashStore(t, dbPath)
	client := duroxide.NewClient(store)
	type inst struct {
		id   string
		in   timerEventInput
		want string
	}
	var all []inst
	for i := 0; i < 3; i++ {
		// The 4s timer is still pending at the restart.
		all = append(all, inst{fmt.Sprintf("tte-%d", i), timerEventInput{Mode: "timer-then-event", TimerMs: 4000}, "timer fired, then go from after-" + fmt.Sprint(i)})
	}
	for i := 0; i < 4; i++ {
		// The event wins over a 60s timeout; half of the events are raised
		// while no runtime runs, half after the restart.
		all = append(all, inst{fmt.Sprintf("eot-%d", i), timerEventInput{Mode: "event-or-timeout", TimerMs: 60_000}, ""})
	}
	for i := 0; i < 3; i++ {
		// The 1s timer falls due while no runtime runs.
		all = append(all, inst{fmt.Sprintf("to-%d", i), timerEventInput{Mode: "timer-only", TimerMs: 1000}, "timer fired"})
	}
	for i := range all {
		if strings.HasPrefix(all[i].id, "eot-") {
			if i%2 == 0 {
				all[i].want = "go from during-downtime"
			} else {
				all[i].want = "go from after-restart"
			}
		}
		if err := client.StartOrchestration(context.Background(), all[i].id, "CrashTimerEvent", all[i].in); err != nil {
			t.Fatal(err)
		}
	}

	child := startCrashChild(t, "timers", dbPath, logPath)
	// Wait until every instance waits: its timer is created and, for the
	// event-or-timeout ones, its subscription recorded.
	child.poll("every instance to be waiting", 30*time.Second, 10*time.Millisecond, func() bool {
		for _, in := range all {
			h, err := client.ReadHistory(context.Background(), in.id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if countKind(h, duroxide.EventTimerCreated) == 0 {
				return false
			}
			if in.in.Mode == "event-or-timeout" && countKind(h, duroxide.EventExternalSubscribed) == 0 {
				return false
			}
		}
		return true
	})
	child.kill()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	store = openCrashStore(t, dbPath)
	defer store.Close()
	client = duroxide.NewClient(store)
	timersBefore := map[string]duroxide.Event{}
	var latestShortDue int64
	for _, in := range all {
		h := readHistory(t, client, in.id)
		if n := countKind(h, duroxide.EventTimerFired); n != 0 {
			t.Fatalf("%s: a timer fired before the crash; the test checks nothing (history %v)", in.id, h)
		}
		for _, ev := range h {
			if ev.Kind == duroxide.EventTimerCreated {
				timersBefore[in.id] = ev
				if in.in.Mode == "timer-only" {
					latestShortDue = max(latestShortDue, ev.FireAtMs)
				}
			}
		}
	}
	if lines, _ := readActivityLog(logPath); len(lines) != 0 {
		t.Fatalf("activities ran before the crash: %+v", lines)
	}

	// Events raised while no runtime runs are queued durably.
	for i, in := range all {
		if in.in.Mode == "event-or-timeout" && i%2 == 0 {
			if err := client.RaiseEvent(context.Background(), in.id, "Go", "during-downtime"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The deliberate downtime: stay dead until the short timers are due.
	time.Sleep(time.Until(time.UnixMilli(latestShortDue + 200)))
	for _, in := range all {
		if in.in.Mode == "timer-then-event" && time.Now().UnixMilli() >= timersBefore[in.id].FireAtMs {
			t.Fatalf("%s: the long timer is already due at the restart", in.id)
		}
	}

	restartAt := time.Now()
	rt := restartWithLog(t, store, logPath)
	client = rt.Client()
	for i, in := range all {
		switch {
		case in.in.Mode == "event-or-timeout" && i%2 == 1:
			if err := client.RaiseEvent(context.Background(), in.id, "Go", "after-restart"); err != nil {
				t.Fatal(err)
			}
		case in.in.Mode == "timer-then-event":
			// Raised before the instance subscribes; it must be buffered.
			if err := client.RaiseEvent(context.Background(), in.id, "Go", "after-"+strings.TrimPrefix(in.id, "tte-")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, in := range all {
		st := waitDone(t, client, in.id, 30*time.Second)
		var out string
		expectCompleted(t, st, &out)
		if out != in.want {
			t.Errorf("%s: output %q, want %q", in.id, out, in.want)
		}
	}
	t.Logf("all instances completed %v after the restart", time.Since(restartAt).Round(time.Millisecond))
	// The event-or-timeout instances' 60s timers lost their select: the
	// turn that applied the event deleted their messages.
	checkQueuesDrain(t, client, 0)

	lines, err := readActivityLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	notes := map[string]int{}
	for _, l := range lines {
		notes[l.Instance]++
		if l.Pid != os.Getpid() {
			t.Errorf("activity %+v ran in the helper process, before its timer fired", l)
		}
	}
	for _, in := range all {
		h := readHistory(t, client, in.id)
		checkWellFormed(t, in.id, h)
		checkSingleExecution(t, client, in.id, h)
		timer := timersBefore[in.id]
		wantFired, wantNotes, wantEvents := 1, 1, 1
		switch in.in.Mode {
		case "event-or-timeout":
			wantFired, wantNotes = 0, 0 // the 60s timer lost the race
		case "timer-only":
			wantEvents = 0
		}
		if n := countKind(h, duroxide.EventTimerCreated); n != 1 {
			t.Errorf("%s: %d timers created, want 1", in.id, n)
		}
		if n := countKind(h, duroxide.EventTimerFired); n != wantFired {
			t.Errorf("%s: %d TimerFired, want %d (history %v)", in.id, n, wantFired, h)
		}
		if n := countKind(h, duroxide.EventExternalEvent); n != wantEvents {
			t.Errorf("%s: %d ExternalEvent, want %d (history %v)", in.id, n, wantEvents, h)
		}
		if notes[in.id] != wantNotes {
			t.Errorf("%s: Note ran %d times, want %d", in.id, notes[in.id], wantNotes)
		}
		for _, ev := range h {
			if ev.Kind == duroxide.EventTimerCreated && (ev.EventID != timer.EventID || ev.FireAtMs != timer.FireAtMs) {
				t.Errorf("%s: timer %+v changed after the restart (was %+v)", in.id, ev, timer)
			}
			if ev.Kind == duroxide.EventTimerFired {
				if ev.TimestampMs < timer.FireAtMs {
					t.Errorf("%s: timer fired at %d, %dms before it was due", in.id, ev.TimestampMs, timer.FireAtMs-ev.TimestampMs)
				}
				due := max(timer.FireAtMs, restartAt.UnixMilli())
				if late := ev.TimestampMs - due; late > 1500 {
					t.Errorf("%s: timer fired %dms after it was due (due %d, restart %d)", in.id, late, timer.FireAtMs, restartAt.UnixMilli())
				}
			}
		}
	}
}
