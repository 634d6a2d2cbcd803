package main

// Observability acceptance tests: the shipped Prometheus configuration and
// Grafana dashboard (deploy/observability) against a real Prometheus server
// scraping a real Toygres server, and the retry log lines the founding
// document's checklist searches for.
//
// They need the Prometheus server binary (Debian package prometheus) and
// fail, not skip, without it.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/toygres/toygres/internal/orchestrations"
)

const (
	observabilityDir  = "../../deploy/observability"
	dashboardFile     = observabilityDir + "/grafana/dashboards/toygres-overview.json"
	prometheusConfig  = observabilityDir + "/prometheus.yml"
	datasourcesFile   = observabilityDir + "/grafana/provisioning/datasources/toygres.yaml"
	dashProviderFile  = observabilityDir + "/grafana/provisioning/dashboards/toygres.yaml"
	prometheusInstall = "install prometheus: apt-get install -y prometheus"
	// retryLogQuery is the founding document's Loki query.
	retryLogQuery = `{service_name="toygres"} |= "retry"`
	// retryRateQuery is the founding document's "Activity Retry Rate" panel.
	retryRateQuery = `sum by (activity_name, status) (rate(duroxide_activity_retries_total[5m]))`
	// injectedFailures is what the acceptance tests inject into test-connection.
	injectedFailures = 2
)

// requirePrometheus returns the Prometheus server binary, failing the test
// (the suite must run it) when it is not installed.
func requirePrometheus(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/prometheus"); err == nil {
		return "/usr/bin/prometheus"
	}
	t.Fatal("Prometheus server binary not found: " + prometheusInstall)
	return ""
}

// promServer is a Prometheus server run by a test.
type promServer struct {
	t   *testing.T
	url string
	log string
}

// startPrometheus runs Prometheus on a free loopback port with a copy of
// the shipped prometheus.yml whose Toygres target is rewritten to
// 127.0.0.1:toygresPort and whose intervals are 1s, and its own storage.
func startPrometheus(t *testing.T, toygresPort int) *promServer {
	t.Helper()
	bin := requirePrometheus(t)
	b, err := os.ReadFile(prometheusConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	const shippedTarget = "127.0.0.1:8080"
	if !strings.Contains(cfg, shippedTarget) {
		t.Fatalf("%s no longer scrapes %s; update this test", prometheusConfig, shippedTarget)
	}
	cfg = strings.ReplaceAll(cfg, shippedTarget, fmt.Sprintf("127.0.0.1:%d", toygresPort))
	intervals := regexp.MustCompile(`(?m)^(\s*)(scrape_interval|evaluation_interval):\s*\S+`)
	if !intervals.MatchString(cfg) {
		t.Fatalf("%s sets no scrape_interval", prometheusConfig)
	}
	cfg = intervals.ReplaceAllString(cfg, "${1}${2}: 1s")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := &promServer{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", port), log: filepath.Join(dir, "prometheus.log")}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--storage.tsdb.retention.time=1h")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			p.dumpLog()
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-exited:
			p.dumpLog()
			t.Fatalf("prometheus exited during start-up")
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			p.dumpLog()
			t.Fatalf("prometheus did not become ready within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *promServer) dumpLog() {
	if b, err := os.ReadFile(p.log); err == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		p.t.Logf("prometheus log:\n%s", strings.Join(lines, "\n"))
	}
}

// promSample is one element of an instant query's result.
type promSample struct {
	Metric map[string]string
	Value  float64
	Raw    string
}

// queryError is Prometheus refusing an expression (bad_data: it does not parse).
type queryError struct{ Type, Msg string }

func (e *queryError) Error() string { return e.Type + ": " + e.Msg }

// query runs an instant query through /api/v1/query.
func (p *promServer) query(expr string) ([]promSample, error) {
	resp, err := http.PostForm(p.url+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("HTTP %d: %v: %s", resp.StatusCode, err, body)
	}
	if r.Status != "success" {
		return nil, &queryError{Type: r.ErrorType, Msg: r.Error}
	}
	parse := func(v []any) (float64, string) {
		if len(v) != 2 {
			return 0, ""
		}
		s, _ := v[1].(string)
		f, _ := strconv.ParseFloat(s, 64)
		return f, s
	}
	var out []promSample
	switch r.Data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return nil, err
		}
		for _, s := range vec {
			f, raw := parse(s.Value)
			out = append(out, promSample{Metric: s.Metric, Value: f, Raw: raw})
		}
	case "scalar":
		var v []any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		f, raw := parse(v)
		out = append(out, promSample{Value: f, Raw: raw})
	default:
		return nil, fmt.Errorf("unexpected result type %q", r.Data.ResultType)
	}
	return out, nil
}

// dashboard is the part of a Grafana dashboard these tests read.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// panelQuery is one target of one panel.
type panelQuery struct {
	panel, ref, dsType, expr string
}

func loadDashboard(t *testing.T) (*dashboard, []panelQuery) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	var qs []panelQuery
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			for _, tg := range p.Targets {
				ds := p.Datasource
				if tg.Datasource != nil {
					ds = tg.Datasource
				}
				typ := ""
				if ds != nil {
					typ = ds.Type
				}
				qs = append(qs, panelQuery{panel: p.Title, ref: tg.RefID, dsType: typ, expr: tg.Expr})
			}
		}
	}
	walk(d.Panels)
	return &d, qs
}

// grafanaVars replaces Grafana's built-in interval variables with concrete
// ranges, as Grafana does before sending a query (1s scrapes here).
var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "1m", "$__rate_interval", "1m",
	"${__interval}", "15s", "$__interval", "15s",
	"${__range}", "5m", "$__range", "5m",
)

func TestDashboardJSON(t *testing.T) {
	d, qs := loadDashboard(t)
	if d.Title != "Toygres Overview" || d.UID != "toygres-overview" {
		t.Errorf("dashboard title %q uid %q, want \"Toygres Overview\" / toygres-overview", d.Title, d.UID)
	}

	// The data sources the dashboard names are the provisioned ones.
	var prov struct {
		Datasources []struct {
			UID  string `json:"uid"`
			Type string `json:"type"`
			URL  string `json:"url"`
		} `json:"datasources"`
	}
	b, err := os.ReadFile(datasourcesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prov); err != nil {
		t.Fatalf("%s: %v", datasourcesFile, err)
	}
	provisioned := map[string]string{}
	for _, ds := range prov.Datasources {
		provisioned[ds.UID] = ds.Type
	}
	if provisioned["toygres-prometheus"] != "prometheus" || provisioned["toygres-loki"] != "loki" {
		t.Errorf("provisioned data sources %v lack toygres-prometheus (prometheus) and toygres-loki (loki)", provisioned)
	}
	var provider struct {
		Providers []struct {
			Type    string `json:"type"`
			Options struct {
				Path string `json:"path"`
			} `json:"options"`
		} `json:"providers"`
	}
	if b, err = os.ReadFile(dashProviderFile); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &provider); err != nil {
		t.Fatalf("%s: %v", dashProviderFile, err)
	}
	if len(provider.Providers) != 1 || provider.Providers[0].Type != "file" ||
		provider.Providers[0].Options.Path != "${TOYGRES_OBSERVABILITY_DIR}/grafana/dashboards" {
		t.Errorf("dashboard provider: %+v", provider.Providers)
	}

	// Every panel has a data source that is provisioned, and targets.
	ids := map[int]bool{}
	titles := map[string]panel{}
	for _, p := range d.Panels {
		titles[p.Title] = p
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Datasource == nil || p.Datasource.UID == "" || p.Datasource.Type == "" {
			t.Errorf("panel %q has no data source", p.Title)
		} else if provisioned[p.Datasource.UID] != p.Datasource.Type {
			t.Errorf("panel %q uses data source %+v, which is not provisioned", p.Title, *p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %q has no query, or no or a repeated refId", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}
	for title, want := range map[string]string{
		"Activity Retry Rate":                              retryRateQuery,
		"Activity Retries (since server start)":            "duroxide_activity_retries_total",
		"Retry Exhaustion":                                 "duroxide_activity_retry_exhausted_total",
		"Activity Duration Percentiles (retries included)": "histogram_quantile(0.95, sum by (le, activity_name) (rate(duroxide_activity_duration_seconds_bucket",
		"Orchestration Starts by Name":                     "duroxide_orchestration_starts_total",
		"Orchestration Completions by Name":                "duroxide_orchestration_completions_total",
		"Orchestration Failures by Name":                   "duroxide_orchestration_failures_total",
		"Active Orchestrations":                            "duroxide_active_orchestrations",
		"Queue Depths":                                     "duroxide_worker_queue_depth",
		"PostgreSQL Instances by State":                    "toygres_instances",
		"PostgreSQL Instances by Health":                   "toygres_instances_health",
		"Health-Check Latency":                             "toygres_health_check_duration_seconds_bucket",
		"Retry Logs":                                       retryLogQuery,
		"Replication Lag by Server":                        "toygres_replication_lag_bytes",
		"Failovers and Switchovers":                        "toygres_failovers_total",
	} {
		p, ok := titles[title]
		if !ok {
			t.Errorf("no panel %q", title)
			continue
		}
		found := false
		for _, tg := range p.Targets {
			found = found || strings.Contains(tg.Expr, want)
		}
		if !found {
			t.Errorf("panel %q has no query containing %q", title, want)
		}
	}
	if p := titles["Retry Logs"]; p.Type != "logs" || p.Datasource == nil || p.Datasource.Type != "loki" ||
		len(p.Targets) != 1 || p.Targets[0].Expr != retryLogQuery {
		t.Errorf("the logs panel must be a Loki logs panel querying %s: %+v", retryLogQuery, p)
	}
	if p := titles["Activity Retry Rate"]; len(p.Targets) != 1 || p.Targets[0].Expr != retryRateQuery {
		t.Errorf("Activity Retry Rate must query exactly %s", retryRateQuery)
	}

	// Every Prometheus query parses: a running Prometheus (scraping
	// nothing) answers bad_data for one that does not.
	prom := startPrometheus(t, freePort(t))
	n := 0
	for _, q := range qs {
		if q.dsType != "prometheus" {
			continue
		}
		n++
		expr := grafanaVars.Replace(q.expr)
		if strings.Contains(expr, "$") {
			t.Errorf("panel %q %s: unknown Grafana variable in %s", q.panel, q.ref, q.expr)
			continue
		}
		if _, err := prom.query(expr); err != nil {
			t.Errorf("panel %q %s: Prometheus refuses %s: %v", q.panel, q.ref, expr, err)
		}
	}
	if n < 15 {
		t.Errorf("only %d Prometheus queries in the dashboard", n)
	}
	// And an invalid one is refused: the check above can fail.
	if _, err := prom.query("sum by (activity_name (rate(x[5m]))"); err == nil {
		t.Errorf("Prometheus accepted an expression that does not parse")
	}
}

// TestObservabilityConfig checks the shipped prometheus.yml with promtool
// (from the same package as the server).
func TestObservabilityConfig(t *testing.T) {
	bin := requirePrometheus(t)
	promtool := filepath.Join(filepath.Dir(bin), "promtool")
	if _, err := os.Stat(promtool); err != nil {
		t.Fatalf("promtool not found beside %s: %s", bin, prometheusInstall)
	}
	out, err := exec.Command(promtool, "check", "config", prometheusConfig).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config %s: %v\n%s", prometheusConfig, err, out)
	}
	b, _ := os.ReadFile(prometheusConfig)
	m := regexp.MustCompile(`(?m)^\s*scrape_interval:\s*(\S+)`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("prometheus.yml sets no scrape_interval")
	}
	if d, err := time.ParseDuration(m[1]); err != nil || d < 5*time.Second || d > 15*time.Second {
		t.Errorf("scrape_interval %s, want 5–15s", m[1])
	}
}

// TestObservabilityPrometheus is the founding document's checklist run for
// real: a Toygres server with two injected test-connection failures, a
// Prometheus server scraping it with the shipped configuration, an instance
// created, then duroxide_activity_retries_total and every Prometheus query of
// the dashboard asked of Prometheus' HTTP API.
//
// Reading of the retry counts: test-connection's policy allows 5 attempts.
// With 2 injected failures, attempt 1 fails (a first attempt is not a
// retry), attempt 2 — the first retry — fails, attempt 3 — the second
// retry — succeeds. So duroxide_activity_retries_total{activity_name=
// "test-connection"} is 1 with status="failure" and 1 with status="success":
// 2 retries, one per injected failure. The faults are per instance, so a
// second instance brings both to 2 — and, now that the series exist, makes
// the Activity Retry Rate panel read above zero.
func TestObservabilityPrometheus(t *testing.T) {
	requirePrometheus(t)
	e := newE2E(t)
	e.startServerWith(faultsEnv("connection=" + strconv.Itoa(injectedFailures)))
	prom := startPrometheus(t, e.port)

	poll := func(what string, timeout time.Duration, f func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			ok, last := f()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, last)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	poll("Prometheus to scrape Toygres (up == 1)", time.Minute, func() (bool, string) {
		s, err := prom.query(`up{job="toygres"}`)
		return err == nil && len(s) == 1 && s[0].Value == 1, fmt.Sprint(s, err)
	})

	// One standby, so that the replication lag panel has a series.
	out := e.ok("create", "obs-retry", "--password", "test123", "--replicas", "1", "--wait")
	if !strings.Contains(out, "is running") {
		t.Fatalf("create --wait output:\n%s", out)
	}

	// The founding document's query, answered by Prometheus.
	byStatus := map[string]float64{}
	poll("duroxide_activity_retries_total for test-connection in Prometheus", time.Minute, func() (bool, string) {
		s, err := prom.query("duroxide_activity_retries_total")
		if err != nil {
			t.Fatalf("Prometheus refuses duroxide_activity_retries_total: %v", err)
		}
		byStatus = map[string]float64{}
		for _, x := range s {
			if x.Metric["activity_name"] == "test-connection" {
				byStatus[x.Metric["status"]] = x.Value
			}
		}
		return byStatus["failure"] == 1 && byStatus["success"] == 1, fmt.Sprint(s)
	})
	total := 0.0
	for st, v := range byStatus {
		total += v
		// duroxide creates every series at zero, so that rate() sees
		// the first increment; only failure and success may have counts.
		if st != "failure" && st != "success" && v != 0 {
			t.Errorf("unexpected test-connection retry status %q = %v", st, v)
		}
	}
	if total != injectedFailures {
		t.Errorf("test-connection retries = %v, want %d (one per injected failure): %v", total, injectedFailures, byStatus)
	}
	if s, err := prom.query(`duroxide_activity_retry_exhausted_total{activity_name="test-connection"} > 0`); err != nil || len(s) != 0 {
		t.Errorf("test-connection's retries were exhausted: %v %v", s, err)
	}

	// Every Prometheus query of every panel: accepted, and returns data.
	_, qs := loadDashboard(t)
	type pending struct {
		panelQuery
		expr string
		last string
	}
	var todo []*pending
	for _, q := range qs {
		if q.dsType != "prometheus" {
			continue
		}
		todo = append(todo, &pending{panelQuery: q, expr: grafanaVars.Replace(q.expr)})
	}
	results := map[string][]promSample{}
	deadline := time.Now().Add(2 * time.Minute)
	for len(todo) > 0 && time.Now().Before(deadline) {
		var left []*pending
		for _, q := range todo {
			s, err := prom.query(q.expr)
			if err != nil {
				t.Errorf("panel %q %s: Prometheus refuses %s: %v", q.panel, q.ref, q.expr, err)
				continue
			}
			if len(s) == 0 {
				q.last = "no data"
				left = append(left, q)
				continue
			}
			results[q.panel+"/"+q.ref] = s
		}
		todo = left
		if len(todo) > 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	for _, q := range todo {
		t.Errorf("panel %q %s returned no data within 2 minutes: %s", q.panel, q.ref, q.expr)
	}
	keys := make([]string, 0, len(results))
	for k := range results {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%s: %d series, e.g. %v = %s", k, len(results[k]), results[k][0].Metric, results[k][0].Raw)
	}

	// The retry rate panel shows test-connection's two statuses above zero
	// after the very first retries: duroxide creates every series at zero
	// when the runtime starts, so rate() sees the step from 0 to 1 (a series
	// born with its first increment would read 0 — the seed's "dashboard
	// showed zero").
	var rate []promSample
	poll("the Activity Retry Rate panel to show test-connection failure and success above zero", time.Minute, func() (bool, string) {
		s, err := prom.query(retryRateQuery)
		if err != nil {
			t.Fatalf("Prometheus refuses %s: %v", retryRateQuery, err)
		}
		rate = s
		seen := map[string]bool{}
		for _, x := range s {
			if x.Metric["activity_name"] == "test-connection" && x.Value > 0 {
				seen[x.Metric["status"]] = true
			}
		}
		return seen["failure"] && seen["success"], fmt.Sprint(s)
	})
	t.Logf("Activity Retry Rate: %v", rate)
	counts := map[string]float64{}
	s, err := prom.query(grafanaVars.Replace("sum by (activity_name, status) (duroxide_activity_retries_total)"))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range s {
		if x.Metric["activity_name"] == "test-connection" {
			counts[x.Metric["status"]] = x.Value
		}
	}
	if counts["failure"] != 1 || counts["success"] != 1 {
		t.Errorf("Activity Retries (since server start): test-connection %v, want failure 1 and success 1", counts)
	}
	// Instances by state and by health count the running, healthy instance
	// (the catalogue gauges lag the create by a scrape or two).
	for _, c := range []struct{ panel, label, value string }{
		{"PostgreSQL Instances by State", "state", "running"},
		{"PostgreSQL Instances by Health", "health", "healthy"},
	} {
		var expr string
		for _, q := range qs {
			if q.panel == c.panel {
				expr = grafanaVars.Replace(q.expr)
			}
		}
		poll(fmt.Sprintf("%s to show %s=%s", c.panel, c.label, c.value), time.Minute, func() (bool, string) {
			s, err := prom.query(expr)
			if err != nil {
				t.Fatalf("%s: %v", expr, err)
			}
			for _, x := range s {
				if x.Metric[c.label] == c.value && x.Value == 1 {
					return true, ""
				}
			}
			return false, fmt.Sprint(s)
		})
	}

	// A second instance retries the same way: the rate stays above zero for
	// both statuses and the counters read 2.
	e.ok("create", "obs-retry-2", "--password", "test123", "--wait")
	poll("a non-zero Activity Retry Rate for test-connection failure and success", time.Minute, func() (bool, string) {
		s, err := prom.query(retryRateQuery)
		if err != nil {
			t.Fatal(err)
		}
		pos := map[string]bool{}
		for _, x := range s {
			if x.Metric["activity_name"] == "test-connection" && x.Value > 0 {
				pos[x.Metric["status"]] = true
			}
		}
		return pos["failure"] && pos["success"], fmt.Sprint(s)
	})
	poll("test-connection retries 2 and 2 after two instances", time.Minute, func() (bool, string) {
		s, err := prom.query(`duroxide_activity_retries_total{activity_name="test-connection"}`)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, x := range s {
			got[x.Metric["status"]] = x.Value
		}
		return got["timeout"] == 0 && got["failure"] == 2 && got["success"] == 2, fmt.Sprint(got)
	})

	e.ok("delete", "obs-retry", "--wait")
	e.ok("delete", "obs-retry-2", "--wait")
}

// TestRetryLogLines finds duroxide's retry records — by their text and ids —
// in <data dir>/server.log, through `toygres server logs --grep retry`,
// through GET /api/server/logs?grep=retry and in the server's OTLP log
// export (--otlp-endpoint, to an in-process OTLP/HTTP receiver): with 2
// injected test-connection failures there are two, "attempt 1 of 5" and
// "attempt 2 of 5", for the instance's create orchestration.
func TestRetryLogLines(t *testing.T) {
	e := newE2E(t)
	rcv := newOTLPReceiver(t)
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "500") // ms; the server inherits it
	e.startServerWith(faultsEnv("connection="+strconv.Itoa(injectedFailures)), "--otlp-endpoint", rcv.URL)
	e.ok("create", "log-retry", "--password", "test123", "--wait")
	inst := e.get("log-retry")
	orchID := orchestrations.CreateID(inst.InternalName)

	// retryRecords keeps the records (JSON lines) that are test-connection
	// retries of this instance.
	retryRecords := func(what string, lines []string) []map[string]any {
		t.Helper()
		var out []map[string]any
		for _, l := range lines {
			if !strings.Contains(l, "retry") {
				t.Errorf("%s: line without 'retry': %s", what, l)
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				continue // a plain line (stderr of a child process)
			}
			if rec["activity_name"] == "test-connection" && rec["instance_id"] == orchID {
				out = append(out, rec)
			}
		}
		return out
	}
	check := func(what string, recs []map[string]any) {
		t.Helper()
		if len(recs) != injectedFailures {
			t.Errorf("%s: %d test-connection retry records for %s, want %d: %v", what, len(recs), orchID, injectedFailures, recs)
			return
		}
		for i, rec := range recs {
			msg, _ := rec["msg"].(string)
			errText, _ := rec["error"].(string)
			if !strings.Contains(msg, "retry") || rec["level"] != "WARN" || rec["service_name"] != "toygres" ||
				rec["attempt"] != float64(i+1) || rec["max_attempts"] != 5.0 || !strings.Contains(errText, "injected") {
				t.Errorf("%s: record %d: %v", what, i+1, rec)
			}
			// Exponential backoff 2s ×2: 2s after attempt 1, 4s after attempt 2.
			if want := fmt.Sprintf("%ds", 2<<i); rec["retry_delay"] != want {
				t.Errorf("%s: record %d: retry_delay %v, want %s", what, i+1, rec["retry_delay"], want)
			}
		}
	}

	// 1. The log file.
	f, err := os.Open(logPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	var fileLines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "retry") {
			fileLines = append(fileLines, sc.Text())
		}
	}
	f.Close()
	check("server.log", retryRecords("server.log", fileLines))

	// 2. toygres server logs --grep retry (raw records with --json, and the
	// formatted lines a person reads).
	raw := strings.Split(strings.TrimSpace(e.ok("server", "logs", "--grep", "retry", "--json", "-n", "1000")), "\n")
	check("server logs --grep retry --json", retryRecords("server logs --grep retry --json", raw))
	text := e.ok("server", "logs", "--grep", "retry", "-n", "1000")
	for k := 1; k <= injectedFailures; k++ {
		found := false
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "will retry") && strings.Contains(l, "instance_id="+orchID) &&
				strings.Contains(l, "activity_name=test-connection") && strings.Contains(l, fmt.Sprintf("attempt=%d ", k)) &&
				strings.Contains(l, "max_attempts=5") {
				found = true
			}
		}
		if !found {
			t.Errorf("server logs --grep retry: no line for attempt %d of 5 of %s:\n%s", k, orchID, text)
		}
	}

	// 3. GET /api/server/logs?grep=retry.
	var logs struct {
		Lines []string `json:"lines"`
		Count int      `json:"count"`
	}
	if code := e.api("/api/server/logs?grep=retry&limit=1000", &logs); code != http.StatusOK {
		t.Fatalf("GET /api/server/logs?grep=retry: HTTP %d", code)
	}
	if logs.Count != len(logs.Lines) {
		t.Errorf("count %d for %d lines", logs.Count, len(logs.Lines))
	}
	check("GET /api/server/logs?grep=retry", retryRecords("GET /api/server/logs?grep=retry", logs.Lines))

	// 4. The OTLP export: the same records, as OTLP log records of the
	// resource service.name=toygres, and the retry counters as OTLP sums.
	var exported []map[string]any
	deadline := time.Now().Add(time.Minute)
	for {
		exported = nil
		for _, rec := range rcv.logRecords() {
			if strings.Contains(fmt.Sprint(rec["msg"]), "retry") && rec["activity_name"] == "test-connection" && rec["instance_id"] == orchID {
				exported = append(exported, rec)
			}
		}
		f, s := rcv.retries("test-connection")
		if len(exported) >= injectedFailures && f == 1 && s == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("OTLP export: %d retry log records, retries failure=%v success=%v (receiver got %d log and %d metric posts)",
				len(exported), f, s, rcv.logPosts(), rcv.metricPosts())
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, rec := range exported {
		rec["service_name"] = rec["resource.service.name"] // the OTLP form of the label
		rec["level"] = rec["severity_text"]
	}
	check("OTLP log export", exported)
	// Traces go to the same endpoint (TestE2ETraces reads them back from Jaeger).
	e.eventually("the create's orchestration span on the OTLP receiver", 30*time.Second, func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return slices.Contains(rcv.spanNames, "orchestration create-instance") && slices.Contains(rcv.spanNames, "activity test-connection")
	})
	if b, err := os.ReadFile(logPath(e.dataDir)); err != nil || !strings.Contains(string(b), "OTLP export enabled") || strings.Contains(string(b), "OTLP export failed") {
		t.Errorf("server.log should say 'OTLP export enabled' and no 'OTLP export failed' (%v)", err)
	}

	e.ok("delete", "log-retry", "--wait")
}

// otlpReceiver is a minimal OTLP/HTTP receiver (protobuf) for the server's
// export: it decodes /v1/logs and /v1/metrics posts and keeps log records
// (flattened to maps) and the retry counters' latest values.
type otlpReceiver struct {
	*httptest.Server
	mu        sync.Mutex
	logs      []map[string]any
	retryVals map[string]float64 // activity/status → value
	nLogs     int
	nMetrics  int
	spanNames []string
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{retryVals: map[string]float64{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want a protobuf POST", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		switch req.URL.Path {
		case "/v1/logs":
			var m collogs.ExportLogsServiceRequest
			if err := proto.Unmarshal(body, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.nLogs++
			for _, rl := range m.GetResourceLogs() {
				svc := ""
				for _, kv := range rl.GetResource().GetAttributes() {
					if kv.GetKey() == "service.name" {
						svc = kv.GetValue().GetStringValue()
					}
				}
				for _, sl := range rl.GetScopeLogs() {
					for _, lr := range sl.GetLogRecords() {
						rec := map[string]any{"msg": lr.GetBody().GetStringValue(), "severity_text": lr.GetSeverityText(), "resource.service.name": svc}
						for _, kv := range lr.GetAttributes() {
							v := kv.GetValue()
							switch v.GetValue().(type) {
							case *commonpb.AnyValue_IntValue:
								rec[kv.GetKey()] = float64(v.GetIntValue()) // as JSON decodes numbers
							case *commonpb.AnyValue_DoubleValue:
								rec[kv.GetKey()] = v.GetDoubleValue()
							default:
								rec[kv.GetKey()] = v.GetStringValue()
							}
						}
						r.logs = append(r.logs, rec)
					}
				}
			}
			out, _ := proto.Marshal(&collogs.ExportLogsServiceResponse{})
			w.Header().Set("Content-Type", "application/x-protobuf")
			_, _ = w.Write(out)
		case "/v1/metrics":
			var m colmetrics.ExportMetricsServiceRequest
			if err := proto.Unmarshal(body, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.nMetrics++
			for _, rm := range m.GetResourceMetrics() {
				for _, sm := range rm.GetScopeMetrics() {
					for _, mt := range sm.GetMetrics() {
						if mt.GetName() != "duroxide_activity_retries_total" {
							continue
						}
						for _, dp := range mt.GetSum().GetDataPoints() {
							labels := map[string]string{}
							for _, kv := range dp.GetAttributes() {
								labels[kv.GetKey()] = kv.GetValue().GetStringValue()
							}
							r.retryVals[labels["activity_name"]+"/"+labels["status"]] = dp.GetAsDouble()
						}
					}
				}
			}
			out, _ := proto.Marshal(&colmetrics.ExportMetricsServiceResponse{})
			w.Header().Set("Content-Type", "application/x-protobuf")
			_, _ = w.Write(out)
		case "/v1/traces":
			var m coltrace.ExportTraceServiceRequest
			if err := proto.Unmarshal(body, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			for _, rs := range m.GetResourceSpans() {
				for _, ss := range rs.GetScopeSpans() {
					for _, s := range ss.GetSpans() {
						r.spanNames = append(r.spanNames, s.GetName())
					}
				}
			}
			out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
			w.Header().Set("Content-Type", "application/x-protobuf")
			_, _ = w.Write(out)
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(r.Server.Close)
	return r
}

func (r *otlpReceiver) logRecords() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.logs...)
}

func (r *otlpReceiver) retries(activity string) (failure, success float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retryVals[activity+"/failure"], r.retryVals[activity+"/success"]
}

func (r *otlpReceiver) logPosts() int    { r.mu.Lock(); defer r.mu.Unlock(); return r.nLogs }
func (r *otlpReceiver) metricPosts() int { r.mu.Lock(); defer r.mu.Unlock(); return r.nMetrics }
