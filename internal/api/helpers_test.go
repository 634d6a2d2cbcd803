package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/apptest"
	"github.com/toygres/toygres/internal/web"
)

const (
	testAdminPassword = "adm1n-pass-for-tests"
	testDirPrefix     = "toygres-api-test-"
)

var (
	appOnce  sync.Once
	appErr   error
	shared   *app.App
	appDir   string
	appLog   string // the shared app's JSON log file
	logFile  *os.File
	stopOnce sync.Once
)

func TestMain(m *testing.M) {
	apptest.ReapStale(testDirPrefix)
	code := m.Run()
	closeSharedApp()
	os.Exit(code)
}

// sharedApp is one real control plane (SQLite, local driver, short health
// check interval) shared by the tests; tests use distinct instance names.
func sharedApp(t testing.TB) *app.App {
	t.Helper()
	appOnce.Do(func() {
		if appErr = apptest.CheckRunAs(); appErr != nil {
			return
		}
		appDir = apptest.NewDataDir(t, testDirPrefix)
		appLog = filepath.Join(appDir, "server.log")
		logFile, appErr = os.OpenFile(appLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if appErr != nil {
			return
		}
		logger := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shared, appErr = app.Open(ctx, app.Config{DataDir: appDir, ActorInterval: 500 * time.Millisecond, Logger: logger})
	})
	if appErr != nil {
		t.Fatalf("open app: %v", appErr)
	}
	return shared
}

func closeSharedApp() {
	stopOnce.Do(func() {
		if shared != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = shared.Close(ctx)
			cancel()
		}
		if logFile != nil {
			logFile.Close()
		}
		if appDir != "" && apptest.DeleteInstances(appDir) {
			os.RemoveAll(appDir)
		}
	})
}

// clock is a test clock: real time plus an offset the test can move.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// env is a server under test.
type env struct {
	t     *testing.T
	app   *app.App
	srv   *Server
	ts    *httptest.Server
	clock *clock
	hc    *http.Client
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	a := sharedApp(t)
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join(t.TempDir(), "auth")
	}
	if opts.AdminPassword == "" {
		opts.AdminPassword = testAdminPassword
	}
	if opts.LogFile == "" {
		opts.LogFile = appLog
	}
	srv, err := New(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	mountConsole(t, a, srv)
	c := &clock{}
	srv.now = c.now
	ts := httptest.NewServer(validating(t, srv.Handler()))
	t.Cleanup(ts.Close)
	hc := &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &env{t: t, app: a, srv: srv, ts: ts, clock: c, hc: hc}
}

// resp is a response with its body read.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// json decodes the body into v, failing the test on error.
func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
}

// errMsg returns the "error" field of a JSON error body.
func (r resp) errMsg(t testing.TB) string {
	t.Helper()
	var e ErrorResponse
	r.json(t, &e)
	if e.Error == "" {
		t.Fatalf("no error message in %s", r)
	}
	return e.Error
}

// header options of do.
type hdr map[string]string

// do sends a request. body may be nil, a string/[]byte (sent as is) or a
// value encoded as JSON. auth is a bearer token ("" for none).
func (e *env) do(method, path string, body any, auth string, extra ...hdr) resp {
	e.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(b), "application/json"
	case []byte:
		rd, ct = bytes.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for _, h := range extra {
		for k, v := range h {
			req.Header.Set(k, v)
		}
	}
	res, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// token logs in through /api/login and returns a bearer token.
func (e *env) token() string {
	e.t.Helper()
	r := e.do("POST", "/api/login", LoginRequest{Username: DefaultAdminUser, Password: testAdminPassword}, "")
	if r.status != http.StatusOK {
		e.t.Fatalf("login: %s", r)
	}
	var lr LoginResponse
	r.json(e.t, &lr)
	return lr.Token
}

func expect(t testing.TB, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("want status %d, got %s", status, r)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 20 * time.Millisecond
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
		}
		time.Sleep(delay)
		if delay < 500*time.Millisecond {
			delay *= 2
		}
	}
}

func uniq(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// mountConsole registers the web console on srv's pages, as cmd/toygres
// does, for the tests of the login and limits that guard its forms.
func mountConsole(t *testing.T, a *app.App, srv *Server) {
	t.Helper()
	console, err := web.New(web.Options{App: a, User: srv.AdminUser(), Version: "test",
		Config: srv.ServerConfig, Retries: srv.ServerRetries})
	if err != nil {
		t.Fatal(err)
	}
	console.Register(srv.Pages())
}
