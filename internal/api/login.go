package api

import (
	"crypto/subtle"
	"errors"
	"html/template"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

// loginResult is the outcome of checking credentials.
type loginResult int

const (
	loginOK loginResult = iota
	loginFailed
	loginLimited
	// loginUnchecked: the client went away before its password was checked.
	loginUnchecked
)

// checkLogin verifies a user name and password under the per-IP rate limit.
// The password is always hashed (also for a wrong user name), so timing
// does not reveal which part was wrong.
func (s *Server) checkLogin(r *http.Request, user, password string) (loginResult, time.Duration) {
	ip := clientIP(r)
	// Admitted attempts count against the limit until settled (see begin).
	if wait, ok := s.limiter.begin(ip); !ok {
		s.logins.WithLabelValues("rate_limited").Inc()
		return loginLimited, wait
	}
	outcome := loginFailed
	defer func() { s.limiter.end(ip, outcome) }()
	select {
	case s.hashSem <- struct{}{}:
	case <-r.Context().Done():
		outcome = loginUnchecked // no password was checked: nothing learnt
		return loginFailed, 0
	}
	defer func() { <-s.hashSem }()
	okPassword := password != "" && len(password) <= 1024 && s.adminHash.verify(password)
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(s.adminUser)) == 1
	if okPassword && okUser {
		outcome = loginOK
		s.logins.WithLabelValues("success").Inc()
		return loginOK, 0
	}
	s.logins.WithLabelValues("failure").Inc()
	// The attempted user name is not logged: people type passwords into it.
	s.log.Warn("login failed", "client", clientIP(r))
	return loginFailed, 0
}

func retryAfter(w http.ResponseWriter, d time.Duration) string {
	secs := int(math.Ceil(d.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return "too many failed login attempts; try again in " + strconv.Itoa(secs) + " s"
}

// handleLogin is POST /login. A form post (the browser) gets a session
// cookie and a 303 to /; a JSON post gets a bearer token.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	info(r).route = r.Pattern
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		s.jsonLogin(w, r)
		return
	case "application/x-www-form-urlencoded":
	default:
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/x-www-form-urlencoded or application/json")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxSmallBody)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			s.renderLogin(w, http.StatusRequestEntityTooLarge, "The form is too large.")
		case errors.As(err, &ne) && ne.Timeout():
			s.renderLogin(w, http.StatusRequestTimeout, "The form was not received in time.")
		default:
			s.renderLogin(w, http.StatusBadRequest, "The form could not be read.")
		}
		return
	}
	for _, f := range []string{"username", "password"} {
		if !utf8.ValidString(r.PostForm.Get(f)) {
			s.renderLogin(w, http.StatusBadRequest, "The "+f+" is not valid UTF-8 text.")
			return
		}
	}
	res, wait := s.checkLogin(r, r.PostForm.Get("username"), r.PostForm.Get("password"))
	switch res {
	case loginLimited:
		s.renderLogin(w, http.StatusTooManyRequests, "Too many failed attempts. "+retryAfter(w, wait)+".")
		return
	case loginFailed:
		s.renderLogin(w, http.StatusUnauthorized, "Invalid username or password.")
		return
	}
	tok, exp, err := s.sessions.issue("browser", s.opts.SessionTTL)
	if err != nil {
		s.log.Error("issuing a session failed", "error", err.Error())
		s.renderLogin(w, http.StatusInternalServerError, "Signing in failed; see the server log.")
		return
	}
	s.log.Info("login", "client", clientIP(r), "kind", "browser")
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: tok, Path: "/", Expires: exp, MaxAge: int(s.opts.SessionTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: isHTTPS(r),
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// handleAPILogin is POST /api/login: JSON credentials → bearer token.
func (s *Server) handleAPILogin(w http.ResponseWriter, r *http.Request) {
	info(r).route = r.Pattern
	s.jsonLogin(w, r)
}

func (s *Server) jsonLogin(w http.ResponseWriter, r *http.Request) {
	var req LoginRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	res, wait := s.checkLogin(r, req.Username, req.Password)
	switch res {
	case loginLimited:
		writeError(w, http.StatusTooManyRequests, retryAfter(w, wait))
		return
	case loginFailed:
		writeError(w, http.StatusUnauthorized, "invalid username or password")
		return
	}
	tok, exp, err := s.sessions.issue("token", s.opts.TokenTTL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("login", "client", clientIP(r), "kind", "token")
	writeJSON(w, http.StatusOK, LoginResponse{Token: tok, ExpiresAt: exp})
}

// isHTTPS reports whether the client reached us over TLS (directly or
// through a proxy that says so), to mark the cookie Secure.
func isHTTPS(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

func (s *Server) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: isHTTPS(r)})
}

// handleLogout is POST /logout: it revokes the presented session (cookie or
// bearer), clears the cookie, and redirects a browser to /login.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	info(r).route = r.Pattern
	tok, kind, _ := credential(r)
	if tok != "" {
		if err := s.sessions.revoke(tok); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	s.clearCookie(w, r)
	if kind == "bearer" || wantsJSON(r) {
		writeJSON(w, http.StatusOK, LogoutResponse{Status: "logged out"})
		return
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func wantsJSON(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/json" {
		return true
	}
	for _, a := range r.Header.Values("Accept") {
		if mt, _, err := mime.ParseMediaType(a); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

// handleAPILogout is POST /api/logout: it revokes the session used for this
// request.
func (s *Server) handleAPILogout(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	if err := s.sessions.revoke(ri.token); err != nil {
		s.fail(w, r, err)
		return
	}
	if ri.auth == "cookie" {
		s.clearCookie(w, r)
	}
	writeJSON(w, http.StatusOK, LogoutResponse{Status: "logged out"})
}

func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	se, err := s.sessions.lookup(info(r).token)
	if err != nil {
		s.fail(w, r, errorf(http.StatusUnauthorized, "invalid or expired session; log in again"))
		return
	}
	writeJSON(w, http.StatusOK, SessionInfo{User: s.adminUser, Kind: se.Kind, ExpiresAt: se.ExpiresAt.UTC()})
}

func (s *Server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	info(r).route = r.Pattern
	s.renderLogin(w, http.StatusOK, "")
}

var loginTmpl = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Toygres · Sign in</title>
<style>
body{font-family:system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:flex;min-height:100vh;align-items:center;justify-content:center;margin:0}
form{background:#1e293b;padding:2rem;border-radius:8px;width:18rem}
h1{margin:0 0 .25rem;font-size:1.4rem}p.sub{margin:0 0 1.5rem;color:#94a3b8;font-size:.9rem}
label{display:block;font-size:.85rem;margin:.75rem 0 .25rem}
input{width:100%;box-sizing:border-box;padding:.5rem;border-radius:4px;border:1px solid #475569;background:#0f172a;color:#e2e8f0}
button{margin-top:1.25rem;width:100%;padding:.6rem;border:0;border-radius:4px;background:#2563eb;color:#fff;font-weight:600;cursor:pointer}
.err{background:#7f1d1d;padding:.5rem;border-radius:4px;font-size:.85rem}
</style></head>
<body><form method="post" action="/login">
<h1>Toygres</h1><p class="sub">PostgreSQL control plane</p>
{{if .}}<p class="err" role="alert">{{.}}</p>{{end}}
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form></body></html>
`))

func (s *Server) renderLogin(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_ = loginTmpl.Execute(w, msg)
}
