package historyview

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/duroxidetest"
)

// TestStepsUseRecordedDetail: a history is read from what its history records: attempt numbers out
// of the policy's maximum, attempt timeouts, the total timeout, and a user
// timer that follows a failed attempt is not taken for a backoff.
func TestStepsUseRecordedDetail(t *testing.T) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterOrchestration(reg, "other", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		p := duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: 5 * time.Second}).WithTimeout(time.Minute).WithTotalTimeout(time.Hour)
		if _, err := duroxide.CallActivityWithRetryTyped[string](ctx, "step", in, p); err != nil {
			return "", err
		}
		_, err := duroxide.CallActivityWithRetryTyped[string](ctx, "once", in, duroxide.NewRetryPolicy(1).WithTimeout(time.Minute))
		if err != nil {
			if err := ctx.Sleep(10 * time.Second); err != nil {
				return "", err
			}
		}
		return "done", nil
	}))
	env := duroxidetest.New(reg)
	env.OnActivity("step").Fail(errors.New("flaky")).Return("ok")
	env.OnActivity("once").Fail(errors.New("no"))
	res, err := env.Run("other", "x")
	if err != nil {
		t.Fatal(err)
	}
	items := Steps(res.History, false)
	var kinds []string
	for _, it := range items {
		kinds = append(kinds, it.Kind)
	}
	if got := strings.Join(kinds, ","); got != "start,activity,activity,timer,completed" {
		t.Fatalf("items: %s", got)
	}
	step := items[1]
	if len(step.Attempts) != 2 || step.Attempts[0].Label() != "attempt 1 of 3" || step.Attempts[1].Label() != "attempt 2 of 3" ||
		step.Total == nil || step.Attempts[0].Timeout == nil || step.Attempts[0].Backoff == nil || step.Attempts[0].Backoff.Delay != 5*time.Second {
		t.Fatalf("step: %+v attempts %+v %+v", step, step.Attempts[0], step.Attempts[1])
	}
	if step.Policy == "" || step.Attempts[0].Timeout.Delay != time.Minute {
		t.Fatalf("step policy %q, attempt timeout %+v", step.Policy, step.Attempts[0].Timeout)
	}
	if once := items[2]; len(once.Attempts) != 1 || once.Attempts[0].Backoff != nil || once.Status != "failed" {
		t.Fatalf("once: %+v", once)
	}
	if items[3].Title != "Timer 10 s" {
		t.Fatalf("user timer: %+v", items[3])
	}
}
