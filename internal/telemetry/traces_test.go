package telemetry

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

func (r *receiver) spans() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, rs := range r.traces {
		for _, ss := range rs.GetScopeSpans() {
			out = append(out, ss.GetSpans()...)
		}
	}
	return out
}

// TestTelemetryExportsTraces: with an endpoint, Setup starts a tracer
// provider (TracerProvider) whose spans reach <endpoint>/v1/traces; the
// HTTP middleware makes a request a server span named by its route,
// continuing an incoming traceparent, with the span in the handler's ctx.
func TestTelemetryExportsTraces(t *testing.T) {
	clearOTelEnv(t)
	if TracerProvider() != nil {
		t.Fatal("a tracer provider before Setup")
	}
	if h := http.NotFoundHandler(); HTTPMiddleware(h) == nil {
		t.Fatal("nil middleware")
	}
	rcv := newReceiver(t, 0)
	log, _, reg, _, _ := serverLike()
	_, shutdown, err := Setup(context.Background(), Config{Endpoint: rcv.srv.URL, Gatherer: reg, Logger: log, MetricInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if TracerProvider() == nil {
		t.Fatal("no tracer provider with an endpoint")
	}
	var inHandler trace.SpanContext
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/instances/{name}", func(w http.ResponseWriter, r *http.Request) {
		inHandler = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if trace.SpanContextFromContext(r.Context()).IsValid() {
			t.Error("a /metrics scrape is traced")
		}
	})
	srv := httptest.NewServer(HTTPMiddleware(mux))
	defer srv.Close()
	if resp, err := http.Get(srv.URL + "/metrics"); err == nil {
		resp.Body.Close()
	}
	const parentTrace, parentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/instances/pg1", nil)
	req.Header.Set("traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !inHandler.IsValid() || inHandler.TraceID().String() != parentTrace {
		t.Errorf("handler's span context %v, want one in the incoming trace %s", inHandler, parentTrace)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if TracerProvider() != nil {
		t.Error("the tracer provider outlived shutdown")
	}
	spans := rcv.spans()
	if len(spans) != 1 {
		t.Fatalf("%d spans exported, want 1", len(spans))
	}
	s := spans[0]
	if s.GetName() != "POST /api/instances/{name}" || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("span %q kind %v, want the server span POST /api/instances/{name} (the route, not the path)", s.GetName(), s.GetKind())
	}
	if hex.EncodeToString(s.GetTraceId()) != parentTrace || hex.EncodeToString(s.GetParentSpanId()) != parentSpan {
		t.Errorf("span in trace %x under %x, want %s under %s", s.GetTraceId(), s.GetParentSpanId(), parentTrace, parentSpan)
	}
	if hex.EncodeToString(s.GetSpanId()) != inHandler.SpanID().String() {
		t.Errorf("exported span %x is not the handler's %s", s.GetSpanId(), inHandler.SpanID())
	}
	if len(rcv.bad) > 0 {
		t.Errorf("the receiver rejected requests: %v", rcv.bad)
	}
}
