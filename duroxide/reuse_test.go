package duroxide_test

import (
	"context"
	"errors"
	"testing"

	"github.com/toygres/toygres/duroxide"
)

// echoRegistry registers Echo, which returns its input; with the input
// "wait" it first waits for the event "go".
func echoRegistry() *duroxide.Registry {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Echo", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		if in == "wait" {
			if err := ctx.WaitForEvent("go").Await(nil); err != nil {
				return "", err
			}
		}
		return in, nil
	}))
	return reg
}

// TestStartIDReusePolicies starts an id that exists, running and ended,
// under each IDReusePolicy.
func TestStartIDReusePolicies(t *testing.T) {
	e := newEnv(t, echoRegistry(), duroxide.Options{})
	ctx := context.Background()
	start := func(id, in string, p duroxide.IDReusePolicy) error {
		return e.c.StartOrchestration(ctx, id, "Echo", in, duroxide.OnExisting(p))
	}
	output := func(id string) string {
		t.Helper()
		var out string
		expectCompleted(t, e.wait(id), &out)
		return out
	}
	running := func(id string) {
		t.Helper()
		e.waitFor(id+" running", func() bool {
			st, err := e.c.GetStatus(ctx, id)
			return err == nil && st.Status == duroxide.StatusRunning
		})
	}

	// A running instance.
	if err := start("a", "wait", duroxide.ReuseFail); err != nil {
		t.Fatalf("first start under ReuseFail: %v", err)
	}
	running("a")
	if err := start("a", "other", duroxide.ReuseFail); !errors.Is(err, duroxide.ErrInstanceExists) {
		t.Fatalf("ReuseFail on a running instance = %v", err)
	}
	for _, p := range []duroxide.IDReusePolicy{duroxide.ReuseIgnore, duroxide.ReuseRestartEnded} {
		if err := start("a", "other", p); err != nil {
			t.Fatalf("%s on a running instance = %v", p, err)
		}
	}
	if err := e.c.RaiseEvent(ctx, "a", "go", nil); err != nil {
		t.Fatal(err)
	}
	if out := output("a"); out != "wait" {
		t.Fatalf("a = %q: a start replaced the running instance", out)
	}

	// The same instance, ended.
	if err := start("a", "other", duroxide.ReuseFail); !errors.Is(err, duroxide.ErrInstanceExists) {
		t.Fatalf("ReuseFail on an ended instance = %v", err)
	}
	if err := start("a", "ignored", duroxide.ReuseIgnore); err != nil {
		t.Fatal(err)
	}
	if out := output("a"); out != "wait" {
		t.Fatalf("a = %q after ReuseIgnore", out)
	}
	if err := start("a", "second", duroxide.ReuseRestartEnded); err != nil {
		t.Fatal(err)
	}
	e.waitFor("a restarted", func() bool {
		st, err := e.c.GetStatus(ctx, "a")
		var out string
		return err == nil && st.Status == duroxide.StatusCompleted && st.Decode(&out) == nil && out == "second"
	})

	// Terminate and restart a running instance: its wait is dropped.
	if err := start("b", "wait", duroxide.ReuseIgnore); err != nil {
		t.Fatal(err)
	}
	running("b")
	if err := start("b", "replaced", duroxide.ReuseTerminateAndRestart); err != nil {
		t.Fatal(err)
	}
	if out := output("b"); out != "replaced" {
		t.Fatalf("b = %q after ReuseTerminateAndRestart", out)
	}
	h, err := e.c.ReadHistory(ctx, "b", 0)
	if err != nil || len(h) == 0 || string(h[0].Input) != `"replaced"` {
		t.Fatalf("history of b starts with %+v, %v", h, err)
	}
	if n, _ := e.c.ListExecutions(ctx, "b"); len(n) != 1 {
		t.Fatalf("b has %d executions after the restart, want 1", len(n))
	}
}

// TestRecreate starts an ended instance's orchestration again under a new
// id, with its first execution's input; a running one is refused.
func TestRecreate(t *testing.T) {
	e := newEnv(t, echoRegistry(), duroxide.Options{})
	ctx := context.Background()
	e.startOrch("orig", "Echo", "wait")
	e.waitFor("orig running", func() bool {
		st, err := e.c.GetStatus(ctx, "orig")
		return err == nil && st.Status == duroxide.StatusRunning
	})
	if _, err := e.c.Recreate(ctx, "orig", "copy"); !errors.Is(err, duroxide.ErrInstanceRunning) {
		t.Fatalf("Recreate of a running instance = %v", err)
	}
	if err := e.c.RaiseEvent(ctx, "orig", "go", nil); err != nil {
		t.Fatal(err)
	}
	expectCompleted(t, e.wait("orig"), nil)
	req, err := e.c.Recreate(ctx, "orig", "copy")
	if err != nil || req.Name != "Echo" || req.InstanceID != "copy" {
		t.Fatalf("Recreate = %+v, %v", req, err)
	}
	if err := e.c.RaiseEvent(ctx, "copy", "go", nil); err != nil {
		t.Fatal(err)
	}
	var out string
	expectCompleted(t, e.wait("copy"), &out)
	if out != "wait" {
		t.Fatalf("copy = %q, want the original input", out)
	}
	if _, err := e.c.Recreate(ctx, "orig", "copy"); !errors.Is(err, duroxide.ErrInstanceExists) {
		t.Fatalf("Recreate onto an existing id = %v", err)
	}
	if _, err := e.c.Recreate(ctx, "ghost", "copy2"); !errors.Is(err, duroxide.ErrNotFound) {
		t.Fatalf("Recreate of an unknown instance = %v", err)
	}
}
