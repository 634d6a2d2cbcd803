//go:build unix

package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/postgres"
)

// TestRuntimeSurvivesDatabaseRestart runs a runtime (in this process) with
// orchestrations made of activities and durable timers, and restarts the
// PostgreSQL server twice under it: once quickly (Cluster.Restart, a fast
// shutdown that terminates every connection) and once with the server down
// for longer than the lock timeouts while timers come due. It checks that
// the runtime keeps running (it logs the failures, and orchestrations
// started after each restart complete), that every orchestration completes
// with the right output and a well-formed history, that every completed
// activity's effect happened (a completion without an execution would be
// lost work; an execution without a scheduled activity a phantom), that the
// queues drain and that the runtime shuts down cleanly afterwards.
//
// It restarts the cluster the whole test binary shares. That is safe
// because no test of this package runs in parallel with another top-level
// test (TestRestart in store_test.go restarts it too): every other test's
// stores and databases are closed by then, and later tests connect afresh.
func TestRuntimeSurvivesDatabaseRestart(t *testing.T) {
	cl := soCluster(t)
	if cl.External() {
		t.Skip("cannot restart an external server")
	}
	schema := cl.NewSchemaName(t)
	ctx := context.Background()
	open := func(pool int) *postgres.Store {
		st, err := postgres.Open(ctx, cl.URL, postgres.WithSchema(schema), postgres.WithPoolSize(pool))
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	st := open(8)
	client := duroxide.NewClient(open(2)) // its own handle: it sees the restarts too

	logs := &rsLogBuffer{}
	eff := &rsEffects{runs: map[string]int{}}
	rt, err := duroxide.Start(ctx, st, rsRegistry(eff), duroxide.Options{
		WorkerID:                 "restart-test",
		OrchestrationConcurrency: 4,
		ActivityConcurrency:      8,
		OrchestrationLockTimeout: 2 * time.Second,
		ActivityLockTimeout:      3 * time.Second,
		PollInterval:             200 * time.Millisecond,
		Logger:                   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatalf("start runtime: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rt.Shutdown(sctx)
		}
	})

	var (
		ids       []string
		inputs    = map[string]rsInput{}
		retryable int // client calls that failed retryably and were repeated
	)
	// retry repeats a client call that fails with a retryable error (the
	// pool's connections died with the server) for up to 30s.
	retry := func(what string, fn func() error) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			err := fn()
			if err == nil {
				return
			}
			if !duroxide.IsRetryable(err) || time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			retryable++
		}
	}
	start := func(batch string, n int, timer func(i int) int) []string {
		t.Helper()
		var batchIDs []string
		for i := range n {
			id := fmt.Sprintf("rs-%s-%02d", batch, i)
			in := rsInput{I: len(ids) + 1, TimerMs: timer(i)}
			retry("start "+id, func() error { return client.StartOrchestration(ctx, id, "RestartPipeline", in) })
			ids, batchIDs = append(ids, id), append(batchIDs, id)
			inputs[id] = in
		}
		return batchIDs
	}
	stats := func() *duroxide.StoreStats {
		t.Helper()
		var s *duroxide.StoreStats
		retry("stats", func() (err error) { s, err = client.Stats(ctx); return err })
		return s
	}
	waitFor := func(what string, timeout time.Duration, cond func(*duroxide.StoreStats) bool) *duroxide.StoreStats {
		t.Helper()
		for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
			s := stats()
			if cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s (stats %+v)", timeout, what, s)
			}
		}
	}
	begin := time.Now()

	// Batch A, then a quick restart once some have completed and the rest
	// are between activities and timers.
	start("a", 30, func(i int) int { return 200 + (i%6)*200 })
	s := waitFor("5 completions in batch A", 30*time.Second, func(s *duroxide.StoreStats) bool {
		return s.Instances[duroxide.StatusCompleted] >= 5
	})
	if s.Instances[duroxide.StatusCompleted] >= 30 {
		t.Fatalf("batch A completed before the restart: %+v", s)
	}
	t0 := time.Now()
	if err := cl.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("restart 1 (fast shutdown + start) took %v; before it: %+v", time.Since(t0).Round(time.Millisecond), s)

	// Batch B, started right after the restart, with longer timers; then
	// the server goes down for 3.5s, longer than both lock timeouts, while
	// timers come due and locks expire.
	start("b", 30, func(i int) int { return 500 + (i%5)*500 })
	s = waitFor("5 completions in batch B", 30*time.Second, func(s *duroxide.StoreStats) bool {
		return s.Instances[duroxide.StatusCompleted] >= 35
	})
	if s.Instances[duroxide.StatusRunning] == 0 && s.OrchestratorQueue == 0 {
		t.Fatalf("nothing running before the second restart: %+v", s)
	}
	t0 = time.Now()
	if err := cl.StopServer(ctx); err != nil {
		t.Fatalf("stop server: %v", err)
	}
	time.Sleep(3500 * time.Millisecond)
	if err := cl.StartServer(ctx); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Logf("restart 2 (server down %v); before it: %+v", time.Since(t0).Round(time.Millisecond), s)

	// Batch C, after both restarts.
	start("c", 20, func(i int) int { return 100 })

	// Everything completes.
	status := map[string]*duroxide.OrchestrationStatus{}
	for deadline := time.Now().Add(60 * time.Second); len(status) < len(ids); time.Sleep(100 * time.Millisecond) {
		for _, id := range ids {
			if status[id] != nil {
				continue
			}
			var stt *duroxide.OrchestrationStatus
			err := func() (err error) { stt, err = client.GetStatus(ctx, id); return err }()
			switch {
			case err == nil && stt.Status.IsTerminal():
				status[id] = stt
			case err == nil, errors.Is(err, duroxide.ErrNotFound):
			case duroxide.IsRetryable(err):
				retryable++
			default:
				t.Fatalf("status of %s: %v", id, err)
			}
		}
		if time.Now().After(deadline) {
			var pending []string
			for _, id := range ids {
				if status[id] == nil {
					pending = append(pending, id)
				}
			}
			t.Fatalf("%d orchestrations did not finish within 60s of the restarts: %v (stats %+v)\nruntime log:\n%s",
				len(pending), pending, stats(), logs.tail(6000))
		}
	}
	t.Logf("all %d orchestrations finished %v after the first start, %v after the second restart",
		len(ids), time.Since(begin).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	// Outputs, executions and histories.
	var probs []string
	scheduled := map[string]bool{}
	completedActs := 0
	for _, id := range ids {
		stt := status[id]
		var out int
		if stt.Status != duroxide.StatusCompleted {
			probs = append(probs, fmt.Sprintf("%s: %s (%v)", id, stt.Status, stt.Err()))
			continue
		}
		if err := stt.Decode(&out); err != nil {
			probs = append(probs, fmt.Sprintf("%s: decode %q: %v", id, stt.Output, err))
		} else if want := rsExpected(inputs[id].I); out != want {
			probs = append(probs, fmt.Sprintf("%s: output %d, want %d", id, out, want))
		}
		var h []duroxide.Event
		retry("history of "+id, func() (err error) { h, err = client.ReadHistory(ctx, id, 0); return err })
		probs = append(probs, soCheckHistory(id, h)...)
		var ex []duroxide.ExecutionInfo
		retry("executions of "+id, func() (err error) { ex, err = client.ListExecutions(ctx, id); return err })
		if len(ex) != 1 || ex[0].Status != duroxide.StatusCompleted {
			probs = append(probs, fmt.Sprintf("%s: executions %+v, want one Completed", id, ex))
		}
		acts, timers := 0, 0
		for _, ev := range h {
			switch ev.Kind {
			case duroxide.EventActivityScheduled:
				acts++
				scheduled[soKey(id, ev.EventID)] = true
			case duroxide.EventTimerFired:
				timers++
			case duroxide.EventActivityCompleted:
				completedActs++
				// The completion is the result of an execution that happened.
				if eff.count(soKey(id, ev.SourceEventID)) == 0 {
					probs = append(probs, fmt.Sprintf("%s: ActivityCompleted for #%d, but the activity never ran", id, ev.SourceEventID))
				}
			}
		}
		if acts != rsActivities || timers != 2 {
			probs = append(probs, fmt.Sprintf("%s: %d activities and %d fired timers, want %d and 2", id, acts, timers, rsActivities))
		}
	}
	reruns := 0
	for k, n := range eff.snapshot() {
		if !scheduled[k] {
			probs = append(probs, fmt.Sprintf("activity %s ran but is not scheduled in any history", k))
		}
		if n > 1 {
			reruns++
		}
	}
	soReport(t, "results after the restarts", probs)

	// The queues drain: nothing is stuck behind a dead connection.
	waitFor("the queues to drain", 10*time.Second, func(s *duroxide.StoreStats) bool {
		return s.OrchestratorQueue == 0 && s.WorkerQueue == 0
	})

	// The runtime noticed the outages (and survived them).
	levels, samples := logs.summary()
	t.Logf("%d activities completed, %d ran more than once; client calls repeated after retryable errors: %d", completedActs, reruns, retryable)
	t.Logf("runtime log records by level: %v; distinct warnings/errors:\n  %s", levels, strings.Join(samples, "\n  "))
	if levels["WARN"]+levels["ERROR"] == 0 {
		t.Error("the runtime logged no warning or error although the database went away twice")
	}

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stopped = true
	if err := rt.Shutdown(sctx); err != nil {
		t.Errorf("shutdown after the restarts: %v", err)
	}
}

// rsInput is the input of RestartPipeline.
type rsInput struct {
	I       int
	TimerMs int
}

// rsActivities is the number of activities one RestartPipeline runs.
const rsActivities = 5

// rsExpected is RestartPipeline's output for input i.
func rsExpected(i int) int {
	b := soStep(soStep(i, 1), 2)
	return soStep(soStep(b, 10)+soStep(b, 11), 20)
}

// rsEffects counts activity executions by instance#activity id.
type rsEffects struct {
	mu   sync.Mutex
	runs map[string]int
}

func (e *rsEffects) add(k string) {
	e.mu.Lock()
	e.runs[k]++
	e.mu.Unlock()
}

func (e *rsEffects) count(k string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[k]
}

func (e *rsEffects) snapshot() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := make(map[string]int, len(e.runs))
	for k, v := range e.runs {
		m[k] = v
	}
	return m
}

func rsRegistry(eff *rsEffects) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "RestartStep", func(ctx context.Context, in [2]int) (int, error) {
		ai, _ := duroxide.ActivityInfoFromContext(ctx)
		eff.add(soKey(ai.Instance, ai.ActivityID))
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return soStep(in[0], in[1]), nil
	}))
	// RestartPipeline: a step, a timer, a step, a fan-out of two steps
	// joined with a second timer, and a last step.
	duroxide.Must(duroxide.RegisterOrchestration(reg, "RestartPipeline", func(ctx *duroxide.OrchestrationContext, in rsInput) (int, error) {
		a, err := duroxide.CallActivityTyped[int](ctx, "RestartStep", [2]int{in.I, 1})
		if err != nil {
			return 0, err
		}
		if err := ctx.Sleep(time.Duration(in.TimerMs) * time.Millisecond); err != nil {
			return 0, err
		}
		b, err := duroxide.CallActivityTyped[int](ctx, "RestartStep", [2]int{a, 2})
		if err != nil {
			return 0, err
		}
		t1 := ctx.CallActivity("RestartStep", [2]int{b, 10})
		t2 := ctx.CallActivity("RestartStep", [2]int{b, 11})
		if err := ctx.Join(t1, t2, ctx.CreateTimer(300*time.Millisecond)); err != nil {
			return 0, err
		}
		x, err := duroxide.Await[int](t1)
		if err != nil {
			return 0, err
		}
		y, err := duroxide.Await[int](t2)
		if err != nil {
			return 0, err
		}
		return duroxide.CallActivityTyped[int](ctx, "RestartStep", [2]int{x + y, 20})
	}))
	return reg
}

// rsLogBuffer collects the runtime's text log.
type rsLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *rsLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *rsLogBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// summary counts records by level and returns one sample line (without
// time and ids) for each distinct warning or error message.
func (b *rsLogBuffer) summary() (map[string]int, []string) {
	b.mu.Lock()
	text := b.buf.String()
	b.mu.Unlock()
	levels := map[string]int{}
	seen := map[string]int{}
	for _, l := range strings.Split(text, "\n") {
		i := strings.Index(l, "level=")
		if i < 0 {
			continue
		}
		rest := l[i+len("level="):]
		lvl, _, _ := strings.Cut(rest, " ")
		levels[lvl]++
		if lvl != "WARN" && lvl != "ERROR" {
			continue
		}
		msg := rest
		if j := strings.Index(rest, "msg="); j >= 0 {
			msg = rest[j:]
		}
		// Group by message and the error's first words.
		key := msg
		if j := strings.Index(msg, " error="); j >= 0 {
			e := msg[j:]
			if len(e) > 110 {
				e = e[:110]
			}
			key = msg[:j] + e
		}
		seen[lvl+" "+key]++
	}
	var samples []string
	for k, n := range seen {
		samples = append(samples, fmt.Sprintf("%4dx %s", n, k))
	}
	sort.Strings(samples)
	return levels, samples
}
