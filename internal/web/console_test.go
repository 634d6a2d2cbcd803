package web_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/apptest"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/dataplane/faulty"
	"github.com/toygres/toygres/internal/web"
)

const (
	testDirPrefix = "toygres-web-test-"
	adminPassword = "console-admin-pass-42"
	instPassword  = "Web-Console-Pw-42"
)

func TestMain(m *testing.M) {
	apptest.ReapStale(testDirPrefix)
	os.Exit(m.Run())
}

// artifactsDir is where screenshots go: $TOYGRES_TEST_ARTIFACTS, or
// internal/web/testdata/screenshots.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("TOYGRES_TEST_ARTIFACTS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "testdata", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Leftovers of an earlier failed run.
	old, _ := filepath.Glob(filepath.Join(dir, "FAILED-*.png"))
	for _, f := range append(old, filepath.Join(dir, "server.log")) {
		os.Remove(f)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// startToygres opens a real control plane (SQLite, local driver, 1 s
// health checks, two injected test-connection failures per instance) and
// serves its API and console on an httptest server.
func startToygres(t *testing.T, artifacts string) (*app.App, *httptest.Server, string) {
	t.Helper()
	if err := apptest.CheckRunAs(); err != nil {
		t.Fatal(err)
	}
	dir := apptest.NewDataDir(t, testDirPrefix)
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var faults *faulty.Driver
	a, err := app.Open(ctx, app.Config{DataDir: dir, ActorInterval: time.Second, Logger: logger,
		WrapDriver: func(d dataplane.Driver) dataplane.Driver {
			w, f := faulty.Wrap(d, faulty.Faults{ConnectionFailures: 2})
			faults = f
			return w
		}})
	if err != nil {
		t.Fatalf("open app: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = a.Close(ctx)
		cancel()
		faults.Close()
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				_ = os.WriteFile(filepath.Join(artifacts, "server.log"), b, 0o644)
				t.Logf("server log copied to %s", filepath.Join(artifacts, "server.log"))
			}
		}
		if apptest.DeleteInstances(dir) {
			os.RemoveAll(dir)
		}
	})
	if v, err := a.Versions(ctx); err != nil || len(v) == 0 {
		t.Fatalf("no PostgreSQL binaries found (install them: apt-get install -y postgresql): %v", err)
	}
	srv, err := api.New(a, api.Options{AdminPassword: adminPassword, StateDir: filepath.Join(t.TempDir(), "auth"),
		LogFile: logPath, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	console, err := web.New(web.Options{App: a, User: srv.AdminUser(), Version: "test",
		Config: srv.ServerConfig, Retries: srv.ServerRetries})
	if err != nil {
		t.Fatal(err)
	}
	console.Register(srv.Pages())
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return a, ts, logPath
}

// TestConsoleInBrowser drives the console with headless Chromium against
// a real Toygres: login, create an instance and watch it come up live,
// health checks, backups and a restore, the retried create orchestration,
// raise an event to and cancel the health actor, the System page, the
// dashboard's retry numbers, and a bulk delete watched to the end. Each page is saved as a PNG.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("deploys PostgreSQL and drives Chromium")
	}
	if _, _, err := browserPaths(); err != nil {
		t.Fatal(err)
	}
	shotDir = artifactsDir(t)
	t.Logf("screenshots go to %s", shotDir)
	a, ts, logPath := startToygres(t, shotDir)
	b := startBrowser(t, shotDir)
	base := ts.URL
	const name = "webdb"

	// --- login: a page request without a session lands on /login.
	b.open(base + "/instances")
	b.waitFor("the login page", 15*time.Second, func() (bool, string) {
		u := b.jsString(`return location.pathname;`)
		return u == "/login", u
	})
	b.screenshot("01-login")
	b.typeInto("#username", "admin")
	b.typeInto("#password", "not-the-password")
	b.clickAndLoad("button[type=submit]")
	b.waitText("p.err", "Invalid username or password", 10*time.Second)
	if p := b.jsString(`return location.pathname;`); p != "/login" {
		t.Fatalf("a wrong password left the login page: %s", p)
	}
	b.screenshot("02-login-refused")
	b.typeInto("#username", "admin")
	b.typeInto("#password", adminPassword)
	b.clickAndLoad("button[type=submit]")
	b.waitText("main h1", "Dashboard", 10*time.Second)
	b.screenshot("03-dashboard-empty")

	// --- create form: server-side validation shown inline.
	b.clickAndLoad(`nav a[href="/instances"]`)
	b.typeInto("#c-name", "Bad_Name")
	b.typeInto("#c-password", instPassword)
	b.clickAndLoad("#create-submit")
	b.waitText("#create-error", "invalid name", 10*time.Second)
	if inv := b.jsString(`return document.getElementById('c-name').getAttribute('aria-invalid');`); inv != "true" {
		t.Errorf("the name field is not marked invalid: %q", inv)
	}
	if v := b.jsString(`return document.getElementById('c-password').value;`); v != "" {
		t.Errorf("the password was sent back into the form")
	}
	b.screenshot("04-create-invalid-name")
	b.typeInto("#c-name", name)
	b.typeInto("#c-password", "abc")
	b.clickAndLoad("#create-submit")
	b.waitText("#create-error", "password must be at least", 10*time.Second)

	// The bulk form validates too (before anything is created).
	b.typeInto("#b-base", "web")
	b.typeInto("#b-count", "many")
	b.typeInto("#b-password", instPassword)
	b.clickAndLoad("#bulk-submit")
	b.waitText("#bulk-error", "count must be a whole number", 10*time.Second)
	b.typeInto("#b-count", "51")
	b.typeInto("#b-password", instPassword)
	b.clickAndLoad("#bulk-submit")
	b.waitText("#bulk-error", "count must be between 1 and 50", 10*time.Second)
	if v := b.jsString(`return document.getElementById('b-base').value;`); v != "web" {
		t.Errorf("the bulk form lost its base name: %q", v)
	}
	if p := b.jsString(`return location.pathname;`); p != "/instances" {
		t.Errorf("after a rejected post the address is %s, want /instances", p)
	}

	// --- create for real and watch it reach running without a reload.
	b.typeInto("#c-name", name)
	b.typeInto("#c-password", instPassword)
	b.clickAndLoad("#create-submit")
	b.waitText("#flash", "Creating "+name, 10*time.Second)
	if strings.Contains(b.jsString(`return location.href;`), instPassword) {
		t.Fatal("the password is in the URL")
	}
	b.markPage()
	rowState := func() (bool, string) {
		s := b.jsString(`const r = document.querySelector('tr[data-name="` + name + `"] [data-state]'); return r ? r.dataset.state : '';`)
		return s == "running", s
	}
	b.waitFor(name+" in the list", 10*time.Second, func() (bool, string) {
		_, s := rowState()
		return s != "", s
	})
	b.screenshot("05-instances-creating")
	b.waitFor(name+" running (live)", 3*time.Minute, func() (bool, string) {
		if b.navigated() {
			t.Fatal("the instances page reloaded while waiting")
		}
		return rowState()
	})
	var swaps int
	b.js(&swaps, `return window.toygresConsole.swaps;`)
	if b.navigated() || swaps == 0 {
		t.Fatalf("the state changed through a reload (navigated %v, swaps %d)", b.navigated(), swaps)
	}
	b.screenshot("06-instances-running")
	b.pollsOK("instances list")

	// A second create with the same name is refused inline.
	b.typeInto("#c-name", name)
	b.typeInto("#c-password", instPassword)
	b.clickAndLoad("#create-submit")
	b.waitText("#create-error", "already in use", 10*time.Second)
	b.screenshot("07-create-duplicate")

	// --- detail: health checks arrive live; the connection string reveals.
	b.clickAndLoad(`#instances-table a[href="/instances/` + name + `"]`)
	b.waitText("#instance-state", "running", 10*time.Second)
	b.markPage()
	// One server and no standbys: the servers section says so.
	if txt := b.text("#servers"); !strings.Contains(txt, "no standbys") {
		t.Fatalf("servers section: %q", txt)
	}
	checks := func() int {
		var n int
		b.js(&n, `return document.querySelectorAll('svg.chart rect').length;`)
		return n
	}
	b.waitFor("a healthy check", time.Minute, func() (bool, string) {
		s := b.text("#health-summary")
		return checks() > 0 && strings.Contains(s, "healthy") && strings.Contains(b.text("#instance-health"), "healthy"), s
	})
	first := checks()
	b.waitFor("more health checks without a reload", time.Minute, func() (bool, string) {
		return checks() > first && !b.navigated(), fmt.Sprintf("%d bars", checks())
	})
	if masked := b.text("#conn-text"); strings.Contains(masked, instPassword) || !strings.Contains(masked, "••••") {
		t.Fatalf("the connection string is not masked: %q", masked)
	}
	b.click("[data-conn-reveal]")
	b.waitText("#conn-text", instPassword, 10*time.Second)
	b.waitFor("log lines", 30*time.Second, func() (bool, string) {
		s := b.text("#instance-log")
		return strings.Contains(s, "database system is ready") || strings.Count(s, "\n") > 2, shorten(s, 80)
	})
	if strings.Contains(b.text("#instance-log"), instPassword) {
		t.Fatal("the password appears in the shown server log")
	}
	b.click("[data-conn-reveal]") // hide it again for the screenshot
	b.waitFor("the password hidden", 5*time.Second, func() (bool, string) {
		s := b.text("#conn-text")
		return !strings.Contains(s, instPassword), s
	})
	b.screenshot("08-instance-detail")
	b.pollsOK("instance page")

	// --- backups: the first backup (taken on create) shows up live, a
	// manual one is taken, and a restore makes a new instance.
	b.waitFor("the first verified backup (live)", 2*time.Minute, func() (bool, string) {
		s := b.text("#restore-window")
		return strings.Contains(s, "Restorable from"), shorten(s, 80)
	})
	b.clickAndLoad("#backup-now")
	b.waitText("#flash", "Backing up "+name, 10*time.Second)
	b.markPage()
	b.waitFor("the manual backup verified (live)", 2*time.Minute, func() (bool, string) {
		s := b.jsString(`const r = document.querySelector('#backups-table tbody tr');
			return r ? r.children[1].textContent + ' ' + r.querySelector('[data-backup-state]').dataset.backupState : '';`)
		return s == "manual completed" && !b.navigated(), s
	})
	b.typeInto("#r-name", name+"-copy")
	b.typeInto("#r-at", "yesterday")
	b.clickAndLoad("#restore-submit")
	b.waitText("#restore-error", "not a time", 10*time.Second)
	if v := b.jsString(`return document.getElementById('r-name').value + ' ' + document.getElementById('r-at').getAttribute('aria-invalid');`); v != name+"-copy true" {
		t.Errorf("the rejected restore form: %q", v)
	}
	if p := b.jsString(`return location.pathname;`); p != "/instances/"+name {
		t.Errorf("after a rejected restore the address is %s", p)
	}
	b.pollsOK("instance page (rejected restore)")
	b.screenshot("08a-restore-invalid")
	b.typeInto("#r-at", "") // as far as the archive goes; the source's password
	b.clickAndLoad("#restore-submit")
	b.waitText("#flash", "Restoring "+name+"-copy from "+name, 10*time.Second)
	if p := b.jsString(`return location.pathname;`); p != "/instances/"+name+"-copy" {
		t.Fatalf("the restore landed on %s", p)
	}
	b.waitText("#instance-state", "running", 3*time.Minute)
	b.screenshot("08b-instance-restored")
	b.click("#delete-instance")
	b.waitFor("the confirmation dialog", 5*time.Second, func() (bool, string) {
		var open bool
		b.js(&open, `return document.getElementById('confirm-dialog').open;`)
		return open, ""
	})
	b.clickAndLoad("#confirm-ok")
	b.waitText("#flash", "Deleting "+name+"-copy", 10*time.Second)

	// --- the create orchestration shows the retried test-connection.
	b.clickAndLoad(`a[data-orch-role="create"]`)
	b.waitText("#orch-status", "Completed", 30*time.Second)
	var attempts []string
	b.js(&attempts, `
		const items = Array.from(document.querySelectorAll('.h-activity')).filter(li => li.querySelector('.h-title').textContent.trim() === 'test-connection');
		if (items.length !== 1) return ['found ' + items.length + ' test-connection items'];
		const li = items[0];
		const out = Array.from(li.querySelectorAll('.attempt')).map(a => a.querySelector('.a-label').textContent + ': ' + a.querySelector('.a-status').textContent);
		out.push('backoffs=' + li.querySelectorAll('li.backoff').length);
		out.push('status=' + li.querySelector('.h-status').textContent);
		return out;`)
	want := []string{"attempt 1 of 5: failed", "attempt 2 of 5: failed", "attempt 3 of 5: completed", "backoffs=2", "status=completed on attempt 3 of 5"}
	if strings.Join(attempts, "|") != strings.Join(want, "|") {
		t.Fatalf("test-connection in the history:\n got %q\nwant %q", attempts, want)
	}
	if s := b.text(".h-activity[data-retried] .a-error"); !strings.Contains(s, "injected") {
		t.Errorf("the failed attempt's error is not shown: %q", s)
	}
	b.screenshot("09-orchestration-create")

	// --- the health actor: raise an event, then cancel it from its page.
	b.open(base + "/instances/" + name)
	b.clickAndLoad(`a[data-orch-role="health actor"]`)
	b.waitText("#orch-status", "Running", 10*time.Second)
	// The actor continues as new every second: its execution advances live.
	b.markPage()
	execNow := func() int { n, _ := strconv.Atoi(b.text("#orch-execution")); return n }
	firstExec := execNow()
	b.waitFor("the actor's next execution (live)", 30*time.Second, func() (bool, string) {
		n := execNow()
		return n > firstExec && !b.navigated(), strconv.Itoa(n)
	})
	b.typeInto("#event-name", "")
	b.clickAndLoad("#raise-submit")
	b.waitText("#raise-error", "event name is required", 10*time.Second)
	b.typeInto("#event-name", "Ping")
	b.typeInto("#event-data", `{"from": "the browser test"}`)
	b.clickAndLoad("#raise-submit")
	b.waitText("#flash", "Event Ping raised", 10*time.Second)
	b.typeInto("#cancel-reason", "cancelled by the browser test")
	b.click("#cancel-orchestration")
	b.waitFor("the confirmation dialog", 5*time.Second, func() (bool, string) {
		var open bool
		b.js(&open, `return document.getElementById('confirm-dialog').open;`)
		return open, ""
	})
	b.screenshot("10-confirm-cancel")
	b.clickAndLoad("#confirm-ok")
	b.waitText("#flash", "Cancellation requested", 10*time.Second)
	b.markPage()
	b.waitFor("the actor cancelled (live)", time.Minute, func() (bool, string) {
		s := b.text("#orch-status")
		return s == "Cancelled" && !b.navigated(), s
	})
	b.waitFor("the cancel form hidden", 10*time.Second, func() (bool, string) {
		var hidden bool
		b.js(&hidden, `return document.getElementById('cancel-orchestration').closest('form').hidden;`)
		return hidden, ""
	})
	if s := b.text("#orch-error"); !strings.Contains(s, "cancelled by the browser test") {
		t.Errorf("the cancellation reason is not shown: %q", s)
	}
	b.screenshot("11-orchestration-cancelled")
	b.pollsOK("orchestration page")

	// Recreate starts the same orchestration with the same input, new id.
	cancelledURL := b.jsString(`return location.pathname;`)
	b.click("#recreate-orchestration")
	b.waitText("#confirm-message", "same input", 5*time.Second)
	b.clickAndLoad("#confirm-ok")
	b.waitText("#flash", "Recreated actor-", 10*time.Second)
	if p := b.jsString(`return location.pathname;`); p == cancelledURL || !strings.HasPrefix(p, "/orchestrations/actor-"+name+"-") {
		t.Fatalf("recreate landed on %s", p)
	}
	b.waitText("#orch-status", "Running", 30*time.Second)

	// --- orchestrations list with filters.
	b.clickAndLoad(`nav a[href="/orchestrations"]`)
	b.waitFor("the orchestrations table", 10*time.Second, func() (bool, string) {
		var n int
		b.js(&n, `return document.querySelectorAll('#orchestrations-table tbody tr').length;`)
		return n >= 2, strconv.Itoa(n)
	})
	b.screenshot("12-orchestrations")
	b.open(base + "/orchestrations?status=Cancelled")
	b.waitText("#orchestrations-table", "actor-"+name, 10*time.Second)

	// --- system: the runtime's real settings.
	b.clickAndLoad(`nav a[href="/system"]`)
	set := a.Runtime().Settings()
	b.waitText("#runtime-settings", set.WorkerID, 10*time.Second)
	var rs map[string]string
	b.js(&rs, `const m = {}; document.querySelectorAll('#runtime-settings dt').forEach(dt => { m[dt.textContent.trim()] = dt.nextElementSibling.textContent.trim(); }); return m;`)
	if rs["activity workers"] != strconv.Itoa(set.ActivityConcurrency) || rs["orchestration dispatchers"] != strconv.Itoa(set.OrchestrationConcurrency) ||
		rs["worker id"] != set.WorkerID {
		t.Errorf("runtime settings shown %v, runtime has %+v", rs, set)
	}
	if cfg := b.text("#config"); !strings.Contains(cfg, "***") || strings.Contains(cfg, adminPassword) {
		t.Errorf("configuration secrets are not masked:\n%s", cfg)
	}
	b.screenshot("13-system")

	// --- dashboard: the retries come from the runtime's counters.
	b.clickAndLoad(`nav a[href="/"]`)
	b.waitFor("test-connection retries on the dashboard", 30*time.Second, func() (bool, string) {
		s := b.text(`tr[data-activity="test-connection"] [data-retries]`)
		n, _ := strconv.Atoi(s)
		return n >= 2, s
	})
	b.screenshot("14-dashboard")

	// --- bulk delete from the list, watched to deleted.
	b.open(base + "/instances?state=all")
	b.waitFor("the row checkbox", 10*time.Second, func() (bool, string) {
		var ok bool
		b.js(&ok, `return !!document.querySelector('#bulk-delete input[name=name][value="`+name+`"]');`)
		return ok, ""
	})
	b.click(`#bulk-delete input[name=name][value="` + name + `"]`)
	b.waitText("#delete-selected", "Delete selected (1)", 5*time.Second)
	b.click("#delete-selected")
	b.waitText("#confirm-list", name, 5*time.Second)
	b.clickAndLoad("#confirm-ok")
	b.waitText("#flash", "Deleting 1 of 1", 10*time.Second)
	b.markPage()
	b.waitFor(name+" deleted (live)", 2*time.Minute, func() (bool, string) {
		s := b.jsString(`const r = document.querySelector('tr[data-name="` + name + `"] [data-state]'); return r ? r.dataset.state : '';`)
		return s == "deleted" && !b.navigated(), s
	})
	b.screenshot("15-instances-deleted")
	b.pollsOK("instances list (delete)")

	// The instance page of the deleted instance, and a missing page.
	b.open(base + "/instances/" + name)
	b.waitText("#instance-state", "deleted", 10*time.Second)
	b.screenshot("16-instance-deleted")
	b.open(base + "/no/such/page")
	b.waitText("main h1", "Not found", 10*time.Second)

	// No password reached the server's log.
	logged, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{instPassword, adminPassword} {
		if strings.Contains(string(logged), pw) {
			t.Errorf("the server log contains a password")
		}
	}
	// And the console answered every request without an internal error.
	for _, line := range strings.Split(string(logged), "\n") {
		if strings.Contains(line, `"console request failed"`) || strings.Contains(line, `"status":500`) {
			t.Errorf("server error: %s", line)
		}
	}
}
