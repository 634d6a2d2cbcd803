package duroxide_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// BenchmarkSeq runs 200 orchestrations of 3 sequential no-op activities on a
// SQLite file (synchronous=NORMAL) and reports workflows per second.
func BenchmarkSeq(b *testing.B) { benchShape(b, 200, 3, false) }

// BenchmarkFan runs 20 orchestrations fanning out 50 activities each.
func BenchmarkFan(b *testing.B) { benchShape(b, 20, 50, true) }

func benchShape(b *testing.B, workflows, acts int, parallel bool) {
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Noop", func(_ context.Context, i int) (int, error) { return i, nil }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Shape", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		if parallel {
			ts := make([]*duroxide.Task, n)
			for i := range ts {
				ts[i] = ctx.CallActivity("Noop", i)
			}
			return n, ctx.Join(ts...)
		}
		for i := 0; i < n; i++ {
			if err := ctx.CallActivity("Noop", i).Await(nil); err != nil {
				return 0, err
			}
		}
		return n, nil
	}))
	var total time.Duration
	for i := 0; i < b.N; i++ {
		store, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		rt, err := duroxide.Start(context.Background(), store, reg, duroxide.Options{Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		c := rt.Client()
		ctx := context.Background()
		begin := time.Now()
		for j := 0; j < workflows; j++ {
			if err := c.StartOrchestration(ctx, fmt.Sprintf("w-%d", j), "Shape", acts); err != nil {
				b.Fatal(err)
			}
		}
		for j := 0; j < workflows; j++ {
			st, err := c.WaitForCompletion(ctx, fmt.Sprintf("w-%d", j))
			if err != nil || st.Status != duroxide.StatusCompleted {
				b.Fatal(st, err)
			}
		}
		total += time.Since(begin)
		_ = rt.Shutdown(ctx)
		_ = store.Close()
	}
	b.ReportMetric(float64(workflows*b.N)/total.Seconds(), "workflows/s")
	b.ReportMetric(total.Seconds()/float64(b.N), "s/run")
}

// BenchmarkChain runs one orchestration of 2,000 sequential no-op
// activities on a SQLite file (synchronous=NORMAL), as bench/'s long
// workload does, and reports the time per step.
func BenchmarkChain(b *testing.B) {
	const steps = 2000
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Noop", func(_ context.Context, i int) (int, error) { return i, nil }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "Chain", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		sum := 0
		for i := 0; i < n; i++ {
			v, err := duroxide.CallActivityTyped[int](ctx, "Noop", i)
			if err != nil {
				return 0, err
			}
			sum += v
		}
		return sum, nil
	}))
	store, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	rt, err := duroxide.Start(context.Background(), store, reg, duroxide.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	c := rt.Client()
	ctx := context.Background()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("chain-%d", i)
		begin := time.Now()
		if err := c.StartOrchestration(ctx, id, "Chain", steps); err != nil {
			b.Fatal(err)
		}
		st, err := c.WaitForCompletion(ctx, id)
		if err != nil || st.Status != duroxide.StatusCompleted {
			b.Fatal(st, err)
		}
		total += time.Since(begin)
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(steps*b.N), "ns/step")
}
