package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestWithTraceAddsIDs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(WithTrace(slog.NewJSONHandler(&buf, nil))).With("service_name", ServiceName)
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))

	log.InfoContext(ctx, "with span")
	log.Info("without span")
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %s", len(lines), buf.String())
	}
	var with, without map[string]any
	if err := json.Unmarshal(lines[0], &with); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(lines[1], &without); err != nil {
		t.Fatal(err)
	}
	if with["trace_id"] != tid.String() || with["span_id"] != sid.String() || with["service_name"] != ServiceName {
		t.Errorf("record with a span = %v, want trace_id %s span_id %s and service_name", with, tid, sid)
	}
	if _, ok := without["trace_id"]; ok {
		t.Errorf("record without a span has a trace_id: %v", without)
	}
}
