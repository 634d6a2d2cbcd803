//go:build unix

package postgres_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/postgres"
	"github.com/toygres/toygres/duroxide/postgres/pgtest"
)

// The scale-out test (scaleout_test.go) re-executes this test binary three
// times to run only TestScaleOutChild, each a runtime process with its own
// WorkerID on one shared schema. These variables tell a child what to do.
const (
	soChildEnv  = "DUROXIDE_SCALEOUT_WORKER" // worker id; absent: TestScaleOutChild skips
	soURLEnv    = "DUROXIDE_SCALEOUT_URL"    // database URL
	soSchemaEnv = "DUROXIDE_SCALEOUT_SCHEMA" // store schema
	soLogEnv    = "DUROXIDE_SCALEOUT_LOG"    // shared event log (see soLog)
	// soProfileEnv, when set (inherited from the parent's environment),
	// turns on track_functions in the children's sessions; the parent then
	// logs pg_stat_user_functions of the schema.
	soProfileEnv = "DUROXIDE_SCALEOUT_PROFILE"
	// soChildMaxLife bounds a child whose parent vanished without closing
	// its stdin (it normally exits when stdin reaches EOF).
	soChildMaxLife = 5 * time.Minute
)

// Lock timeouts of the child runtimes: short, so that the work the killed
// process held is taken over within seconds.
const (
	soOrchLockTimeout     = 2 * time.Second
	soActivityLockTimeout = 3 * time.Second
)

func soChildOptions(worker string, logger *slog.Logger) duroxide.Options {
	return duroxide.Options{
		WorkerID:                 worker,
		OrchestrationConcurrency: 4,
		ActivityConcurrency:      8,
		OrchestrationLockTimeout: soOrchLockTimeout,
		ActivityLockTimeout:      soActivityLockTimeout,
		PollInterval:             250 * time.Millisecond,
		Logger:                   logger,
	}
}

// TestScaleOutChild is not a test: it is a runtime process of
// TestScaleOutThreeProcessesSIGKILL, which starts it with
// DUROXIDE_SCALEOUT_WORKER set. It runs until its stdin is closed (then it
// shuts down cleanly) or it is killed. Run directly it skips.
func TestScaleOutChild(t *testing.T) {
	worker := os.Getenv(soChildEnv)
	if worker == "" {
		t.Skip("helper process of TestScaleOutThreeProcessesSIGKILL; only runs when that test re-executes the test binary")
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "scaleout child %s: "+format+"\n", append([]any{worker}, args...)...)
		os.Exit(2)
	}
	url, schema, logPath := os.Getenv(soURLEnv), os.Getenv(soSchemaEnv), os.Getenv(soLogEnv)
	if url == "" || schema == "" || logPath == "" {
		fail("missing %s, %s or %s", soURLEnv, soSchemaEnv, soLogEnv)
	}
	ctx := context.Background()
	opts := []postgres.Option{postgres.WithSchema(schema), postgres.WithPoolSize(12)}
	if os.Getenv(soProfileEnv) != "" {
		opts = append(opts, postgres.WithPoolConfig(func(c *pgxpool.Config) {
			c.ConnConfig.RuntimeParams["track_functions"] = "all"
		}))
	}
	st, err := postgres.Open(ctx, url, opts...)
	if err != nil {
		fail("open store: %v", err)
	}
	elog, err := openSOLog(logPath)
	if err != nil {
		fail("open log: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	wrapped := newSOStore(st, worker, elog)
	reg, rtOpts := soRegistry(elog), soChildOptions(worker, logger)
	if os.Getenv(soLeaseEnv) != "" {
		reg, rtOpts = soLeaseRegistry(elog, logPath, worker), soLeaseOptions(worker, rtOpts)
	}
	rt, err := duroxide.Start(ctx, wrapped, reg, rtOpts)
	if err != nil {
		fail("start runtime: %v", err)
	}
	elog.line("S %s %d %d", worker, os.Getpid(), time.Now().UnixNano())
	fmt.Fprintf(os.Stderr, "scaleout child %s (pid %d) running\n", worker, os.Getpid())

	// Run until the parent closes our stdin (or dies, which closes it too).
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-time.After(soChildMaxLife):
		fail("never stopped by the parent; exiting")
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := rt.Shutdown(sctx); err != nil {
		fail("shutdown: %v", err)
	}
	st.Close()
	elog.line("E %s %d %d", worker, os.Getpid(), time.Now().UnixNano())
	fmt.Fprintf(os.Stderr, "scaleout child %s stopped cleanly\n", worker)
}

// ---------------------------------------------------------------------------
// Shared event log.
//
// Every process appends lines to one file opened with O_APPEND, one write(2)
// per line, so lines of different processes never interleave. Times are
// wall-clock nanoseconds (time.Now().UnixNano()); all processes run on one
// machine, so they share the clock. The line kinds are
//
//	S  <worker> <pid> <ns>                                  runtime started
//	E  <worker> <pid> <ns>                                  runtime stopped cleanly
//	A  <worker> <instance> <activity id> <attempt> <ns>     activity executed (logged as it starts)
//	OF <worker> <instance> <token> <start> <end> <attempt> <messages>   FetchOrchestrationItem returned an item
//	OS <worker> <token> <start>                             an ack or abandon call of the token begins
//	OA <worker> <token> <start> <end> <outcome> <status>    AckOrchestrationItem call (one line per call)
//	OB <worker> <token> <start> <end> <outcome>             AbandonOrchestrationItem call
//	OR <worker> <token> <start> <end> <outcome>             RenewOrchestrationItemLock call that failed
//	WF <worker> <instance> <activity id> <token> <start> <end> <attempt>   FetchWorkItem returned a message
//	WS <worker> <token> <start>                             an ack or abandon call of the token begins
//	WA <worker> <token> <start> <end> <outcome> <kind>      AckWorkItem call
//	WB <worker> <token> <start> <end> <outcome>             AbandonWorkItem call
//	WR <worker> <token> <start> <end> <outcome>             RenewWorkItemLock call that failed
//
// where outcome is ok, lost (duroxide.ErrLockLost) or err (anything else).

type soLog struct{ f *os.File }

func openSOLog(path string) (*soLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &soLog{f: f}, nil
}

// line appends one line with a single write; *os.File serializes
// concurrent writers of this process and O_APPEND those of other processes.
func (l *soLog) line(format string, args ...any) {
	if _, err := l.f.WriteString(fmt.Sprintf(format, args...) + "\n"); err != nil {
		fmt.Fprintln(os.Stderr, "scaleout log write failed:", err)
		os.Exit(2)
	}
}

func soOutcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, duroxide.ErrLockLost):
		return "lost"
	default:
		return "err"
	}
}

func nowNs() int64 { return time.Now().UnixNano() }

// soStore is a delegating duroxide.Store that logs every lock handed out by
// the store and every call that ends or extends it, with the time of the
// call on both sides. The runtime cannot be hooked at turn boundaries, but
// a turn happens exactly between the fetch that returns its item and the
// ack (or abandon) that releases it, so these intervals bound the turns.
type soStore struct {
	duroxide.Store
	notifier duroxide.Notifier
	worker   string
	log      *soLog
}

func newSOStore(st *postgres.Store, worker string, l *soLog) *soStore {
	return &soStore{Store: st, notifier: st, worker: worker, log: l}
}

// Watch delegates duroxide.Notifier, so the runtime keeps its wake-ups.
func (s *soStore) Watch(fn func(duroxide.Queue)) func() { return s.notifier.Watch(fn) }

func (s *soStore) FetchOrchestrationItem(ctx context.Context, lockTimeout time.Duration) (*duroxide.OrchestrationItem, error) {
	t0 := nowNs()
	it, err := s.Store.FetchOrchestrationItem(ctx, lockTimeout)
	t1 := nowNs()
	if err == nil && it != nil {
		s.log.line("OF %s %s %s %d %d %d %d", s.worker, it.Instance, it.LockToken, t0, t1, it.AttemptCount, len(it.Messages))
	}
	return it, err
}

func (s *soStore) AckOrchestrationItem(ctx context.Context, token string, c *duroxide.TurnCommit) error {
	status := "discard"
	if c != nil && c.ExecutionID != 0 {
		status = string(c.Status)
	}
	t0 := nowNs()
	s.log.line("OS %s %s %d", s.worker, token, t0)
	err := s.Store.AckOrchestrationItem(ctx, token, c)
	s.log.line("OA %s %s %d %d %s %s", s.worker, token, t0, nowNs(), soOutcome(err), status)
	return err
}

func (s *soStore) AbandonOrchestrationItem(ctx context.Context, token string, p duroxide.AbandonParams) error {
	t0 := nowNs()
	s.log.line("OS %s %s %d", s.worker, token, t0)
	err := s.Store.AbandonOrchestrationItem(ctx, token, p)
	s.log.line("OB %s %s %d %d %s", s.worker, token, t0, nowNs(), soOutcome(err))
	return err
}

func (s *soStore) RenewOrchestrationItemLock(ctx context.Context, token string, extend time.Duration) error {
	t0 := nowNs()
	err := s.Store.RenewOrchestrationItemLock(ctx, token, extend)
	if err != nil {
		s.log.line("OR %s %s %d %d %s", s.worker, token, t0, nowNs(), soOutcome(err))
	}
	return err
}

func (s *soStore) FetchWorkItem(ctx context.Context, lockTimeout time.Duration) (*duroxide.WorkItemLease, error) {
	t0 := nowNs()
	l, err := s.Store.FetchWorkItem(ctx, lockTimeout)
	t1 := nowNs()
	if err == nil && l != nil {
		s.log.line("WF %s %s %d %s %d %d %d", s.worker, l.Item.Instance, l.Item.ID, l.LockToken, t0, t1, l.AttemptCount)
	}
	return l, err
}

func (s *soStore) AckWorkItem(ctx context.Context, token string, completion *duroxide.WorkItem) error {
	kind := "nil"
	if completion != nil {
		kind = string(completion.Kind)
	}
	t0 := nowNs()
	s.log.line("WS %s %s %d", s.worker, token, t0)
	err := s.Store.AckWorkItem(ctx, token, completion)
	s.log.line("WA %s %s %d %d %s %s", s.worker, token, t0, nowNs(), soOutcome(err), kind)
	return err
}

func (s *soStore) AbandonWorkItem(ctx context.Context, token string, p duroxide.AbandonParams) error {
	t0 := nowNs()
	s.log.line("WS %s %s %d", s.worker, token, t0)
	err := s.Store.AbandonWorkItem(ctx, token, p)
	s.log.line("WB %s %s %d %d %s", s.worker, token, t0, nowNs(), soOutcome(err))
	return err
}

func (s *soStore) RenewWorkItemLock(ctx context.Context, token string, extend time.Duration) error {
	t0 := nowNs()
	err := s.Store.RenewWorkItemLock(ctx, token, extend)
	if err != nil {
		s.log.line("WR %s %s %d %d %s", s.worker, token, t0, nowNs(), soOutcome(err))
	}
	return err
}

// ---------------------------------------------------------------------------
// Orchestration and activity of the scale-out test.

// soStep is what the ScaleStep activity computes.
func soStep(x, k int) int { return x*3 + k }

// soFan is the width of ScalePipeline's fan-out.
const soFan = 3

// soFanStepTime is how long a fan-out step runs. The sequential steps take
// 1 ms; the fan-out steps run longer so that the killed process is sure to
// hold activity leases when it dies.
const soFanStepTime = 20 * time.Millisecond

// soFinalTurnTime is how long ScalePipeline's code spends in its last turn.
const soFinalTurnTime = 10 * time.Millisecond

// soActivities is the number of activities one ScalePipeline runs.
const soActivities = 2 + soFan

// soExpected is ScalePipeline's output for input i, computed without the runtime.
func soExpected(i int) int {
	v := soStep(soStep(i, 1), 2)
	sum := 0
	for p := 0; p < soFan; p++ {
		sum += soStep(v, 10+p)
	}
	return sum
}

func soRegistry(elog *soLog) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	// ScaleStep logs its execution, sleeps (1 ms for the sequential steps,
	// soFanStepTime for the fan-out) and computes soStep.
	duroxide.Must(duroxide.RegisterActivity(reg, "ScaleStep", func(ctx context.Context, in [2]int) (int, error) {
		ai, ok := duroxide.ActivityInfoFromContext(ctx)
		if !ok {
			return 0, errors.New("no activity info in context")
		}
		elog.line("A %s %s %d %d %d", ai.WorkerID, ai.Instance, ai.ActivityID, ai.Attempt, nowNs())
		d := time.Millisecond
		if in[1] >= 10 {
			d = soFanStepTime
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return soStep(in[0], in[1]), nil
	}))
	// ScalePipeline runs two sequential steps, then a fan-out of soFan
	// steps, and returns the sum of the fan-out.
	duroxide.Must(duroxide.RegisterOrchestration(reg, "ScalePipeline", func(ctx *duroxide.OrchestrationContext, i int) (int, error) {
		v := i
		for s := 1; s <= 2; s++ {
			r, err := duroxide.CallActivityTyped[int](ctx, "ScaleStep", [2]int{v, s})
			if err != nil {
				return 0, err
			}
			v = r
		}
		tasks := make([]*duroxide.Task, soFan)
		for p := range tasks {
			tasks[p] = ctx.CallActivity("ScaleStep", [2]int{v, 10 + p})
		}
		if err := ctx.Join(tasks...); err != nil {
			return 0, err
		}
		// Make the last turn slow (it is deterministic all the same), so
		// that the test can kill the process in the middle of a turn.
		time.Sleep(soFinalTurnTime)
		sum := 0
		for _, t := range tasks {
			r, err := duroxide.Await[int](t)
			if err != nil {
				return 0, err
			}
			sum += r
		}
		return sum, nil
	}))
	return reg
}

// ---------------------------------------------------------------------------
// Parsing the event log.

type soActivityRun struct {
	Worker, Instance string
	ActivityID       int64
	Attempt          int
	At               int64
}

// soLock is one lock handed out by the store (an OF or WF line) with what
// became of it.
type soLock struct {
	Worker, Instance, Token string
	ActivityID              int64 // worker-queue locks only
	FetchStart, FetchEnd    int64
	Attempt                 int
	// EndStart is the start of the first ack or abandon call for the token
	// (0: none): the lock cannot have been released before it.
	EndStart, EndEnd int64
	EndKind          string // "ack" or "abandon" of the first such call
	// Outcome: "ok" once any ack or abandon call succeeded; else "lost" if
	// one failed with ErrLockLost; else "err" if calls failed otherwise;
	// "open" when no call was made (the process died holding the lock).
	Outcome   string
	Acked     bool   // an ack call succeeded
	Abandoned bool   // an abandon call succeeded
	Status    string // orchestrator locks: status of the successful ack ("discard" for an empty commit)
	Kind      string // worker locks: completion kind of the successful ack
	Calls     int
}

// released reports whether the holder gave the lock back (ack or abandon).
func (l *soLock) released() bool { return l.Acked || l.Abandoned }

type soEvents struct {
	Starts     map[string]int64 // worker → start time
	Stops      map[string]bool  // worker → stopped cleanly
	Runs       []soActivityRun
	OrchLocks  []*soLock // in log order
	WorkLocks  []*soLock
	RenewFails int
	Unmatched  int // end lines whose token has no fetch line
}

func parseSOLog(path string) (*soEvents, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ev := &soEvents{Starts: map[string]int64{}, Stops: map[string]bool{}}
	byToken := map[string]*soLock{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		bad := func() error { return fmt.Errorf("malformed log line %q", sc.Text()) }
		if len(f) < 2 {
			return nil, bad()
		}
		n := func(i int) int64 {
			if i >= len(f) {
				err = bad()
				return 0
			}
			v, perr := strconv.ParseInt(f[i], 10, 64)
			if perr != nil {
				err = bad()
			}
			return v
		}
		end := func(kind string, outcome, detail string) {
			l := byToken[f[2]]
			if l == nil {
				ev.Unmatched++
				return
			}
			l.Calls++
			if l.EndStart == 0 {
				l.EndStart, l.EndEnd, l.EndKind = n(3), n(4), kind
			}
			switch {
			case outcome == "ok":
				if kind == "ack" {
					l.Acked, l.Status, l.Kind = true, detail, detail
				} else {
					l.Abandoned = true
				}
				l.Outcome = "ok"
			case outcome == "lost" && l.Outcome != "ok":
				l.Outcome = "lost"
			case l.Outcome == "open":
				l.Outcome = "err"
			}
		}
		switch f[0] {
		case "S":
			ev.Starts[f[1]] = n(3)
		case "E":
			ev.Stops[f[1]] = true
		case "A":
			ev.Runs = append(ev.Runs, soActivityRun{Worker: f[1], Instance: f[2], ActivityID: n(3), Attempt: int(n(4)), At: n(5)})
		case "OF":
			l := &soLock{Worker: f[1], Instance: f[2], Token: f[3], FetchStart: n(4), FetchEnd: n(5), Attempt: int(n(6)), Outcome: "open"}
			byToken[l.Token] = l
			ev.OrchLocks = append(ev.OrchLocks, l)
		case "WF":
			l := &soLock{Worker: f[1], Instance: f[2], ActivityID: n(3), Token: f[4], FetchStart: n(5), FetchEnd: n(6), Attempt: int(n(7)), Outcome: "open"}
			byToken[l.Token] = l
			ev.WorkLocks = append(ev.WorkLocks, l)
		case "OA", "WA":
			if len(f) != 7 {
				return nil, bad()
			}
			end("ack", f[5], f[6])
		case "OB", "WB":
			if len(f) != 6 {
				return nil, bad()
			}
			end("abandon", f[5], "")
		case "OS", "WS":
			// The matching OA/OB/WA/WB line carries the same start time.
		case "OR", "WR":
			ev.RenewFails++
		default:
			return nil, bad()
		}
		if err != nil {
			return nil, err
		}
	}
	return ev, sc.Err()
}

// ---------------------------------------------------------------------------
// History checks shared by the scale-out and restart tests.

// soCheckHistory checks one execution's history: event ids 1..n in order,
// OrchestrationStarted first, exactly one terminal event and it is last and
// an OrchestrationCompleted, every completion answers an earlier schedule of
// the right kind, no schedule has two completions, and every scheduled
// activity and timer has its completion. It returns the problems found.
func soCheckHistory(id string, h []duroxide.Event) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, id+": "+fmt.Sprintf(format, args...)) }
	if len(h) == 0 {
		return []string{id + ": empty history"}
	}
	if h[0].Kind != duroxide.EventOrchestrationStarted {
		add("first event is %s", h[0])
	}
	kinds := map[int64]duroxide.EventKind{}
	answered := map[int64]bool{}
	terminals := 0
	for i, ev := range h {
		if ev.EventID != int64(i+1) {
			add("event #%d has id %d", i+1, ev.EventID)
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
				add("%s answers event %d, which is %q", ev, ev.SourceEventID, kinds[ev.SourceEventID])
			}
			if answered[ev.SourceEventID] {
				add("event %d has a second completion %s", ev.SourceEventID, ev)
			}
			answered[ev.SourceEventID] = true
			if ev.Kind == duroxide.EventActivityFailed {
				add("activity failed: %s %+v", ev, ev.Error)
			}
		}
		if ev.Kind.IsTerminal() {
			terminals++
			if i != len(h)-1 {
				add("terminal event %s is not the last of %d", ev, len(h))
			}
			if ev.Kind != duroxide.EventOrchestrationCompleted {
				add("terminal event is %s (%+v)", ev, ev.Error)
			}
		}
	}
	if terminals != 1 {
		add("%d terminal events, want 1", terminals)
	}
	for sid, k := range kinds {
		if (k == duroxide.EventActivityScheduled || k == duroxide.EventTimerCreated) && !answered[sid] {
			add("%s #%d has no completion", k, sid)
		}
	}
	return probs
}

// soReport fails the test with the first problems of a list and their count.
func soReport(t *testing.T, what string, probs []string) {
	t.Helper()
	if len(probs) == 0 {
		return
	}
	shown := probs
	if len(shown) > 25 {
		shown = shown[:25]
	}
	t.Errorf("%s: %d problems, first %d:\n  %s", what, len(probs), len(shown), strings.Join(shown, "\n  "))
}

func soCluster(t *testing.T) *pgtest.Cluster {
	t.Helper()
	c := postgres.ScaleoutCluster()
	if c == nil {
		t.Fatal("no test cluster (TestMain did not run?)")
	}
	return c
}
