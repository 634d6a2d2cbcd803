package duroxidetest_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
)

// greet calls an activity under a retry policy, then waits up to an hour
// for an approval event.
func greet(ctx *duroxide.OrchestrationContext, name string) (string, error) {
	p := duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: time.Minute})
	msg, err := duroxide.CallActivityWithRetryTyped[string](ctx, "Greet", name, p)
	if err != nil {
		return "", err
	}
	approval := ctx.WaitForEvent("Approved")
	if ctx.Select(approval, ctx.CreateTimer(time.Hour)) == 1 {
		return "", errors.New("not approved in time")
	}
	return msg + " (approved)", nil
}

func Example() {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Greeting", greet))

	env := duroxidetest.New(reg)
	// The activity fails twice, then succeeds.
	env.OnActivity("Greet").Fail(errors.New("flaky")).Times(2).Return("hello, ada")
	env.RaiseEventAt(10*time.Minute, "Approved", nil)

	res, err := env.Run("Greeting", "ada")
	if err != nil {
		fmt.Println("test problem:", err)
		return
	}
	var out string
	_ = res.Decode(&out)
	fmt.Println(out)
	fmt.Println(env.CallNames())
	fmt.Println("virtual time:", res.Elapsed)
	// Output:
	// hello, ada (approved)
	// [Greet#1 Greet#2 Greet#3]
	// virtual time: 10m0s
}

func ExampleEnv_Run_timeout() {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Greeting", greet))

	env := duroxidetest.New(reg)
	env.OnActivity("Greet").Return("hello, bob")
	// No approval: the one-hour timer wins, instantly.
	res, err := env.Run("Greeting", "bob")
	if err != nil {
		fmt.Println("test problem:", err)
		return
	}
	fmt.Println(res.Status, res.Elapsed)
	fmt.Println(res.Err)
	// Output:
	// Failed 1h0m0s
	// orchestration test-instance failed: not approved in time
}

func ExampleReplay() {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Greeting", greet))
	env := duroxidetest.New(reg)
	env.OnActivity("Greet").Return("hello")
	env.RaiseEventAt(time.Minute, "Approved", nil)
	res, _ := env.Run("Greeting", "ada")

	// The same name, changed code: the approval wait was removed.
	changed := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(changed, "Greeting", func(ctx *duroxide.OrchestrationContext, name string) (string, error) {
		return duroxide.CallActivityWithRetryTyped[string](ctx, "Greet", name, duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: time.Minute}))
	}))
	fmt.Println(duroxidetest.Replay(reg, "test-instance", res.History))
	fmt.Println(duroxidetest.Replay(changed, "test-instance", res.History))
	// Output:
	// <nil>
	// instance test-instance: nondeterministic: history has a wait for event "Approved" at event 4, but the code had already returned
}
