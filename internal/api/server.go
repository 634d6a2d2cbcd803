package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/toygres/toygres/internal/cms"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/config"
)

// Options configure a Server. Zero values mean defaults.
type Options struct {
	// AdminUser is the single account's user name (default "admin").
	AdminUser string
	// AdminPassword comes from the environment (TOYGRES_ADMIN_PASSWORD). When
	// set, its hash replaces the stored one (and a changed password revokes
	// every session). When empty, the stored hash is used, or on the very
	// first start a random password is generated (see GeneratedPassword).
	AdminPassword string
	// StateDir holds the auth state: admin.json (the password hash) and
	// sessions.json (hashed session tokens), both mode 0600. Default:
	// <DataDir>/auth, created with mode 0700.
	StateDir string
	// LogFile is the server's JSON log file, read by GET /api/server/logs.
	LogFile string
	// Version is reported by /health and /api/server/config.
	Version string
	// SessionTTL is the lifetime of browser sessions (default 12h).
	SessionTTL time.Duration
	// TokenTTL is the lifetime of bearer tokens from POST /api/login
	// (default 7 days). IssueToken takes its own lifetime.
	TokenTTL time.Duration
	// MetricsToken, when set, is a bearer token that may read /metrics
	// (for a Prometheus scraper on another host).
	MetricsToken string
	// PublicMetrics lets anyone read /metrics. By default /metrics is open
	// to loopback clients only; others need MetricsToken or a session.
	PublicMetrics bool
	// SharedSessions, when set, keeps login sessions there instead of in
	// StateDir/sessions.json: servers sharing one store (replicas on one
	// PostgreSQL database) then honour each other's tokens and logouts.
	SharedSessions cms.SessionStore
	// RetryConfig is the configuration the app's retry policies and
	// breakers were read from (config.Load), for the sources shown by
	// /api/server/config; nil: the built-in defaults, with the app's
	// RetryPolicies shown as configured.
	RetryConfig *config.Config
}

// Defaults.
const (
	DefaultAdminUser  = "admin"
	DefaultSessionTTL = 12 * time.Hour
	DefaultTokenTTL   = 7 * 24 * time.Hour
	// SessionCookie is the browser session cookie's name.
	SessionCookie = "toygres_session"
	// minAdminPassword is the shortest admin password accepted.
	minAdminPassword = 8
)

// Server is Toygres' HTTP API, login and web console.
type Server struct {
	app       *app.App
	opts      Options
	log       *slog.Logger
	now       func() time.Time
	startedAt time.Time

	sessions  sessionKeeper
	limiter   *loginLimiter
	adminUser string
	adminHash parsedHash
	generated string
	hashSem   chan struct{} // bounds concurrent PBKDF2 computations

	requests  *prometheus.CounterVec
	durations *prometheus.HistogramVec
	logins    *prometheus.CounterVec

	api     *http.ServeMux // the /api endpoints, without authentication
	pages   *http.ServeMux // the browser pages (see Pages)
	handler http.Handler
}

// New builds the server over a running App: it loads or creates the admin
// credential and the session store in StateDir.
func New(a *app.App, opts Options) (*Server, error) {
	if a == nil {
		return nil, errors.New("api: the app must be open")
	}
	if opts.AdminUser == "" {
		opts.AdminUser = DefaultAdminUser
	}
	if opts.StateDir == "" {
		if a.Config().DataDir == "" {
			return nil, errors.New("api: no StateDir and no data dir")
		}
		opts.StateDir = filepath.Join(a.Config().DataDir, "auth")
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	log := a.Logger()
	if log == nil {
		log = slog.Default()
	}
	s := &Server{app: a, opts: opts, log: log.With("component", "api"), now: time.Now, startedAt: time.Now(),
		adminUser: opts.AdminUser, hashSem: make(chan struct{}, 2)}
	s.limiter = newLoginLimiter(func() time.Time { return s.now() })

	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("api: create state dir: %w", err)
	}
	var err error
	if opts.SharedSessions != nil {
		s.sessions = &sharedSessions{store: opts.SharedSessions, now: func() time.Time { return s.now() }}
	} else if s.sessions, err = newSessionStore(filepath.Join(opts.StateDir, "sessions.json"), func() time.Time { return s.now() }); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if err := s.loadAdmin(); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s.initMetrics()
	if s.handler, err = s.routes(); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return s, nil
}

// loadAdmin sets the admin password hash from the environment, the stored
// file, or a newly generated password.
func (s *Server) loadAdmin() error {
	path := filepath.Join(s.opts.StateDir, "admin.json")
	var stored *adminFile
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read admin credential: %w", err)
	default:
		var f adminFile
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("read admin credential %s: %w", path, err)
		}
		stored = &f
	}
	var storedHash parsedHash
	if stored != nil {
		if storedHash, err = parseHash(stored.PasswordHash); err != nil {
			return fmt.Errorf("admin credential %s: %w", path, err)
		}
	}

	password := s.opts.AdminPassword
	switch {
	case password != "":
		if len(password) < minAdminPassword {
			return fmt.Errorf("the admin password must be at least %d characters", minAdminPassword)
		}
		if stored != nil && storedHash.verify(password) {
			s.adminHash = storedHash
			return nil
		}
	case stored != nil:
		s.adminHash = storedHash
		return nil
	default:
		if password, err = randomToken(18); err != nil {
			return err
		}
		s.generated = password
	}
	h, err := hashPassword(password)
	if err != nil {
		return err
	}
	nb, _ := json.MarshalIndent(adminFile{User: s.adminUser, PasswordHash: h, UpdatedAt: s.now().UTC()}, "", "  ")
	if err := writeFileAtomic(path, nb); err != nil {
		return fmt.Errorf("save admin credential: %w", err)
	}
	s.adminHash, _ = parseHash(h)
	if stored != nil {
		s.log.Info("admin password changed; signing out every session")
		if err := s.sessions.revokeAll(); err != nil {
			return err
		}
	}
	return nil
}

// GeneratedPassword is the admin password generated at this start because
// none was configured or stored ("" otherwise). Print it once; only its
// hash is kept.
func (s *Server) GeneratedPassword() string { return s.generated }

// IssueToken creates a bearer token valid for ttl, for the local CLI's
// credential file. It is stored hashed like any session.
func (s *Server) IssueToken(ttl time.Duration) (string, error) {
	tok, _, err := s.sessions.issue("token", ttl)
	return tok, err
}

// Handler is the HTTP handler of every endpoint.
func (s *Server) Handler() http.Handler { return s.handler }

// AdminUser is the single account's user name.
func (s *Server) AdminUser() string { return s.adminUser }

// Pages is the mux of the browser pages (the web console registers its
// routes on it): it serves every path the API does not claim, behind the
// browser login (without a session, 303 to /login). Register before
// serving.
func (s *Server) Pages() *http.ServeMux { return s.pages }

// ServerConfig is the effective configuration with secrets masked (GET
// /api/server/config).
func (s *Server) ServerConfig(ctx context.Context) ServerConfig { return s.serverConfig(ctx) }

// ServerRetries is the retry tuning report (GET /api/server/retries).
func (s *Server) ServerRetries(context.Context) *ServerRetries { r := s.serverRetries(); return &r }

func (s *Server) initMetrics() {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "toygres_http_requests_total",
		Help: "HTTP requests by method, route pattern and status code."}, []string{"method", "route", "code"})
	s.durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "toygres_http_request_duration_seconds",
		Help: "HTTP request latency by route pattern.", Buckets: prometheus.DefBuckets}, []string{"route"})
	s.logins = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "toygres_login_attempts_total",
		Help: "Login attempts by result (success, failure, rate_limited)."}, []string{"result"})
	if s.app.Metrics() == nil {
		return
	}
	s.requests = register(s.app.Metrics(), s.requests)
	s.durations = register(s.app.Metrics(), s.durations)
	s.logins = register(s.app.Metrics(), s.logins)
}

// register adds c to reg, or returns the collector already registered (a
// second Server over the same App shares the metrics).
func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// routes builds the handler tree:
//
//	logging, request id, security headers
//	└ cross-origin protection (unsafe cross-site browser requests → 403)
//	  ├ public: /health, /metrics (see metricsAllowed), /login, /logout, /api/login
//	  ├ /api/…: bearer token or session cookie, else 401 JSON
//	  └ other paths: Pages (the web console, which cmd/toygres registers);
//	    session, else 303 to /login
func (s *Server) routes() (http.Handler, error) {
	s.api = http.NewServeMux()
	for _, rt := range s.apiRoutes() {
		s.api.HandleFunc(rt.pattern, rt.handler)
	}
	s.pages = http.NewServeMux()

	root := http.NewServeMux()
	for _, rt := range s.publicRoutes() {
		root.HandleFunc(rt.pattern, rt.handler)
	}
	root.Handle("/api/", s.requireAPI(s.api))
	root.Handle("/", s.requireBrowser(s.pages))

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request rejected")
	}))
	return s.logRequests(cop.Handler(root)), nil
}

// route is one endpoint: a ServeMux pattern ("METHOD /path/{param}").
type route struct {
	pattern string
	handler http.HandlerFunc
}

// publicRoutes are the endpoints served without a session. openapi.json
// describes them and the API routes (a test compares the lists).
func (s *Server) publicRoutes() []route {
	return []route{
		{"GET /health", s.handleHealth},
		{"GET /metrics", s.handleMetrics},
		{"GET /login", s.handleLoginPage},
		{"POST /login", s.handleLogin},
		{"POST /logout", s.handleLogout},
		{"POST /api/login", s.handleAPILogin},
	}
}

// apiRoutes are the /api endpoints behind the login.
func (s *Server) apiRoutes() []route {
	return append([]route{
		{"GET /api/openapi.json", s.handleOpenAPI},
		{"GET /api/session", s.handleSession},
		{"POST /api/logout", s.handleAPILogout},
		{"GET /api/instances", s.handleListInstances},
		{"POST /api/instances", s.handleCreateInstance},
		{"POST /api/instances/bulk", s.handleBulkCreate},
		{"POST /api/instances/bulk-delete", s.handleBulkDelete},
		{"GET /api/instances/{name}", s.handleGetInstance},
		{"DELETE /api/instances/{name}", s.handleDeleteInstance},
		{"POST /api/instances/{name}/purge", s.handlePurgeInstance},
		{"POST /api/instances/{name}/repair", s.handleRepairInstance},
		{"GET /api/instances/{name}/health", s.handleInstanceHealth},
		{"GET /api/instances/{name}/events", s.handleInstanceEvents},
		{"GET /api/instances/{name}/logs", s.handleInstanceLogs},
		{"POST /api/instances/{name}/backups", s.handleCreateBackup},
		{"GET /api/instances/{name}/backups", s.handleInstanceBackups},
		{"PUT /api/instances/{name}/backup-settings", s.handleBackupSettings},
		{"GET /api/backups", s.handleListBackups},
		{"GET /api/backups/{id}", s.handleGetBackup},
		{"DELETE /api/backups/{id}", s.handleDeleteBackup},
		{"POST /api/restore", s.handleRestore},
		{"GET /api/orchestrations", s.handleListOrchestrations},
		{"GET /api/orchestrations/{id}", s.handleGetOrchestration},
		{"POST /api/orchestrations/{id}/cancel", s.handleCancel},
		{"POST /api/orchestrations/{id}/recreate", s.handleRecreate},
		{"POST /api/orchestrations/{id}/raise-event", s.handleRaiseEvent},
		{"GET /api/server/logs", s.handleServerLogs},
		{"GET /api/server/stats", s.handleServerStats},
		{"GET /api/server/config", s.handleServerConfig},
		{"GET /api/server/workers", s.handleServerWorkers},
		{"GET /api/server/retries", s.handleServerRetries},
	}, s.replicaRoutes()...)
}

// reqInfo is per-request state shared by the middleware layers.
type reqInfo struct {
	id    string
	route string
	auth  string // "", "cookie" or "bearer"
	token string // the presented, valid session token
}

type ctxKey struct{}

func info(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(ctxKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

// statusWriter records the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests assigns a request id, sets security headers, and logs and
// counts every request: method, path, status, duration, client address and
// how it authenticated. It never logs bodies, query strings, cookies or
// Authorization headers.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var b [8]byte
		_, _ = rand.Read(b[:])
		ri := &reqInfo{id: hex.EncodeToString(b[:])}
		h := w.Header()
		h.Set("X-Request-Id", ri.id)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if r.TLS != nil {
			// Browsers ignore it over a certificate they had to be told
			// to accept; it protects a server with a trusted one.
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		sw := &statusWriter{ResponseWriter: w}
		if limitBody(sw, r) {
			next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ri)))
		}

		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		route := ri.route
		if route == "" {
			route = "unmatched"
		}
		d := time.Since(start)
		s.requests.WithLabelValues(r.Method, route, strconv.Itoa(sw.status)).Inc()
		s.durations.WithLabelValues(route).Observe(d.Seconds())
		level := slog.LevelDebug
		switch {
		case sw.status >= 500:
			level = slog.LevelError
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			level = slog.LevelInfo
		case sw.status >= 400:
			level = slog.LevelInfo
		}
		s.log.Log(r.Context(), level, "http request", "method", r.Method, "path", r.URL.Path, "route", route,
			"status", sw.status, "bytes", sw.bytes, "duration_ms", float64(d.Microseconds())/1000,
			"client", clientIP(r), "auth", ri.auth, "request_id", ri.id)
	})
}

// clientIP is the address the request came from. Forwarding headers are not
// trusted: anyone can set them, and they would defeat the login rate limit.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func isLoopback(ip string) bool {
	p := net.ParseIP(ip)
	return p != nil && p.IsLoopback()
}

// credential is the token a request presents: "Authorization: Bearer" first,
// else the session cookie. malformed is set for a non-Bearer Authorization.
func credential(r *http.Request) (token, kind string, malformed bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", "", true
		}
		return strings.TrimSpace(tok), "bearer", false
	}
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		return c.Value, "cookie", false
	}
	return "", "", false
}

// authenticate checks the request's credential and records it in reqInfo.
func (s *Server) authenticate(r *http.Request) (session, error) {
	tok, kind, malformed := credential(r)
	if malformed {
		return session{}, errorf(http.StatusUnauthorized, "malformed Authorization header; use \"Authorization: Bearer <token>\"")
	}
	if tok == "" {
		return session{}, errorf(http.StatusUnauthorized, "authentication required: log in at /login or send \"Authorization: Bearer <token>\"")
	}
	se, err := s.sessions.lookup(tok)
	if err != nil && !errors.Is(err, errUnknown) && !errors.Is(err, errExpired) {
		// The shared session store did not answer: the token may be good.
		s.log.Error("checking a session failed", "error", err.Error())
		return session{}, errorf(http.StatusServiceUnavailable, "cannot check the session right now; try again")
	}
	if err != nil {
		return session{}, errorf(http.StatusUnauthorized, "invalid or expired session; log in again")
	}
	ri := info(r)
	ri.auth, ri.token = kind, tok
	return se, nil
}

// requireAPI answers 401 JSON to unauthenticated /api requests, and JSON
// 404/405 for unknown endpoints (after authentication, so that the set of
// endpoints is not probed anonymously).
func (s *Server) requireAPI(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.authenticate(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="toygres"`)
			s.fail(w, r, err)
			return
		}
		h, pattern := mux.Handler(r)
		if pattern == "" {
			cw := &captureWriter{header: http.Header{}}
			h.ServeHTTP(cw, r)
			switch cw.status {
			case http.StatusNotFound:
				writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
			case http.StatusMethodNotAllowed:
				allow := cw.header.Get("Allow")
				w.Header().Set("Allow", allow)
				writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed here; allowed: "+allow)
			default:
				for k, v := range cw.header {
					w.Header()[k] = v
				}
				w.WriteHeader(cw.status)
			}
			return
		}
		mux.ServeHTTP(w, r)
		info(r).route = r.Pattern
	})
}

// captureWriter records the status and headers of the mux's built-in
// not-found, method-not-allowed and redirect responses.
type captureWriter struct {
	header http.Header
	status int
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return len(b), nil
}
func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

// requireBrowser redirects unauthenticated page requests to /login.
func (s *Server) requireBrowser(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.authenticate(r); err != nil {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		mux.ServeHTTP(w, r)
		info(r).route = r.Pattern
	})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	info(r).route = r.Pattern
	writeJSON(w, http.StatusOK, Health{Status: "healthy", Service: "toygres", Version: s.opts.Version})
}

// metricsAllowed decides who may read /metrics. Prometheus scrapes without
// a cookie, so: everyone with PublicMetrics; loopback clients (a local
// Prometheus or node agent); a scraper presenting MetricsToken as a bearer
// token; or any logged-in session. Metrics hold counts and latencies, never
// names of secrets or their values.
func (s *Server) metricsAllowed(r *http.Request) bool {
	if s.opts.PublicMetrics || isLoopback(clientIP(r)) {
		return true
	}
	tok, _, malformed := credential(r)
	if malformed || tok == "" {
		return false
	}
	if s.opts.MetricsToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.MetricsToken)) == 1 {
		return true
	}
	_, err := s.sessions.lookup(tok)
	return err == nil
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	info(r).route = r.Pattern
	if !s.metricsAllowed(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="toygres-metrics"`)
		writeError(w, http.StatusUnauthorized, "metrics need a bearer token from a non-loopback address")
		return
	}
	if s.app.Metrics() == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	promhttp.HandlerFor(s.app.Metrics(), promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}).ServeHTTP(w, r)
}
