package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// receiver is a tiny OTLP/HTTP (protobuf) receiver: it accepts POSTs to
// /v1/metrics and /v1/logs, decodes them with the OTLP protobuf types and
// keeps what it got.
type receiver struct {
	srv    *httptest.Server
	status int // answer with this status (0: 200)

	mu          sync.Mutex
	metricPosts int
	logPosts    int
	metrics     []*metricspb.ResourceMetrics
	logs        []*logspb.ResourceLogs
	traces      []*tracepb.ResourceSpans
	bad         []string
}

func newReceiver(t *testing.T, status int) *receiver {
	r := &receiver{status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/x-protobuf" {
		r.bad = append(r.bad, req.Method+" "+req.URL.Path+" "+req.Header.Get("Content-Type"))
		http.Error(w, "want a protobuf POST", http.StatusUnsupportedMediaType)
		return
	}
	var resp proto.Message
	switch req.URL.Path {
	case "/v1/metrics":
		var m colmetrics.ExportMetricsServiceRequest
		if err := proto.Unmarshal(b, &m); err != nil {
			r.bad = append(r.bad, "metrics: "+err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.metricPosts++
		r.metrics = append(r.metrics, m.GetResourceMetrics()...)
		resp = &colmetrics.ExportMetricsServiceResponse{}
	case "/v1/logs":
		var l collogs.ExportLogsServiceRequest
		if err := proto.Unmarshal(b, &l); err != nil {
			r.bad = append(r.bad, "logs: "+err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.logPosts++
		r.logs = append(r.logs, l.GetResourceLogs()...)
		resp = &collogs.ExportLogsServiceResponse{}
	case "/v1/traces":
		var tr coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &tr); err != nil {
			r.bad = append(r.bad, "traces: "+err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.traces = append(r.traces, tr.GetResourceSpans()...)
		resp = &coltrace.ExportTraceServiceResponse{}
	default:
		r.bad = append(r.bad, "path "+req.URL.Path)
		http.NotFound(w, req)
		return
	}
	if r.status != 0 {
		http.Error(w, "rejected by the test receiver", r.status)
		return
	}
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *receiver) counts() (metricPosts, logPosts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.metricPosts, r.logPosts
}

// sumValue returns the latest value of a monotonic sum data point named
// name whose attributes include attrs.
func (r *receiver) sumValue(name string, attrs map[string]string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := 0.0, false
	for _, rm := range r.metrics {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				if m.GetName() != name || m.GetSum() == nil {
					continue
				}
				for _, dp := range m.GetSum().GetDataPoints() {
					if hasAttrs(dp.GetAttributes(), attrs) {
						v, ok = dp.GetAsDouble(), true
					}
				}
			}
		}
	}
	return v, ok
}

// histogram returns the latest count of a histogram named name.
func (r *receiver) histogram(name string) (count uint64, bounds []float64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rm := range r.metrics {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				if m.GetName() == name && m.GetHistogram() != nil {
					for _, dp := range m.GetHistogram().GetDataPoints() {
						count, bounds, ok = dp.GetCount(), dp.GetExplicitBounds(), true
					}
				}
			}
		}
	}
	return count, bounds, ok
}

// logRecords returns every log record received with its resource.
func (r *receiver) logRecords() []exportedLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []exportedLog
	for _, rl := range r.logs {
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				out = append(out, exportedLog{resource: rl.GetResource(), rec: lr})
			}
		}
	}
	return out
}

type exportedLog struct {
	resource *resourcepb.Resource
	rec      *logspb.LogRecord
}

func (l exportedLog) attr(key string) *commonpb.AnyValue {
	for _, kv := range l.rec.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

func resourceAttr(res *resourcepb.Resource, key string) string {
	for _, kv := range res.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func hasAttrs(kvs []*commonpb.KeyValue, want map[string]string) bool {
	n := 0
	for _, kv := range kvs {
		if v, ok := want[kv.GetKey()]; ok && kv.GetValue().GetStringValue() == v {
			n++
		}
	}
	return n == len(want)
}

func waitFor(t *testing.T, what string, timeout time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clearOTelEnv makes the test independent of the machine's OTEL_* settings.
func clearOTelEnv(t *testing.T) {
	for _, k := range []string{EnvEndpoint, EnvMetricsEndpoint, EnvLogsEndpoint, EnvTracesEndpoint, EnvProtocol, EnvSDKDisabled,
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_EXPORTER_OTLP_HEADERS",
		"OTEL_EXPORTER_OTLP_COMPRESSION"} {
		t.Setenv(k, "")
	}
}

// syncBuffer is a bytes.Buffer safe for the exporters' goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serverLike builds what the server has: a JSON logger with service_name
// (info level) and a registry with duroxide-style series.
func serverLike() (*slog.Logger, *syncBuffer, *prometheus.Registry, *prometheus.CounterVec, *prometheus.HistogramVec) {
	buf := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("service_name", "toygres")
	reg := prometheus.NewRegistry()
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "duroxide_activity_retries_total", Help: "retries"},
		[]string{"activity_name", "status"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duroxide_activity_duration_seconds", Help: "durations",
		Buckets: []float64{0.01, 0.1, 1}}, []string{"activity_name", "outcome"})
	reg.MustRegister(retries, dur)
	return log, buf, reg, retries, dur
}

func TestTelemetryExportsMetricsAndLogs(t *testing.T) {
	clearOTelEnv(t)
	rcv := newReceiver(t, 0)
	log, buf, reg, retries, dur := serverLike()
	retries.WithLabelValues("test-connection", "failure").Inc()
	retries.WithLabelValues("test-connection", "success").Inc()
	dur.WithLabelValues("test-connection", "success").Observe(0.05)

	ctx := context.Background()
	logger, shutdown, err := Setup(ctx, Config{Endpoint: rcv.srv.URL, ServiceVersion: "1.2.3", Gatherer: reg, Logger: log,
		MetricInterval: 100 * time.Millisecond, LogInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)
	if logger == log {
		t.Fatal("Setup with an endpoint returned the logger unchanged: logs would not be exported")
	}
	logger.Warn("activity attempt failed; will retry", "instance_id", "create-demo-1a2b3c4d", "activity_name", "test-connection",
		"attempt", 1, "max_attempts", 5, "retry_delay", "2s", "error", "injected test-connection failure")
	logger.Debug("below the server's level: neither written nor exported")

	waitFor(t, "the retry counters over OTLP", 10*time.Second, func() bool {
		f, ok1 := rcv.sumValue("duroxide_activity_retries_total", map[string]string{"activity_name": "test-connection", "status": "failure"})
		s, ok2 := rcv.sumValue("duroxide_activity_retries_total", map[string]string{"activity_name": "test-connection", "status": "success"})
		return ok1 && ok2 && f == 1 && s == 1
	})
	// A later increment shows up in a later export (the bridge reads the
	// registry at every collection).
	retries.WithLabelValues("test-connection", "failure").Inc()
	waitFor(t, "the incremented counter over OTLP", 10*time.Second, func() bool {
		v, _ := rcv.sumValue("duroxide_activity_retries_total", map[string]string{"activity_name": "test-connection", "status": "failure"})
		return v == 2
	})
	if n, bounds, ok := rcv.histogram("duroxide_activity_duration_seconds"); !ok || n != 1 || len(bounds) != 3 {
		t.Errorf("activity duration histogram over OTLP: ok=%v count=%d bounds=%v", ok, n, bounds)
	}

	var retryLog exportedLog
	waitFor(t, "the retry log record over OTLP", 10*time.Second, func() bool {
		for _, l := range rcv.logRecords() {
			if strings.Contains(l.rec.GetBody().GetStringValue(), "retry") {
				retryLog = l
				return true
			}
		}
		return false
	})
	if got := resourceAttr(retryLog.resource, "service.name"); got != "toygres" {
		t.Errorf("resource service.name = %q, want toygres", got)
	}
	if got := resourceAttr(retryLog.resource, "service.version"); got != "1.2.3" {
		t.Errorf("resource service.version = %q", got)
	}
	if got := retryLog.rec.GetSeverityText(); got != "WARN" {
		t.Errorf("severity text %q, want WARN", got)
	}
	if v := retryLog.attr("instance_id"); v.GetStringValue() != "create-demo-1a2b3c4d" {
		t.Errorf("instance_id attribute %v", v)
	}
	if v := retryLog.attr("activity_name"); v.GetStringValue() != "test-connection" {
		t.Errorf("activity_name attribute %v", v)
	}
	if v := retryLog.attr("attempt"); v.GetIntValue() != 1 {
		t.Errorf("attempt attribute %v", v)
	}
	if v := retryLog.attr("max_attempts"); v.GetIntValue() != 5 {
		t.Errorf("max_attempts attribute %v", v)
	}
	for _, l := range rcv.logRecords() {
		if strings.Contains(l.rec.GetBody().GetStringValue(), "below the server's level") {
			t.Errorf("a debug record was exported although the server logs at info")
		}
	}

	// The tee still writes the JSON file exactly as before.
	var rec map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == "activity attempt failed; will retry" {
			rec = r
		}
	}
	if rec == nil || rec["service_name"] != "toygres" || rec["instance_id"] != "create-demo-1a2b3c4d" || rec["attempt"] != 1.0 {
		t.Errorf("JSON log lacks the retry record: %v\n%s", rec, buf.String())
	}
	if strings.Contains(buf.String(), "below the server's level") {
		t.Errorf("the debug record reached the JSON log")
	}
	if err := shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.bad) > 0 {
		t.Errorf("the receiver rejected requests: %v", rcv.bad)
	}
}

func TestTelemetryShutdownFlushes(t *testing.T) {
	clearOTelEnv(t)
	rcv := newReceiver(t, 0)
	log, _, reg, retries, _ := serverLike()
	retries.WithLabelValues("deploy-postgres", "failure").Inc()
	ctx := context.Background()
	// Periods far beyond the test: only the shutdown flush can deliver.
	logger, shutdown, err := Setup(ctx, Config{Endpoint: strings.TrimPrefix(rcv.srv.URL, "http://") + "/", Gatherer: reg, Logger: log,
		MetricInterval: time.Hour, LogInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("toygres server stopping", "reason", "signal")
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if v, ok := rcv.sumValue("duroxide_activity_retries_total", map[string]string{"activity_name": "deploy-postgres"}); !ok || v != 1 {
		t.Errorf("metrics not flushed at shutdown (ok=%v v=%v)", ok, v)
	}
	found := false
	for _, l := range rcv.logRecords() {
		found = found || l.rec.GetBody().GetStringValue() == "toygres server stopping"
	}
	if !found {
		t.Errorf("log record not flushed at shutdown")
	}
	if err := shutdown(sctx); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
}

func TestTelemetryDisabledWithoutEndpoint(t *testing.T) {
	clearOTelEnv(t)
	log, buf, reg, _, _ := serverLike()
	logger, shutdown, err := Setup(context.Background(), Config{Gatherer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if logger != log {
		t.Errorf("without an endpoint Setup must return the server's logger unchanged")
	}
	if err := shutdown(context.Background()); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if strings.Contains(buf.String(), "OTLP") {
		t.Errorf("disabled telemetry logged: %s", buf.String())
	}

	// OTEL_SDK_DISABLED wins over an endpoint.
	rcv := newReceiver(t, 0)
	t.Setenv(EnvSDKDisabled, "true")
	logger, shutdown, err = Setup(context.Background(), Config{Endpoint: rcv.srv.URL, Gatherer: reg, Logger: log, MetricInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("not exported")
	_ = shutdown(context.Background())
	if m, l := rcv.counts(); logger != log || m+l != 0 {
		t.Errorf("OTEL_SDK_DISABLED=true: %d metric and %d log posts", m, l)
	}
}

func TestTelemetryEndpointFromEnvironment(t *testing.T) {
	clearOTelEnv(t)
	rcv := newReceiver(t, 0)
	t.Setenv(EnvEndpoint, rcv.srv.URL)
	log, _, reg, retries, _ := serverLike()
	retries.WithLabelValues("test-connection", "success").Inc()
	logger, shutdown, err := Setup(context.Background(), Config{Gatherer: reg, Logger: log,
		MetricInterval: 50 * time.Millisecond, LogInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	logger.Info("hello from the environment's endpoint")
	waitFor(t, "a metric post and a log post", 10*time.Second, func() bool {
		m, l := rcv.counts()
		return m > 0 && l > 0
	})

	// Only the metrics endpoint: logs stay local.
	clearOTelEnv(t)
	rcv2 := newReceiver(t, 0)
	t.Setenv(EnvMetricsEndpoint, rcv2.srv.URL+"/v1/metrics")
	logger2, shutdown2, err := Setup(context.Background(), Config{Gatherer: reg, Logger: log, MetricInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if logger2 != log {
		t.Errorf("with only a metrics endpoint the logger must stay the server's")
	}
	waitFor(t, "a metric post to the metrics endpoint", 10*time.Second, func() bool {
		m, _ := rcv2.counts()
		return m > 0
	})
	_ = shutdown2(context.Background())
	if _, l := rcv2.counts(); l != 0 {
		t.Errorf("%d log posts without a logs endpoint", l)
	}
}

// A receiver that refuses everything: the server keeps logging to its
// file, and the failure is reported there (throttled), not exported.
func TestTelemetryExportFailureIsReportedLocally(t *testing.T) {
	clearOTelEnv(t)
	rcv := newReceiver(t, http.StatusBadRequest)
	log, buf, reg, _, _ := serverLike()
	logger, shutdown, err := Setup(context.Background(), Config{Endpoint: rcv.srv.URL, Gatherer: reg, Logger: log,
		MetricInterval: 20 * time.Millisecond, LogInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		logger.Info("still logging", "i", i)
	}
	waitFor(t, "a local report of the failed export", 10*time.Second, func() bool {
		return strings.Contains(buf.String(), "OTLP export failed")
	})
	waitFor(t, "several refused exports", 10*time.Second, func() bool {
		m, _ := rcv.counts()
		return m >= 5
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = shutdown(ctx)
	if n := strings.Count(buf.String(), "OTLP export failed"); n != 1 {
		t.Errorf("%d local failure reports, want 1 (throttled to one a minute):\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), `"msg":"still logging"`); n != 5 {
		t.Errorf("%d of 5 records in the JSON log", n)
	}
	for _, l := range rcv.logRecords() {
		if strings.Contains(l.rec.GetBody().GetStringValue(), "OTLP export failed") {
			t.Errorf("the export failure report was itself exported")
		}
	}
}

func TestTelemetryTee(t *testing.T) {
	var a, b bytes.Buffer
	h := Tee(slog.NewJSONHandler(&a, &slog.HandlerOptions{Level: slog.LevelInfo}), slog.NewJSONHandler(&b, nil))
	l := slog.New(h).With("k", "v").WithGroup("g")
	l.Info("one", "x", 1)
	l.Debug("two")
	for name, out := range map[string]string{"primary": a.String(), "secondary": b.String()} {
		if !strings.Contains(out, `"msg":"one","k":"v","g":{"x":1}`) || strings.Contains(out, `"two"`) {
			t.Errorf("%s: %s", name, out)
		}
	}
}
