package duroxide

// Tracing: OpenTelemetry spans for orchestrations, turns and activity
// attempts, through the OpenTelemetry API only (Options.TracerProvider; the
// application chooses the SDK and exporter). With no provider every hook
// below is a nil check.
//
// The trace model, which survives restarts and moves between processes:
//
//   - A client's StartOrchestration records the W3C traceparent of the span
//     in its ctx on the start message (WorkItem.TraceContext).
//   - The turn that starts an execution opens the span "orchestration
//     <name>", a child of that traceparent (a new root without one), and
//     records the span's own traceparent on the OrchestrationStarted event
//     (Event.TraceContext). The span stays open in this process while the
//     execution's engine is cached here and ends when the execution ends;
//     if the engine is dropped first (eviction, shutdown, lost lock) it ends
//     then, with duroxide.orchestration.open=true. It cannot be held open
//     across processes.
//   - Every committed turn is a span "turn <name>" whose parent is the
//     orchestration span's context read from history, so turns in any
//     process and after any restart continue the same trace under the same
//     parent. Its events list what the turn recorded: activity schedules
//     (with retry attempt), failures, and retry backoff timers with their
//     delay ("backoff").
//   - Each activity attempt is a span "activity <name>", a child of the
//     orchestration span (carried on the ActivityExecute message), with the
//     retry attempt, max attempts, delivery attempt, outcome and error.
//     Its ctx is the activity function's ctx.
//   - Sub-orchestrations and detached starts carry the orchestration span's
//     traceparent to the child's start: the child's orchestration span is
//     its child. An execution after continue-as-new starts a new trace
//     whose orchestration span links to the previous execution's (so an
//     eternal orchestration is a chain of traces, not one without end).
//   - Histories written without a trace context (before tracing was
//     enabled) get a deterministic parent derived from instance and
//     execution id, so their turns and attempts still form one trace.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of duroxide's spans.
const tracerName = "github.com/toygres/toygres/duroxide"

func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}

// formatTraceparent renders a span context as a W3C traceparent header
// value ("" for an invalid one).
func formatTraceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	var b [55]byte
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// parseTraceparent reads a W3C traceparent into a remote span context; an
// empty or malformed value yields an invalid one.
func parseTraceparent(s string) trace.SpanContext {
	if len(s) != 55 || s[0:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return trace.SpanContext{}
	}
	var tid trace.TraceID
	var sid trace.SpanID
	var fl [1]byte
	if _, err := hex.Decode(tid[:], []byte(s[3:35])); err != nil {
		return trace.SpanContext{}
	}
	if _, err := hex.Decode(sid[:], []byte(s[36:52])); err != nil {
		return trace.SpanContext{}
	}
	if _, err := hex.Decode(fl[:], []byte(s[53:55])); err != nil {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(fl[0]), Remote: true})
}

// traceparentOf is the traceparent of the span in ctx, "" without one.
func traceparentOf(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return formatTraceparent(sc)
}

// derivedSpanContext is the deterministic stand-in parent of an execution
// whose history has no trace context.
func derivedSpanContext(instance string, executionID int64) trace.SpanContext {
	h := sha256.Sum256([]byte(instance + "\x00" + strconv.FormatInt(executionID, 10)))
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], h[:16])
	copy(sid[:], h[16:24])
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// Span attribute keys.
const (
	attrInstance        = attribute.Key("duroxide.instance_id")
	attrExecution       = attribute.Key("duroxide.execution_id")
	attrOrchestration   = attribute.Key("duroxide.orchestration")
	attrVersion         = attribute.Key("duroxide.version")
	attrStartedBy       = attribute.Key("duroxide.started_by")
	attrStatus          = attribute.Key("duroxide.status")
	attrOpen            = attribute.Key("duroxide.orchestration.open")
	attrTurnEvents      = attribute.Key("duroxide.turn.events")
	attrHistoryEvents   = attribute.Key("duroxide.history.events")
	attrActivity        = attribute.Key("duroxide.activity")
	attrActivityID      = attribute.Key("duroxide.activity_id")
	attrAttempt         = attribute.Key("duroxide.attempt")
	attrMaxAttempts     = attribute.Key("duroxide.max_attempts")
	attrDeliveryAttempt = attribute.Key("duroxide.delivery_attempt")
	attrOutcome         = attribute.Key("duroxide.outcome")
	attrError           = attribute.Key("duroxide.error")
	attrWorker          = attribute.Key("duroxide.worker_id")
	attrDelayMs         = attribute.Key("duroxide.delay_ms")
	attrFireAt          = attribute.Key("duroxide.fire_at_ms")
	attrPurpose         = attribute.Key("duroxide.purpose")
)

// startOrchSpan opens the orchestration span of a new execution, a child of
// parent (the starter's span context; invalid: a new root), and returns the
// traceparent to record on its OrchestrationStarted event.
//
// An execution after continue-as-new starts a new trace linked to the
// previous execution's span instead: an eternal orchestration would
// otherwise grow one trace without end.
func (e *engine) startOrchSpan(parent trace.SpanContext, name, version, by string) string {
	tr := e.rt.tracer
	ctx := context.Background()
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrInstance.String(e.instance), attrExecution.Int64(e.executionID),
			attrOrchestration.String(name), attrVersion.String(version), attrStartedBy.String(by))}
	switch {
	case !parent.IsValid():
	case by == "continueAsNew":
		opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: parent}))
	default:
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	_, span := tr.Start(ctx, "orchestration "+name, opts...)
	e.orchSpan = span
	e.orchSC = span.SpanContext()
	e.traceCtx = formatTraceparent(e.orchSC)
	return e.traceCtx
}

// adoptTrace sets the orchestration span context of an execution rebuilt
// from history (traceparent from its OrchestrationStarted event).
func (e *engine) adoptTrace(tp string) {
	sc := parseTraceparent(tp)
	if !sc.IsValid() {
		sc = derivedSpanContext(e.instance, e.executionID)
		tp = formatTraceparent(sc)
	}
	e.orchSC, e.traceCtx = sc, tp
}

// logContext is ctx carrying the execution's orchestration span context
// when tracing, so log handlers can add its trace and span ids; ctx itself
// otherwise (or when ctx already has a span).
func (e *engine) logContext(ctx context.Context) context.Context {
	if e.rt == nil || e.rt.tracer == nil || !e.orchSC.IsValid() || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, e.orchSC)
}

// endOrchSpan ends the live orchestration span, if this process holds one
// whose first turn committed (a span of a start that never committed is
// dropped unexported).
func (e *engine) endOrchSpan(st Status, open bool) {
	span := e.orchSpan
	if span == nil {
		return
	}
	e.orchSpan = nil
	if !e.orchCommitted {
		return
	}
	if open {
		span.SetAttributes(attrOpen.Bool(true))
	} else {
		span.SetAttributes(attrStatus.String(string(st)))
		if st == StatusFailed && e.failure != nil {
			span.SetStatus(codes.Error, e.failure.Display())
		}
	}
	span.End()
}

// turnSpan emits the span of a committed turn, begun at e.turnStart.
func (rt *Runtime) turnSpan(e *engine, c *TurnCommit) {
	e.orchCommitted = true
	if !e.orchSC.IsValid() {
		e.adoptTrace(e.traceCtx)
	}
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), e.orchSC)
	if e.orchSpan != nil {
		ctx = trace.ContextWithSpan(context.Background(), e.orchSpan)
	}
	start := e.turnStart
	if start.IsZero() {
		start = time.Now()
	}
	_, span := rt.tracer.Start(ctx, "turn "+e.name, trace.WithTimestamp(start),
		trace.WithAttributes(attrInstance.String(e.instance), attrExecution.Int64(e.executionID),
			attrOrchestration.String(e.name), attrTurnEvents.Int(len(c.HistoryDelta)),
			attrHistoryEvents.Int64(e.nextID-1), attrStatus.String(string(c.Status)), attrWorker.String(rt.opts.WorkerID)))
	for i := range c.HistoryDelta {
		ev := &c.HistoryDelta[i]
		ts := trace.WithTimestamp(time.UnixMilli(ev.TimestampMs))
		switch ev.Kind {
		case EventActivityScheduled:
			span.AddEvent("activity scheduled", ts, trace.WithAttributes(attrActivity.String(ev.Name),
				attrActivityID.Int64(ev.EventID), attrAttempt.Int(max(ev.Attempt, 1)), attrMaxAttempts.Int(ev.MaxAttempts)))
		case EventActivityCompleted:
			span.AddEvent("activity completed", ts, trace.WithAttributes(attrActivityID.Int64(ev.SourceEventID)))
		case EventActivityFailed:
			span.AddEvent("activity failed", ts, trace.WithAttributes(attrActivityID.Int64(ev.SourceEventID),
				attrError.String(ev.Error.Display())))
		case EventTimerCreated:
			name := "timer created"
			if ev.Purpose == TimerBackoff {
				name = "backoff"
			}
			span.AddEvent(name, ts, trace.WithAttributes(attrPurpose.String(string(ev.Purpose)),
				attrAttempt.Int(ev.Attempt), attrMaxAttempts.Int(ev.MaxAttempts),
				attrDelayMs.Int64(ev.FireAtMs-ev.TimestampMs), attrFireAt.Int64(ev.FireAtMs)))
		case EventTimerFired:
			span.AddEvent("timer fired", ts, trace.WithAttributes(attrActivityID.Int64(ev.SourceEventID)))
		case EventOrchestrationFailed:
			span.SetStatus(codes.Error, ev.Error.Display())
		}
	}
	span.End()
	if c.Status.IsTerminal() {
		e.endOrchSpan(c.Status, false)
	}
}

// startActivitySpan opens the span of one activity attempt under the
// orchestration span carried on its message.
func (rt *Runtime) startActivitySpan(ctx context.Context, lease *WorkItemLease) (context.Context, trace.Span) {
	item := &lease.Item
	parent := parseTraceparent(item.TraceContext)
	if !parent.IsValid() {
		parent = derivedSpanContext(item.Instance, item.ExecutionID)
	}
	ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	return rt.tracer.Start(ctx, "activity "+item.Name, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrInstance.String(item.Instance), attrExecution.Int64(item.ExecutionID),
			attrOrchestration.String(item.OrchestrationName), attrActivity.String(item.Name),
			attrActivityID.Int64(item.ID), attrAttempt.Int(max(item.Attempt, 1)), attrMaxAttempts.Int(item.MaxAttempts),
			attrDeliveryAttempt.Int(lease.AttemptCount), attrWorker.String(rt.opts.WorkerID)))
}

// endActivitySpan records an attempt's outcome and ends its span.
func endActivitySpan(span trace.Span, outcome string, err error) {
	span.SetAttributes(attrOutcome.String(outcome))
	if err != nil {
		span.SetAttributes(attrError.String(err.Error()))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
