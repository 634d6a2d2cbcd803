package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/apptest"
)

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "__start_toygres",
		"zsh":  "#compdef toygres",
		"fish": "complete -c toygres",
	} {
		out, errOut, code := runCLI(t, "completion", shell)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, script lacks %q (stderr %q)", shell, code, want, errOut)
		}
	}
	if _, _, code := runCLI(t, "completion", "tcsh"); code == 0 {
		t.Error("completion tcsh succeeded")
	}
}

// TestCompletionFromServer: instance names and orchestration ids are
// completed from a real server.
func TestCompletionFromServer(t *testing.T) {
	requirePostgres(t)
	if err := apptest.CheckRunAs(); err != nil {
		t.Fatal(err)
	}
	apptest.ReapStale("toygres-compl-")
	dir := apptest.NewDataDir(t, "toygres-compl-")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := app.Open(ctx, app.Config{DataDir: dir, ActorInterval: 500 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_ = a.Close(cctx)
		if apptest.DeleteInstances(dir) {
			_ = os.RemoveAll(dir)
		}
	})
	srv, err := api.New(a, api.Options{AdminPassword: "completion-admin-pw"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	tok, err := srv.IssueToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ts.URL, client.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"compl-alpha", "compl-beta", "other-gamma"} {
		if _, err := c.CreateInstance(ctx, client.CreateInstanceRequest{Name: name, Password: "completion-pw", StorageGB: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// Deleted right away: purge completes it, get does not.
	if _, err := c.WaitForInstance(ctx, "other-gamma", client.WaitOptions{Interval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteInstance(ctx, "other-gamma"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForInstance(ctx, "other-gamma", client.WaitOptions{State: client.StateDeleted, Interval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}

	complete := func(args ...string) []string {
		t.Helper()
		// --token=… : a token may start with "-", which cobra's completion
		// parser would take for flags.
		out, errOut, code := runCLI(t, append([]string{"__complete", "--url", ts.URL, "--token=" + tok}, args...)...)
		if code != 0 {
			t.Fatalf("__complete %v: exit %d: %s", args, code, errOut)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.HasPrefix(l, ":") { // the last line is the directive
				got = append(got, l)
			}
		}
		return got
	}
	got := complete("get", "compl-")
	if len(got) != 2 || !strings.HasPrefix(got[0], "compl-alpha\t") || !strings.HasPrefix(got[1], "compl-beta\t") {
		t.Fatalf("get compl-<TAB>: %q", got)
	}
	if got := complete("delete", ""); strings.Contains(strings.Join(got, " "), "other-gamma") || len(got) != 2 {
		t.Fatalf("delete <TAB> (live instances only): %q", got)
	}
	if got := complete("purge", "other"); len(got) != 1 || got[0] != "other-gamma\tdeleted" {
		t.Fatalf("purge other<TAB>: %q", got)
	}
	if got := complete("get", "compl-alpha", ""); len(got) != 0 {
		t.Fatalf("get NAME <TAB> (no second argument): %q", got)
	}
	d, err := c.GetInstance(ctx, "other-gamma", client.GetInstanceOptions{})
	if err != nil {
		// all records deleted: find the create orchestration through the list
		l, lerr := c.ListInstances(ctx, client.ListInstancesOptions{All: true, Name: "other-gamma"})
		if lerr != nil || len(l.Instances) == 0 {
			t.Fatal(err, lerr)
		}
		d = &client.InstanceDetail{Instance: l.Instances[0]}
	}
	orch := d.CreateOrchestrationID
	if got := complete("server", "orchestration", orch[:len(orch)-2]); len(got) != 1 || !strings.HasPrefix(got[0], orch+"\tCompleted") {
		t.Fatalf("server orchestration <prefix><TAB>: %q (want %s)", got, orch)
	}

	// Backups: restore --from completes deleted sources too; backup ids
	// come from the server's list (of the --from instance).
	if got := complete("restore", "new-db", "--from", "other"); len(got) != 1 || got[0] != "other-gamma\tdeleted" {
		t.Fatalf("restore NEW --from other<TAB>: %q", got)
	}
	if got := complete("backup", "create", "compl-b"); len(got) != 1 || !strings.HasPrefix(got[0], "compl-beta\t") {
		t.Fatalf("backup create compl-b<TAB>: %q", got)
	}
	bl, err := c.ListBackups(ctx, "other-gamma")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, b := range bl.Backups {
		want = append(want, b.ID+"\tother-gamma "+b.State)
	}
	if got := complete("restore", "new-db", "--from", "other-gamma", "--backup", ""); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("restore --from other-gamma --backup <TAB>: %q, want %q", got, want)
	}

	for _, name := range []string{"compl-alpha", "compl-beta"} {
		if _, err := c.WaitForInstance(ctx, name, client.WaitOptions{Interval: 200 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeleteInstance(ctx, name); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitForInstance(ctx, name, client.WaitOptions{State: client.StateDeleted, Interval: 200 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
}
