//go:build unix

package duroxide_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// Lease recovery after SIGKILL on an embedded (SQLite) store: the helper
// process runs an activity under a 5-minute lock and is killed while it
// runs; the next helper, started with Options.ExclusiveStore, must run the
// activity again at once, and the lost deliveries must not count toward
// MaxAttempts.

// leaseLockTimeout is the lock timeout of the lease tests: long, so that
// only lease reclaim (not lock expiry) can explain a prompt takeover.
const leaseLockTimeout = 5 * time.Minute

// leaseMaxAttempts is the poison limit of the lease tests; the test kills
// more helpers than this while the activity runs.
const leaseMaxAttempts = 10

// leaseRegistry registers LeaseOrch, which calls LeaseSlow once and returns
// its result. With block, LeaseSlow logs its start (tag attempt=N) and then
// runs until cancelled, like a long deployment caught by the crash;
// otherwise it logs and returns "done".
func leaseRegistry(alog *activityLog, block bool) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "LeaseSlow", func(ctx context.Context, in string) (string, error) {
		ai, _ := duroxide.ActivityInfoFromContext(ctx)
		if _, err := alog.record(ctx, fmt.Sprintf("attempt=%d", ai.Attempt)); err != nil {
			return "", err
		}
		if block {
			<-ctx.Done()
			return "", ctx.Err()
		}
		return "done:" + in, nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "LeaseOrch", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "LeaseSlow", in)
	}))
	return reg
}

// leaseOptions are the runtime options of the lease tests' runtimes.
func leaseOptions(exclusive bool, logger *slog.Logger) duroxide.Options {
	return duroxide.Options{
		OrchestrationConcurrency: 2,
		ActivityConcurrency:      2,
		OrchestrationLockTimeout: leaseLockTimeout,
		ActivityLockTimeout:      leaseLockTimeout,
		MaxAttempts:              leaseMaxAttempts,
		ExclusiveStore:           exclusive,
		Logger:                   logger,
	}
}

// leaseChildSetup is how TestCrashChild runs in the "lease-*" modes.
func leaseChildSetup(mode string, alog *activityLog, logger *slog.Logger) (*duroxide.Registry, duroxide.Options) {
	return leaseRegistry(alog, true), leaseOptions(mode == "lease-exclusive", logger)
}

// TestCrashLeaseReclaimSQLite kills 12 helper processes, each while it runs
// the same activity under a 5-minute lock, then completes the orchestration
// in this process. Each helper must start the activity within a few seconds
// of its predecessor's death (lock expiry would take 5 minutes), every run
// must see attempt 1, and the instance must complete instead of being
// poisoned after MaxAttempts (10) deliveries.
func TestCrashLeaseReclaimSQLite(t *testing.T) {
	dbPath, logPath := crashPaths(t)
	store := openCrashStore(t, dbPath)
	defer store.Close()
	client := duroxide.NewClient(store)
	if err := client.StartOrchestration(context.Background(), "lease-1", "LeaseOrch", "x"); err != nil {
		t.Fatal(err)
	}
	const kills = 12
	const within = 3 * time.Second
	var killedAt time.Time
	for i := 1; i <= kills; i++ {
		child := startCrashChild(t, "lease-exclusive", dbPath, logPath)
		child.poll(fmt.Sprintf("run %d of the activity", i), 30*time.Second, 20*time.Millisecond, func() bool {
			lines, err := readActivityLog(logPath)
			if err != nil {
				t.Fatal(err)
			}
			return len(lines) >= i
		})
		lines, _ := readActivityLog(logPath)
		last := lines[i-1]
		if last.Pid != child.cmd.Process.Pid {
			t.Fatalf("run %d of the activity was in pid %d, want the helper %d", i, last.Pid, child.cmd.Process.Pid)
		}
		if last.Tag != "attempt=1" {
			t.Errorf("run %d of the activity: %s, want attempt=1 (lost deliveries must not count)", i, last.Tag)
		}
		if i > 1 {
			// The helper's start-up (re-executing the test binary) is part
			// of this delay; lock expiry would make it 5 minutes.
			if d := time.UnixMilli(last.AtMs).Sub(killedAt); d > within {
				t.Fatalf("run %d started %v after the previous helper was killed, want within %v", i, d, within)
			}
		}
		child.kill()
		killedAt = time.Now()
	}
	alog, err := openActivityLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close()
	rt, err := duroxide.Start(context.Background(), store, leaseRegistry(alog, false), leaseOptions(true, quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rt.Shutdown(ctx)
	}()
	st := waitDone(t, client, "lease-1", within)
	if st.Status != duroxide.StatusCompleted || !strings.Contains(st.Output, "done:x") {
		t.Fatalf("lease-1 ended %s with %q, want Completed with done:x (after %d kills; MaxAttempts %d)", st.Status, st.Output, kills, leaseMaxAttempts)
	}
	lines, _ := readActivityLog(logPath)
	if len(lines) != kills+1 || lines[kills].Tag != "attempt=1" {
		t.Fatalf("activity runs: %v, want %d runs, the last with attempt=1", lines, kills+1)
	}
}
