package duroxide_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// Register an activity with its default retry policy: plain calls retry
// under it, and the policy in force is recorded when a sequence starts.
func ExampleWithDefaultRetry() {
	calls := 0
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Flaky", func(ctx context.Context, _ struct{}) (string, error) {
		calls++
		if calls < 3 {
			return "", fmt.Errorf("call %d: connection refused", calls)
		}
		return "connected", nil
	}, duroxide.WithDefaultRetry(duroxide.NewRetryPolicy(5).
		WithBackoff(duroxide.Fixed{Delay: 10 * time.Millisecond}).WithName("flaky"))))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Connect", func(ctx *duroxide.OrchestrationContext, _ struct{}) (string, error) {
		return duroxide.CallActivityTyped[string](ctx, "Flaky", struct{}{}) // retried under "flaky"
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
	for _, ev := range history {
		if ev.Kind == duroxide.EventActivityScheduled && ev.RetryPolicy != nil {
			fmt.Printf("recorded: %s (%s)\n", ev.Policy, ev.RetryPolicy.Source)
		}
	}
	fmt.Println(out, "after", calls, "calls")
	// Output:
	// recorded: flaky: 5 attempts, fixed 10ms (default)
	// connected after 3 calls
}

// A circuit breaker in front of an activity: after two failures the
// circuit opens and the next attempt fails fast, without calling the
// function, with an error matching ErrCircuitOpen.
func ExampleWithCircuitBreaker() {
	calls := 0
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Deploy", func(ctx context.Context, target string) (string, error) {
		calls++
		return "", errors.New(target + " is unreachable")
	}, duroxide.WithCircuitBreaker(duroxide.CircuitBreakerConfig{
		MinCalls: 2, FailureRatio: 0.5, Window: time.Minute, CoolDown: time.Hour,
	})))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Rollout", func(ctx *duroxide.OrchestrationContext, target string) (string, error) {
		for i := 0; i < 3; i++ {
			_, err := duroxide.CallActivityTyped[string](ctx, "Deploy", target)
			if errors.Is(err, duroxide.ErrCircuitOpen) {
				return fmt.Sprintf("attempt %d failed fast: circuit open", i+1), nil
			}
		}
		return "never opened", nil
	}))
	rt, done := exampleRuntime(reg)
	defer done()

	ctx := context.Background()
	client := rt.Client()
	_ = client.StartOrchestration(ctx, "rollout-1", "Rollout", "db-7")
	status, _ := client.WaitForCompletion(ctx, "rollout-1")
	var out string
	_ = status.Decode(&out)
	fmt.Println(out, "after", calls, "calls;", rt.CircuitBreakers()[0].State)
	// Output: attempt 3 failed fast: circuit open after 2 calls; open
}

// Turn observed retries into advice on the policy.
func ExampleSuggest() {
	stats := duroxide.ActivityRetryStats{
		Activity:         "cms-update-instance",
		MaxAttempts:      5,
		Sequences:        200,
		Succeeded:        200,
		SuccessByAttempt: []int{0, 170, 30},
		Attempts:         230,
		Failures:         30,
	}
	for _, line := range duroxide.Suggest(stats) {
		fmt.Println(line)
	}
	// Output: cms-update-instance: 100 % of successful sequences succeed by attempt 2; attempts 3–5 never needed: consider MaxAttempts 3
}
