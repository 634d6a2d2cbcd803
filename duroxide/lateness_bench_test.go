package duroxide_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// BenchmarkBackoffLateness measures how late 100 ms fixed backoff timers
// fire on the SQLite store while 20, or 200, retry sequences run at once
// (their backoffs come due within a few milliseconds of each other). It reports
// the lateness of the TimerFired turn (timer_p50_ms, timer_p99_ms; the
// history's millisecond timestamps) and of the retried attempt's start
// (attempt_p50_ms, attempt_p99_ms; the worker hop included).
//
//	go test ./duroxide -run '^$' -bench BackoffLateness -benchtime 1x
func BenchmarkBackoffLateness(b *testing.B) {
	for _, n := range []int{20, 200} {
		b.Run(fmt.Sprintf("sequences=%d", n), func(b *testing.B) { benchLateness(b, n) })
	}
}

func benchLateness(b *testing.B, n int) {
	for i := 0; i < b.N; i++ {
		var mu sync.Mutex
		calls := map[string]int{}
		started := map[string]time.Time{}
		reg := duroxide.NewRegistry()
		duroxide.Must(duroxide.RegisterActivity(reg, "FailOnce", func(ctx context.Context, key string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			calls[key]++
			if calls[key] == 1 {
				return "", fmt.Errorf("first attempt fails")
			}
			started[key] = time.Now()
			return "ok", nil
		}))
		policy := duroxide.NewRetryPolicy(2).WithBackoff(duroxide.Fixed{Delay: 100 * time.Millisecond})
		duroxide.Must(duroxide.RegisterOrchestration(reg, "Backoff", func(ctx *duroxide.OrchestrationContext, key string) (string, error) {
			return duroxide.CallActivityWithRetryTyped[string](ctx, "FailOnce", key, policy)
		}))
		store, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "lateness.db"))
		if err != nil {
			b.Fatal(err)
		}
		rt, err := duroxide.Start(context.Background(), store, reg, duroxide.Options{Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		c := rt.Client()
		ctx := context.Background()
		for j := 0; j < n; j++ {
			id := fmt.Sprintf("late-%d", j)
			if err := c.StartOrchestration(ctx, id, "Backoff", id); err != nil {
				b.Fatal(err)
			}
		}
		var timerLate, attemptLate []float64
		for j := 0; j < n; j++ {
			id := fmt.Sprintf("late-%d", j)
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			st, err := c.WaitForCompletion(wctx, id)
			cancel()
			if err != nil || st.Status != duroxide.StatusCompleted {
				b.Fatalf("%s: %v %v", id, st, err)
			}
			h, _ := c.ReadHistory(ctx, id, 0)
			var fireAt int64
			for _, ev := range h {
				switch ev.Kind {
				case duroxide.EventTimerCreated:
					fireAt = ev.FireAtMs
				case duroxide.EventTimerFired:
					timerLate = append(timerLate, float64(ev.TimestampMs-fireAt))
				}
			}
			mu.Lock()
			attemptLate = append(attemptLate, float64(started[id].Sub(time.UnixMilli(fireAt)).Microseconds())/1000)
			mu.Unlock()
		}
		_ = rt.Shutdown(ctx)
		_ = store.Close()
		b.ReportMetric(percentile(timerLate, 50), "timer_p50_ms")
		b.ReportMetric(percentile(timerLate, 99), "timer_p99_ms")
		b.ReportMetric(percentile(attemptLate, 50), "attempt_p50_ms")
		b.ReportMetric(percentile(attemptLate, 99), "attempt_p99_ms")
	}
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	idx := int(float64(len(s)-1) * p / 100)
	return s[idx]
}
