package duroxide_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/toygres/toygres/duroxide"
)

// versionMarker returns the recorded version of a change, or "" without a marker.
func versionMarker(h []duroxide.Event, changeID string) string {
	for _, ev := range h {
		if ev.Kind == duroxide.EventVersionMarker && ev.Name == changeID {
			return ev.Result
		}
	}
	return ""
}

func registerABC(reg *duroxide.Registry) *duroxide.Registry {
	for _, name := range []string{"A", "B", "C"} {
		name := name
		duroxide.Must(duroxide.RegisterActivity(reg, name, func(context.Context, string) (string, error) { return name, nil }))
	}
	return reg
}

// TestChangeVersionsTwoStepDeploy: code moving a change from version 1 to 2
// is deployed with Options.ChangeVersions pinning version 1. It records
// version 1, which workers still running the old code (versions 0 to 1)
// replay; once the pin is dropped, new instances record version 2.
func TestChangeVersionsTwoStepDeploy(t *testing.T) {
	var calls []string
	reg := registerABC(versionedRegistry(0, 2, &calls))
	e := newEnv(t, reg, duroxide.Options{ChangeVersions: map[string]int{"add-b": 1}})
	expectOutput(t, e.run("pinned", "V", "in"), "C v1")
	pinned := e.history("pinned")
	if v := versionMarker(pinned, "add-b"); v != "1" {
		t.Fatalf("pinned run recorded version %q, want 1: %v", v, pinned)
	}
	var old []string
	oldCode := duroxide.NewExecutor(versionedRegistry(0, 1, &old), duroxide.ExecutorOptions{})
	if err := oldCode.Replay("pinned", 1, pinned); err != nil {
		t.Fatalf("old code replaying the pinned history: %v", err)
	}
	if strings.Join(old, ",") != "version 1" {
		t.Fatalf("old code replay took %v", old)
	}
	// The new code replays it too, without the pin.
	calls = nil
	if err := duroxide.NewExecutor(versionedRegistry(0, 2, &calls), duroxide.ExecutorOptions{}).Replay("pinned", 1, pinned); err != nil {
		t.Fatalf("pinned history on unpinned code: %v", err)
	}
	if strings.Join(calls, ",") != "version 1" {
		t.Fatalf("replay of the pinned history took %v", calls)
	}

	// Step 2: every worker runs the new code; the pin goes.
	e.opts.ChangeVersions = nil
	e.restart(reg)
	expectOutput(t, e.run("unpinned", "V", "in"), "C v2")
	unpinned := e.history("unpinned")
	if v := versionMarker(unpinned, "add-b"); v != "2" {
		t.Fatalf("unpinned run recorded version %q, want 2", v)
	}
	// What the pin protected against: the old code cannot replay version 2.
	if err := oldCode.Replay("unpinned", 1, unpinned); !errors.Is(err, duroxide.ErrNondeterminism) {
		t.Fatalf("old code replaying version 2: %v, want nondeterminism", err)
	}
}

// TestChangeVersionsPinnedOldBranch: a pin at VersionBeforeChange makes new
// executions record 0 and take the old branch, and the history replays on
// the same code without the pin; a pin above maxSupported records
// maxSupported; a pin below minSupported fails the execution as a
// configuration error when it would be recorded, but not a replay of a
// version recorded before.
func TestChangeVersionsPinnedOldBranch(t *testing.T) {
	start := []duroxide.WorkItem{{Kind: duroxide.WorkStartOrchestration, Instance: "v", Name: "V", Input: `"in"`}}
	var calls []string
	pinned := duroxide.NewExecutor(versionedRegistry(0, 1, &calls), duroxide.ExecutorOptions{ChangeVersions: map[string]int{"add-b": duroxide.VersionBeforeChange}})
	h, c := runToEnd(t, pinned, nil, start)
	if c.Output != `"C v0"` || versionMarker(h, "add-b") != "0" || countKind(h, duroxide.EventActivityScheduled) != 2 {
		t.Fatalf("pinned at 0: output %s, history %v", c.Output, h)
	}
	calls = nil
	if err := duroxide.NewExecutor(versionedRegistry(0, 1, &calls), duroxide.ExecutorOptions{}).Replay("v", 1, h); err != nil || strings.Join(calls, ",") != "version 0" {
		t.Fatalf("replay without the pin: %v, took %v", err, calls)
	}
	unpinned := duroxide.NewExecutor(versionedRegistry(0, 1, &calls), duroxide.ExecutorOptions{ChangeVersions: map[string]int{"other": 0}})
	if h, c := runToEnd(t, unpinned, nil, start); c.Output != `"C v1"` || versionMarker(h, "add-b") != "1" {
		t.Fatalf("a pin of another change: output %s, history %v", c.Output, h)
	}
	above := duroxide.NewExecutor(versionedRegistry(0, 1, &calls), duroxide.ExecutorOptions{ChangeVersions: map[string]int{"add-b": 5}})
	if h, c := runToEnd(t, above, nil, start); c.Output != `"C v1"` || versionMarker(h, "add-b") != "1" {
		t.Fatalf("pinned above max: output %s, history %v", c.Output, h)
	}
	below := duroxide.NewExecutor(versionedRegistry(1, 1, &calls), duroxide.ExecutorOptions{ChangeVersions: map[string]int{"add-b": 0}})
	_, c = runToEnd(t, below, nil, start)
	if c.Status != duroxide.StatusFailed || !strings.Contains(c.Output, "ChangeVersions pins version 0") || strings.Contains(c.Output, "nondeterministic") {
		t.Fatalf("pinned below min: %s %s", c.Status, c.Output)
	}
	// A version 1 recorded earlier still replays under that pin.
	h1, _ := runToEnd(t, duroxide.NewExecutor(versionedRegistry(1, 1, &calls), duroxide.ExecutorOptions{}), nil, start)
	if err := below.Replay("v", 1, h1); err != nil {
		t.Fatalf("recorded version 1 under a pin of 0: %v", err)
	}
}

func expectOutput(t *testing.T, st *duroxide.OrchestrationStatus, want string) {
	t.Helper()
	var got string
	expectCompleted(t, st, &got)
	if got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}
