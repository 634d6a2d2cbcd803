package duroxide_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// exampleRuntime starts a runtime on a SQLite file in a temporary directory.
func exampleRuntime(reg *duroxide.Registry) (*duroxide.Runtime, func()) {
	dir, err := os.MkdirTemp("", "duroxide-example")
	if err != nil {
		panic(err)
	}
	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "example.db"))
	if err != nil {
		panic(err)
	}
	rt, err := duroxide.Start(context.Background(), store, reg, duroxide.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}
	return rt, func() {
		_ = rt.Shutdown(context.Background())
		_ = store.Close()
		_ = os.RemoveAll(dir)
	}
}

// A hello-world orchestration: register an activity and an orchestration,
// start the runtime, start an instance and wait for its result.
func Example() {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Greet", func(ctx context.Context, name string) (string, error) {
		return "Hello, " + name + "!", nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "HelloWorld", func(ctx *duroxide.OrchestrationContext, name string) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "Greet", name)
	}))
	rt, done := exampleRuntime(reg)
	defer done()

	ctx := context.Background()
	client := rt.Client()
	if err := client.StartOrchestration(ctx, "hello-1", "HelloWorld", "Gopher"); err != nil {
		panic(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	status, err := client.WaitForCompletion(wctx, "hello-1")
	if err != nil {
		panic(err)
	}
	var greeting string
	if err := status.Decode(&greeting); err != nil {
		panic(err)
	}
	fmt.Println(status.Status, greeting)
	// Output: Completed Hello, Gopher!
}

// Retry an activity that fails twice, with exponential backoff and a
// per-attempt timeout; every attempt and every wait is recorded in history.
func ExampleOrchestrationContext_CallActivityWithRetry() {
	attempts := 0
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(ctx context.Context, _ struct{}) (string, error) {
		attempts++
		if attempts < 3 {
			return "", fmt.Errorf("attempt %d: connection refused", attempts)
		}
		return "connected", nil
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Connect", func(ctx *duroxide.OrchestrationContext, _ struct{}) (string, error) {
		policy := duroxide.NewRetryPolicy(3).
			WithBackoff(duroxide.Exponential{Base: 10 * time.Millisecond, Multiplier: 2.0, Max: time.Second}).
			WithTimeout(5 * time.Second)
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Flaky", struct{}{}, policy)
	}))
	rt, done := exampleRuntime(reg)
	defer done()

	ctx := context.Background()
	client := rt.Client()
	_ = client.StartOrchestration(ctx, "connect-1", "Connect", struct{}{})
	status, _ := client.WaitForCompletion(ctx, "connect-1")
	var out string
	_ = status.Decode(&out)
	history, _ := client.ReadHistory(ctx, "connect-1", 0)
	scheduled := 0
	for _, ev := range history {
		if ev.Kind == duroxide.EventActivityScheduled {
			scheduled++
		}
	}
	fmt.Println(out, "after", scheduled, "attempts")
	// Output: connected after 3 attempts
}

// Race an external event against a durable timer with Select: the first
// task done wins and the loser is cancelled.
func ExampleOrchestrationContext_Select() {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Approval", func(ctx *duroxide.OrchestrationContext, _ struct{}) (string, error) {
		approval := ctx.WaitForEvent("Approved")
		deadline := ctx.CreateTimer(time.Hour)
		if ctx.Select(approval, deadline) == 1 {
			return "expired", nil
		}
		var by string
		if err := approval.Await(&by); err != nil {
			return "", err
		}
		return "approved by " + by, nil
	}))
	rt, done := exampleRuntime(reg)
	defer done()

	ctx := context.Background()
	client := rt.Client()
	_ = client.StartOrchestration(ctx, "approval-1", "Approval", struct{}{})
	_ = client.RaiseEvent(ctx, "approval-1", "Approved", "alice")
	status, _ := client.WaitForCompletion(ctx, "approval-1")
	var out string
	_ = status.Decode(&out)
	fmt.Println(out)
	// Output: approved by alice
}

// Errors keep their Go type across the worker/orchestration boundary, and
// NonRetryable stops a retry sequence at once.
func ExampleNonRetryable() {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Reserve", func(ctx context.Context, n int) (int, error) {
		return 0, duroxide.NonRetryable(&quotaError{Limit: 10})
	}))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Reserve", func(ctx *duroxide.OrchestrationContext, n int) (string, error) {
		_, err := duroxide.CallActivityWithRetryTyped[int](ctx, "Reserve", n, duroxide.NewRetryPolicy(5))
		var qe *quotaError
		if errors.As(err, &qe) {
			return fmt.Sprintf("over quota (limit %d)", qe.Limit), nil
		}
		return "reserved", err
	}))
	rt, done := exampleRuntime(reg)
	defer done()

	ctx := context.Background()
	client := rt.Client()
	_ = client.StartOrchestration(ctx, "reserve-1", "Reserve", 20)
	status, _ := client.WaitForCompletion(ctx, "reserve-1")
	var out string
	_ = status.Decode(&out)
	fmt.Println(out)
	// Output: over quota (limit 10)
}

type quotaError struct {
	Limit int `json:"limit"`
}

func (e *quotaError) Error() string { return fmt.Sprintf("quota of %d exceeded", e.Limit) }

// Delays of the built-in backoff strategies.
func ExampleRetryPolicy_DelayForAttempt() {
	p := duroxide.NewRetryPolicy(5).WithBackoff(duroxide.Linear{Base: 2 * time.Second, Max: 10 * time.Second})
	for k := 1; k <= 5; k++ {
		fmt.Print(p.DelayForAttempt(k), " ")
	}
	fmt.Println()
	// Output: 2s 4s 6s 8s 10s
}

// Start an id again: ReuseFail refuses while the instance exists, and
// ReuseRestartEnded replaces it once it has ended.
func ExampleOnExisting() {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Echo", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		return in, nil
	}))
	rt, done := exampleRuntime(reg)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := rt.Client()
	result := func() string {
		st, err := client.WaitForCompletion(ctx, "echo")
		if err != nil {
			panic(err)
		}
		var out string
		_ = st.Decode(&out)
		return out
	}

	_ = client.StartOrchestration(ctx, "echo", "Echo", "first")
	fmt.Println(result())
	err := client.StartOrchestration(ctx, "echo", "Echo", "again", duroxide.OnExisting(duroxide.ReuseFail))
	fmt.Println(errors.Is(err, duroxide.ErrInstanceExists))
	_ = client.StartOrchestration(ctx, "echo", "Echo", "second", duroxide.OnExisting(duroxide.ReuseRestartEnded))
	fmt.Println(result())
	// Output:
	// first
	// true
	// second
}
