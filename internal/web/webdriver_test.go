package web_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A minimal W3C WebDriver client for chromedriver: enough to drive
// headless Chromium through the console like a person would (navigate,
// click, type, run a script, take a screenshot). It needs no Go module
// beyond the standard library.

const installHint = "install chromium: apt-get install -y chromium chromium-driver"

// browserPaths finds Chromium and chromedriver ($TOYGRES_CHROMIUM and
// $TOYGRES_CHROMEDRIVER override the Debian paths).
func browserPaths() (chromium, chromedriver string, err error) {
	find := func(env string, names ...string) string {
		if p := os.Getenv(env); p != "" {
			return p
		}
		for _, n := range names {
			if p, err := exec.LookPath(n); err == nil {
				return p
			}
		}
		return ""
	}
	chromium = find("TOYGRES_CHROMIUM", "/usr/bin/chromium", "chromium")
	chromedriver = find("TOYGRES_CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")
	for _, p := range []string{chromium, chromedriver} {
		if p == "" {
			return "", "", errors.New(installHint)
		}
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("%s (%v)", installHint, err)
		}
	}
	return chromium, chromedriver, nil
}

// browser is one WebDriver session on its own chromedriver.
type browser struct {
	t       *testing.T
	base    string // http://127.0.0.1:<port>
	session string
	http    *http.Client
	width   int
	height  int
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startBrowser starts chromedriver and a headless Chromium session with a
// fresh profile. Everything is stopped when the test ends.
func startBrowser(t *testing.T, logDir string) *browser {
	t.Helper()
	chromium, chromedriver, err := browserPaths()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	logFile, err := os.Create(filepath.Join(logDir, "chromedriver.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chromedriver, "--port="+strconv.Itoa(port), "--log-path="+logFile.Name())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start chromedriver: %v (%s)", err, installHint)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b := &browser{t: t, base: "http://127.0.0.1:" + strconv.Itoa(port), http: &http.Client{Timeout: 2 * time.Minute}, width: 1360, height: 900}
	t.Cleanup(func() {
		if b.session != "" {
			_, _ = b.call("DELETE", "/session/"+b.session, nil)
		}
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
		logFile.Close()
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := b.call("GET", "/status", nil)
		var st struct {
			Ready bool `json:"ready"`
		}
		if err == nil && json.Unmarshal(v, &st) == nil && st.Ready {
			break
		}
		select {
		case <-exited:
			t.Fatalf("chromedriver exited at start; see %s", logFile.Name())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver did not become ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling chromedriver's readiness
	}

	profile := t.TempDir()
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":             "chrome",
		"pageLoadStrategy":        "normal",
		"unhandledPromptBehavior": "dismiss and notify",
		"goog:chromeOptions": map[string]any{
			"binary": chromium,
			"args": []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
				"--disable-background-networking", "--disable-component-update", "--disable-sync",
				"--disable-dev-shm-usage", "--user-data-dir=" + profile,
				fmt.Sprintf("--window-size=%d,%d", b.width, b.height), "--lang=en-US"},
		},
	}}}
	v, err := b.call("POST", "/session", caps)
	if err != nil {
		t.Fatalf("start a Chromium session: %v (%s)", err, installHint)
	}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(v, &sess); err != nil || sess.SessionID == "" {
		t.Fatalf("new session: %s", v)
	}
	b.session = sess.SessionID
	b.resize(b.width, b.height)
	return b
}

// call sends one WebDriver command and returns its "value".
func (b *browser) call(method, path string, body any) (json.RawMessage, error) {
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	var out struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, raw)
	}
	if res.StatusCode >= 300 {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(out.Value, &e)
		return out.Value, fmt.Errorf("%s %s: %s: %s", method, path, e.Error, firstLine(e.Message))
	}
	return out.Value, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func (b *browser) cmd(method, path string, body any) json.RawMessage {
	b.t.Helper()
	v, err := b.call(method, "/session/"+b.session+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

func (b *browser) resize(w, h int) {
	b.cmd("POST", "/window/rect", map[string]int{"width": w, "height": h})
}

// open navigates and waits for the page to load.
func (b *browser) open(url string) {
	b.t.Helper()
	b.cmd("POST", "/url", map[string]string{"url": url})
}

// js runs a script (a function body; arguments as arguments[i]) and
// decodes its result into out (if not nil).
func (b *browser) js(out any, script string, args ...any) {
	b.t.Helper()
	if args == nil {
		args = []any{}
	}
	v := b.cmd("POST", "/execute/sync", map[string]any{"script": script, "args": args})
	if out != nil {
		if err := json.Unmarshal(v, out); err != nil {
			b.t.Fatalf("script result %s: %v", v, err)
		}
	}
}

func (b *browser) jsString(script string, args ...any) string {
	b.t.Helper()
	var s *string
	b.js(&s, script, args...)
	if s == nil {
		return ""
	}
	return *s
}

func (b *browser) text(css string) string {
	b.t.Helper()
	return b.jsString(`const e = document.querySelector(arguments[0]); return e ? e.innerText : null;`, css)
}

func (b *browser) element(css string) string {
	b.t.Helper()
	v := b.cmd("POST", "/element", map[string]string{"using": "css selector", "value": css})
	var m map[string]string
	if err := json.Unmarshal(v, &m); err != nil {
		b.t.Fatalf("element %s: %s", css, v)
	}
	for _, id := range m {
		return id
	}
	b.t.Fatalf("no element %s", css)
	return ""
}

// click clicks an element like a user (scrolled into view, real events).
// A live update may replace the element between finding and clicking it
// (WebDriver's "stale element reference"): it is then found again, as a
// user would see the new one.
func (b *browser) click(css string) {
	b.t.Helper()
	for try := 1; ; try++ {
		_, err := b.call("POST", "/session/"+b.session+"/element/"+b.element(css)+"/click", map[string]any{})
		if err == nil {
			return
		}
		if try == 3 || !strings.Contains(err.Error(), "stale element reference") {
			b.t.Fatal(err)
		}
	}
}

// typeInto clears a field and types text into it.
func (b *browser) typeInto(css, text string) {
	b.t.Helper()
	id := b.element(css)
	b.cmd("POST", "/element/"+id+"/clear", map[string]any{})
	if text != "" {
		b.cmd("POST", "/element/"+id+"/value", map[string]string{"text": text})
	}
}

// markPage sets a marker on the current document; navigated reports
// whether the document was replaced since.
func (b *browser) markPage() {
	b.t.Helper()
	b.js(nil, `window.__testMarker = 'still-here'; return true;`)
}

func (b *browser) navigated() bool {
	b.t.Helper()
	return b.jsString(`return window.__testMarker || '';`) != "still-here"
}

// pollsOK fails the test if the page's live updates failed.
func (b *browser) pollsOK(where string) {
	b.t.Helper()
	var st struct {
		Polls, Swaps, Errors int
	}
	b.waitFor("a live update of the "+where, 10*time.Second, func() (bool, string) {
		b.js(&st, `const c = window.toygresConsole; return {Polls: c.polls, Swaps: c.swaps, Errors: c.errors};`)
		return st.Polls > 0 || st.Errors > 0, fmt.Sprintf("%+v", st)
	})
	if st.Errors > 0 {
		b.t.Errorf("%s: live updates failed: %+v; status %q", where, st, b.text("#live-status"))
	}
}

// clickAndLoad clicks something that navigates and waits for the new page.
func (b *browser) clickAndLoad(css string) {
	b.t.Helper()
	b.markPage()
	b.click(css)
	b.waitFor("the page after clicking "+css, 30*time.Second, func() (bool, string) {
		var st struct {
			Marker string `json:"marker"`
			Ready  string `json:"ready"`
			URL    string `json:"url"`
		}
		b.js(&st, `return {marker: window.__testMarker || '', ready: document.readyState, url: location.href};`)
		return st.Marker == "" && st.Ready == "complete", st.URL + " " + st.Ready
	})
}

// waitFor polls cond until it holds or timeout passes.
func (b *browser) waitFor(what string, timeout time.Duration, cond func() (bool, string)) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		if state != last {
			b.t.Logf("waiting for %s: %s", what, state)
			last = state
		}
		if time.Now().After(deadline) {
			b.screenshot("FAILED-" + strings.NewReplacer(" ", "-", "/", "-").Replace(shorten(what, 40)))
			b.t.Fatalf("timed out after %v waiting for %s (last: %s)", timeout, what, state)
		}
		time.Sleep(200 * time.Millisecond) // the poll period of the condition
	}
}

// waitText waits until the element's text contains want.
func (b *browser) waitText(css, want string, timeout time.Duration) {
	b.t.Helper()
	b.waitFor(fmt.Sprintf("%q in %s", want, css), timeout, func() (bool, string) {
		s := b.text(css)
		return strings.Contains(s, want), shorten(strings.Join(strings.Fields(s), " "), 160)
	})
}

var shotDir string

// screenshot saves the whole page as <dir>/<name>.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	if shotDir == "" {
		return
	}
	var h int
	b.js(&h, `return Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight));`)
	h = min(max(h+120, b.height), 6000) // the window's chrome is part of its height in headless mode too
	b.resize(b.width, h)
	v := b.cmd("GET", "/screenshot", nil)
	b.resize(b.width, b.height)
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	png, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(shotDir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
