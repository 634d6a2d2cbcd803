package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toygres/toygres/internal/tlscert"
)

// serveReal serves the env's server through NewHTTPServer (the server
// `toygres server start` runs) on a fresh loopback port.
func (e *env) serveReal(o HTTPOptions) string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	hs := e.srv.NewHTTPServer(o)
	go func() {
		if o.TLS != nil {
			_ = hs.ServeTLS(ln, "", "")
		} else {
			_ = hs.Serve(ln)
		}
	}()
	e.t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String()
}

// trickle sends a POST /api/login whose body arrives at 10 bytes/s and
// reports when the server answered or closed the connection (open: it had
// not after observe), and what it sent.
func trickle(t *testing.T, addr string, observe time.Duration) (after time.Duration, open bool, answer string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "POST /api/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", addr); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn) // until the server closes (or the test does)
		done <- string(b)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(observe)
	defer deadline.Stop()
	for {
		select {
		case a := <-done:
			return time.Since(start), false, a
		case <-deadline.C:
			return time.Since(start), true, ""
		case <-tick.C:
			_, _ = conn.Write([]byte(" ")) // fails once the server closed; done tells
		}
	}
}

// TestSlowBodyIsCut: a request body trickled in (slowloris) holds a
// connection as long as the server lets it. Without a read timeout it is
// still open after several seconds (the attack works); with one, the
// server answers 408 and closes the connection within the timeout.
func TestSlowBodyIsCut(t *testing.T) {
	e := newEnv(t, Options{})
	const timeout = time.Second

	unprotected := e.serveReal(HTTPOptions{ReadTimeout: -1})
	if after, open, answer := trickle(t, unprotected, 3*timeout); !open {
		t.Fatalf("without a read timeout the slow request ended after %v (%q): the test cannot tell a cut from other endings", after, answer)
	}

	protected := e.serveReal(HTTPOptions{ReadTimeout: timeout})
	after, open, answer := trickle(t, protected, 5*timeout)
	if open {
		t.Fatalf("with a %v read timeout the slow request was still open after %v", timeout, after)
	}
	if after > timeout+time.Second {
		t.Errorf("slow request cut after %v, want within about %v", after, timeout)
	}
	res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(answer)), nil)
	if err != nil {
		t.Fatalf("answer %q: %v", answer, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "not received in time") {
		t.Errorf("answer %d %s, want 408 with a message", res.StatusCode, b)
	}
}

// TestHTTPServerTimeouts: the defaults apply, negative values disable.
func TestHTTPServerTimeouts(t *testing.T) {
	e := newEnv(t, Options{})
	hs := e.srv.NewHTTPServer(HTTPOptions{})
	if hs.ReadHeaderTimeout != DefaultReadHeaderTimeout || hs.ReadTimeout != DefaultReadTimeout ||
		hs.WriteTimeout != DefaultWriteTimeout || hs.IdleTimeout != DefaultIdleTimeout {
		t.Errorf("defaults: %v %v %v %v", hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout)
	}
	hs = e.srv.NewHTTPServer(HTTPOptions{ReadTimeout: 2 * time.Second, WriteTimeout: -1})
	if hs.ReadHeaderTimeout != 2*time.Second || hs.WriteTimeout != 0 {
		t.Errorf("header %v (want the read timeout), write %v", hs.ReadHeaderTimeout, hs.WriteTimeout)
	}
}

// TestOversizedBodies: every route refuses a body over its limit with 413
// and a message, whether the Content-Length announces it or a chunked
// body runs past it.
func TestOversizedBodies(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	jsonOf := func(n int) []byte {
		return []byte(`{"name":"x","password":"` + strings.Repeat("p", n) + `"}`)
	}
	cases := []struct {
		method, path, ct string
		limit            int
		chunkedToo       bool // the handler reads the body
	}{
		{"POST", "/api/login", "application/json", maxSmallBody, true},
		{"POST", "/login", "application/x-www-form-urlencoded", maxSmallBody, true},
		{"POST", "/logout", "application/json", maxSmallBody, false},
		{"POST", "/api/logout", "application/json", maxSmallBody, false},
		{"POST", "/api/instances", "application/json", maxSmallBody, true},
		{"POST", "/api/instances/bulk", "application/json", maxBody, true},
		{"POST", "/api/instances/bulk-delete", "application/json", maxBody, true},
		{"POST", "/api/orchestrations/x/raise-event", "application/json", maxBody, true},
		{"POST", "/api/orchestrations/x/cancel", "application/json", maxBody, false},
		{"DELETE", "/api/instances/x", "application/json", maxBody, false},
		{"POST", "/instances", "application/x-www-form-urlencoded", maxSmallBody, false},
	}
	for _, c := range cases {
		body := jsonOf(c.limit)
		if c.ct != "application/json" {
			body = []byte("username=admin&password=" + strings.Repeat("p", c.limit))
		}
		for _, chunked := range []bool{false, true} {
			if chunked && !c.chunkedToo {
				continue
			}
			var rd io.Reader = bytes.NewReader(body)
			if chunked {
				rd = io.MultiReader(bytes.NewReader(body)) // no length: sent chunked
			}
			req, err := http.NewRequest(c.method, e.ts.URL+c.path, rd)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", c.ct)
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := e.hc.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", c.method, c.path, err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(strings.ToLower(string(b)), "too large") {
				t.Errorf("%s %s (%d bytes, chunked %v): %d %.200s; want 413 saying too large", c.method, c.path, len(body), chunked, res.StatusCode, b)
			}
		}
	}
	// Just under the limit is read (and then judged on its content).
	r := e.do("POST", "/api/login", []byte(`{"username":"admin","password":"`+strings.Repeat("p", 1000)+`"}`), "")
	expect(t, r, http.StatusUnauthorized)
}

// TestLogoutUnknownTokenWritesNothing: POST /logout with a token that is
// no session (random bearer values, cookies) leaves sessions.json as it
// was, byte for byte and modification time; a real logout does change it.
func TestLogoutUnknownTokenWritesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	e := newEnv(t, Options{StateDir: dir})
	tok := e.token() // creates sessions.json
	path := filepath.Join(dir, "sessions.json")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st0, _ := os.Stat(path)
	for i := 0; i < 50; i++ {
		expect(t, e.do("POST", "/logout", nil, uniq("bogus")+strings.Repeat("x", i)), http.StatusOK)
		req, _ := http.NewRequest("POST", e.ts.URL+"/logout", nil)
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: uniq("cookie")})
		res, err := e.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	expect(t, e.do("POST", "/logout", nil, strings.Repeat("y", 300)), http.StatusOK)
	after, _ := os.ReadFile(path)
	st1, _ := os.Stat(path)
	if !bytes.Equal(before, after) || !st1.ModTime().Equal(st0.ModTime()) {
		t.Fatalf("logouts with unknown tokens rewrote %s (mtime %v → %v)", path, st0.ModTime(), st1.ModTime())
	}
	// The token still works, and its own logout does write the file.
	expect(t, e.do("GET", "/api/session", nil, tok), http.StatusOK)
	expect(t, e.do("POST", "/logout", nil, tok), http.StatusOK)
	if after, _ := os.ReadFile(path); bytes.Equal(before, after) {
		t.Fatal("a real logout did not change sessions.json")
	}
	expect(t, e.do("GET", "/api/session", nil, tok), http.StatusUnauthorized)
}

// TestLoginLimiterExactUnderConcurrency: many parallel wrong logins from
// one address: exactly loginMaxFailures are checked (401), the rest get
// 429, and then the right password is refused too.
func TestLoginLimiterExactUnderConcurrency(t *testing.T) {
	e := newEnv(t, Options{})
	const n = 40
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-gate
			b, _ := json.Marshal(LoginRequest{Username: "admin", Password: fmt.Sprintf("wrong-%d", i)})
			res, err := e.hc.Post(e.ts.URL+"/api/login", "application/json", bytes.NewReader(b))
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			statuses <- res.StatusCode
		}(i)
	}
	close(gate)
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[http.StatusUnauthorized] != loginMaxFailures || count[http.StatusTooManyRequests] != n-loginMaxFailures {
		t.Fatalf("statuses %v: want exactly %d × 401 and %d × 429", count, loginMaxFailures, n-loginMaxFailures)
	}
	expect(t, e.do("POST", "/api/login", LoginRequest{Username: "admin", Password: testAdminPassword}, ""), http.StatusTooManyRequests)
}

// TestLimiterPending: attempts in progress count until settled.
func TestLimiterPending(t *testing.T) {
	c := &clock{}
	l := newLoginLimiter(c.now)
	for i := 0; i < loginMaxFailures; i++ {
		if _, ok := l.begin("a"); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if wait, ok := l.begin("a"); ok || wait != pendingRetry {
		t.Fatalf("6th attempt while 5 are checked: admitted %v wait %v", ok, wait)
	}
	l.end("a", loginUnchecked) // abandoned: not a failure
	if _, ok := l.begin("a"); !ok {
		t.Fatal("an abandoned attempt still counts")
	}
	for i := 0; i < loginMaxFailures; i++ {
		l.end("a", loginFailed)
	}
	if wait, ok := l.begin("a"); ok || wait <= pendingRetry {
		t.Fatalf("after 5 failures: admitted %v wait %v", ok, wait)
	}
	if _, ok := l.begin("b"); !ok {
		t.Fatal("another address is refused")
	}
	l.end("b", loginOK)
	if len(l.pending) != 0 {
		t.Fatalf("pending reservations left: %v", l.pending)
	}
}

// TestInvalidUTF8Login: a password (or user name) that is not UTF-8 is
// refused with 400 naming the field, for JSON and form logins, and is not
// counted as a failed attempt.
func TestInvalidUTF8Login(t *testing.T) {
	e := newEnv(t, Options{})
	for i := 0; i < loginMaxFailures+1; i++ {
		r := e.do("POST", "/api/login", `{"username":"admin","password":"`+testAdminPassword+"\xff"+`"}`, "")
		expect(t, r, http.StatusBadRequest)
		if msg := r.errMsg(t); !strings.Contains(msg, `"password"`) || !strings.Contains(msg, "UTF-8") {
			t.Fatalf("message %q", msg)
		}
	}
	r := e.do("POST", "/api/login", `{"username":"adm\ud800in","password":"x"}`, "")
	if expect(t, r, http.StatusBadRequest); !strings.Contains(r.errMsg(t), `"username"`) {
		t.Fatalf("message %q", r.errMsg(t))
	}
	f := e.postForm("/login", url.Values{"username": {"admin"}, "password": {"pass\xc3("}})
	if f.status != http.StatusBadRequest || !strings.Contains(string(f.body), "password is not valid UTF-8") {
		t.Fatalf("form: %d %s", f.status, f.body)
	}
	// None of them counted: the right password still works.
	expect(t, e.do("POST", "/api/login", LoginRequest{Username: "admin", Password: testAdminPassword}, ""), http.StatusOK)
}

// TestTLSCookiesAndHSTS: over TLS the session cookie is Secure and HSTS is
// sent; over plain HTTP on loopback neither.
func TestTLSCookiesAndHSTS(t *testing.T) {
	e := newEnv(t, Options{})
	cert, err := tlscert.LoadOrGenerate(t.TempDir(), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	addr := e.serveReal(HTTPOptions{TLS: tlscert.ServerConfig(cert)})
	pinned, err := tlscert.PinnedConfig(cert.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pinned}, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	form := url.Values{"username": {"admin"}, "password": {testAdminPassword}}.Encode()
	res, err := hc.Post("https://"+addr+"/login", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("TLS login: %d, HSTS %q", res.StatusCode, res.Header.Get("Strict-Transport-Security"))
	}
	var session *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == SessionCookie {
			session = c
		}
	}
	if session == nil || !session.Secure || !session.HttpOnly {
		t.Fatalf("session cookie over TLS: %+v", session)
	}
	// Plain HTTP to a TLS port is not served.
	if res, err := http.Get("http://" + addr + "/health"); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Fatal("the TLS server answered plain HTTP")
		}
	}
	// Plain HTTP server (loopback quick start): no HSTS, cookie not Secure.
	f := e.postForm("/login", url.Values{"username": {"admin"}, "password": {testAdminPassword}})
	if f.header.Get("Strict-Transport-Security") != "" || strings.Contains(strings.ToLower(f.header.Get("Set-Cookie")), "secure") {
		t.Fatalf("plain HTTP: HSTS %q, cookie %q", f.header.Get("Strict-Transport-Security"), f.header.Get("Set-Cookie"))
	}
}

// consoleCookie logs in to the console as admin and returns the session
// cookie as a Cookie header value.
func (e *env) consoleCookie(t *testing.T) string {
	t.Helper()
	login := e.postForm("/login", url.Values{"username": {"admin"}, "password": {testAdminPassword}})
	expect(t, login, http.StatusSeeOther)
	for _, c := range (&http.Response{Header: login.header}).Cookies() {
		if c.Name == SessionCookie {
			return c.Name + "=" + c.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// TestInvalidUTF8ConsoleCreate: the console's create and bulk-create forms
// refuse a password that is not UTF-8 (the API would otherwise receive it
// with the bad bytes replaced by U+FFFD) with 400 naming the field, and
// nothing is created.
func TestInvalidUTF8ConsoleCreate(t *testing.T) {
	e := newEnv(t, Options{})
	cookie := e.consoleCookie(t)
	name := uniq("utf")
	for path, form := range map[string]url.Values{
		"/instances":      {"name": {name}, "password": {"long-\xff-enough"}},
		"/instances/bulk": {"base_name": {name}, "count": {"2"}, "password": {"long-\xed\xa0\x80-enough"}},
	} {
		r := e.postForm(path, form, hdr{"Cookie": cookie})
		if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "password is not valid UTF-8 text") {
			t.Errorf("POST %s: %d, want 400 saying the password is not valid UTF-8:\n%.400s", path, r.status, r.body)
		}
	}
	assertNothingCreated(t, e, name)
}
