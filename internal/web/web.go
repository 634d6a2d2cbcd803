// Package web is Toygres' web console: server-rendered HTML pages over the
// same data sources as the JSON API (the CMS, the durable store's client,
// the data-plane driver, the runtime and its metrics), with a little vanilla
// JavaScript for live updates. Templates, the stylesheet and the script are
// embedded, so `go build` alone produces a binary that serves the console.
//
// The console is mounted by package api behind its login: every page needs a
// session cookie, and unauthenticated requests are redirected to /login.
// Forms post with the session cookie (SameSite=Strict) and pass through the
// API server's cross-origin protection. Changes go through the same
// services of package app as the JSON API's (the two are siblings; neither
// calls the other), so validation and error messages (app.Describe) are the
// API's; passwords travel only in request bodies, never in URLs or logs.
//
// # Live updates
//
// Every page marks the parts that change with data-live="<region>". The
// script polls the page's own URL every PollInterval with the header
// X-Toygres-Live: 1; the server answers with JSON holding each region
// re-rendered from the same templates ({"regions": {name: html}}), and the
// script swaps the regions whose HTML changed, keeping checkbox selections
// and focus. No page reloads.
package web

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/app"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure the console.
type Options struct {
	// App is the running control plane, whose services the console reads.
	App *app.App
	// Config returns the effective configuration with secrets masked (the
	// API's GET /api/server/config data), shown on the System page.
	Config func(ctx context.Context) client.ServerConfig
	// Retries returns the retry tuning report (the API's GET
	// /api/server/retries data), shown on the System page.
	Retries func(ctx context.Context) *client.ServerRetries
	// User is the signed-in account's name; Version the server's version.
	User, Version string
	// Logger receives the console's errors (default: the app's logger).
	Logger *slog.Logger
	// PollInterval is the live-update period (default 1.5 s).
	PollInterval time.Duration
}

// statusClientClosed answers a request whose client went away (nginx's
// 499: no standard code says it).
const statusClientClosed = 499

// DefaultPollInterval is the live-update period.
const DefaultPollInterval = 1500 * time.Millisecond

// Console serves the web console's pages.
type Console struct {
	opts    Options
	app     *app.App
	log     *slog.Logger
	pages   map[string]*template.Template
	retries *retrySampler
	started time.Time
}

// New builds the console.
func New(opts Options) (*Console, error) {
	if opts.App == nil {
		return nil, errors.New("web: the app must be open")
	}
	if opts.Logger == nil {
		opts.Logger = opts.App.Logger()
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	c := &Console{opts: opts, app: opts.App, log: opts.Logger.With("component", "web"), started: time.Now()}
	var err error
	if c.pages, err = parseTemplates(); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	c.retries = newRetrySampler(opts.App.Metrics(), c.started)
	return c, nil
}

// Register adds the console's routes to mux (which the caller protects
// with its login).
func (c *Console) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", c.handleDashboard)
	mux.HandleFunc("GET /instances", c.handleInstances)
	mux.HandleFunc("POST /instances", c.handleCreate)
	mux.HandleFunc("POST /instances/bulk", c.handleBulkCreate)
	mux.HandleFunc("POST /instances/bulk-delete", c.handleBulkDelete)
	mux.HandleFunc("GET /instances/{name}", c.handleInstance)
	mux.HandleFunc("POST /instances/{name}/delete", c.handleDelete)
	mux.HandleFunc("POST /instances/{name}/backups", c.handleBackupNow)
	mux.HandleFunc("POST /instances/{name}/restore", c.handleRestore)
	mux.HandleFunc("GET /orchestrations", c.handleOrchestrations)
	mux.HandleFunc("GET /orchestrations/{id}", c.handleOrchestration)
	mux.HandleFunc("POST /orchestrations/{id}/cancel", c.handleCancel)
	mux.HandleFunc("POST /orchestrations/{id}/recreate", c.handleRecreate)
	mux.HandleFunc("POST /orchestrations/{id}/raise-event", c.handleRaiseEvent)
	mux.HandleFunc("GET /system", c.handleSystem)
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.HandleFunc("GET /static/{file}", func(w http.ResponseWriter, r *http.Request) { files.ServeHTTP(w, r) })
	mux.HandleFunc("/", c.handleNotFound)
}

var pageNames = []string{"dashboard", "instances", "instance", "orchestrations", "orchestration", "system", "notfound"}

// liveRegions are each page's data-live regions, re-rendered for polls.
var liveRegions = map[string][]string{
	"dashboard":      {"dash.counts", "dash.retries", "dash.active", "dash.events"},
	"instances":      {"inst.table"},
	"instance":       {"inst.head", "inst.facts", "inst.conn", "inst.health", "inst.events", "inst.logs", "inst.backups", "inst.servers"},
	"orchestrations": {"orch.table"},
	"orchestration":  {"orch.head", "orch.execs"},
	"system":         {"sys.workers", "sys.counts", "sys.retries", "sys.process"},
}

func parseTemplates() (map[string]*template.Template, error) {
	base, err := template.New("base").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, p := range pageNames {
		t, err := base.Clone()
		if err != nil {
			return nil, err
		}
		if _, err := t.ParseFS(templateFS, "templates/"+p+".html"); err != nil {
			return nil, err
		}
		out[p] = t
	}
	return out, nil
}

// view is what every page template receives.
type view struct {
	Title   string
	Nav     string // active navigation entry
	User    string
	Version string
	Flash   *flash
	PollMs  int64
	LiveURL string // the page's canonical URL, polled for live updates
	Page    any
}

// liveURL is the page's canonical URL: a form post re-rendered with an
// error (POST /instances/bulk) is polled, and shown, as its page's URL.
func liveURL(r *http.Request) string {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return r.URL.RequestURI()
	}
	p := r.URL.Path
	for _, suffix := range []string{"/bulk-delete", "/bulk", "/raise-event", "/cancel", "/recreate", "/delete", "/backups", "/restore"} {
		if rest, ok := strings.CutSuffix(p, suffix); ok {
			return rest
		}
	}
	return p
}

// flash is a one-time notice shown after a redirect.
type flash struct {
	Kind string `json:"k"` // "ok" or "error"
	Msg  string `json:"m"`
}

const flashCookie = "toygres_flash"

func setFlash(w http.ResponseWriter, r *http.Request, kind, msg string) {
	b, _ := json.Marshal(flash{Kind: kind, Msg: msg})
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: base64.RawURLEncoding.EncodeToString(b), Path: "/",
		MaxAge: 60, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: isHTTPS(r)})
}

// isHTTPS mirrors the API's rule for marking cookies Secure.
func isHTTPS(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

// takeFlash reads and clears the flash cookie.
func takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	ck, err := r.Cookie(flashCookie)
	if err != nil || ck.Value == "" {
		return nil
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: isHTTPS(r)})
	b, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return nil
	}
	var f flash
	if json.Unmarshal(b, &f) != nil || f.Msg == "" || len(f.Msg) > 2000 {
		return nil
	}
	if f.Kind != "ok" {
		f.Kind = "error"
	}
	return &f
}

// csp allows only the console's own script and stylesheet.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// isLive reports a live-update poll.
func isLive(r *http.Request) bool { return r.Header.Get("X-Toygres-Live") == "1" }

// liveResponse is the body of a live-update poll.
type liveResponse struct {
	Regions map[string]string `json:"regions"`
	At      time.Time         `json:"at"`
}

// render writes a page, or for a live poll the listed regions as JSON.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page, title, nav string, data any) {
	t := c.pages[page]
	regions := liveRegions[page]
	v := view{Title: title, Nav: nav, User: c.opts.User, Version: c.opts.Version, PollMs: c.opts.PollInterval.Milliseconds(),
		LiveURL: liveURL(r), Page: data}
	if isLive(r) {
		out := liveResponse{Regions: map[string]string{}, At: time.Now().UTC()}
		for _, name := range regions {
			var buf bytes.Buffer
			if err := t.ExecuteTemplate(&buf, name, v); err != nil {
				c.internal(w, r, fmt.Errorf("render region %s: %w", name, err))
				return
			}
			out.Regions[name] = buf.String()
		}
		b, err := json.Marshal(out)
		if err != nil {
			c.internal(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write(b)
		return
	}
	if len(regions) == 0 {
		v.PollMs = 0
	}
	v.Flash = takeFlash(w, r)
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.internal(w, r, fmt.Errorf("render %s: %w", page, err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", csp)
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// internal logs err with the request id and answers 500 without details.
func (c *Console) internal(w http.ResponseWriter, r *http.Request, err error) {
	id := w.Header().Get("X-Request-Id")
	if r.Context().Err() != nil {
		// The browser went away (it navigated while a live update was in
		// flight): no server error, and nobody reads the answer.
		c.log.Debug("console request abandoned by the client", "method", r.Method, "path", r.URL.Path, "request_id", id)
		w.WriteHeader(statusClientClosed)
		return
	}
	c.log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err.Error())
	msg := "Internal error (request id " + id + "); see the server log."
	if isLive(r) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		b, _ := json.Marshal(map[string]string{"error": msg})
		_, _ = w.Write(b)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = io.WriteString(w, msg+"\n")
}

func (c *Console) handleNotFound(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusNotFound, "notfound", "Not found", "", struct{ Path, What string }{r.URL.Path, "page"})
}

func (c *Console) notFound(w http.ResponseWriter, r *http.Request, what string) {
	c.render(w, r, http.StatusNotFound, "notfound", "Not found", "", struct{ Path, What string }{r.URL.Path, what})
}

// problem describes err for the user as app.Describe does (the API's
// error body says the same): the status code, the one-line message and the
// console form field it is about ("" when none is). An internal error is
// logged in full and described by its request id only.
func (c *Console) problem(w http.ResponseWriter, r *http.Request, err error) (status int, msg, field string) {
	p := app.Describe(err)
	if p.Kind == app.KindInternal {
		id := w.Header().Get("X-Request-Id")
		c.log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err.Error())
		return http.StatusInternalServerError, "internal error (request id " + id + "); see the server log", ""
	}
	return p.HTTPStatus(), p.Msg, formFields[p.Field]
}

// redirect answers a form post with 303 and a flash notice.
func redirect(w http.ResponseWriter, r *http.Request, to, kind, msg string) {
	if msg != "" {
		setFlash(w, r, kind, msg)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// parseForm reads a form body (at most 64 KiB).
func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	return r.ParseForm()
}

func trimmed(r *http.Request, key string) string { return strings.TrimSpace(r.PostForm.Get(key)) }
