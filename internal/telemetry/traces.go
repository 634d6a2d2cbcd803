package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// EnvTracesEndpoint is the standard variable for a traces-only endpoint.
const EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"

// Traces: with an endpoint, Setup also exports spans to <Endpoint>/v1/traces
// — the API request (HTTPMiddleware), and duroxide's orchestration, turn and
// activity-attempt spans (TracerProvider, passed to duroxide.Options) — and
// installs the provider and the W3C trace-context propagator as the
// OpenTelemetry globals.

var (
	tracingMu sync.Mutex
	tracing   trace.TracerProvider // nil: traces are not exported
)

// TracerProvider is the provider Setup started for span export, or nil
// when traces are not exported (duroxide then traces nothing at all).
func TracerProvider() trace.TracerProvider {
	tracingMu.Lock()
	defer tracingMu.Unlock()
	return tracing
}

func setTracerProvider(tp trace.TracerProvider) {
	tracingMu.Lock()
	tracing = tp
	tracingMu.Unlock()
}

// tracesEnabled reports whether spans have an endpoint.
func tracesEnabled(endpoint string) bool {
	if v, _ := strconv.ParseBool(os.Getenv(EnvSDKDisabled)); v {
		return false
	}
	return strings.TrimSpace(endpoint) != "" || os.Getenv(EnvEndpoint) != "" || os.Getenv(EnvTracesEndpoint) != ""
}

// startTraces starts the span exporter and provider; the returned function
// flushes and stops them (and uninstalls the provider).
func startTraces(ctx context.Context, baseURL string, res *resource.Resource) (func(context.Context) error, error) {
	var opts []otlptracehttp.Option
	if baseURL != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(baseURL+"/v1/traces"))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	setTracerProvider(tp)
	return func(ctx context.Context) error {
		setTracerProvider(nil)
		return tp.Shutdown(ctx)
	}, nil
}

// HTTPMiddleware makes every request through h a server span ("<METHOD>
// <route>") continuing an incoming W3C traceparent, with the span in the
// request's context, so handlers pass it on (to StartOrchestration, log
// calls with ctx). Scrapes and probes (GET /metrics, /health), which come
// every few seconds and say nothing about work, are not traced. Without
// trace export it returns h itself.
func HTTPMiddleware(h http.Handler) http.Handler {
	tp := TracerProvider()
	if tp == nil {
		return h
	}
	return otelhttp.NewHandler(h, "toygres-api",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithFilter(func(r *http.Request) bool { return r.URL.Path != "/metrics" && r.URL.Path != "/health" }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if r.Pattern != "" {
				return r.Pattern
			}
			return r.Method + " " + r.URL.Path
		}))
}
