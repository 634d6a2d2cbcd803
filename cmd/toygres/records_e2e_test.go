package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listJSON runs `list [--all] -o json` and returns the records of name.
func (e *e2e) listJSON(name string, all bool) []instanceJSON {
	e.t.Helper()
	args := []string{"list", "-o", "json"}
	if all {
		args = append(args, "--all")
	}
	var l struct {
		Instances []instanceJSON `json:"instances"`
	}
	if err := json.Unmarshal([]byte(e.ok(args...)), &l); err != nil {
		e.t.Fatal(err)
	}
	var out []instanceJSON
	for _, in := range l.Instances {
		if in.Name == name {
			out = append(out, in)
		}
	}
	return out
}

// brokenJSON is what `get -o json` says about a broken instance.
type brokenJSON struct {
	State   string `json:"state"`
	Broken  bool   `json:"broken"`
	Problem string `json:"problem"`
	Events  []struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"events"`
}

func (e *e2e) broken(name string) brokenJSON {
	e.t.Helper()
	var b brokenJSON
	if err := json.Unmarshal([]byte(e.ok("get", name, "-o", "json")), &b); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// TestFailedRecordsDeleteAndPurge: two failed creates of one name whose
// clean-up left data-plane resources behind; list hides them by default;
// purge refuses while resources are left; delete --purge removes the
// resources of both and then their records.
func TestFailedRecordsDeleteAndPurge(t *testing.T) {
	e := newE2E(t)
	e.startServerWith(faultsEnv("deploy=-1"))
	var internals []string
	for range 2 {
		e.ok("create", "k1", "--password", "test123")
		f, _ := e.waitState("k1", "failed", 2*time.Minute)
		// Wait for the failed create's clean-up to end (its event), so
		// that the leftovers made below are not removed by it.
		e.eventually("the clean-up of "+f.InternalName, time.Minute, func() bool {
			for _, ev := range e.get("k1").Events {
				if strings.Contains(ev.Message, "removed") {
					return true
				}
			}
			return false
		})
		internals = append(internals, f.InternalName)
	}
	if l := e.listJSON("k1", false); len(l) != 0 {
		t.Errorf("list shows failed instances by default: %+v", l)
	}
	if l := e.listJSON("k1", true); len(l) != 2 || l[0].State != "failed" || l[1].State != "failed" {
		t.Fatalf("list --all: %+v", l)
	}
	if out := e.ok("list", "--all"); !strings.Contains(out, "failed") || !strings.Contains(out, "deploy failed") {
		t.Errorf("list --all does not explain the failures:\n%s", out)
	}

	// Leftovers of both failed creates, as a platform that failed half way
	// through would leave them.
	for _, in := range internals {
		dir := filepath.Join(e.dataDir, "instances", in)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "data", "leftover"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, errOut, code := e.run("purge", "k1")
	if code != 1 {
		t.Errorf("purge with leftovers: exit %d", code)
	}
	assertOneLineError(t, "purge with leftovers", errOut, "it still has data-plane resources: delete it first")
	if l := e.listJSON("k1", true); len(l) != 2 {
		t.Fatalf("purge with leftovers removed records: %+v", l)
	}

	out := e.ok("delete", "k1", "--purge")
	for _, want := range []string{"2 records", "Purged 2 record(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("delete --purge output lacks %q:\n%s", want, out)
		}
	}
	for _, in := range internals {
		if _, err := os.Stat(filepath.Join(e.dataDir, "instances", in)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftovers of %s not removed (%v)", in, err)
		}
	}
	if l := e.listJSON("k1", true); len(l) != 0 {
		t.Errorf("records left after purge: %+v", l)
	}
	_, errOut, code = e.run("get", "k1")
	if code != 1 {
		t.Errorf("get of a purged name: exit %d", code)
	}
	assertOneLineError(t, "get of a purged name", errOut, `instance "k1" not found`)
	_, errOut, code = e.run("delete", "k1")
	if code != 1 {
		t.Errorf("delete of a purged name: exit %d", code)
	}
	assertOneLineError(t, "delete of a purged name", errOut, `instance "k1" not found`)
	_, errOut, code = e.run("purge", "k1")
	if code != 1 {
		t.Errorf("purge of a purged name: exit %d", code)
	}
	assertOneLineError(t, "purge of a purged name", errOut, `instance "k1" not found`)

	// The name is free again, and a failed record goes with a plain delete
	// then purge too.
	e.ok("create", "k1", "--password", "test123")
	e.waitState("k1", "failed", 2*time.Minute)
	e.ok("delete", "k1", "--wait")
	if got := e.get("k1"); got.State != "deleted" {
		t.Fatalf("after delete: %s", got.State)
	}
	if out := e.ok("purge", "k1"); !strings.Contains(out, "Purged 1 record(s)") {
		t.Errorf("purge output:\n%s", out)
	}
}

// TestBrokenInstanceDoesNotStopTheServer: instances whose files were
// damaged while the server was down are reported broken at the next start,
// the others run on; a broken one can be repaired once fixed, or deleted.
func TestBrokenInstanceDoesNotStopTheServer(t *testing.T) {
	e := newE2E(t)
	e.startServer()
	names := []string{"fixme", "dropme", "fine"}
	for _, n := range names {
		e.ok("create", n, "--password", "test123")
	}
	inst := map[string]instanceJSON{}
	for _, n := range names {
		inst[n], _ = e.waitState(n, "running", 3*time.Minute)
	}
	e.ok("server", "stop")
	// Damage two instances' metadata (their servers keep running).
	meta := func(n string) string {
		return filepath.Join(e.dataDir, "instances", inst[n].InternalName, "instance.json")
	}
	orig, err := os.ReadFile(meta("fixme"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"fixme", "dropme"} {
		if err := os.WriteFile(meta(n), []byte("{not json"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	e.startServer()
	for _, n := range []string{"fixme", "dropme"} {
		b := e.broken(n)
		if !b.Broken || b.State != "running" || !strings.Contains(b.Problem, "unreadable") {
			t.Errorf("%s after the restart: %+v", n, b)
		}
		found := false
		for _, ev := range b.Events {
			if ev.Type == "problem" && strings.HasPrefix(ev.Message, "broken: ") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no problem event: %+v", n, b.Events)
		}
	}
	if b := e.broken("fine"); b.Broken {
		t.Errorf("the undamaged instance is broken: %+v", b)
	}
	out := e.ok("list")
	if !strings.Contains(out, "running (broken)") || !strings.Contains(out, "unreadable") {
		t.Errorf("list does not show the broken instances:\n%s", out)
	}
	if out := e.ok("get", "fixme"); !strings.Contains(out, "toygres repair fixme") {
		t.Errorf("get does not say how to repair:\n%s", out)
	}
	if b, err := os.ReadFile(logPath(e.dataDir)); err != nil || !strings.Contains(string(b), "instance is broken") {
		t.Errorf("the server log does not report the broken instance (%v)", err)
	}
	// The undamaged instance works and is checked.
	e.eventually("a healthy check of the undamaged instance", time.Minute, func() bool { return e.get("fine").Health == "healthy" })

	// Repair before the fix: still broken, one-line error.
	_, errOut, code := e.run("repair", "fixme")
	if code != 1 {
		t.Errorf("repair of a still broken instance: exit %d", code)
	}
	assertOneLineError(t, "repair before the fix", errOut, `instance "fixme" is still broken`)
	if err := os.WriteFile(meta("fixme"), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := e.ok("repair", "fixme"); !strings.Contains(out, "repaired") {
		t.Errorf("repair output:\n%s", out)
	}
	if b := e.broken("fixme"); b.Broken || b.Problem != "" {
		t.Errorf("after repair: %+v", b)
	}

	// A broken instance can be deleted: its server and files go.
	e.ok("delete", "dropme", "--wait")
	if _, err := os.Stat(filepath.Join(e.dataDir, "instances", inst["dropme"].InternalName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the broken instance's directory is left (%v)", err)
	}
	if listening(inst["dropme"].Port) {
		t.Errorf("the broken instance's server still listens on %d", inst["dropme"].Port)
	}
	// Repairs of what cannot be repaired: 404 and 409 as one-line errors.
	_, errOut, code = e.run("repair", "no-such")
	if code != 1 {
		t.Errorf("repair of an unknown instance: exit %d", code)
	}
	assertOneLineError(t, "repair of an unknown instance", errOut, `instance "no-such" not found`)
	_, errOut, code = e.run("repair", "dropme")
	if code != 1 {
		t.Errorf("repair of a deleted instance: exit %d", code)
	}
	assertOneLineError(t, "repair of a deleted instance", errOut, `instance "dropme" not found`)

	// The next start finds nothing broken.
	e.ok("server", "stop")
	e.startServer()
	for _, n := range []string{"fixme", "fine"} {
		if b := e.broken(n); b.Broken || b.State != "running" {
			t.Errorf("%s after the last restart: %+v", n, b)
		}
	}
	e.ok("delete", "fixme", "--wait")
	e.ok("delete", "fine", "--wait")
}
