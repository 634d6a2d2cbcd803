package local

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/toygres/toygres/internal/dataplane"
)

// events collects the supervision events of a driver.
type events struct {
	mu  sync.Mutex
	all []dataplane.Event
}

func (e *events) add(ev dataplane.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) list() []dataplane.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.all)
}

// wait polls until an event of kind for name has arrived.
func (e *events) wait(t *testing.T, name string, kind dataplane.EventKind, limit time.Duration) dataplane.Event {
	t.Helper()
	var got dataplane.Event
	err := waitFor(context.Background(), limit, func() bool {
		for _, ev := range e.list() {
			if ev.Instance == name && ev.Kind == kind {
				got = ev
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no %s event for %s within %v; events: %+v", kind, name, limit, e.list())
	}
	return got
}

// killServer SIGKILLs the instance's postmaster alone (its backends stay
// until they notice) and waits for it to die.
func killServer(t *testing.T, d *Driver, name string) int {
	t.Helper()
	pid := pidOf(t, d, name)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(context.Background(), 10*time.Second, func() bool { return !processAlive(pid) }); err != nil {
		t.Fatalf("postmaster %d still alive after SIGKILL", pid)
	}
	return pid
}

// selectOne connects with the password and runs select 1.
func selectOne(ctx context.Context, d *Driver, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := connect(ctx, d, name, testPassword)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		return err
	}
	if one != 1 {
		return errors.New("select 1 returned " + strconv.Itoa(one))
	}
	return nil
}

// assertGone checks that nothing of an instance is left: no directory, no
// process working in it, its port free.
func assertGone(t *testing.T, d *Driver, name string, port int) {
	t.Helper()
	dir := d.paths(name).dir
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		entries, _ := os.ReadDir(dir)
		t.Fatalf("%s: instance directory still there (%v): %v", name, err, entries)
	}
	if pids := processesUnder(dir); len(pids) > 0 {
		t.Fatalf("%s: processes %v still work in the removed instance directory", name, pids)
	}
	if port != 0 && !portFree("127.0.0.1", port) {
		// No process works in the instance's directory (checked above), so
		// the listener is not this instance's server: another test's
		// server reused the port.
		t.Logf("%s: port %d is in use again, by a process outside the instance", name, port)
	}
	if _, err := d.Status(context.Background(), name); !errors.Is(err, dataplane.ErrNotFound) {
		t.Fatalf("%s: Status = %v, want ErrNotFound", name, err)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// seriesCount is the number of series of a metric family in reg.
func seriesCount(t *testing.T, reg prometheus.Gatherer, name string) int {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

func portOf(t *testing.T, d *Driver, name string) int {
	t.Helper()
	ep, err := d.Endpoint(context.Background(), name)
	if err != nil {
		t.Fatalf("Endpoint %s: %v", name, err)
	}
	return ep.Port
}

func TestSupervisorRestartsKilledServer(t *testing.T) {
	var evs events
	reg := prometheus.NewRegistry()
	d := newDriverWith(t, Options{Dir: testDir(t), OnEvent: evs.add, Metrics: reg})
	ctx := testCtx(t)
	const name = "phoenix"
	deploy(t, d, dataplane.Spec{Name: name})
	waitReady(t, d, name)

	old := killServer(t, d, name)
	killed := time.Now()
	var lastErr error
	if err := waitFor(ctx, 15*time.Second, func() bool {
		lastErr = selectOne(ctx, d, name)
		return lastErr == nil
	}); err != nil {
		logs, _ := d.Logs(ctx, name, 20)
		t.Fatalf("not healthy within 15 s of the SIGKILL: %v\nserver log:\n%s", lastErr, strings.Join(logs, "\n"))
	}
	t.Logf("healthy again %v after the SIGKILL", time.Since(killed))
	if pid := pidOf(t, d, name); pid == old {
		t.Fatalf("same postmaster pid %d after the restart", pid)
	}
	ev := evs.wait(t, name, dataplane.EventRestart, 5*time.Second)
	if ev.Attempt != 1 || ev.Time.IsZero() || ev.Message == "" {
		t.Fatalf("restart event = %+v; all events: %+v", ev, evs.list())
	}
	if n := counterValue(t, d.sup.restarts.WithLabelValues(name)); n != 1 {
		t.Fatalf("%s = %v, want 1", MetricRestarts, n)
	}
	if n := seriesCount(t, reg, MetricRestarts); n != 1 {
		t.Fatalf("registry has %d series of %s, want 1", n, MetricRestarts)
	}
	if st, err := d.Status(ctx, name); err != nil || !st.Ready {
		t.Fatalf("Status after restart = %+v, %v", st, err)
	}

	// Delete is not fought: the server stays gone, with no restart event.
	port := portOf(t, d, name)
	if err := d.Delete(ctx, name); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertGone(t, d, name, port)
	if got := d.Supervised(); len(got) != 0 {
		t.Fatalf("still supervised after Delete: %v", got)
	}
	if n := len(evs.list()); n != 1 {
		t.Fatalf("events after Delete: %+v", evs.list())
	}
}

func TestSupervisorDetectsCrashLoop(t *testing.T) {
	var evs events
	d := newDriverWith(t, Options{Dir: testDir(t), OnEvent: evs.add, Supervision: Supervision{
		Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		CrashLoopDeaths: 3, CrashLoopWindow: time.Minute,
	}})
	ctx := testCtx(t)
	const name = "looper"
	deploy(t, d, dataplane.Spec{Name: name})
	waitReady(t, d, name)

	// Break the configuration so that every restart fails, then crash it.
	conf := filepath.Join(d.paths(name).data, "postgresql.conf")
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, append(slices.Clone(orig), "\nno_such_setting = 1\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	killServer(t, d, name)

	loop := evs.wait(t, name, dataplane.EventCrashLoop, 60*time.Second)
	if loop.Attempt != 3 {
		t.Fatalf("crash-loop event = %+v, want attempt 3", loop)
	}
	var failed int
	for _, ev := range evs.list() {
		switch ev.Kind {
		case dataplane.EventRestartFailed:
			failed++
		case dataplane.EventRestart:
			t.Fatalf("restart event with a broken configuration: %+v", ev)
		}
	}
	if failed != 2 {
		t.Fatalf("%d restart-failed events, want 2: %+v", failed, evs.list())
	}
	if n := counterValue(t, d.sup.loops.WithLabelValues(name)); n != 1 {
		t.Fatalf("%s = %v, want 1", MetricCrashLoops, n)
	}
	st, err := d.Status(ctx, name)
	if err != nil || st.Phase != PhaseCrashLoop || st.Ready {
		t.Fatalf("Status in a crash loop = %+v, %v", st, err)
	}
	// Restarts stop: over many backoff periods, no new event and no server.
	n := len(evs.list())
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got := len(evs.list()); got != n {
			t.Fatalf("events after the crash loop: %+v", evs.list()[n:])
		}
		if readPostmaster(d.paths(name).data).running {
			t.Fatal("server started again after the crash loop")
		}
		time.Sleep(100 * time.Millisecond) // observing an absence: nothing to wait for
	}

	// Repair, then Readopt: running and supervised again, history cleared.
	if err := os.WriteFile(conf, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	started, err := d.Readopt(ctx, name)
	if err != nil || !started {
		t.Fatalf("Readopt = %t, %v", started, err)
	}
	waitReady(t, d, name)
	if err := selectOne(ctx, d, name); err != nil {
		t.Fatal(err)
	}
	killServer(t, d, name)
	ev := evs.wait(t, name, dataplane.EventRestart, 15*time.Second)
	if ev.Attempt != 1 {
		t.Fatalf("restart after Readopt = %+v, want attempt 1 (history cleared)", ev)
	}
	waitReady(t, d, name)
}

func TestAdoptReportsBrokenInstances(t *testing.T) {
	dir := testDir(t)
	d := newDriver(t, dir)
	ctx := testCtx(t)
	for _, name := range []string{"good", "noconf", "squatted", "garbled"} {
		deploy(t, d, dataplane.Spec{Name: name})
		waitReady(t, d, name)
	}
	if err := d.Close(); err != nil { // Toygres goes down
		t.Fatal(err)
	}
	ports := map[string]int{}
	for _, name := range []string{"noconf", "squatted", "garbled"} {
		ports[name] = portOf(t, d, name)
		killServer(t, d, name)
	}
	// A deletion by an older Toygres interrupted half way: the
	// configuration is gone, the metadata not.
	if err := os.Remove(filepath.Join(d.paths("noconf").data, confFile)); err != nil {
		t.Fatal(err)
	}
	// Another program took the port.
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports["squatted"])))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.WriteFile(d.paths("garbled").meta, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}

	d2 := newDriver(t, dir)
	r, err := d2.Adopt(ctx)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if !slices.Equal(r.Adopted, []string{"good"}) || len(r.Restarted)+len(r.Pending)+len(r.Deleted) != 0 {
		t.Fatalf("Adopt = %+v", r)
	}
	kinds := map[string]dataplane.ProblemKind{}
	for _, p := range r.Problems {
		kinds[p.Instance] = p.Kind
		t.Logf("problem: %v", p)
	}
	want := map[string]dataplane.ProblemKind{"noconf": dataplane.ProblemMissingConfig, "squatted": dataplane.ProblemPortTaken, "garbled": dataplane.ProblemUnreadable}
	if len(kinds) != len(want) {
		t.Fatalf("problems = %v, want %v", kinds, want)
	}
	for name, k := range want {
		if kinds[name] != k {
			t.Fatalf("problems = %v, want %v", kinds, want)
		}
	}
	if err := selectOne(ctx, d2, "good"); err != nil {
		t.Fatal(err)
	}

	// Readopt retries one: still broken, then fixed.
	var pr *dataplane.Problem
	if _, err := d2.Readopt(ctx, "noconf"); !errors.As(err, &pr) || pr.Kind != dataplane.ProblemMissingConfig {
		t.Fatalf("Readopt of a damaged instance: %v, want a missing-config problem", err)
	}
	l.Close()
	if started, err := d2.Readopt(ctx, "squatted"); err != nil || !started {
		t.Fatalf("Readopt once the port is free = %t, %v", started, err)
	}
	waitReady(t, d2, "squatted")

	// Delete removes the broken ones completely.
	for _, name := range []string{"noconf", "garbled", "squatted"} {
		if err := d2.Delete(ctx, name); err != nil {
			t.Fatalf("Delete %s: %v", name, err)
		}
		assertGone(t, d2, name, ports[name])
	}
}

func TestDeleteKillsServerWithoutDataDir(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	const name = "rootless"
	deploy(t, d, dataplane.Spec{Name: name})
	waitReady(t, d, name)
	port, pid := portOf(t, d, name), pidOf(t, d, name)
	// The data directory vanishes under a running server (a half-finished
	// removal): no pid file tells where the server is.
	d.Close()
	if err := os.RemoveAll(d.paths(name).data); err != nil {
		t.Fatal(err)
	}
	if !processAlive(pid) || !listening(port) {
		t.Fatal("server died with its data directory; the test needs it running")
	}
	if err := d.Delete(ctx, name); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertGone(t, d, name, port)
	if processAlive(pid) {
		t.Fatalf("postmaster %d alive after Delete", pid)
	}
}

// Environment of TestChildStep, run in a child process by
// TestInterruptedSteps.
const (
	stepDirEnv  = "TOYGRES_LOCAL_TEST_STEP_DIR"
	stepNameEnv = "TOYGRES_LOCAL_TEST_STEP"
	stepOpEnv   = "TOYGRES_LOCAL_TEST_STEP_OP"
	stepInstEnv = "TOYGRES_LOCAL_TEST_STEP_INSTANCE"
)

// TestChildStep is not a test on its own: it deploys or deletes an instance
// and SIGKILLs its own process at the step named in the environment, as a
// crash there would. "initdb:start" kills it 300 ms into initdb, which
// keeps running, orphaned.
func TestChildStep(t *testing.T) {
	dir := os.Getenv(stepDirEnv)
	if dir == "" {
		t.Skip("helper of TestInterruptedSteps")
	}
	d, err := New(Options{Dir: dir, Supervision: Supervision{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := os.Getenv(stepNameEnv)
	die := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	d.atStep = func(step string) {
		if step != want {
			return
		}
		if step == "initdb:start" {
			time.AfterFunc(300*time.Millisecond, die)
			return
		}
		die()
	}
	name := os.Getenv(stepInstEnv)
	switch op := os.Getenv(stepOpEnv); op {
	case "deploy":
		err = d.Deploy(context.Background(), dataplane.Spec{Name: name}, testPassword)
	case "delete":
		err = d.Delete(context.Background(), name)
	default:
		t.Fatalf("unknown op %q", op)
	}
	t.Fatalf("%s %s finished without reaching step %q: %v", os.Getenv(stepOpEnv), name, want, err)
}

// crashAt runs op on the instance in a child process that dies at step.
func crashAt(t *testing.T, ctx context.Context, dir, op, name, step string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestChildStep$", "-test.count=1")
	cmd.Env = append(os.Environ(), stepDirEnv+"="+dir, stepNameEnv+"="+step, stepOpEnv+"="+op, stepInstEnv+"="+name)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child %s %s at %s: %v, want killed at the step\n%s", op, name, step, err, out)
	}
}

// TestInterruptedSteps crashes Deploy and Delete at each step that leaves a
// distinct state on disk, then checks that Adopt never fails on it and
// that the step, run again, completes and leaves nothing behind.
func TestInterruptedSteps(t *testing.T) {
	dir := testDir(t)
	// Toygres is down while the child runs: nothing supervises.
	d := newDriverWith(t, Options{Dir: dir, Supervision: Supervision{Disabled: true}})
	ctx := testCtx(t)

	deploySteps := []string{"create:mkdir", "create:meta", "initdb:account", "initdb:pwfile", "initdb:start", "initdb:done",
		"initdb:configured", "initdb:roles", "initdb:renamed", "start:started"}
	for i, step := range deploySteps {
		t.Run("deploy/"+step, func(t *testing.T) {
			name := "dep-" + strconv.Itoa(i)
			cleanupInstance(t, d, name)
			crashAt(t, ctx, dir, "deploy", name, step)
			p := d.paths(name)

			r, err := d.Adopt(ctx)
			if err != nil || len(r.Problems) != 0 {
				t.Fatalf("Adopt after a crash at %s = %+v, %v", step, r, err)
			}
			if !slices.Contains(slices.Concat(r.Pending, r.Adopted, r.Restarted), name) {
				t.Fatalf("Adopt after a crash at %s does not list %s: %+v", step, name, r)
			}
			if err := d.Deploy(ctx, dataplane.Spec{Name: name}, testPassword); err != nil {
				t.Fatalf("Deploy after a crash at %s: %v", step, err)
			}
			waitReady(t, d, name)
			if err := selectOne(ctx, d, name); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{p.pwfile, p.initdata, p.marker} {
				if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("%s left behind: %v", f, err)
				}
			}
			if m, err := readMeta(p.meta); err != nil || !m.Initialized || !m.Started {
				t.Fatalf("metadata = %+v, %v", m, err)
			}
			if pids, pm := processesUnder(p.dir), pidOf(t, d, name); len(pids) == 0 || !slices.Contains(pids, pm) {
				t.Fatalf("processes %v, postmaster %d", pids, pm)
			}
			port := portOf(t, d, name)
			if err := d.Delete(ctx, name); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			assertGone(t, d, name, port)
		})
	}

	for i, step := range []string{"delete:marked", "delete:stopped", "delete:removing"} {
		for _, finish := range []string{"adopt", "delete", "deploy"} {
			t.Run(step+"/"+finish, func(t *testing.T) {
				name := "del-" + strconv.Itoa(i) + "-" + finish
				deploy(t, d, dataplane.Spec{Name: name})
				waitReady(t, d, name)
				port := portOf(t, d, name)
				crashAt(t, ctx, dir, "delete", name, step)
				if st, err := d.Status(ctx, name); err != nil || st.Phase != PhaseDeleting {
					t.Fatalf("Status after a crash at %s = %+v, %v", step, st, err)
				}
				switch finish {
				case "adopt":
					r, err := d.Adopt(ctx)
					if err != nil || len(r.Problems) != 0 || !slices.Contains(r.Deleted, name) {
						t.Fatalf("Adopt after a crash at %s = %+v, %v", step, r, err)
					}
				case "delete":
					if err := d.Delete(ctx, name); err != nil {
						t.Fatalf("Delete after a crash at %s: %v", step, err)
					}
				case "deploy":
					// The old instance is finished off; a new one is made.
					if err := d.Deploy(ctx, dataplane.Spec{Name: name}, testPassword); err != nil {
						t.Fatalf("Deploy after a crash at %s: %v", step, err)
					}
					waitReady(t, d, name)
					if err := selectOne(ctx, d, name); err != nil {
						t.Fatal(err)
					}
					port = portOf(t, d, name)
					if err := d.Delete(ctx, name); err != nil {
						t.Fatalf("Delete: %v", err)
					}
				}
				assertGone(t, d, name, port)
			})
		}
	}
}
