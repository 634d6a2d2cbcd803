package main

// The trace acceptance test: a real Jaeger (built from the Go module proxy
// by scripts/build-jaeger.sh) receives the server's OTLP export and answers
// queries about the trace of one create.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	jaegerConfig  = observabilityDir + "/jaeger.yaml"
	jaegerToolMod = "../../tools/jaeger/go.mod"
	jaegerInstall = "build it: scripts/build-jaeger.sh (or set TOYGRES_JAEGER to a jaeger v2 binary)"
)

// jaegerBinary is the Jaeger all-in-one binary: $TOYGRES_JAEGER, else the
// one scripts/build-jaeger.sh caches for the version tools/jaeger pins. It
// fails (the suite must run the test) when there is none.
func jaegerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TOYGRES_JAEGER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("TOYGRES_JAEGER=%s: %v; %s", p, err, jaegerInstall)
		}
		return p
	}
	b, err := os.ReadFile(jaegerToolMod)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/jaegertracing/jaeger (v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s pins no github.com/jaegertracing/jaeger version", jaegerToolMod)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("no cache directory: %v; %s", err, jaegerInstall)
	}
	p := filepath.Join(cache, "toygres-jaeger", string(m[1]), "jaeger")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Jaeger %s not found at %s: %s", m[1], p, jaegerInstall)
	}
	return p
}

type jaegerServer struct {
	t        *testing.T
	otlpURL  string // OTLP/HTTP receiver base URL
	queryURL string // query API (and UI)
	log      string
}

// startJaeger runs the shipped deploy/observability/jaeger.yaml with its
// loopback ports rewritten to free ones.
func startJaeger(t *testing.T) *jaegerServer {
	t.Helper()
	bin := jaegerBinary(t)
	b, err := os.ReadFile(jaegerConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	otlp, query, grpc := freePort(t), freePort(t), freePort(t)
	for shipped, port := range map[string]int{"127.0.0.1:4318": otlp, "127.0.0.1:16686": query, "127.0.0.1:16685": grpc} {
		if !strings.Contains(cfg, "endpoint: "+shipped) {
			t.Fatalf("%s no longer listens on %s; update this test", jaegerConfig, shipped)
		}
		cfg = strings.ReplaceAll(cfg, "endpoint: "+shipped, "endpoint: 127.0.0.1:"+strconv.Itoa(port))
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	j := &jaegerServer{t: t, otlpURL: fmt.Sprintf("http://127.0.0.1:%d", otlp),
		queryURL: fmt.Sprintf("http://127.0.0.1:%d", query), log: filepath.Join(dir, "jaeger.log")}
	logf, err := os.Create(j.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	// Jaeger's own tracing SDK would export its spans to the default OTLP
	// port; it has nothing to say here.
	cmd.Env = append(os.Environ(), "OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			j.dumpLog()
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-exited:
			j.dumpLog()
			t.Fatal("jaeger exited during start-up")
		default:
		}
		if resp, err := http.Get(j.queryURL + "/api/services"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && listening(otlp) {
				return j
			}
		}
		if time.Now().After(deadline) {
			j.dumpLog()
			t.Fatal("jaeger did not become ready within a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (j *jaegerServer) dumpLog() {
	b, _ := os.ReadFile(j.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	j.t.Logf("jaeger log:\n%s", strings.Join(lines, "\n"))
}

// Jaeger's query API JSON (/api/traces).
type jTrace struct {
	TraceID   string              `json:"traceID"`
	Spans     []jSpan             `json:"spans"`
	Processes map[string]jProcess `json:"processes"`
}

type jSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64  `json:"startTime"`
	Tags      []jKV  `json:"tags"`
	Logs      []jLog `json:"logs"`
	ProcessID string `json:"processID"`
}

type jKV struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jLog struct {
	Timestamp int64 `json:"timestamp"`
	Fields    []jKV `json:"fields"`
}

type jProcess struct {
	ServiceName string `json:"serviceName"`
}

func kv(kvs []jKV, key string) string {
	for _, f := range kvs {
		if f.Key == key {
			return fmt.Sprint(f.Value)
		}
	}
	return ""
}

func (s jSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func (j *jaegerServer) get(path string, out any) error {
	resp, err := http.Get(j.queryURL + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// orchestrationTrace finds the trace holding the span of the named
// orchestration's execution and reads it whole.
func (j *jaegerServer) trace(operation string) (jTrace, error) {
	var found struct {
		Data []jTrace `json:"data"`
	}
	q := url.Values{"service": {"toygres"}, "operation": {operation}, "lookback": {"1h"}, "limit": {"20"}}
	if err := j.get("/api/traces?"+q.Encode(), &found); err != nil {
		return jTrace{}, err
	}
	if len(found.Data) != 1 {
		return jTrace{}, fmt.Errorf("%d traces with a span %q, want 1", len(found.Data), operation)
	}
	var one struct {
		Data []jTrace `json:"data"`
	}
	if err := j.get("/api/traces/"+found.Data[0].TraceID, &one); err != nil {
		return jTrace{}, err
	}
	if len(one.Data) != 1 {
		return jTrace{}, fmt.Errorf("trace %s: %d results", found.Data[0].TraceID, len(one.Data))
	}
	return one.Data[0], nil
}

// TestE2ETraces: a create whose deploy fails (injected) is retried under a
// fixed 4 s backoff, and the server is restarted after the first failure.
// Jaeger then holds one trace: the API request → the orchestration span →
// turn spans from both server processes (with a backoff event per failed
// attempt) and a span per deploy attempt, failed ones included, the later
// ones from the restarted server. The server's JSON log line of the request
// carries the same trace id. (The orchestrations the create starts, the
// instance actor and the backup schedule, continue the trace too.)
func TestE2ETraces(t *testing.T) {
	e := newE2E(t)
	j := startJaeger(t)
	retry := []string{"TOYGRES_RETRY__DEPLOY_POSTGRES__BACKOFF=fixed", "TOYGRES_RETRY__DEPLOY_POSTGRES__BASE=4s",
		"TOYGRES_RETRY__DEPLOY_POSTGRES__MAX_ATTEMPTS=4"}
	otlp := []string{"--otlp-endpoint", j.otlpURL}
	e.startServerWith(append(faultsEnv("deploy=2"), retry...), otlp...)

	e.ok("create", "traced", "--password", "test123")
	internal := e.get("traced").InternalName
	orchID := "create-" + internal
	e.eventually("the first deploy attempt to fail", 2*time.Minute, func() bool {
		for _, ex := range e.orchestration(orchID, "--history").Executions {
			for _, ev := range ex.History {
				if ev.Kind == "ActivityFailed" {
					return true
				}
			}
		}
		return false
	})
	// Restart in the middle of the create: the new process deploys after
	// one more injected failure.
	e.ok("server", "stop")
	e.startServerWith(append(faultsEnv("deploy=1"), retry...), otlp...)
	e.waitState("traced", "running", 3*time.Minute)

	const orchOp = "orchestration create-instance"
	var tr jTrace
	var last error
	deadline := time.Now().Add(time.Minute)
	for {
		tr, last = j.trace(orchOp)
		if last == nil {
			last = traceComplete(tr)
		}
		if last == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger never held the whole trace of the create: %v\n%s", last, describeTrace(tr))
		}
		time.Sleep(time.Second)
	}
	t.Logf("trace %s:\n%s", tr.TraceID, describeTrace(tr))

	byID := map[string]jSpan{}
	for _, s := range tr.Spans {
		byID[s.SpanID] = s
		if svc := tr.Processes[s.ProcessID].ServiceName; svc != "toygres" {
			t.Errorf("span %q from service %q, want toygres", s.OperationName, svc)
		}
	}
	var orch jSpan
	for _, s := range tr.Spans {
		if s.OperationName == orchOp {
			orch = s
		}
	}
	// The root: the API request that created the instance.
	req, ok := byID[orch.parent()]
	if !ok || req.parent() != "" || kv(req.Tags, "http.request.method") != "POST" {
		t.Errorf("orchestration span's parent %q is not the root POST request span: %+v", orch.parent(), req)
	}
	// Every turn and attempt is a child of the orchestration span, in both processes.
	workers := map[string]bool{}
	var attempts []jSpan
	backoffs := 0
	for _, s := range tr.Spans {
		switch {
		case s.OperationName == "turn create-instance":
			if s.parent() != orch.SpanID {
				t.Errorf("turn span %s's parent = %s, want the orchestration span %s", s.SpanID, s.parent(), orch.SpanID)
			}
			workers[kv(s.Tags, "duroxide.worker_id")] = true
			for _, l := range s.Logs {
				if kv(l.Fields, "event") == "backoff" {
					backoffs++
					if kv(l.Fields, "duroxide.delay_ms") != "4000" {
						t.Errorf("backoff event %v, want delay_ms 4000", l.Fields)
					}
				}
			}
		case s.OperationName == "activity deploy-postgres":
			if s.parent() != orch.SpanID {
				t.Errorf("deploy attempt span's parent = %s, want the orchestration span", s.parent())
			}
			attempts = append(attempts, s)
		}
	}
	if len(workers) < 2 {
		t.Errorf("turn spans from %d server processes (%v), want both sides of the restart", len(workers), workers)
	}
	sort.Slice(attempts, func(a, b int) bool { return attempts[a].StartTime < attempts[b].StartTime })
	for i, s := range attempts {
		want := "failure"
		if i == len(attempts)-1 {
			want = "success"
		}
		if got := kv(s.Tags, "duroxide.attempt"); got != strconv.Itoa(i+1) {
			t.Errorf("deploy attempt span %d has attempt %s", i+1, got)
		}
		if got := kv(s.Tags, "duroxide.outcome"); got != want {
			t.Errorf("deploy attempt %d outcome %q, want %q", i+1, got, want)
		}
		if kv(s.Tags, "duroxide.max_attempts") != "4" {
			t.Errorf("deploy attempt %d: max_attempts %q, want 4", i+1, kv(s.Tags, "duroxide.max_attempts"))
		}
		if want == "failure" && !strings.Contains(kv(s.Tags, "duroxide.error"), "injected deploy failure") {
			t.Errorf("failed deploy attempt %d lacks the injected error: %v", i+1, s.Tags)
		}
	}
	if len(attempts) < 3 || backoffs != len(attempts)-1 {
		t.Errorf("%d deploy attempts and %d backoff events, want at least 3 attempts (two injected failures in the first process, one in the second) and a backoff per failure", len(attempts), backoffs)
	}
	if len(attempts) > 0 && kv(attempts[0].Tags, "duroxide.worker_id") == kv(attempts[len(attempts)-1].Tags, "duroxide.worker_id") {
		t.Errorf("the first and last deploy attempts ran in the same process %s; the restart did not split them", kv(attempts[0].Tags, "duroxide.worker_id"))
	}

	// The JSON log line of the create request carries the trace id.
	f, err := os.Open(logPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "instance create requested" && rec["instance"] == "traced" {
			found = true
			if rec["trace_id"] != tr.TraceID || rec["span_id"] != req.SpanID {
				t.Errorf("log line %s: trace_id/span_id %v/%v, want %s/%s", sc.Text(), rec["trace_id"], rec["span_id"], tr.TraceID, req.SpanID)
			}
		}
	}
	if !found {
		t.Error(`no "instance create requested" log line for traced`)
	}
}

// traceComplete reports what the trace still lacks: the create ends with
// a successful deploy attempt, and a turn span after it (the completion).
func traceComplete(tr jTrace) error {
	var success, orch bool
	for _, s := range tr.Spans {
		if s.OperationName == "activity deploy-postgres" && kv(s.Tags, "duroxide.outcome") == "success" {
			success = true
		}
		if s.OperationName == "turn create-instance" && kv(s.Tags, "duroxide.status") == "Completed" {
			orch = true
		}
	}
	switch {
	case !success:
		return fmt.Errorf("no successful deploy attempt span yet")
	case !orch:
		return fmt.Errorf("no turn span completing the orchestration yet")
	}
	return nil
}

func describeTrace(tr jTrace) string {
	var b strings.Builder
	spans := append([]jSpan(nil), tr.Spans...)
	sort.Slice(spans, func(a, c int) bool { return spans[a].StartTime < spans[c].StartTime })
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s parent=%s %q attempt=%s outcome=%s worker=%s", s.SpanID, s.parent(), s.OperationName,
			kv(s.Tags, "duroxide.attempt"), kv(s.Tags, "duroxide.outcome"), kv(s.Tags, "duroxide.worker_id"))
		for _, l := range s.Logs {
			fmt.Fprintf(&b, " [%s delay_ms=%s]", kv(l.Fields, "event"), kv(l.Fields, "duroxide.delay_ms"))
		}
		b.WriteString("\n")
	}
	return b.String()
}
