package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHealthIsPublic(t *testing.T) {
	e := newEnv(t, Options{Version: "1.2.3"})
	r := e.do("GET", "/health", nil, "")
	expect(t, r, http.StatusOK)
	var h Health
	r.json(t, &h)
	if h != (Health{Status: "healthy", Service: "toygres", Version: "1.2.3"}) {
		t.Fatalf("health = %+v", h)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("content type %q", ct)
	}
	if r.header.Get("X-Request-Id") == "" || r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("missing standard headers: %v", r.header)
	}
}

// apiRoutes is every /api route except /api/login.
var apiRoutes = []struct{ method, path string }{
	{"GET", "/api/session"},
	{"POST", "/api/logout"},
	{"GET", "/api/instances"},
	{"POST", "/api/instances"},
	{"POST", "/api/instances/bulk"},
	{"POST", "/api/instances/bulk-delete"},
	{"GET", "/api/instances/x"},
	{"DELETE", "/api/instances/x"},
	{"GET", "/api/instances/x/health"},
	{"GET", "/api/instances/x/events"},
	{"GET", "/api/instances/x/logs"},
	{"GET", "/api/orchestrations"},
	{"GET", "/api/orchestrations/x"},
	{"POST", "/api/orchestrations/x/cancel"},
	{"POST", "/api/orchestrations/x/recreate"},
	{"POST", "/api/orchestrations/x/raise-event"},
	{"GET", "/api/server/logs"},
	{"GET", "/api/server/stats"},
	{"GET", "/api/server/config"},
	{"GET", "/api/no-such-endpoint"},
	{"PUT", "/api/instances"},
}

func TestAPIRoutesNeedAuthentication(t *testing.T) {
	e := newEnv(t, Options{})
	expired, err := e.srv.IssueToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	valid := e.token()
	e.clock.advance(2 * time.Hour) // expired is now past its lifetime; valid (7 days) is not
	cases := []struct {
		name string
		hdr  hdr
	}{
		{"none", nil},
		{"wrong token", hdr{"Authorization": "Bearer not-a-real-token"}},
		{"expired token", hdr{"Authorization": "Bearer " + expired}},
		{"malformed header", hdr{"Authorization": "Basic YWRtaW46YWRtaW4="}},
		{"wrong cookie", hdr{"Cookie": SessionCookie + "=forged"}},
		{"expired cookie", hdr{"Cookie": SessionCookie + "=" + expired}},
	}
	for _, rt := range apiRoutes {
		for _, c := range cases {
			body := any(nil)
			if rt.method == "POST" {
				body = `{"name":"x","password":"secret-password"}`
			}
			r := e.do(rt.method, rt.path, body, "", c.hdr)
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: want 401, got %s", rt.method, rt.path, c.name, r)
				continue
			}
			if msg := r.errMsg(t); strings.Contains(msg, "secret-password") {
				t.Errorf("error echoes the body: %s", msg)
			}
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: no WWW-Authenticate header", rt.method, rt.path)
			}
		}
	}
	// The valid token works; unknown endpoints then answer 404/405 JSON.
	expect(t, e.do("GET", "/api/session", nil, valid), http.StatusOK)
	r := e.do("GET", "/api/no-such-endpoint", nil, valid)
	expect(t, r, http.StatusNotFound)
	r.errMsg(t)
	r = e.do("PUT", "/api/instances", nil, valid)
	expect(t, r, http.StatusMethodNotAllowed)
	if r.errMsg(t) == "" || !strings.Contains(r.header.Get("Allow"), "GET") {
		t.Fatalf("405 without Allow: %v", r.header)
	}

	// Pages redirect to the login form.
	for _, p := range []string{"/", "/instances", "/static/app.js"} {
		r := e.do("GET", p, nil, "")
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
			t.Errorf("GET %s: want 303 to /login, got %d %q", p, r.status, r.header.Get("Location"))
		}
	}
	expect(t, e.do("GET", "/", nil, valid), http.StatusOK)
}

// postForm posts a login form.
func (e *env) postForm(path string, v url.Values, extra ...hdr) resp {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.ts.URL+path, strings.NewReader(v.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, h := range extra {
		for k, val := range h {
			req.Header.Set(k, val)
		}
	}
	res, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func TestBrowserLogin(t *testing.T) {
	e := newEnv(t, Options{SessionTTL: time.Hour})
	page := e.do("GET", "/login", nil, "")
	expect(t, page, http.StatusOK)
	if !strings.Contains(string(page.body), `<form method="post" action="/login">`) {
		t.Fatalf("login page: %s", page.body)
	}

	bad := e.postForm("/login", url.Values{"username": {"admin"}, "password": {"wrong-password"}})
	expect(t, bad, http.StatusUnauthorized)
	if bad.header.Get("Set-Cookie") != "" || !strings.Contains(string(bad.body), "Invalid username or password") {
		t.Fatalf("failed login: %v %s", bad.header, bad.body)
	}
	if strings.Contains(string(bad.body), "wrong-password") {
		t.Fatal("the login page echoes the password")
	}

	ok := e.postForm("/login", url.Values{"username": {"admin"}, "password": {testAdminPassword}})
	if ok.status != http.StatusSeeOther || ok.header.Get("Location") != "/" {
		t.Fatalf("login: %s %v", ok, ok.header)
	}
	cookies := (&http.Response{Header: ok.header}).Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies: %v", cookies)
	}
	c := cookies[0]
	if c.Name != SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" ||
		c.MaxAge != 3600 || len(c.Value) != 43 || c.Secure {
		t.Fatalf("cookie attributes: %+v (raw %q)", c, ok.header.Get("Set-Cookie"))
	}
	raw := ok.header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"} {
		if !strings.Contains(raw, attr) {
			t.Fatalf("Set-Cookie %q lacks %s", raw, attr)
		}
	}
	ck := hdr{"Cookie": SessionCookie + "=" + c.Value}
	expect(t, e.do("GET", "/api/instances", nil, "", ck), http.StatusOK)
	home := e.do("GET", "/", nil, "", ck)
	expect(t, home, http.StatusOK)
	var si SessionInfo
	e.do("GET", "/api/session", nil, "", ck).json(t, &si)
	if si.Kind != "browser" || si.User != "admin" {
		t.Fatalf("session: %+v", si)
	}

	// A cross-site form post with the cookie is refused.
	r := e.postForm("/logout", nil, ck, hdr{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
	expect(t, r, http.StatusForbidden)
	expect(t, e.do("GET", "/api/instances", nil, "", ck), http.StatusOK)

	// The session expires.
	e.clock.advance(61 * time.Minute)
	expect(t, e.do("GET", "/api/instances", nil, "", ck), http.StatusUnauthorized)
	e.clock.advance(-61 * time.Minute)

	// Logout revokes it and clears the cookie.
	out := e.postForm("/logout", nil, ck)
	if out.status != http.StatusSeeOther || out.header.Get("Location") != "/login" {
		t.Fatalf("logout: %s", out)
	}
	if sc := out.header.Get("Set-Cookie"); !strings.Contains(sc, "Max-Age=0") {
		t.Fatalf("logout cookie: %q", sc)
	}
	expect(t, e.do("GET", "/api/instances", nil, "", ck), http.StatusUnauthorized)
}

func TestAPILogin(t *testing.T) {
	e := newEnv(t, Options{})
	for _, c := range []struct {
		body   any
		status int
	}{
		{LoginRequest{Username: "admin", Password: "nope-nope"}, http.StatusUnauthorized},
		{LoginRequest{Username: "root", Password: testAdminPassword}, http.StatusUnauthorized},
		{LoginRequest{Username: "admin"}, http.StatusUnauthorized},
		{`{"username":"admin","password":`, http.StatusBadRequest},
		{`{"username":"admin","password":"x","extra":1}`, http.StatusBadRequest},
	} {
		r := e.do("POST", "/api/login", c.body, "")
		expect(t, r, c.status)
		if msg := r.errMsg(t); strings.Contains(msg, "nope-nope") {
			t.Fatalf("error echoes the password: %s", msg)
		}
	}
	start := time.Now()
	r := e.do("POST", "/api/login", LoginRequest{Username: "admin", Password: testAdminPassword}, "")
	expect(t, r, http.StatusOK)
	var lr LoginResponse
	r.json(t, &lr)
	if len(lr.Token) != 43 || lr.ExpiresAt.Before(start.Add(DefaultTokenTTL-time.Minute)) || lr.ExpiresAt.Location() != time.UTC {
		t.Fatalf("login response: %+v", lr)
	}
	if !strings.Contains(string(r.body), `"expires_at":"`) || !strings.Contains(string(r.body), `Z"`) {
		t.Fatalf("expires_at not RFC 3339 UTC: %s", r.body)
	}
	var si SessionInfo
	e.do("GET", "/api/session", nil, lr.Token).json(t, &si)
	if si.Kind != "token" {
		t.Fatalf("session %+v", si)
	}
	// JSON on /login also returns a token (and no cookie).
	r = e.do("POST", "/login", LoginRequest{Username: "admin", Password: testAdminPassword}, "")
	expect(t, r, http.StatusOK)
	if r.header.Get("Set-Cookie") != "" {
		t.Fatal("JSON login set a cookie")
	}
	// /api/logout revokes the token used.
	expect(t, e.do("POST", "/api/logout", nil, lr.Token), http.StatusOK)
	expect(t, e.do("GET", "/api/session", nil, lr.Token), http.StatusUnauthorized)
	// Unsupported login content.
	expect(t, e.do("POST", "/login", nil, "", hdr{"Content-Type": "text/plain"}), http.StatusUnsupportedMediaType)
}

func TestLoginRateLimit(t *testing.T) {
	e := newEnv(t, Options{})
	for i := 0; i < loginMaxFailures; i++ {
		expect(t, e.do("POST", "/api/login", LoginRequest{Username: "admin", Password: "guess-" + strconv.Itoa(i)}, ""), http.StatusUnauthorized)
	}
	// Even the right password is refused now.
	r := e.do("POST", "/api/login", LoginRequest{Username: "admin", Password: testAdminPassword}, "")
	expect(t, r, http.StatusTooManyRequests)
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	r.errMsg(t)
	f := e.postForm("/login", url.Values{"username": {"admin"}, "password": {testAdminPassword}})
	expect(t, f, http.StatusTooManyRequests)
	if f.header.Get("Retry-After") == "" {
		t.Fatal("form 429 without Retry-After")
	}

	// Another client address is not affected.
	req := httptest.NewRequest("POST", "/api/login", strings.NewReader(`{"username":"admin","password":"`+testAdminPassword+`"}`))
	req.RemoteAddr = "192.0.2.7:4000"
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	validating(t, e.srv.Handler()).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("other address: %d %s", rec.Code, rec.Body)
	}

	// After the window the right password works, and clears the count.
	e.clock.advance(loginWindow + time.Second)
	expect(t, e.do("POST", "/api/login", LoginRequest{Username: "admin", Password: testAdminPassword}, ""), http.StatusOK)
	for i := 0; i < loginMaxFailures-1; i++ {
		expect(t, e.do("POST", "/api/login", LoginRequest{Username: "admin", Password: "x-" + strconv.Itoa(i)}, ""), http.StatusUnauthorized)
	}
	expect(t, e.do("POST", "/api/login", LoginRequest{Username: "admin", Password: testAdminPassword}, ""), http.StatusOK)
}

func TestAdminPasswordLifecycle(t *testing.T) {
	a := sharedApp(t)
	dir := filepath.Join(t.TempDir(), "auth")

	// First start without a password: one is generated and only its hash stored.
	s1, err := New(a, Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	gen := s1.GeneratedPassword()
	if len(gen) < 20 {
		t.Fatalf("generated password %q", gen)
	}
	fi, err := os.Stat(filepath.Join(dir, "admin.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.json: %v %v", fi, err)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode: %v %v", di, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "admin.json"))
	if strings.Contains(string(b), gen) || !strings.Contains(string(b), "$pbkdf2-sha256$i=600000$") {
		t.Fatalf("admin.json: %s", b)
	}
	login := func(s *Server, pw string) int {
		req := httptest.NewRequest("POST", "/api/login", strings.NewReader(`{"username":"admin","password":"`+pw+`"}`))
		rec := httptest.NewRecorder()
		validating(t, s.Handler()).ServeHTTP(rec, req)
		return rec.Code
	}
	if code := login(s1, gen); code != http.StatusOK {
		t.Fatalf("login with the generated password: %d", code)
	}
	tok, err := s1.IssueToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	// Restart without a password: the stored hash is used, nothing generated,
	// and the CLI token survives.
	s2, err := New(a, Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s2.GeneratedPassword() != "" {
		t.Fatal("generated a password although one is stored")
	}
	if code := login(s2, gen); code != http.StatusOK {
		t.Fatalf("login after restart: %d", code)
	}
	if _, err := s2.sessions.lookup(tok); err != nil {
		t.Fatalf("token lost across restart: %v", err)
	}
	sb, _ := os.ReadFile(filepath.Join(dir, "sessions.json"))
	if strings.Contains(string(sb), tok) {
		t.Fatal("sessions.json holds a plain token")
	}
	if fi, err := os.Stat(filepath.Join(dir, "sessions.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sessions.json: %v %v", fi, err)
	}

	// The environment's password replaces it and signs everyone out.
	s3, err := New(a, Options{StateDir: dir, AdminPassword: "a-new-admin-password"})
	if err != nil {
		t.Fatal(err)
	}
	if code := login(s3, gen); code != http.StatusUnauthorized {
		t.Fatalf("old password still works: %d", code)
	}
	if code := login(s3, "a-new-admin-password"); code != http.StatusOK {
		t.Fatalf("new password: %d", code)
	}
	if _, err := s3.sessions.lookup(tok); err == nil {
		t.Fatal("sessions survived a password change")
	}
	// Same password again: sessions are kept.
	tok2, _ := s3.IssueToken(time.Hour)
	s4, err := New(a, Options{StateDir: dir, AdminPassword: "a-new-admin-password"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s4.sessions.lookup(tok2); err != nil {
		t.Fatalf("token lost on a restart with the same password: %v", err)
	}
	// A token issued by another Server on the same state dir (a CLI process)
	// is accepted without a restart.
	tok3, _ := s3.IssueToken(time.Hour)
	if _, err := s4.sessions.lookup(tok3); err != nil {
		t.Fatalf("token from another process: %v", err)
	}

	if _, err := New(a, Options{StateDir: dir, AdminPassword: "short"}); err == nil {
		t.Fatal("accepted a 5-character admin password")
	}
	if _, err := s4.IssueToken(0); err == nil {
		t.Fatal("issued a token without lifetime")
	}
}

func TestMetricsAccess(t *testing.T) {
	e := newEnv(t, Options{MetricsToken: "scrape-token-123"})
	// Loopback (the test server) reads without credentials.
	r := e.do("GET", "/metrics", nil, "")
	expect(t, r, http.StatusOK)
	for _, m := range []string{"toygres_http_requests_total", "toygres_instances"} {
		if !strings.Contains(string(r.body), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	if strings.Contains(string(r.body), testAdminPassword) {
		t.Fatal("metrics contain the admin password")
	}
	remote := func(s *Server, auth string) int {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.RemoteAddr = "198.51.100.9:5555"
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		rec := httptest.NewRecorder()
		validating(t, s.Handler()).ServeHTTP(rec, req)
		return rec.Code
	}
	if c := remote(e.srv, ""); c != http.StatusUnauthorized {
		t.Fatalf("remote without token: %d", c)
	}
	if c := remote(e.srv, "wrong"); c != http.StatusUnauthorized {
		t.Fatalf("remote with wrong token: %d", c)
	}
	if c := remote(e.srv, "scrape-token-123"); c != http.StatusOK {
		t.Fatalf("remote with metrics token: %d", c)
	}
	if c := remote(e.srv, e.token()); c != http.StatusOK {
		t.Fatalf("remote with a session: %d", c)
	}
	pub := newEnv(t, Options{PublicMetrics: true})
	if c := remote(pub.srv, ""); c != http.StatusOK {
		t.Fatalf("public metrics: %d", c)
	}
}

func TestLimiterUnit(t *testing.T) {
	c := &clock{}
	l := newLoginLimiter(c.now)
	for i := 0; i < loginMaxFailures; i++ {
		if _, b := l.blocked("a"); b {
			t.Fatalf("blocked after %d failures", i)
		}
		l.fail("a")
		c.advance(time.Second)
	}
	wait, b := l.blocked("a")
	if !b || wait <= 0 || wait > loginWindow {
		t.Fatalf("blocked=%v wait=%v", b, wait)
	}
	c.advance(wait)
	if _, b := l.blocked("a"); b {
		t.Fatal("still blocked after the wait")
	}
}
