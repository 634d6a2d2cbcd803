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
	b.ReportMetric(float64(total.Nanoseconds())/float64(workflows*acts*b.N), "ns/step")
}

// BenchmarkChain runs one orchestration of 2,000 sequential no-op
// activities, as bench/'s long workload does; ns/step is the time per
// activity.
func BenchmarkChain(b *testing.B) { benchShape(b, 1, 2000, false) }
