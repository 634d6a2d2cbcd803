package api

import (
	"crypto/tls"
	"log"
	"net/http"
	"strconv"
	"time"
)

// Default HTTP server timeouts (see HTTPOptions).
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
)

// Request body limits. Larger bodies get 413 before the handler reads them
// (by Content-Length) or when reading passes the limit (chunked bodies).
const (
	// maxBody bounds every request body (bulk create, raise-event…).
	maxBody = 1 << 20
	// maxSmallBody bounds the bodies of login, logout and single creates.
	maxSmallBody = 64 << 10
)

// HTTPOptions configure the http.Server that NewHTTPServer builds. Zero
// durations mean the defaults above; negative ones disable the timeout
// (tests only: a client could then hold a connection forever).
type HTTPOptions struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, headers and body, from
	// its first byte: a body trickled slower is cut, the client gets 408.
	ReadTimeout time.Duration
	// WriteTimeout bounds a response, from the end of the request's
	// headers (or of the TLS handshake) to its last byte.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection.
	IdleTimeout time.Duration
	// TLS, when set, makes the server speak HTTPS (certificates in it).
	TLS *tls.Config
	// ErrorLog receives the server's own errors (bad TLS handshakes…).
	ErrorLog *log.Logger
}

func timeoutOr(d, def time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0 // none
	case d == 0:
		return def
	}
	return d
}

// NewHTTPServer returns the http.Server that serves s with o's timeouts
// and TLS. Serve it with Serve (plain) or ServeTLS(ln, "", "") when
// o.TLS is set.
func (s *Server) NewHTTPServer(o HTTPOptions) *http.Server {
	read := timeoutOr(o.ReadTimeout, DefaultReadTimeout)
	header := timeoutOr(o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	if read > 0 && (header == 0 || header > read) {
		header = read
	}
	if header == 0 {
		// http.Server reads a zero ReadHeaderTimeout as "use ReadTimeout";
		// a negative one is really none.
		header = -1
	}
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: header,
		ReadTimeout:       read,
		WriteTimeout:      timeoutOr(o.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       timeoutOr(o.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         o.TLS,
		ErrorLog:          o.ErrorLog,
	}
}

// bodyLimit is the largest body accepted for a request.
func bodyLimit(r *http.Request) int64 {
	switch r.URL.Path {
	case "/login", "/logout", "/api/login", "/api/logout", "/api/instances", "/instances":
		return maxSmallBody
	}
	return maxBody
}

// limitBody refuses bodies over bodyLimit with 413: at once when the
// Content-Length says so, else when the handler reads past the limit.
func limitBody(w http.ResponseWriter, r *http.Request) bool {
	limit := bodyLimit(r)
	if r.ContentLength > limit {
		// The body is not read: close the connection after the answer.
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestEntityTooLarge, tooLarge(limit))
		return false
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	return true
}

func tooLarge(limit int64) string {
	return "request body too large: this endpoint accepts at most " + strconv.FormatInt(limit, 10) + " bytes"
}
