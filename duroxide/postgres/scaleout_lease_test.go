//go:build unix

package postgres_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/postgres"
)

// Lease takeover between live processes on PostgreSQL: two runtime
// processes share a schema with 5-minute lock timeouts; the one running a
// long activity is killed with SIGKILL, and the other must run the activity
// again within seconds (its owner's liveness, not the lock, decides), with
// the lost delivery not counted as an attempt.

// soLeaseEnv switches TestScaleOutChild to the lease test's registry and
// options.
const soLeaseEnv = "DUROXIDE_SCALEOUT_LEASE"

// soLeaseLockTimeout is the lock timeout of the lease test's runtimes: long,
// so that only the dead owner's liveness can explain a prompt takeover.
const soLeaseLockTimeout = 5 * time.Minute

func soLeaseOptions(_ string, opts duroxide.Options) duroxide.Options {
	opts.OrchestrationLockTimeout = soLeaseLockTimeout
	opts.ActivityLockTimeout = soLeaseLockTimeout
	opts.PollInterval = time.Second
	opts.MaxAttempts = 10
	return opts
}

// soLeaseRegistry registers LeaseOrch, which calls LeaseSlow once. LeaseSlow
// logs "L <worker> <pid> <attempt> <ns>" as it starts; the first run of the
// test (no earlier L line in the log) then blocks until cancelled, like a
// long deployment caught by the crash; later runs return "done".
func soLeaseRegistry(elog *soLog, logPath, worker string) *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "LeaseSlow", func(ctx context.Context, in string) (string, error) {
		ai, _ := duroxide.ActivityInfoFromContext(ctx)
		runs := len(soLeaseRuns(logPath))
		elog.line("L %s %d %d %d", worker, os.Getpid(), ai.Attempt, time.Now().UnixNano())
		if runs == 0 {
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

type soLeaseRun struct {
	worker  string
	attempt int
	at      time.Time
}

// soLeaseRuns returns the L lines of the log in order.
func soLeaseRuns(logPath string) []soLeaseRun {
	b, _ := os.ReadFile(logPath)
	var out []soLeaseRun
	for _, ln := range strings.Split(string(b), "\n") {
		f := strings.Fields(ln)
		if len(f) != 5 || f[0] != "L" {
			continue
		}
		a, _ := strconv.Atoi(f[3])
		ns, _ := strconv.ParseInt(f[4], 10, 64)
		out = append(out, soLeaseRun{worker: f[1], attempt: a, at: time.Unix(0, ns)})
	}
	return out
}

func TestScaleOutLeaseTakeoverSIGKILL(t *testing.T) {
	cluster := postgres.ScaleoutCluster()
	schema := cluster.NewSchemaName(t)
	logPath := t.TempDir() + "/events.log"
	t.Setenv(soLeaseEnv, "1")
	st, err := postgres.Open(t.Context(), cluster.URL, postgres.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	children := map[string]*soChild{}
	for _, w := range []string{"w1", "w2"} {
		children[w] = startSOChild(t, w, cluster.URL, schema, logPath)
	}
	client := duroxide.NewClient(st)
	if err := client.StartOrchestration(t.Context(), "lease-pg", "LeaseOrch", "x"); err != nil {
		t.Fatal(err)
	}
	waitRuns := func(n int, within time.Duration) []soLeaseRun {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			runs := soLeaseRuns(logPath)
			if len(runs) >= n {
				return runs
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d run(s) of the activity after %v, want %d", len(runs), within, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	first := waitRuns(1, 60*time.Second)[0]
	victim := children[first.worker]
	victim.kill()
	killedAt := time.Now()
	// Dead after 5s without a heartbeat (the last one up to 1s before the
	// kill), noticed by the survivor's heartbeat or poll within about 1s.
	const within = 7 * time.Second
	second := waitRuns(2, 60*time.Second)[1]
	took := second.at.Sub(killedAt)
	t.Logf("activity taken over by %s %v after %s was killed", second.worker, took.Round(time.Millisecond), first.worker)
	if second.worker == first.worker {
		t.Fatalf("second run on the killed worker %s", first.worker)
	}
	if took > within {
		t.Fatalf("takeover took %v, want within %v (lock timeout %v)", took, within, soLeaseLockTimeout)
	}
	if first.attempt != 1 || second.attempt != 1 {
		t.Fatalf("attempts %d then %d, want 1 and 1 (the lost delivery must not count)", first.attempt, second.attempt)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	res, err := client.WaitForCompletion(ctx, "lease-pg")
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != duroxide.StatusCompleted || !strings.Contains(res.Output, "done:x") {
		t.Fatalf("lease-pg ended %s with %q, want Completed with done:x", res.Status, res.Output)
	}
	for _, c := range children {
		if c != victim {
			c.stop()
		}
	}
}
