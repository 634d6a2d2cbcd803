package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/api/openapitest"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/apptest"
	"github.com/toygres/toygres/internal/tlscert"
)

// One real Toygres server (SQLite, local data plane) over HTTPS with a
// self-signed certificate, shared by the tests and the examples.
const (
	adminPassword = "client-test-admin-pw"
	dirPrefix     = "toygres-client-test-"
)

var (
	serverURL   string // https://127.0.0.1:port
	fingerprint string // the server certificate's SHA-256 fingerprint
	token       string // a bearer token
	logFile     string
	serverCert  *x509.Certificate
)

func TestMain(m *testing.M) {
	apptest.ReapStale(dirPrefix)
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client tests:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if err := apptest.CheckRunAs(); err != nil {
		return 1, err
	}
	dir, err := os.MkdirTemp(apptest.Base(), dirPrefix)
	if err != nil {
		return 1, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return 1, err
	}
	defer func() {
		if apptest.DeleteInstances(dir) {
			os.RemoveAll(dir)
		}
	}()
	logFile = filepath.Join(dir, "server.log")
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 1, err
	}
	defer lf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	a, err := app.Open(ctx, app.Config{DataDir: dir, ActorInterval: 500 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(lf, nil))})
	cancel()
	if err != nil {
		return 1, fmt.Errorf("open app: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	}()
	srv, err := api.New(a, api.Options{AdminPassword: adminPassword, LogFile: logFile, Version: "test"})
	if err != nil {
		return 1, err
	}
	cert, err := tlscert.LoadOrGenerate(filepath.Join(dir, "tls"), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		return 1, err
	}
	v, err := openapitest.New(api.OpenAPI())
	if err != nil {
		return 1, err
	}
	// Every exchange of the tests and examples is checked against the
	// server's OpenAPI document; a mismatch is recorded and fails the run.
	ts := httptest.NewUnstartedServer(v.Handler(&mismatches, srv.Handler()))
	ts.TLS = tlscert.ServerConfig(cert)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // TestTLS's refused handshakes
	ts.StartTLS()
	defer ts.Close()
	serverURL, fingerprint, serverCert = ts.URL, cert.Fingerprint, cert.Leaf
	if token, err = srv.IssueToken(time.Hour); err != nil {
		return 1, err
	}
	code := m.Run()
	if msgs := mismatches.messages(); len(msgs) > 0 {
		fmt.Fprintln(os.Stderr, strings.Join(msgs, "\n"))
		return 1, fmt.Errorf("%d exchanges the OpenAPI document does not describe", len(msgs))
	}
	return code, nil
}

// recorder collects validation failures for TestMain (which has no
// testing.T); only Errorf is used by openapitest.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

var mismatches recorder

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func (r *recorder) Helper() {}

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

func newClient(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(serverURL, append([]client.Option{client.WithFingerprint(fingerprint), client.WithToken(token)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

// TestEveryMethod calls every method of Client against the real server.
func TestEveryMethod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newClient(t)
	if c.URL() != serverURL || c.Token() != token || c.Fingerprint() != fingerprint {
		t.Fatalf("accessors: %q %q %q", c.URL(), c.Token(), c.Fingerprint())
	}

	// Session and server.
	if h := must[*client.Health](t, "Health")(c.Health(ctx)); h.Status != "healthy" || h.Version != "test" {
		t.Fatalf("Health: %+v", h)
	}
	if m := must[string](t, "Metrics")(c.Metrics(ctx)); !strings.Contains(m, "toygres_http_requests_total") {
		t.Fatalf("Metrics: %.200s", m)
	}
	doc := must[json.RawMessage](t, "OpenAPI")(c.OpenAPI(ctx))
	if !strings.Contains(string(doc), `"openapi": "3.1.0"`) {
		t.Fatalf("OpenAPI: %.100s", doc)
	}
	anon := must[*client.Client](t, "New")(client.New(serverURL, client.WithFingerprint(fingerprint)))
	if _, err := anon.Session(ctx); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("Session without a token: %v", err)
	}
	lr := must[*client.LoginResponse](t, "Login")(anon.Login(ctx, "admin", adminPassword))
	if anon.Token() != lr.Token || lr.ExpiresAt.Before(time.Now()) {
		t.Fatalf("Login: %+v, client token %q", lr, anon.Token())
	}
	if s := must[*client.SessionInfo](t, "Session")(anon.Session(ctx)); s.User != "admin" || s.Kind != "token" {
		t.Fatalf("Session: %+v", s)
	}
	if err := anon.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Session(ctx); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("Session after Logout: %v", err)
	}
	if _, err := anon.Login(ctx, "admin", "wrong-password"); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("Login with a wrong password: %v", err)
	}
	if st := must[*client.ServerStats](t, "ServerStats")(c.ServerStats(ctx)); st.GeneratedAt.IsZero() {
		t.Fatalf("ServerStats: %+v", st)
	}
	if cfg := must[*client.ServerConfig](t, "ServerConfig")(c.ServerConfig(ctx)); cfg.AdminPassword != "***" || cfg.Version != "test" {
		t.Fatalf("ServerConfig: %+v", cfg)
	}
	if wk := must[*client.ServerWorkers](t, "ServerWorkers")(c.ServerWorkers(ctx)); wk.WorkerID == "" {
		t.Fatalf("ServerWorkers: %+v", wk)
	}
	// Retry policies: every activity's default, with its source; the
	// tuning report lists the activities with a default policy.
	cfg := must[*client.ServerConfig](t, "ServerConfig")(c.ServerConfig(ctx))
	if len(cfg.Retry) < 20 || cfg.CircuitBreaker == nil || cfg.CircuitBreaker.MinCalls != 10 {
		t.Fatalf("ServerConfig retry section: %d policies, breaker %+v", len(cfg.Retry), cfg.CircuitBreaker)
	}
	rep := must[*client.ServerRetries](t, "ServerRetries")(c.ServerRetries(ctx))
	found := false
	for _, a := range rep.Activities {
		if a.Activity == "deploy-postgres" {
			found = a.Policy != nil && a.Policy.Source == "default" && a.Policy.Summary == "deploy: 3 attempts, exponential 2s×2 max 10s, 5m0s per attempt"
		}
	}
	if rep.GeneratedAt.IsZero() || !found {
		t.Fatalf("ServerRetries: %+v", rep)
	}

	// Instances.
	name := fmt.Sprintf("cl-%d", time.Now().UnixNano()%1_000_000)
	_, err := c.CreateInstance(ctx, client.CreateInstanceRequest{Name: name, Password: "short"})
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Field != "password" || !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("CreateInstance with a short password: %#v", err)
	}
	in := must[*client.Instance](t, "CreateInstance")(c.CreateInstance(ctx, client.CreateInstanceRequest{Name: name, Password: "client-pw-123", StorageGB: 1}))
	if in.Name != name || in.State != client.StateCreating {
		t.Fatalf("CreateInstance: %+v", in)
	}
	if _, err := c.CreateInstance(ctx, client.CreateInstanceRequest{Name: name, Password: "client-pw-123"}); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("CreateInstance twice: %v", err)
	}
	var steps []string
	d := must[*client.InstanceDetail](t, "WaitForInstance")(c.WaitForInstance(ctx, name, client.WaitOptions{Interval: 200 * time.Millisecond,
		Progress: func(d *client.InstanceDetail, step string) { steps = append(steps, d.State+":"+step) }}))
	if d.State != client.StateRunning || !strings.Contains(d.ConnectionString, "client-pw-123") || len(steps) == 0 {
		t.Fatalf("WaitForInstance: %+v, progress %v", d, steps)
	}
	if g := must[*client.InstanceDetail](t, "GetInstance")(c.GetInstance(ctx, name, client.GetInstanceOptions{Events: 2, Checks: -1})); len(g.Events) == 0 || len(g.Events) > 2 || len(g.HealthChecks) != 0 {
		t.Fatalf("GetInstance: %d events, %d checks", len(g.Events), len(g.HealthChecks))
	}
	if _, err := c.GetInstance(ctx, "no-such-instance", client.GetInstanceOptions{}); !errors.Is(err, client.ErrNotFound) || client.StatusOf(err) != 404 {
		t.Fatalf("GetInstance of an unknown name: %v", err)
	}
	if l := must[*client.InstanceList](t, "ListInstances")(c.ListInstances(ctx, client.ListInstancesOptions{Name: name, States: []string{"running"}, Limit: 5})); l.Count != 1 || l.Instances[0].Name != name {
		t.Fatalf("ListInstances: %+v", l)
	}
	if h := must[*client.InstanceHealth](t, "InstanceHealth")(c.InstanceHealth(ctx, name, 5)); h.Name != name {
		t.Fatalf("InstanceHealth: %+v", h)
	}
	if ev := must[*client.InstanceEvents](t, "InstanceEvents")(c.InstanceEvents(ctx, name, 5)); len(ev.Events) == 0 {
		t.Fatalf("InstanceEvents: %+v", ev)
	}
	if lg := must[*client.InstanceLogs](t, "InstanceLogs")(c.InstanceLogs(ctx, name, 20)); lg.InternalName != d.InternalName {
		t.Fatalf("InstanceLogs: %+v", lg)
	}
	// A running instance that is not broken has nothing to repair: the
	// answer is the instance as it is.
	if r := must[*client.Instance](t, "RepairInstance")(c.RepairInstance(ctx, name)); r.Name != name || r.State != client.StateRunning || r.Broken {
		t.Fatalf("RepairInstance: %+v", r)
	}

	// Orchestrations.
	ol := must[*client.OrchestrationList](t, "ListOrchestrations")(c.ListOrchestrations(ctx, client.ListOrchestrationsOptions{Prefix: d.CreateOrchestrationID, Limit: 5}))
	if len(ol.Orchestrations) != 1 || ol.Orchestrations[0].ID != d.CreateOrchestrationID {
		t.Fatalf("ListOrchestrations: %+v", ol)
	}
	od := must[*client.OrchestrationDetail](t, "GetOrchestration")(c.GetOrchestration(ctx, d.CreateOrchestrationID, "full"))
	if od.Status != "Completed" || len(od.Executions) == 0 || len(od.Executions[0].History) == 0 {
		t.Fatalf("GetOrchestration: %+v", od)
	}
	if _, err := c.CancelOrchestration(ctx, d.CreateOrchestrationID, "test"); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("CancelOrchestration of a finished one: %v", err)
	}
	if _, err := c.RaiseEvent(ctx, d.CreateOrchestrationID, "poke", json.RawMessage(`{"x":1}`)); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("RaiseEvent to a finished one: %v", err)
	}
	// The instance's actor runs as long as the instance: recreating it is
	// refused.
	if _, err := c.RecreateOrchestration(ctx, d.ActorOrchestrationID); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("RecreateOrchestration of a running one: %v", err)
	}
	sl := must[*client.ServerLogs](t, "ServerLogs")(c.ServerLogs(ctx, client.ServerLogsOptions{Limit: 10, Orchestration: d.CreateOrchestrationID}))
	if sl.Count == 0 {
		t.Fatalf("ServerLogs: %+v", sl)
	}

	// Backups and restore.
	b := must[*client.Backup](t, "CreateBackup")(c.CreateBackup(ctx, name))
	if b.Instance != name || b.State != client.BackupRunning {
		t.Fatalf("CreateBackup: %+v", b)
	}
	if b = must[*client.Backup](t, "WaitForBackup")(c.WaitForBackup(ctx, b.ID, 200*time.Millisecond)); b.State != client.BackupCompleted {
		t.Fatalf("WaitForBackup: %+v", b)
	}
	if g := must[*client.Backup](t, "GetBackup")(c.GetBackup(ctx, b.ID)); g.ID != b.ID || g.SizeBytes != b.SizeBytes {
		t.Fatalf("GetBackup: %+v", g)
	}
	if _, err := c.GetBackup(ctx, "no-such-backup"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("GetBackup of an unknown id: %v", err)
	}
	if l := must[*client.BackupList](t, "ListBackups")(c.ListBackups(ctx, name)); len(l.Backups) == 0 || l.Backups[0].ID != b.ID {
		t.Fatalf("ListBackups: %+v", l)
	}
	ib := must[*client.InstanceBackups](t, "InstanceBackups")(c.InstanceBackups(ctx, name))
	if ib.Instance != name || ib.Window.Backups == 0 || ib.Window.Earliest == nil || !ib.Settings.Enabled {
		t.Fatalf("InstanceBackups: %+v", ib)
	}
	off := false
	if s := must[*client.BackupSettings](t, "SetBackupSettings")(c.SetBackupSettings(ctx, name, client.BackupSettingsRequest{Retention: "72h", Enabled: &off})); s.Enabled || s.Retention != "72h0m0s" {
		t.Fatalf("SetBackupSettings: %+v", s)
	}
	if _, err := c.SetBackupSettings(ctx, name, client.BackupSettingsRequest{Interval: "soon"}); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("SetBackupSettings with a bad duration: %v", err)
	}
	restored := name + "-r"
	if _, err := c.Restore(ctx, client.RestoreRequest{Name: restored, From: "no-such-instance"}); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Restore from an unknown instance: %v", err)
	}
	rin := must[*client.Instance](t, "Restore")(c.Restore(ctx, client.RestoreRequest{Name: restored, From: name, BackupID: b.ID, StorageGB: 1, NoBackups: true}))
	if rin.Name != restored || rin.State != client.StateCreating {
		t.Fatalf("Restore: %+v", rin)
	}
	if _, err := c.WaitForInstance(ctx, restored, client.WaitOptions{Interval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteInstanceWithOptions(ctx, restored, client.DeleteInstanceOptions{PurgeBackups: true}); err != nil {
		t.Fatal(err)
	}
	if db := must[*client.Backup](t, "DeleteBackup")(c.DeleteBackup(ctx, b.ID)); db.ID != b.ID {
		t.Fatalf("DeleteBackup: %+v", db)
	}
	if _, err := c.WaitForInstance(ctx, restored, client.WaitOptions{State: client.StateDeleted, Interval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}

	// Delete, wait, purge; bulk endpoints.
	del := must[*client.DeleteResponse](t, "DeleteInstance")(c.DeleteInstance(ctx, name))
	if len(del.Records) != 1 {
		t.Fatalf("DeleteInstance: %+v", del)
	}
	if _, err := c.WaitForInstance(ctx, name, client.WaitOptions{State: client.StateDeleted, Interval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if p := must[*client.PurgeResponse](t, "PurgeInstance")(c.PurgeInstance(ctx, name)); len(p.Purged) != 1 {
		t.Fatalf("PurgeInstance: %+v", p)
	}
	res, err := c.BulkCreateInstances(ctx, client.BulkCreateRequest{BaseName: "Bad_Name", Count: 1, Password: "client-pw-123"})
	if !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("BulkCreateInstances with a bad name: %+v, %v", res, err)
	}
	res, err = c.BulkDeleteInstances(ctx, []string{"no-such-a", "no-such-b"})
	if !errors.Is(err, client.ErrNotFound) || res == nil || res.Failed != 2 || len(res.Results) != 2 {
		t.Fatalf("BulkDeleteInstances of unknown names: %+v, %v", res, err)
	}
	bulk := fmt.Sprintf("clb-%d", time.Now().UnixNano()%1_000_000)
	res = must[*client.BulkResponse](t, "BulkCreateInstances")(c.BulkCreateInstances(ctx, client.BulkCreateRequest{BaseName: bulk, Count: 1, Password: "client-pw-123", StorageGB: 1}))
	if res.Succeeded != 1 {
		t.Fatalf("BulkCreateInstances: %+v", res)
	}
	if _, err := c.WaitForInstance(ctx, bulk+"-1", client.WaitOptions{Interval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	res = must[*client.BulkResponse](t, "BulkDeleteInstances")(c.BulkDeleteInstances(ctx, []string{bulk + "-1"}))
	if res.Succeeded != 1 {
		t.Fatalf("BulkDeleteInstances: %+v", res)
	}
	if _, err := c.WaitForInstance(ctx, bulk+"-1", client.WaitOptions{State: client.StateDeleted, Interval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}

	// Do, the escape hatch, and SetToken.
	var raw json.RawMessage
	if err := c.Do(ctx, http.MethodGet, "/api/server/stats", nil, &raw); err != nil || !json.Valid(raw) {
		t.Fatalf("Do: %v %s", err, raw)
	}
	c.SetToken("not-a-token")
	if _, err := c.ServerStats(ctx); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("with a bad token: %v", err)
	}
}

// TestTLS: a pinned fingerprint is required to match; without a pin the
// self-signed certificate is refused; WithTLSConfig trusts a given CA.
func TestTLS(t *testing.T) {
	ctx := context.Background()
	other := "SHA256:" + strings.Repeat("ab", 32)
	c := must[*client.Client](t, "New")(client.New(serverURL, client.WithFingerprint(other)))
	_, err := c.Health(ctx)
	var ce *client.CertificateError
	if !errors.As(err, &ce) || ce.Pinned != other || ce.Got != fingerprint {
		t.Fatalf("wrong pin: %#v", err)
	}
	c = must[*client.Client](t, "New")(client.New(serverURL))
	if _, err := c.Health(ctx); !errors.As(err, &ce) || ce.Pinned != "" || ce.Got != fingerprint {
		t.Fatalf("no pin: %#v", err)
	}
	if _, err := client.New(serverURL, client.WithFingerprint("SHA256:12")); err == nil {
		t.Fatal("a malformed fingerprint was accepted")
	}
	// The test server's own client trusts its certificate as a CA.
	c = must[*client.Client](t, "New")(client.New(serverURL, client.WithTLSConfig(trustingConfig(t)), client.WithTimeout(10*time.Second),
		client.WithUserAgent("client-test")))
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("WithTLSConfig: %v", err)
	}
	hc := &http.Client{Transport: &http.Transport{}}
	c = must[*client.Client](t, "New")(client.New(serverURL, client.WithHTTPClient(hc), client.WithFingerprint(fingerprint)))
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("WithHTTPClient and a pin: %v", err)
	}
	// (net/http itself may give the transport an HTTP/2 tls.Config.)
	if cfg := hc.Transport.(*http.Transport).TLSClientConfig; cfg != nil && (cfg.InsecureSkipVerify || cfg.VerifyConnection != nil) {
		t.Fatal("the caller's transport was changed")
	}
	// Plain HTTP to nothing: a wrapped transport error, not an *Error.
	c = must[*client.Client](t, "New")(client.New("127.0.0.1:1"))
	if _, err := c.Health(ctx); err == nil || client.StatusOf(err) != 0 || !strings.Contains(err.Error(), "http://127.0.0.1:1") {
		t.Fatalf("unreachable: %v", err)
	}
}

func trustingConfig(t *testing.T) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(serverCert)
	return &tls.Config{RootCAs: pool}
}
