package duroxide_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/toygres/toygres/duroxide"
)

// flakyRegistry registers "Flow", which calls "Flaky" under a retry policy
// of 3 attempts with a fixed backoff; Flaky fails its first failures calls.
// failed receives a value after each failed call.
func flakyRegistry(t *testing.T, failures int32, backoff time.Duration, failed chan<- int32) *duroxide.Registry {
	t.Helper()
	var calls atomic.Int32
	reg := duroxide.NewRegistry()
	if err := duroxide.RegisterActivity(reg, "Flaky", func(ctx context.Context, in string) (string, error) {
		n := calls.Add(1)
		if n <= failures {
			if failed != nil {
				failed <- n
			}
			return "", errors.New("injected failure")
		}
		return "ok:" + in, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := duroxide.RegisterOrchestration(reg, "Flow", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		var out string
		err := ctx.CallActivityWithRetry("Flaky", in, duroxide.RetryPolicy{MaxAttempts: 3, Backoff: duroxide.Fixed{Delay: backoff}}).Await(&out)
		return out, err
	}); err != nil {
		t.Fatal(err)
	}
	return reg
}

func spanAttr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func spansNamed(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// backoffEvents returns the delay_ms of every "backoff" event of the turn spans.
func backoffEvents(spans []sdktrace.ReadOnlySpan) []int64 {
	var out []int64
	for _, s := range spansNamed(spans, "turn Flow") {
		for _, ev := range s.Events() {
			if ev.Name != "backoff" {
				continue
			}
			for _, kv := range ev.Attributes {
				if kv.Key == "duroxide.delay_ms" {
					out = append(out, kv.Value.AsInt64())
				}
			}
		}
	}
	return out
}

// TestTracingSpans checks the span tree of an orchestration whose activity
// fails twice under a retry policy: the caller's span → orchestration span
// → turn spans (with backoff events) and one span per attempt, started
// through the queue and through the local first turn, with the instance
// cache on and off.
func TestTracingSpans(t *testing.T) {
	for _, local := range []bool{false, true} {
		name := "queue"
		if local {
			name = "local"
		}
		t.Run(name, func(t *testing.T) {
			modes(t, func(t *testing.T, opts duroxide.Options) {
				exp := tracetest.NewInMemoryExporter()
				tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
				defer func() { _ = tp.Shutdown(context.Background()) }()
				opts.TracerProvider = tp
				e := newEnv(t, flakyRegistry(t, 2, 50*time.Millisecond, nil), opts)
				client := e.c
				if local {
					client = e.rt.Client()
				}
				ctx, root := tp.Tracer("test").Start(context.Background(), "request")
				if err := client.StartOrchestration(ctx, "tr-1", "Flow", "x"); err != nil {
					t.Fatal(err)
				}
				root.End()
				expectCompleted(t, e.wait("tr-1"), nil)
				e.stop() // ends nothing more for a finished execution, flushes the syncer

				spans := exp.GetSpans().Snapshots()
				rootSC := root.SpanContext()
				for _, s := range spans {
					if s.SpanContext().TraceID() != rootSC.TraceID() {
						t.Errorf("span %q is in trace %s, want the caller's %s", s.Name(), s.SpanContext().TraceID(), rootSC.TraceID())
					}
				}
				orch := spansNamed(spans, "orchestration Flow")
				if len(orch) != 1 {
					t.Fatalf("%d orchestration spans, want 1: %v", len(orch), spanNames(spans))
				}
				o := orch[0]
				if o.Parent().SpanID() != rootSC.SpanID() {
					t.Errorf("orchestration span's parent = %s, want the caller's span %s", o.Parent().SpanID(), rootSC.SpanID())
				}
				if opts.CacheSize >= 0 {
					// Cached between turns: the span covers the whole run.
					if v, _ := spanAttr(o, "duroxide.status"); v.AsString() != string(duroxide.StatusCompleted) {
						t.Errorf("orchestration span status attribute = %q, want Completed", v.AsString())
					}
				} else if v, _ := spanAttr(o, "duroxide.orchestration.open"); !v.AsBool() {
					// Not cached: the span ends with the first turn's engine.
					t.Errorf("orchestration span of an uncached execution lacks duroxide.orchestration.open=true")
				}
				h := e.history("tr-1")
				if want := "00-" + o.SpanContext().TraceID().String() + "-" + o.SpanContext().SpanID().String() + "-01"; h[0].TraceContext != want {
					t.Errorf("OrchestrationStarted.TraceContext = %q, want %q", h[0].TraceContext, want)
				}
				turns := spansNamed(spans, "turn Flow")
				if len(turns) < 2 {
					// The failures, 50 ms backoffs and retries commit as one
					// turn (see hold.go).
					t.Errorf("%d turn spans, want at least 2 (start, retries and completion)", len(turns))
				}
				for _, s := range turns {
					if s.Parent().SpanID() != o.SpanContext().SpanID() {
						t.Errorf("turn span's parent = %s, want the orchestration span", s.Parent().SpanID())
					}
				}
				acts := spansNamed(spans, "activity Flaky")
				if len(acts) != 3 {
					t.Fatalf("%d activity spans, want 3 (two failed attempts and a success): %v", len(acts), spanNames(spans))
				}
				outcomes := map[int64]string{}
				for _, s := range acts {
					if s.Parent().SpanID() != o.SpanContext().SpanID() {
						t.Errorf("activity span's parent = %s, want the orchestration span", s.Parent().SpanID())
					}
					a, _ := spanAttr(s, "duroxide.attempt")
					oc, _ := spanAttr(s, "duroxide.outcome")
					m, _ := spanAttr(s, "duroxide.max_attempts")
					if m.AsInt64() != 3 {
						t.Errorf("attempt %d: max_attempts = %d, want 3", a.AsInt64(), m.AsInt64())
					}
					outcomes[a.AsInt64()] = oc.AsString()
				}
				if outcomes[1] != "failure" || outcomes[2] != "failure" || outcomes[3] != "success" {
					t.Errorf("attempt outcomes = %v, want 1,2 failure and 3 success", outcomes)
				}
				if b := backoffEvents(spans); len(b) != 2 || b[0] != 50 || b[1] != 50 {
					t.Errorf("backoff events' delay_ms = %v, want [50 50]", b)
				}
			})
		})
	}
}

// TestTracingAcrossRestart stops the runtime during a backoff and starts a
// new one with a new tracer provider (another process): the turns and
// attempts after the restart continue the same trace under the
// orchestration span recorded in history.
func TestTracingAcrossRestart(t *testing.T) {
	exp1 := tracetest.NewInMemoryExporter()
	tp1 := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp1))
	failed := make(chan int32, 4)
	reg := flakyRegistry(t, 1, 2*time.Second, failed)
	e := newEnv(t, reg, duroxide.Options{TracerProvider: tp1})
	ctx, root := tp1.Tracer("test").Start(context.Background(), "request")
	if err := e.c.StartOrchestration(ctx, "tr-r", "Flow", "x"); err != nil {
		t.Fatal(err)
	}
	root.End()
	select {
	case <-failed:
	case <-time.After(30 * time.Second):
		t.Fatal("first attempt never failed")
	}
	e.waitFor("the backoff timer", func() bool {
		for _, ev := range e.history("tr-r") {
			if ev.Kind == duroxide.EventTimerCreated && ev.Purpose == duroxide.TimerBackoff {
				return true
			}
		}
		return false
	})
	e.stop()
	before := exp1.GetSpans().Snapshots() // before Shutdown, which empties the exporter
	_ = tp1.Shutdown(context.Background())
	orch := spansNamed(before, "orchestration Flow")
	if len(orch) != 1 {
		t.Fatalf("%d orchestration spans before the restart, want 1: %v", len(orch), spanNames(before))
	}
	if v, _ := spanAttr(orch[0], "duroxide.orchestration.open"); !v.AsBool() {
		t.Errorf("orchestration span ended by shutdown lacks duroxide.orchestration.open=true")
	}
	orchSC := orch[0].SpanContext()

	exp2 := tracetest.NewInMemoryExporter()
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp2))
	defer func() { _ = tp2.Shutdown(context.Background()) }()
	e.opts.TracerProvider = tp2
	e.restart(reg)
	expectCompleted(t, e.wait("tr-r"), nil)
	e.stop()
	after := exp2.GetSpans().Snapshots()
	if n := len(spansNamed(after, "orchestration Flow")); n != 0 {
		t.Errorf("%d orchestration spans after the restart, want none (the execution's span was opened before)", n)
	}
	turns, acts := spansNamed(after, "turn Flow"), spansNamed(after, "activity Flaky")
	if len(turns) == 0 || len(acts) != 1 {
		t.Fatalf("after the restart: %d turn spans and %d activity spans, want some and 1: %v", len(turns), len(acts), spanNames(after))
	}
	for _, s := range append(turns, acts...) {
		if s.SpanContext().TraceID() != root.SpanContext().TraceID() || s.Parent().SpanID() != orchSC.SpanID() {
			t.Errorf("span %q after the restart: trace %s parent %s, want trace %s parent %s", s.Name(),
				s.SpanContext().TraceID(), s.Parent().SpanID(), root.SpanContext().TraceID(), orchSC.SpanID())
		}
	}
	if a, _ := spanAttr(acts[0], "duroxide.attempt"); a.AsInt64() != 2 {
		t.Errorf("attempt after the restart = %d, want 2", a.AsInt64())
	}
	if b := backoffEvents(before); len(b) != 1 || b[0] != 2000 {
		t.Errorf("backoff events before the restart: delay_ms %v, want [2000]", b)
	}
}

// TestTracingWithoutProvider: without a TracerProvider no span is made,
// but the starter's trace context is still recorded in history.
func TestTracingWithoutProvider(t *testing.T) {
	e := newEnv(t, flakyRegistry(t, 0, time.Millisecond, nil), duroxide.Options{})
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	if err := e.c.StartOrchestration(ctx, "tr-off", "Flow", "x"); err != nil {
		t.Fatal(err)
	}
	expectCompleted(t, e.wait("tr-off"), nil)
	// The caller's context is still recorded, so a later traced process
	// continues the caller's trace.
	want := "00-" + span.SpanContext().TraceID().String() + "-" + span.SpanContext().SpanID().String() + "-01"
	if got := e.history("tr-off")[0].TraceContext; got != want {
		t.Errorf("OrchestrationStarted.TraceContext = %q, want the caller's %q", got, want)
	}
	if err := e.c.StartOrchestration(context.Background(), "tr-none", "Flow", "x"); err != nil {
		t.Fatal(err)
	}
	expectCompleted(t, e.wait("tr-none"), nil)
	if got := e.history("tr-none")[0].TraceContext; got != "" {
		t.Errorf("OrchestrationStarted.TraceContext = %q without a span, want empty", got)
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name()
	}
	return out
}

// TestStoreAndHistoryMetrics: the runtime times its store calls by
// operation and records each execution's history length at every turn.
func TestStoreAndHistoryMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, flakyRegistry(t, 1, time.Millisecond, nil), duroxide.Options{Metrics: reg, DisableLocalDispatch: true})
	e.startOrch("m-1", "Flow", "x")
	expectCompleted(t, e.wait("m-1"), nil)
	for _, op := range []string{"fetch_orchestration_item", "ack_orchestration_item", "fetch_work_item", "ack_work_item"} {
		if n := counterValue(t, reg, "duroxide_store_operation_duration_seconds", map[string]string{"op": op}); n == 0 {
			t.Errorf("no %s call timed", op)
		}
		if n := counterValue(t, reg, "duroxide_store_operation_errors_total", map[string]string{"op": op}); n != 0 {
			t.Errorf("%v failed %s calls counted, want 0", n, op)
		}
	}
	// Turns: start, attempt 1 failed, backoff fired, attempt 2 completed.
	// The last turn's size is recorded once its commit returned, which may
	// be just after the wait above saw the instance complete.
	e.waitFor("the history size of every turn", func() bool {
		return counterValue(t, reg, "duroxide_orchestration_history_events", map[string]string{"orchestration_name": "Flow"}) >= 4
	})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var maxLen float64
	for _, mf := range mfs {
		if mf.GetName() == "duroxide_orchestration_history_events" {
			h := mf.GetMetric()[0].GetHistogram()
			maxLen = h.GetSampleSum()
		}
	}
	if want := float64(len(e.history("m-1"))); maxLen < want {
		t.Errorf("history size sum %v, want at least the final length %v", maxLen, want)
	}
}

// TestTracingLogs: the runtime's retry log and the orchestration's own
// logger (ctx.Logger) log in the execution's trace, so a handler that reads
// the span context from ctx (Toygres' JSON logs) tags them.
func TestTracingLogs(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	rec := &ctxRecorder{}
	reg := flakyRegistry(t, 1, time.Millisecond, nil)
	if err := duroxide.RegisterOrchestration(reg, "Logs", func(ctx *duroxide.OrchestrationContext, in string) (string, error) {
		ctx.Logger().Info("orchestration says hello")
		return in, nil
	}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, reg, duroxide.Options{TracerProvider: tp, Logger: slog.New(rec)})
	e.startOrch("lg-1", "Flow", "x")
	expectCompleted(t, e.wait("lg-1"), nil)
	e.startOrch("lg-2", "Logs", "x")
	expectCompleted(t, e.wait("lg-2"), nil)
	for _, msg := range []string{"activity attempt failed; will retry", "orchestration says hello"} {
		sc, ok := rec.find(msg)
		if !ok {
			t.Errorf("no %q record", msg)
			continue
		}
		if !sc.IsValid() {
			t.Errorf("%q logged without a span context", msg)
		}
	}
}

// ctxRecorder is a slog handler keeping each record's message and the
// span context of its ctx.
type ctxRecorder struct {
	mu   sync.Mutex
	recs map[string]trace.SpanContext
}

func (h *ctxRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *ctxRecorder) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.recs == nil {
		h.recs = map[string]trace.SpanContext{}
	}
	h.recs[r.Message] = trace.SpanContextFromContext(ctx)
	return nil
}
func (h *ctxRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *ctxRecorder) WithGroup(string) slog.Handler      { return h }
func (h *ctxRecorder) find(msg string) (trace.SpanContext, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sc, ok := h.recs[msg]
	return sc, ok
}

// TestTracingChildrenAndContinueAsNew: a sub-orchestration's span is a
// child of its parent's orchestration span (same trace); an execution after
// continue-as-new starts a new trace linked to the previous execution's span.
func TestTracingChildrenAndContinueAsNew(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	reg := duroxide.NewRegistry()
	if err := duroxide.RegisterOrchestration(reg, "Child", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		return n + 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := duroxide.RegisterOrchestration(reg, "Parent", func(ctx *duroxide.OrchestrationContext, n int) (int, error) {
		var out int
		if err := ctx.CallSubOrchestration("Child", n, duroxide.WithInstanceID(fmt.Sprintf("child-%d", n))).Await(&out); err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, ctx.ContinueAsNew(out)
		}
		return out, nil
	}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, reg, duroxide.Options{TracerProvider: tp})
	ctx, root := tp.Tracer("test").Start(context.Background(), "request")
	if err := e.c.StartOrchestration(ctx, "par", "Parent", 0); err != nil {
		t.Fatal(err)
	}
	root.End()
	expectCompleted(t, e.wait("par"), nil)
	e.stop()
	spans := exp.GetSpans().Snapshots()
	parents := spansNamed(spans, "orchestration Parent")
	children := spansNamed(spans, "orchestration Child")
	if len(parents) != 2 || len(children) != 2 {
		t.Fatalf("%d Parent and %d Child orchestration spans, want 2 each (two executions): %v", len(parents), len(children), spanNames(spans))
	}
	var first, second sdktrace.ReadOnlySpan
	for _, p := range parents {
		if ex, _ := spanAttr(p, "duroxide.execution_id"); ex.AsInt64() == 1 {
			first = p
		} else {
			second = p
		}
	}
	if first == nil || second == nil {
		t.Fatal("no spans of executions 1 and 2")
	}
	if first.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Errorf("execution 1's span is not a child of the caller's span")
	}
	if second.SpanContext().TraceID() == first.SpanContext().TraceID() || second.Parent().IsValid() {
		t.Errorf("execution 2's span continues trace %s (parent %s), want a new root", second.SpanContext().TraceID(), second.Parent().SpanID())
	}
	if l := second.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != first.SpanContext().SpanID() {
		t.Errorf("execution 2's span links %v, want execution 1's span", l)
	}
	for _, c := range children {
		var want sdktrace.ReadOnlySpan = first
		if c.SpanContext().TraceID() != first.SpanContext().TraceID() {
			want = second
		}
		if c.Parent().SpanID() != want.SpanContext().SpanID() || c.SpanContext().TraceID() != want.SpanContext().TraceID() {
			t.Errorf("child span %s (parent %s) is not under a Parent execution's span", c.SpanContext().SpanID(), c.Parent().SpanID())
		}
	}
}
