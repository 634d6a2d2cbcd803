package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toygres/toygres/internal/api"
)

// TestRetryConfigRefusedAtStart: a retry setting that cannot be used stops
// `server start` before anything runs, with one line naming the key, where
// it came from and why, and a non-zero exit.
func TestRetryConfigRefusedAtStart(t *testing.T) {
	e := newE2E(t)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("retry:\n  deploy-postgres:\n    backoff: sometimes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		env  []string
		args []string
		want string
	}{
		{"env max attempts", []string{"TOYGRES_RETRY__DEPLOY_POSTGRES__MAX_ATTEMPTS=0"}, nil,
			"config: retry.deploy-postgres.max_attempts (TOYGRES_RETRY__DEPLOY_POSTGRES__MAX_ATTEMPTS): must be at least 1, got 0"},
		{"env unknown activity", []string{"TOYGRES_RETRY__NO_SUCH_STEP__TIMEOUT=1s"}, nil, `retry.no-such-step.timeout (TOYGRES_RETRY__NO_SUCH_STEP__TIMEOUT): unknown activity "no-such-step"`},
		{"env breaker", []string{"TOYGRES_BREAKER__WINDOW=never"}, nil, `breaker.window (TOYGRES_BREAKER__WINDOW): "never" is not a duration`},
		{"file backoff", nil, []string{"--config", bad}, `retry.deploy-postgres.backoff (` + bad + `): unknown backoff "sometimes"`},
		{"missing file", nil, []string{"--config", bad + ".missing.yaml"}, "--config"},
	} {
		for _, mode := range [][]string{{"-f"}, nil} { // foreground and background starts
			args := append(append([]string{"server", "start", "--port", "0"}, mode...), c.args...)
			out, errOut, code := e.runWith("", c.env, args...)
			if code == 0 {
				t.Fatalf("%s %v: started (exit 0)\n%s", c.what, mode, out)
			}
			assertOneLineError(t, c.what, errOut, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "credentials.json")); err == nil {
		t.Fatal("a refused start left a server's credentials")
	}
}

// TestRetryConfigAndReport: a configuration file and an environment
// variable change deploy-postgres's policy; `server config` shows it and
// where each field came from, the retried deploy records it in history,
// and `server retries` reports the workload's known failures (the first two
// deploys fail: one sequence, succeeded on attempt 3).
func TestRetryConfigAndReport(t *testing.T) {
	e := newE2E(t)
	cfgFile := filepath.Join(t.TempDir(), "toygres.yaml")
	if err := os.WriteFile(cfgFile, []byte(`
retry:
  deploy-postgres:
    max_attempts: 4
    backoff: linear
    base: 100ms
    max: 300ms
breaker:
  min_calls: 20
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(faultsEnv("deploy=2"), "TOYGRES_RETRY__DEPLOY_POSTGRES__TIMEOUT=2m")
	e.startServerWith(env, "--config", cfgFile)
	const want = "deploy: 4 attempts, linear 100ms max 300ms, 2m0s per attempt"

	// server config: the effective policy and its sources.
	out := e.ok("server", "config")
	line := grepLines(out, "deploy-postgres")
	if !strings.Contains(line, want) || !strings.Contains(line, "env (env: timeout; file: backoff,base,max,max_attempts)") {
		t.Errorf("server config: deploy-postgres line %q, want %q from env and file\n%s", line, want, out)
	}
	if l := grepLines(out, "cms-update-instance-state"); !strings.Contains(l, "cms: 5 attempts") || !strings.HasSuffix(strings.TrimSpace(l), "default") {
		t.Errorf("server config: cms-update-instance-state line %q", l)
	}
	if !strings.Contains(out, "failed of at least 20 calls") {
		t.Errorf("server config: breaker min calls from the file missing:\n%s", out)
	}
	var sc api.ServerConfig
	if err := json.Unmarshal([]byte(e.ok("server", "config", "-o", "json")), &sc); err != nil {
		t.Fatal(err)
	}
	if sc.CircuitBreaker == nil || sc.CircuitBreaker.MinCalls != 20 || sc.CircuitBreaker.Source != "file" {
		t.Errorf("circuit breaker: %+v", sc.CircuitBreaker)
	}

	// A create whose first two deploys fail: the sequence runs under the
	// configured policy, recorded on every attempt.
	e.ok("create", "tuned", "--password", "test123", "--wait")
	inst := e.get("tuned")
	d := e.orchestration("create-"+inst.InternalName, "--history")
	var deploys []api.HistoryEvent
	for _, ex := range d.Executions {
		for _, ev := range ex.History {
			if ev.Kind == "ActivityScheduled" && ev.Name == "deploy-postgres" {
				deploys = append(deploys, ev)
			}
		}
	}
	if len(deploys) != 3 {
		t.Fatalf("deploy-postgres scheduled %d times, want 3: %+v", len(deploys), deploys)
	}
	for i, ev := range deploys {
		if ev.Attempt != i+1 || ev.MaxAttempts != 4 || ev.Policy != want {
			t.Errorf("deploy attempt %d recorded as attempt %d of %d under %q, want %q", i+1, ev.Attempt, ev.MaxAttempts, ev.Policy, want)
		}
	}

	// The tuning report.
	var rep api.ServerRetries
	if err := json.Unmarshal([]byte(e.ok("server", "retries", "-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	var dep *api.ActivityRetries
	for i := range rep.Activities {
		if rep.Activities[i].Activity == "deploy-postgres" {
			dep = &rep.Activities[i]
		}
	}
	if dep == nil {
		t.Fatalf("no deploy-postgres in the report: %+v", rep)
	}
	if dep.Sequences != 1 || dep.Succeeded != 1 || dep.Exhausted != 0 || dep.Attempts != 3 || dep.Failures != 2 || dep.Timeouts != 0 ||
		len(dep.SuccessByAttempt) != 1 || dep.SuccessByAttempt[0] != (api.AttemptCount{Attempt: 3, Sequences: 1}) {
		t.Errorf("deploy-postgres report: %+v", *dep)
	}
	if dep.Policy == nil || dep.Policy.Summary != want || dep.Policy.Source != "env" || dep.TimeToSuccess.Count != 1 {
		t.Errorf("deploy-postgres policy/time: %+v %+v", dep.Policy, dep.TimeToSuccess)
	}
	if len(dep.Circuits) != 1 || dep.Circuits[0].State != "closed" {
		t.Errorf("deploy-postgres circuit: %+v", dep.Circuits)
	}
	table := e.ok("server", "retries")
	for _, s := range []string{"deploy-postgres", "#3: 1", "1: 1 succeeded, 0 exhausted", "3: 2 failed, 0 timed out", "closed"} {
		if !strings.Contains(table, s) {
			t.Errorf("server retries lacks %q:\n%s", s, table)
		}
	}
}
