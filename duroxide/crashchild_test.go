//go:build unix

package duroxide_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// The crash tests re-execute the test binary as a helper process running
// only TestCrashChild. These variables tell it what to do.
const (
	crashChildEnv   = "DUROXIDE_CRASH_CHILD" // mode; absent: TestCrashChild skips
	crashChildDBEnv = "DUROXIDE_CRASH_DB"    // SQLite file
	crashLogEnv     = "DUROXIDE_CRASH_LOG"   // activity execution log
	// crashChildMaxLife bounds a helper process whose parent died without
	// killing it.
	crashChildMaxLife = 90 * time.Second
)

// crashChildOptions are the runtime options of the helper process. The lock
// timeouts are short so the runtime restarted after the SIGKILL can take
// over the dead process's leases quickly; the activities run for
// milliseconds, so renewals (every third of the timeout) keep their leases.
func crashChildOptions(logger *slog.Logger) duroxide.Options {
	return duroxide.Options{
		OrchestrationConcurrency: 4,
		ActivityConcurrency:      crashChildActivityConcurrency,
		OrchestrationLockTimeout: 2 * time.Second,
		ActivityLockTimeout:      2 * time.Second,
		PollInterval:             50 * time.Millisecond,
		Logger:                   logger,
	}
}

// crashChildActivityConcurrency bounds how many activities the helper has
// in flight, hence how many may run a second time after the SIGKILL.
const crashChildActivityConcurrency = 8

// TestCrashChild is not a test: it is the helper process of the crash tests
// (TestCrashRecoverySIGKILL and friends), which start it with
// DUROXIDE_CRASH_CHILD set and kill it with SIGKILL. Run directly it skips.
func TestCrashChild(t *testing.T) {
	mode := os.Getenv(crashChildEnv)
	if mode == "" {
		t.Skip("helper process of the crash tests; only runs when they re-execute the test binary")
	}
	dbPath, logPath := os.Getenv(crashChildDBEnv), os.Getenv(crashLogEnv)
	if dbPath == "" || logPath == "" {
		fmt.Fprintln(os.Stderr, "crash child: missing", crashChildDBEnv, "or", crashLogEnv)
		os.Exit(2)
	}
	store, err := sqlite.Open(context.Background(), dbPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child: open store:", err)
		os.Exit(2)
	}
	alog, err := openActivityLog(logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child: open log:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if os.Getenv("DUROXIDE_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reg, opts := crashRegistry(alog), crashChildOptions(logger)
	if strings.HasPrefix(mode, "lease") {
		reg, opts = leaseChildSetup(mode, alog, logger)
	}
	if _, err := duroxide.Start(context.Background(), store, reg, opts); err != nil {
		fmt.Fprintln(os.Stderr, "crash child: start runtime:", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "crash child %d: mode %s running\n", os.Getpid(), mode)
	// Run until killed. Exit with an unusual code if nobody does, so that
	// the parent (which expects death by SIGKILL) notices.
	time.Sleep(crashChildMaxLife)
	fmt.Fprintln(os.Stderr, "crash child: never killed; exiting")
	os.Exit(3)
}

// ---------------------------------------------------------------------------
// Activity execution log, shared by the helper and the parent process.
//
// Each activity appends one line when it starts:
//
//	<instance> <activity id> <unix ms> <pid> <tag>
//
// The file is opened with O_APPEND, so lines from both processes and from
// concurrent activities never interleave, and each line is fsynced before
// the activity does anything else.

type activityLog struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openActivityLog(path string) (*activityLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &activityLog{path: path, f: f}, nil
}

func (l *activityLog) Close() error { return l.f.Close() }

// record logs the start of the current activity; tag must not contain spaces.
func (l *activityLog) record(ctx context.Context, tag string) (time.Time, error) {
	ai, ok := duroxide.ActivityInfoFromContext(ctx)
	if !ok {
		return time.Time{}, errors.New("no activity info in context")
	}
	now := time.Now()
	line := fmt.Sprintf("%s %d %d %d %s\n", ai.Instance, ai.ActivityID, now.UnixMilli(), os.Getpid(), tag)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.WriteString(line); err != nil {
		return now, err
	}
	return now, l.f.Sync()
}

// logLine is one parsed line of the activity log.
type logLine struct {
	Instance   string
	ActivityID int64
	AtMs       int64
	Pid        int
	Tag        string
}

func (l logLine) key() string { return actKey(l.Instance, l.ActivityID) }

func actKey(instance string, id int64) string { return instance + "#" + strconv.FormatInt(id, 10) }

func readActivityLog(path string) ([]logLine, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 5 {
			return nil, fmt.Errorf("malformed log line %q", sc.Text())
		}
		id, err1 := strconv.ParseInt(f[1], 10, 64)
		at, err2 := strconv.ParseInt(f[2], 10, 64)
		pid, err3 := strconv.Atoi(f[3])
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("malformed log line %q: %w", sc.Text(), err)
		}
		out = append(out, logLine{Instance: f[0], ActivityID: id, AtMs: at, Pid: pid, Tag: f[4]})
	}
	return out, sc.Err()
}

// ---------------------------------------------------------------------------
// Orchestrations and activities of the crash tests. The helper and the
// restarted runtime register exactly the same code.

// crashWorkResult is what CrashWork returns for (x, k).
func crashWorkResult(x, k int) int { return x*3 + k }

// crashPipelineSteps is the number of activities one CrashPipeline runs.
const crashPipelineSteps = 3 + crashPipelineFan + 1

const crashPipelineFan = 4

// crashPipelineExpected is CrashPipeline's output for input i, computed
// without the runtime.
func crashPipelineExpected(i int) int {
	v := i
	for s := 1; s <= 3; s++ {
		v = crashWorkResult(v, s)
	}
	sum := 0
	for p := 0; p < crashPipelineFan; p++ {
		sum += crashWorkResult(v, 10+p)
	}
	return crashWorkResult(sum, 20)
}

// retryInput is the input of CrashRetry.
type retryInput struct {
	Payload   string
	BackoffMs int
}

// timerEventInput is the input of CrashTimerEvent.
type timerEventInput struct {
	Mode    string // "timer-then-event", "event-or-timeout" or "timer-only"
	TimerMs int
}

func crashRegistry(alog *activityLog) *duroxide.Registry {
	reg := duroxide.NewRegistry()

	// CrashWork sleeps 5–20 ms and computes crashWorkResult.
	duroxide.Must(duroxide.RegisterActivity(reg, "CrashWork", func(ctx context.Context, in [2]int) (int, error) {
		if _, err := alog.record(ctx, "work"); err != nil {
			return 0, err
		}
		d := time.Duration(5+(in[0]+in[1])%16) * time.Millisecond
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return crashWorkResult(in[0], in[1]), nil
	}))

	// CrashPipeline runs three sequential steps, a fan-out of four parallel
	// steps and a final step.
	duroxide.Must(duroxide.RegisterOrchestration(reg, "CrashPipeline", func(ctx *duroxide.OrchestrationContext, i int) (int, error) {
		v := i
		for s := 1; s <= 3; s++ {
			r, err := duroxide.CallActivityTyped[int](ctx, "CrashWork", [2]int{v, s})
			if err != nil {
				return 0, err
			}
			v = r
		}
		tasks := make([]*duroxide.Task, crashPipelineFan)
		for p := range tasks {
			tasks[p] = ctx.CallActivity("CrashWork", [2]int{v, 10 + p})
		}
		if err := ctx.Join(tasks...); err != nil {
			return 0, err
		}
		sum := 0
		for _, t := range tasks {
			r, err := duroxide.Await[int](t)
			if err != nil {
				return 0, err
			}
			sum += r
		}
		return duroxide.CallActivityTyped[int](ctx, "CrashWork", [2]int{sum, 20})
	}))

	// Flaky fails on its first execution for an instance and succeeds
	// afterwards. Executions are counted in the log file, which survives
	// the helper process.
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(ctx context.Context, payload string) (string, error) {
		ai, _ := duroxide.ActivityInfoFromContext(ctx)
		lines, err := readActivityLog(alog.path)
		if err != nil {
			return "", err
		}
		attempt := 1
		for _, l := range lines {
			if l.Instance == ai.Instance {
				attempt++
			}
		}
		if _, err := alog.record(ctx, "attempt-"+strconv.Itoa(attempt)); err != nil {
			return "", err
		}
		if attempt == 1 {
			return "", errors.New("transient failure on attempt 1")
		}
		return fmt.Sprintf("%s ok on attempt %d", payload, attempt), nil
	}))

	duroxide.Must(duroxide.RegisterOrchestration(reg, "CrashRetry", func(ctx *duroxide.OrchestrationContext, in retryInput) (string, error) {
		policy := duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: time.Duration(in.BackoffMs) * time.Millisecond})
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", in.Payload, policy)
	}))

	// Note logs its execution and echoes its input.
	duroxide.Must(duroxide.RegisterActivity(reg, "Note", func(ctx context.Context, s string) (string, error) {
		if _, err := alog.record(ctx, "note"); err != nil {
			return "", err
		}
		return s, nil
	}))

	duroxide.Must(duroxide.RegisterOrchestration(reg, "CrashTimerEvent", func(ctx *duroxide.OrchestrationContext, in timerEventInput) (string, error) {
		switch in.Mode {
		case "timer-then-event":
			if err := ctx.Sleep(time.Duration(in.TimerMs) * time.Millisecond); err != nil {
				return "", err
			}
			if err := ctx.CallActivity("Note", "after timer").Await(nil); err != nil {
				return "", err
			}
			var who string
			if err := ctx.WaitForEvent("Go").Await(&who); err != nil {
				return "", err
			}
			return "timer fired, then go from " + who, nil
		case "event-or-timeout":
			ev := ctx.WaitForEvent("Go")
			if ctx.Select(ev, ctx.CreateTimer(time.Duration(in.TimerMs)*time.Millisecond)) != 0 {
				return "timed out", nil
			}
			var who string
			if err := ev.Await(&who); err != nil {
				return "", err
			}
			return "go from " + who, nil
		case "timer-only":
			if err := ctx.Sleep(time.Duration(in.TimerMs) * time.Millisecond); err != nil {
				return "", err
			}
			return duroxide.CallActivityTyped[string](ctx, "Note", "timer fired")
		}
		return "", duroxide.NonRetryable(fmt.Errorf("unknown mode %q", in.Mode))
	}))
	return reg
}
