// Package telemetry exports Toygres' metrics, logs and traces over OTLP/HTTP
// (protobuf) when an OpenTelemetry endpoint is configured, for a stack such
// as an OpenTelemetry Collector in front of Prometheus and Loki, or Grafana
// Alloy / Loki 3's native OTLP intake.
//
// Nothing is exported, and no goroutine is started, unless an endpoint is
// set: --otlp-endpoint (Config.Endpoint) or the standard environment
// variables OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
// and OTEL_EXPORTER_OTLP_LOGS_ENDPOINT. OTEL_SDK_DISABLED=true turns export
// off whatever else is set.
//
// Metrics: the OpenTelemetry Prometheus bridge reads the server's own
// Prometheus registry (the one /metrics serves) at every export, so the
// OTLP stream carries exactly the series Prometheus scrapes, under the same
// names and labels (duroxide_activity_retries_total{activity_name,status},
// …); histograms stay explicit-bucket histograms.
//
// Logs: an otelslog handler is teed with the server's JSON handler, so every
// record written to <data dir>/server.log is also exported, with its
// attributes (instance_id, activity_name, attempt, …) as OTLP log
// attributes. The resource carries service.name="toygres", which Loki's
// OTLP intake turns into the stream label service_name — the label the
// founding document's query {service_name="toygres"} |= "retry" selects on.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/bridges/otelslog"
	promb "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
)

// Environment variables read here (the exporters read the rest of the
// standard OTEL_EXPORTER_OTLP_* set themselves: headers, timeouts,
// compression, TLS).
const (
	EnvEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvMetricsEndpoint = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	EnvLogsEndpoint    = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
	EnvProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvSDKDisabled     = "OTEL_SDK_DISABLED"
)

// DefaultMetricInterval is how often metrics are exported when neither
// Config.MetricInterval nor OTEL_METRIC_EXPORT_INTERVAL says otherwise
// (the shipped Prometheus configuration scrapes as often).
const DefaultMetricInterval = 15 * time.Second

// Config configures Setup.
type Config struct {
	// Endpoint is the base URL of an OTLP/HTTP receiver, such as
	// http://127.0.0.1:4318 (a bare host:port means http://). Metrics go to
	// <Endpoint>/v1/metrics and logs to <Endpoint>/v1/logs. Empty: the
	// OTEL_EXPORTER_OTLP_*ENDPOINT environment variables, or no export.
	Endpoint string
	// ServiceName is the resource's service.name (default "toygres";
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it).
	ServiceName string
	// ServiceVersion is the resource's service.version.
	ServiceVersion string
	// Gatherer is the Prometheus registry whose metrics are exported; nil
	// exports no metrics.
	Gatherer prometheus.Gatherer
	// Logger is the server's logger; its records are exported too. nil
	// exports no logs. Export errors are reported on it (at most once a
	// minute), never on the exported stream.
	Logger *slog.Logger
	// MetricInterval is the metric export period (0: $OTEL_METRIC_EXPORT_INTERVAL
	// in milliseconds, or DefaultMetricInterval).
	MetricInterval time.Duration
	// LogInterval is the log batch export period (0: the SDK's, 1s).
	LogInterval time.Duration
}

// Setup starts OTLP export as configured. It returns the logger the server
// should use from then on (cfg.Logger itself when logs are not exported,
// otherwise a tee of it and the OTLP log bridge) and a shutdown function that
// flushes what is buffered and stops the exporters; call it once, after the
// last record worth exporting. With no endpoint configured it returns
// cfg.Logger and a no-op shutdown, and exports nothing.
func Setup(ctx context.Context, cfg Config) (logger *slog.Logger, shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	logger = cfg.Logger
	metricsOn, logsOn := enabled(cfg.Endpoint)
	metricsOn = metricsOn && cfg.Gatherer != nil
	logsOn = logsOn && cfg.Logger != nil
	tracesOn := tracesEnabled(cfg.Endpoint)
	if !metricsOn && !logsOn && !tracesOn {
		return logger, noop, nil
	}
	base := cfg.Logger
	if base == nil {
		base = slog.New(discardHandler{})
	}
	if p := strings.ToLower(os.Getenv(EnvProtocol)); p != "" && p != "http/protobuf" {
		base.Warn("only OTLP over HTTP/protobuf is supported; exporting with it anyway", "env", EnvProtocol, "value", p)
	}
	otel.SetErrorHandler(newThrottledErrors(base, time.Minute))

	if cfg.ServiceName == "" {
		cfg.ServiceName = "toygres"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil && res == nil {
		return logger, noop, fmt.Errorf("telemetry resource: %w", err)
	}
	baseURL := normalizeEndpoint(cfg.Endpoint)

	var shutdowns []func(context.Context) error
	stopAll := func(ctx context.Context) error {
		var errs []error
		for i := len(shutdowns) - 1; i >= 0; i-- {
			errs = append(errs, shutdowns[i](ctx))
		}
		return errors.Join(errs...)
	}

	if tracesOn {
		stop, err := startTraces(ctx, baseURL, res)
		if err != nil {
			_ = stopAll(ctx)
			return logger, noop, err
		}
		shutdowns = append(shutdowns, stop)
	}

	if metricsOn {
		var opts []otlpmetrichttp.Option
		if baseURL != "" {
			opts = append(opts, otlpmetrichttp.WithEndpointURL(baseURL+"/v1/metrics"))
		}
		exp, err := otlpmetrichttp.New(ctx, opts...)
		if err != nil {
			_ = stopAll(ctx)
			return logger, noop, fmt.Errorf("OTLP metric exporter: %w", err)
		}
		interval := cfg.MetricInterval
		if interval <= 0 {
			interval = DefaultMetricInterval
			if ms, err := strconv.Atoi(os.Getenv("OTEL_METRIC_EXPORT_INTERVAL")); err == nil && ms > 0 {
				interval = time.Duration(ms) * time.Millisecond
			}
		}
		reader := sdkmetric.NewPeriodicReader(exp,
			sdkmetric.WithInterval(interval),
			sdkmetric.WithProducer(promb.NewMetricProducer(promb.WithGatherer(cfg.Gatherer))))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res))
		shutdowns = append(shutdowns, mp.Shutdown)
	}

	if logsOn {
		var opts []otlploghttp.Option
		if baseURL != "" {
			opts = append(opts, otlploghttp.WithEndpointURL(baseURL+"/v1/logs"))
		}
		exp, err := otlploghttp.New(ctx, opts...)
		if err != nil {
			_ = stopAll(ctx)
			return logger, noop, fmt.Errorf("OTLP log exporter: %w", err)
		}
		var bopts []sdklog.BatchProcessorOption
		if cfg.LogInterval > 0 {
			bopts = append(bopts, sdklog.WithExportInterval(cfg.LogInterval))
		}
		lp := sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(sdklog.NewBatchProcessor(exp, bopts...)))
		shutdowns = append(shutdowns, lp.Shutdown)
		bridge := otelslog.NewHandler("github.com/toygres/toygres", otelslog.WithLoggerProvider(lp), otelslog.WithVersion(cfg.ServiceVersion))
		logger = slog.New(Tee(cfg.Logger.Handler(), bridge))
	}

	where := cfg.Endpoint
	if where == "" {
		where = "(from " + EnvEndpoint + ")"
	}
	base.Info("OTLP export enabled", "endpoint", where, "metrics", metricsOn, "logs", logsOn, "traces", tracesOn)
	var once sync.Once
	var serr error
	return logger, func(ctx context.Context) error {
		once.Do(func() { serr = stopAll(ctx) })
		return serr
	}, nil
}

// enabled reports which signals have an endpoint.
func enabled(endpoint string) (metrics, logs bool) {
	if v, _ := strconv.ParseBool(os.Getenv(EnvSDKDisabled)); v {
		return false, false
	}
	if strings.TrimSpace(endpoint) != "" || os.Getenv(EnvEndpoint) != "" {
		return true, true
	}
	return os.Getenv(EnvMetricsEndpoint) != "", os.Getenv(EnvLogsEndpoint) != ""
}

// normalizeEndpoint turns "host:port" into "http://host:port" and drops a
// trailing slash ("" stays "": the exporters then read the environment).
func normalizeEndpoint(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return strings.TrimRight(s, "/")
}

// Tee returns a handler that writes every record to primary and, when it
// accepts the record's level, to secondary. The primary handler decides
// which levels are enabled and its error is the one returned; the
// secondary's errors are dropped (an export problem never stops logging to
// the file).
func Tee(primary, secondary slog.Handler) slog.Handler {
	return teeHandler{primary: primary, secondary: secondary}
}

type teeHandler struct{ primary, secondary slog.Handler }

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.primary.Enabled(ctx, l)
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.primary.Handle(ctx, r.Clone())
	if h.secondary.Enabled(ctx, r.Level) {
		_ = h.secondary.Handle(ctx, r)
	}
	return err
}

func (h teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return teeHandler{primary: h.primary.WithAttrs(attrs), secondary: h.secondary.WithAttrs(attrs)}
}

func (h teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{primary: h.primary.WithGroup(name), secondary: h.secondary.WithGroup(name)}
}

// throttledErrors reports OpenTelemetry errors (failed exports) on the
// server's own logger — not through the tee, which would export the report
// of a failed export — at most once per period, with the number dropped.
type throttledErrors struct {
	log    *slog.Logger
	period time.Duration

	mu      sync.Mutex
	last    time.Time
	dropped int
}

func newThrottledErrors(log *slog.Logger, period time.Duration) *throttledErrors {
	return &throttledErrors{log: log, period: period}
}

func (t *throttledErrors) Handle(err error) {
	t.mu.Lock()
	if !t.last.IsZero() && time.Since(t.last) < t.period {
		t.dropped++
		t.mu.Unlock()
		return
	}
	dropped := t.dropped
	t.last, t.dropped = time.Now(), 0
	t.mu.Unlock()
	t.log.Warn("OTLP export failed", "error", err.Error(), "suppressed_since_last", dropped)
}

type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (d discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discardHandler) WithGroup(string) slog.Handler           { return d }
