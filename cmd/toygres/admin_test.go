package main

// Tests of the operator commands (admin.go): in-process tests of the
// history rendering, DATA parsing and the env list, and an end-to-end test
// against a real server started like TestEndToEnd's.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/cli"
	"github.com/toygres/toygres/internal/historyview"
)

// ---- in-process ----

// TestAdminStepRows: --history prints the API's steps: a retried call
// with its attempts and the backoff between them, a call that was not
// retried on one line, and the output.
func TestAdminStepRows(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC).UnixMilli()
	at := func(sec int) int64 { return t0 + int64(sec)*1000 }
	fail := &duroxide.ErrorDetails{Category: duroxide.CategoryApplication, Message: "boom"}
	evs := []duroxide.Event{
		{EventID: 1, Kind: duroxide.EventOrchestrationStarted, Name: "create-instance", Input: `{"a":1,"password":"hunter22"}`, TimestampMs: at(0)},
		{EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "test-connection", Attempt: 1, MaxAttempts: 5, TimestampMs: at(0)},
		{EventID: 3, Kind: duroxide.EventActivityFailed, SourceEventID: 2, Error: fail, TimestampMs: at(1)},
		{EventID: 4, Kind: duroxide.EventTimerCreated, Purpose: duroxide.TimerBackoff, Attempt: 1, FireAtMs: at(3), TimestampMs: at(1)},
		{EventID: 5, Kind: duroxide.EventTimerFired, SourceEventID: 4, TimestampMs: at(3)},
		{EventID: 6, Kind: duroxide.EventActivityScheduled, Name: "test-connection", Attempt: 2, MaxAttempts: 5, TimestampMs: at(3)},
		{EventID: 7, Kind: duroxide.EventActivityCompleted, SourceEventID: 6, Result: `{"ok":true}`, TimestampMs: at(4)},
		{EventID: 8, Kind: duroxide.EventActivityScheduled, Name: "deploy", Input: `{}`, TimestampMs: at(4)},
		{EventID: 9, Kind: duroxide.EventActivityCompleted, SourceEventID: 8, TimestampMs: at(5)},
		{EventID: 10, Kind: duroxide.EventOrchestrationCompleted, Result: `"done"`, TimestampMs: at(5)},
	}
	var out strings.Builder
	tb := cli.NewTable(&out, "STEP", "STATUS", "TIME", "EVENTS", "DETAIL")
	for _, r := range stepRows(historyview.Steps(evs, false)) {
		tb.Row(r...)
	}
	_ = tb.Flush()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := [][]string{
		{"STEP"},
		{"Started create-instance", `input {"a":1,"password":"***"}`},
		{"test-connection", "completed on attempt 2 of 5", "#2 #3 #4 #5 #6 #7", `result {"ok":true}`},
		{"  attempt 1 of 5", "failed after 1 s", "#2", "boom"},
		{"  backoff 2 s", "fired", "#4"},
		{"  attempt 2 of 5", "completed after 1 s", "#6"},
		{"deploy", "completed after 1 s", "#8 #9"},
		{"Completed", `output "done"`},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, parts := range want {
		for _, p := range parts {
			if !strings.Contains(lines[i], p) {
				t.Errorf("line %d %q lacks %q", i, lines[i], p)
			}
		}
	}
	if strings.Contains(out.String(), "hunter22") {
		t.Errorf("a password shows:\n%s", out.String())
	}
}

func TestAdminEventData(t *testing.T) {
	for in, want := range map[string]string{
		`{"a": 1}`:    `{"a": 1}`,
		`[1,2]`:       `[1,2]`,
		`42`:          `42`,
		`true`:        `true`,
		`"quoted"`:    `"quoted"`,
		`hello world`: `"hello world"`,
		``:            `""`,
		`a "b" c`:     `"a \"b\" c"`,
	} {
		got, err := eventData(in)
		if err != nil || string(got) != want {
			t.Errorf("eventData(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{`{"a":`, `[1,`, `"open`} {
		var ue *usageError
		if _, err := eventData(bad); !errors.As(err, &ue) {
			t.Errorf("eventData(%q): %v, want a usage error", bad, err)
		}
	}
}

// TestAdminEnvList checks that `server env` lists every TOYGRES_* variable
// the binary's (non-test) source reads.
func TestAdminEnvList(t *testing.T) {
	listed := map[string]bool{}
	for _, v := range envVars {
		listed[v.name] = true
	}
	re := regexp.MustCompile(`"(TOYGRES_[A-Z0-9_]+)"`)
	found := map[string]bool{}
	for _, root := range []string{".", "../../internal"} {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			// admin.go holds the list itself.
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || path == "admin.go" {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if strings.HasPrefix(string(b), "//go:build toygres_faults") {
				return nil // test builds only: not part of the product's settings
			}
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				found[m[1]] = true
				if !listed[m[1]] {
					t.Errorf("%s reads %s, which 'server env' does not list: add it to envVars in admin.go", path, m[1])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(found) < 5 {
		t.Fatalf("found only %v in the source; is the walk wrong?", found)
	}
	for name := range listed {
		if !found[name] {
			t.Errorf("envVars lists %s, which no source file reads", name)
		}
	}
}

// ---- end to end ----

// runWith runs the CLI with stdin and extra environment variables.
func (e *e2e) runWith(stdin string, env []string, args ...string) (string, string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = append(e.env(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run toygres %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), code
}

func (e *e2e) okWith(stdin string, env []string, args ...string) string {
	e.t.Helper()
	out, errOut, code := e.runWith(stdin, env, args...)
	if code != 0 {
		e.t.Fatalf("toygres %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// orchestration reads one orchestration through the CLI's JSON output.
func (e *e2e) orchestration(id string, extra ...string) api.OrchestrationDetail {
	e.t.Helper()
	out := e.ok(append([]string{"server", "orchestration", id, "-o", "json"}, extra...)...)
	var d api.OrchestrationDetail
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		e.t.Fatalf("server orchestration %s -o json: %v\n%s", id, err, out)
	}
	return d
}

type orchList struct {
	Orchestrations []api.Orchestration `json:"orchestrations"`
	Count          int                 `json:"count"`
	More           bool                `json:"more"`
}

func (e *e2e) orchestrations(args ...string) orchList {
	e.t.Helper()
	out := e.ok(append([]string{"server", "orchestrations", "-o", "json"}, args...)...)
	var l orchList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		e.t.Fatalf("server orchestrations %v: %v\n%s", args, err, out)
	}
	if l.Count != len(l.Orchestrations) {
		e.t.Errorf("count %d for %d orchestrations", l.Count, len(l.Orchestrations))
	}
	return l
}

func ids(l orchList) []string {
	var out []string
	for _, o := range l.Orchestrations {
		out = append(out, o.ID)
	}
	return out
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// tableCounts reads "name  count  share" rows of `server stats`.
func tableCounts(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && (strings.HasSuffix(f[2], "%") || f[2] == "-") {
			m[f[0]] = f[1] + " " + f[2]
		}
	}
	return m
}

func TestAdminCommands(t *testing.T) {
	e := newE2E(t)
	const adminPW = "admin-Secret-pw-4711"
	e.port = freePort(t)
	e.okWith("", append(faultsEnv("connection=1"), "TOYGRES_ADMIN_PASSWORD="+adminPW),
		"server", "start", "--port", strconv.Itoa(e.port), "--actor-interval", "1s",
		"--orchestration-concurrency", "3", "--activity-concurrency", "5")
	e.ok("create", "adm", "--password", "test123", "--wait")
	inst := e.get("adm")
	createID, actorID := "create-"+inst.InternalName, "actor-"+inst.InternalName

	// The API is authenticated: a bad token is refused in one line.
	_, errOut, code := e.runWith("", []string{"TOYGRES_TOKEN=not-a-token"}, "server", "orchestrations")
	if code != 1 {
		t.Errorf("bad token: exit %d", code)
	}
	assertOneLineError(t, "bad token", errOut, "rejected")

	t.Run("orchestrations", func(t *testing.T) {
		out := e.ok("server", "orchestrations")
		for _, want := range []string{"ID", "NAME", "VERSION", "STATUS", "EXECUTION", "CREATED", "UPDATED",
			createID, actorID, "create-instance", "instance-actor", "Completed", "Running", "orchestration(s)"} {
			if !strings.Contains(out, want) {
				t.Errorf("server orchestrations lacks %q:\n%s", want, out)
			}
		}
		// The instance's create, health actor and backup schedule (backups
		// are on by default); backups themselves are named by backup id.
		if l := e.orchestrations("-i", inst.InternalName); !has(ids(l), createID) || !has(ids(l), actorID) ||
			!has(ids(l), "backup-schedule-"+inst.InternalName) || l.Count != 3 {
			t.Errorf("-i %s: %v", inst.InternalName, ids(l))
		}
		if l := e.orchestrations("-i", "no-such-thing"); l.Count != 0 || l.More {
			t.Errorf("-i no-such-thing: %+v", l)
		}
		l := e.orchestrations("--name", "create-instance")
		for _, o := range l.Orchestrations {
			if o.Name != "create-instance" {
				t.Errorf("--name create-instance lists %s (%s)", o.ID, o.Name)
			}
		}
		if !has(ids(l), createID) {
			t.Errorf("--name create-instance lacks %s: %v", createID, ids(l))
		}
		l = e.orchestrations("--status", "Running")
		if !has(ids(l), actorID) || has(ids(l), createID) {
			t.Errorf("--status Running: %v", ids(l))
		}
		if l = e.orchestrations("-l", "1"); l.Count != 1 || !l.More {
			t.Errorf("-l 1: %+v", l)
		}
		if out := e.ok("server", "orchestrations", "-l", "1"); !strings.Contains(out, "more exist") {
			t.Errorf("-l 1 does not say more exist:\n%s", out)
		}
	})

	t.Run("orchestration", func(t *testing.T) {
		var apiDetail api.OrchestrationDetail
		if code := e.api("/api/orchestrations/"+createID, &apiDetail); code != http.StatusOK || len(apiDetail.Executions) != 1 {
			t.Fatalf("GET orchestration: %d %+v", code, apiDetail)
		}
		events := apiDetail.Executions[0].EventCount
		out := e.ok("server", "orchestration", createID)
		for _, want := range []string{"Orchestration " + createID, "Completed", "create-instance", "Output:", `"internal_name": "` + inst.InternalName + `"`,
			"Custom status:", fmt.Sprintf("Use --history to see %d events.", events)} {
			if !strings.Contains(out, want) {
				t.Errorf("server orchestration lacks %q:\n%s", want, out)
			}
		}
		out = e.ok("server", "orchestration", createID, "--history")
		var full api.OrchestrationDetail
		if code := e.api("/api/orchestrations/"+createID+"?history=full", &full); code != http.StatusOK || len(full.Executions) != 1 {
			t.Fatalf("GET orchestration?history=full: %d %+v", code, full)
		}
		rowRE := regexp.MustCompile(`(?m)^  \S.*\d\d:\d\d:\d\d\.\d{3} +#\d+`)
		if n, steps := len(rowRE.FindAllString(out, -1)), len(full.Executions[0].Steps); n < steps || steps == 0 {
			t.Errorf("--history shows %d step and attempt lines, want at least the API's %d steps:\n%s", n, steps, out)
		}
		lines := strings.Split(out, "\n")
		find := func(parts ...string) bool {
			for _, l := range lines {
				ok := true
				for _, p := range parts {
					ok = ok && strings.Contains(l, p)
				}
				if ok {
					return true
				}
			}
			return false
		}
		for _, want := range [][]string{
			{"test-connection", "completed on attempt 2"},
			// The refused connection's error (pgx names the TLS attempt first, so
			// "injected" is past the cut of a table row).
			{"attempt 1", "failed", "connect to"},
			{"backoff", "fired"},
			{"attempt 2", "completed"},
			{"Completed", "output"},
		} {
			if !find(want...) {
				t.Errorf("--history has no line with %q:\n%s", want, out)
			}
		}
		if find("deploy-postgres", "attempt") {
			t.Errorf("--history marks an activity that was not retried:\n%s", out)
		}
		d := e.orchestration(createID, "--history")
		if d.Status != "Completed" || len(d.Executions) != 1 || len(d.Executions[0].History) != events {
			t.Errorf("-o json --history: status %s, executions %+v", d.Status, d.Executions)
		}
		// An actor continues as new: --executions picks the newest.
		e.eventually("the actor to continue as new", 30*time.Second, func() bool { return e.orchestration(actorID).ExecutionID >= 2 })
		out = e.ok("server", "orchestration", actorID, "--history", "--executions", "1")
		if strings.Count(out, "\nExecution ") != 1 || !strings.Contains(out, "older execution(s) not shown") {
			t.Errorf("--executions 1 of the actor:\n%s", out)
		}
	})

	t.Run("stats", func(t *testing.T) {
		// Orchestrations start and end meanwhile; retry until the CLI's
		// numbers fall between two identical API answers.
		var last string
		e.eventually("server stats to match the API", 30*time.Second, func() bool {
			var before, after api.ServerStats
			e.api("/api/server/stats", &before)
			out := e.ok("server", "stats")
			e.api("/api/server/stats", &after)
			last = out
			if fmt.Sprint(before.Instances, before.Orchestrations.ByStatus) != fmt.Sprint(after.Instances, after.Orchestrations.ByStatus) {
				return false
			}
			got := tableCounts(out)
			want := map[string]string{}
			for k, n := range after.Instances.ByState {
				want[k] = fmt.Sprintf("%d %s", n, cli.Percent(n, after.Instances.Total))
			}
			checked := 0
			for _, n := range after.Instances.ByHealth {
				checked += n
			}
			for k, n := range after.Instances.ByHealth {
				want[k] = fmt.Sprintf("%d %s", n, cli.Percent(n, checked))
			}
			for k, n := range after.Orchestrations.ByStatus {
				want[k] = fmt.Sprintf("%d %s", n, cli.Percent(n, after.Orchestrations.Total))
			}
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return strings.Contains(out, fmt.Sprintf("Instances: %d total", after.Instances.Total)) &&
				strings.Contains(out, fmt.Sprintf("Orchestrations: %d total", after.Orchestrations.Total)) &&
				strings.Contains(out, "Orchestrator queue:") && strings.Contains(out, "Worker queue:")
		})
		if c := tableCounts(last); c["running"] != "1 100.0%" || c["healthy"] != "1 100.0%" {
			t.Errorf("stats with one running, healthy instance: %v\n%s", c, last)
		}
		var st api.ServerStats
		if err := json.Unmarshal([]byte(e.ok("server", "stats", "-o", "json")), &st); err != nil || st.Instances.ByState["running"] != 1 {
			t.Errorf("stats -o json: %+v, %v", st, err)
		}

		// -w refreshes every 2 s until interrupted, then exits 0.
		cmd := exec.Command(e.bin, "server", "stats", "-w")
		cmd.Env = e.env()
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for strings.Count(out.String(), "Instances: ") < 2 && time.Since(start) < 20*time.Second {
			time.Sleep(100 * time.Millisecond)
		}
		if took := time.Since(start); took < statsInterval-500*time.Millisecond {
			t.Errorf("stats -w refreshed after %v, want about %v", took, statsInterval)
		}
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("stats -w after Ctrl-C: %v\n%s", err, out.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("stats -w did not stop on SIGINT")
		}
		if n := strings.Count(out.String(), "Instances: "); n < 2 {
			t.Errorf("stats -w refreshed %d time(s) in 20s:\n%s", n, out.String())
		}
	})

	t.Run("workers and config", func(t *testing.T) {
		var wk api.ServerWorkers
		if code := e.api("/api/server/workers", &wk); code != http.StatusOK {
			t.Fatalf("GET /api/server/workers: %d", code)
		}
		if wk.OrchestrationConcurrency != 3 || wk.ActivityConcurrency != 5 || wk.WorkerID == "" || wk.ActivityLockTimeout != "30s" {
			t.Errorf("workers API: %+v", wk)
		}
		out := e.ok("server", "workers")
		for _, re := range []string{`Runtime ` + regexp.QuoteMeta(wk.WorkerID), `Orchestration dispatchers: +3 \(\d+ busy\)`,
			`Activity workers: +5 \(\d+ busy\)`, `Running: +\d+`, `(?m)^` + regexp.QuoteMeta(actorID) + ` +instance-actor`} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("server workers does not match %s:\n%s", re, out)
			}
		}
		if strings.Contains(out, "10 (") {
			t.Errorf("server workers shows the default concurrency, not the configured one:\n%s", out)
		}

		out = e.ok("server", "config")
		for _, re := range []string{`Admin password: +\*\*\*`, `Orchestration concurrency: +3`, `Activity concurrency: +5`,
			`Health check interval: +1s`, `Database: +sqlite:`, `Data dir: +` + regexp.QuoteMeta(e.dataDir)} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("server config does not match %s:\n%s", re, out)
			}
		}
		js := e.ok("server", "config", "-o", "json")
		var sc api.ServerConfig
		if err := json.Unmarshal([]byte(js), &sc); err != nil || sc.AdminPassword != "***" || sc.ActivityConcurrency != 5 {
			t.Errorf("config -o json: %+v, %v", sc, err)
		}
		if strings.Contains(out+js, adminPW) {
			t.Errorf("server config shows the admin password")
		}
	})

	t.Run("env", func(t *testing.T) {
		env := []string{"TOYGRES_ADMIN_PASSWORD=" + adminPW, "TOYGRES_DATABASE_URL=postgres://tg:db-hunter2@db.example/toygres",
			"TOYGRES_TOKEN=tok-secret-123", "TOYGRES_PORT=9999", "TOYGRES_TYPO_PASSWORD=typo-secret"}
		out := e.okWith("", env, "server", "env")
		for _, secret := range []string{adminPW, "db-hunter2", "tok-secret-123", "typo-secret"} {
			if strings.Contains(out, secret) {
				t.Errorf("server env shows %q without --show-secrets:\n%s", secret, out)
			}
		}
		for _, want := range []string{"postgres://tg:***@db.example/toygres", "9999", "TOYGRES_TYPO_PASSWORD=***",
			"credentials.json: present", "Data dir:", e.dataDir, "running (PID"} {
			if !strings.Contains(out, want) {
				t.Errorf("server env lacks %q:\n%s", want, out)
			}
		}
		for _, v := range envVars {
			if !strings.Contains(out, v.name) {
				t.Errorf("server env lacks %s", v.name)
			}
		}
		out = e.okWith("", env, "server", "env", "--show-secrets")
		for _, secret := range []string{adminPW, "postgres://tg:db-hunter2@db.example/toygres", "tok-secret-123", "typo-secret"} {
			if !strings.Contains(out, secret) {
				t.Errorf("server env --show-secrets lacks %q:\n%s", secret, out)
			}
		}
	})

	var newActor string
	t.Run("cancel", func(t *testing.T) {
		// No one to answer: not cancelled, and it says so.
		_, errOut, code := e.runWith("", nil, "server", "cancel", actorID)
		if code != 1 {
			t.Errorf("cancel without an answer: exit %d", code)
		}
		assertOneLineError(t, "cancel without an answer", errOut, "was not cancelled (use -f")
		out := e.okWith("n\n", nil, "server", "cancel", actorID)
		if !strings.Contains(out, "Not cancelled") {
			t.Errorf("cancel answered n:\n%s", out)
		}
		if d := e.orchestration(actorID); d.Status != "Running" {
			t.Fatalf("the actor is %s after a refused cancel", d.Status)
		}
		out = e.ok("server", "cancel", actorID, "-f", "--reason", "admin test")
		if !strings.Contains(out, "Cancellation of orchestration "+actorID+" requested") {
			t.Errorf("cancel -f:\n%s", out)
		}
		e.eventually("the actor to be Cancelled", 30*time.Second, func() bool { return e.orchestration(actorID).Status == "Cancelled" })
		if out := e.ok("server", "orchestration", actorID); !strings.Contains(out, "Cancelled") || !strings.Contains(out, "admin test") {
			t.Errorf("cancelled actor:\n%s", out)
		}
		_, errOut, code = e.run("server", "cancel", actorID, "-f")
		if code != 1 {
			t.Errorf("second cancel: exit %d", code)
		}
		assertOneLineError(t, "second cancel", errOut, "has already finished (Cancelled)")
	})

	t.Run("recreate and raise-event", func(t *testing.T) {
		out := e.ok("server", "recreate", actorID)
		m := regexp.MustCompile(`New id: (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("recreate prints no new id:\n%s", out)
		}
		newActor = m[1]
		if newActor == actorID || !strings.HasPrefix(newActor, "actor-adm-") {
			t.Errorf("recreated id %q", newActor)
		}
		if d := e.orchestration(newActor); d.Name != "instance-actor" || (d.Status != "Running" && d.Status != "Pending") {
			t.Errorf("recreated orchestration: %s %s", d.Name, d.Status)
		}
		_, errOut, code := e.run("server", "recreate", newActor)
		if code != 1 {
			t.Errorf("recreate of a running orchestration: exit %d", code)
		}
		assertOneLineError(t, "recreate running", errOut, "cancel it before recreating it")

		if out := e.ok("server", "raise-event", newActor, "note", "plain text"); !strings.Contains(out, `"plain text"`) {
			t.Errorf("raise-event with text:\n%s", out)
		}
		e.ok("server", "raise-event", newActor, "note", `{"n": 1}`)
		_, errOut, code = e.run("server", "raise-event", newActor, "note", `{"n":`)
		if code != 2 {
			t.Errorf("raise-event with bad JSON: exit %d", code)
		}
		assertOneLineError(t, "raise-event bad JSON", errOut, "not valid JSON")
		// The actor waits for InstanceDeleted: raising it stops the actor.
		e.ok("server", "raise-event", newActor, "InstanceDeleted")
		e.eventually("the recreated actor to stop on InstanceDeleted", 30*time.Second, func() bool {
			return e.orchestration(newActor).Status == "Completed"
		})
		if d := e.orchestration(newActor); string(d.Output) != `"stopped"` {
			t.Errorf("actor output %s, want \"stopped\"", d.Output)
		}
		_, errOut, code = e.run("server", "raise-event", newActor, "x")
		if code != 1 {
			t.Errorf("raise-event on a finished orchestration: exit %d", code)
		}
		assertOneLineError(t, "raise-event finished", errOut, "has already finished")
	})

	t.Run("bad ids and arguments", func(t *testing.T) {
		notFound := `orchestration "no-such-orch" not found`
		for _, c := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"orchestration", "no-such-orch"}, 1, notFound},
			{[]string{"orchestration", "no-such-orch", "--history"}, 1, notFound},
			{[]string{"cancel", "no-such-orch", "-f"}, 1, notFound},
			{[]string{"recreate", "no-such-orch"}, 1, notFound},
			{[]string{"raise-event", "no-such-orch", "x"}, 1, notFound},
			{[]string{"cancel", createID, "-f"}, 1, "has already finished (Completed)"},
			{[]string{"orchestration"}, 2, "missing ID argument"},
			{[]string{"orchestration", "a", "b"}, 2, `unexpected argument "b"`},
			{[]string{"cancel"}, 2, "missing ID argument"},
			{[]string{"recreate"}, 2, "missing ID argument"},
			{[]string{"raise-event", "x"}, 2, "missing NAME argument"},
			{[]string{"raise-event", "a", "b", "c", "d"}, 2, `unexpected argument "d"`},
			{[]string{"orchestrations", "-l", "0"}, 2, "--limit"},
			{[]string{"orchestrations", "--status", "Bogus"}, 2, `unknown status "Bogus"`},
			{[]string{"orchestrations", "-o", "yaml"}, 2, `invalid output format "yaml"`},
			{[]string{"orchestration", createID, "--executions", "2"}, 2, "--executions needs --history"},
			{[]string{"stats", "--bogus"}, 2, "unknown flag"},
			{[]string{"workers", "extra"}, 2, `unexpected argument "extra"`},
			{[]string{"frobnicate"}, 2, `unknown server command "frobnicate"`},
		} {
			args := append([]string{"server"}, c.args...)
			out, errOut, code := e.run(args...)
			if code != c.code {
				t.Errorf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, c.code, out, errOut)
			}
			assertOneLineError(t, strings.Join(args, " "), errOut, c.want)
		}
	})

	// Leave nothing running: the instance's PostgreSQL server goes with it.
	e.ok("delete", "adm", "--wait")
}

// syncBuffer is a strings.Builder safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
