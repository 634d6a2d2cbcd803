// Package client is the Go client of Toygres' REST API: typed methods for
// instances, orchestrations, server operations and sessions, with bearer
// tokens and TLS (system CAs, a custom tls.Config, or a server certificate
// pinned by its SHA-256 fingerprint, as `toygres server start` prints it).
//
//	c, err := client.New("https://db.example:8080", client.WithToken(tok),
//		client.WithFingerprint("SHA256:…"))
//	in, err := c.CreateInstance(ctx, client.CreateInstanceRequest{Name: "orders", Password: pw})
//	in2, err := c.WaitForInstance(ctx, "orders", client.WaitOptions{})
//
// Every method takes a context first. An answer other than 2xx is an
// *Error with the HTTP status, the server's one-line message and, when the
// error is about one request field, that field; errors.Is(err,
// client.ErrNotFound) (ErrConflict, ErrUnauthorized, ErrBadRequest) tests
// the status. A refused certificate is a *CertificateError; other transport
// failures are returned wrapped.
//
// The request and response types are the ones the server itself encodes,
// and the API is described by the OpenAPI 3.1 document the server serves at
// /api/openapi.json.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/toygres/toygres/internal/tlscert"
)

// DefaultTimeout bounds one HTTP exchange unless WithHTTPClient or
// WithTimeout says otherwise.
const DefaultTimeout = 60 * time.Second

// maxAnswer bounds the body of an answer the client reads.
const maxAnswer = 64 << 20

// Client calls one Toygres server. It is safe for concurrent use, except
// that SetToken (and Login, which calls it) must not race with requests.
type Client struct {
	baseURL     string
	token       string
	hc          *http.Client
	fingerprint string
	userAgent   string
	timeout     time.Duration
	tlsConfig   *tls.Config
}

// Option configures a Client.
type Option func(*Client) error

// WithToken sends "Authorization: Bearer <token>" on every request (a token
// from Login, `toygres login`, or the server's credentials.json).
func WithToken(token string) Option {
	return func(c *Client) error { c.token = token; return nil }
}

// WithFingerprint pins the server's TLS certificate: the client accepts
// exactly the certificate whose SHA-256 fingerprint this is ("SHA256:" and
// 64 hex digits, colons allowed), as a self-signed Toygres server prints
// it, and refuses any other with a *CertificateError. The system's CAs are
// not consulted.
func WithFingerprint(fingerprint string) Option {
	return func(c *Client) error {
		cfg, err := tlscert.PinnedConfig(fingerprint)
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		c.fingerprint, _ = tlscert.ParseFingerprint(fingerprint)
		c.tlsConfig = cfg
		return nil
	}
}

// WithTLSConfig uses cfg for HTTPS (for a private CA or client
// certificates). It is overridden by WithFingerprint.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) error {
		if c.tlsConfig == nil || c.fingerprint == "" {
			c.tlsConfig = cfg.Clone()
		}
		return nil
	}
}

// WithHTTPClient sends requests through hc (its Transport and Timeout). TLS
// options then apply only if hc's Transport is nil or an *http.Transport,
// which is cloned, never changed.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("client: nil http.Client")
		}
		c.hc = hc
		return nil
	}
}

// WithTimeout bounds each HTTP exchange (default DefaultTimeout; 0 for
// none: the context alone bounds it).
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error { c.timeout = d; return nil }
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option {
	return func(c *Client) error { c.userAgent = ua; return nil }
}

// New returns a client for the server at baseURL ("https://host:port";
// "host:port" means http://host:port).
func New(baseURL string, opts ...Option) (*Client, error) {
	c := &Client{baseURL: NormalizeURL(baseURL), timeout: DefaultTimeout, userAgent: "toygres-go-client"}
	if _, err := url.Parse(c.baseURL); err != nil || c.baseURL == "" {
		return nil, fmt.Errorf("client: invalid server URL %q", baseURL)
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: c.timeout}
	} else if c.timeout != DefaultTimeout {
		hc := *c.hc
		hc.Timeout = c.timeout
		c.hc = &hc
	}
	if c.tlsConfig != nil {
		var t *http.Transport
		switch rt := c.hc.Transport.(type) {
		case nil:
			t = http.DefaultTransport.(*http.Transport).Clone()
		case *http.Transport:
			t = rt.Clone()
		default:
			return nil, errors.New("client: TLS options need an *http.Transport (or none) in the http.Client")
		}
		t.TLSClientConfig = c.tlsConfig
		hc := *c.hc
		hc.Transport = t
		c.hc = &hc
	}
	return c, nil
}

// NormalizeURL adds http:// to a bare host:port and drops trailing slashes.
func NormalizeURL(u string) string {
	u = strings.TrimSpace(u)
	if u != "" && !strings.Contains(u, "://") {
		u = "http://" + u
	}
	return strings.TrimRight(u, "/")
}

// URL is the server's base URL.
func (c *Client) URL() string { return c.baseURL }

// Token is the bearer token the client sends ("" for none).
func (c *Client) Token() string { return c.token }

// SetToken changes the bearer token.
func (c *Client) SetToken(token string) { c.token = token }

// Fingerprint is the pinned certificate fingerprint ("" if none).
func (c *Client) Fingerprint() string { return c.fingerprint }

// Sentinels for errors.Is on an *Error.
var (
	ErrBadRequest   = errors.New("bad request")   // 400
	ErrUnauthorized = errors.New("unauthorized")  // 401
	ErrNotFound     = errors.New("not found")     // 404
	ErrConflict     = errors.New("conflict")      // 409
	ErrRateLimited  = errors.New("rate limited")  // 429
	ErrServer       = errors.New("server failed") // 5xx
)

// Error is an answer of the API other than 2xx.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Message is the server's one-line explanation ("" if it gave none).
	Message string
	// Field is the request field the error is about ("name",
	// "password", "storage_gb"…), when the server named one.
	Field string
	// RetryAfter is the Retry-After header of a 429 or 503 (0 if none).
	RetryAfter time.Duration
	// Body is the raw answer (a bulk request's per-item results, say).
	Body []byte
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
}

// Is matches the sentinel of the error's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.Status == http.StatusBadRequest
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrRateLimited:
		return e.Status == http.StatusTooManyRequests
	case ErrServer:
		return e.Status >= 500
	}
	return false
}

// StatusOf is the HTTP status of an *Error in err's chain (0 if none).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// CertificateError means the server's TLS certificate was refused: it is not
// the pinned one, or (nothing pinned) the system does not trust it.
type CertificateError struct {
	URL string
	// Pinned is the expected fingerprint ("" when nothing was pinned).
	Pinned string
	// Got is the fingerprint of the certificate the server presented.
	Got string
	Err error
}

func (e *CertificateError) Error() string {
	if e.Pinned != "" {
		return fmt.Sprintf("the TLS certificate of %s is %s, not the pinned %s", e.URL, e.Got, e.Pinned)
	}
	return fmt.Sprintf("the TLS certificate of %s (%s) is not trusted: %v", e.URL, e.Got, e.Err)
}

func (e *CertificateError) Unwrap() error { return e.Err }

// certificateError turns a TLS verification failure into a
// *CertificateError (nil for other errors).
func (c *Client) certificateError(err error) error {
	var mm *tlscert.MismatchError
	if errors.As(err, &mm) {
		return &CertificateError{URL: c.baseURL, Pinned: mm.Want, Got: mm.Got, Err: err}
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		got := ""
		if len(cve.UnverifiedCertificates) > 0 {
			got = tlscert.Fingerprint(cve.UnverifiedCertificates[0].Raw)
		}
		return &CertificateError{URL: c.baseURL, Got: got, Err: err}
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) && ua.Cert != nil {
		return &CertificateError{URL: c.baseURL, Got: tlscert.Fingerprint(ua.Cert.Raw), Err: err}
	}
	return nil
}

// Do sends one request to path (with its query, if any) with body encoded
// as JSON (nil for none) and decodes a JSON answer into out: a pointer to a
// value, a *json.RawMessage for the raw answer, or nil to discard it. It is
// the escape hatch under the typed methods.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	data, err := c.exchange(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	return decode(method, path, data, out)
}

func decode(method, path string, data []byte, out any) error {
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], data...)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// exchange sends a request and returns the body of a 2xx answer, else an
// *Error (with the body) or a transport error.
func (c *Client) exchange(ctx context.Context, method, path string, body any, accept string) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request of %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if ce := c.certificateError(err); ce != nil {
			return nil, ce
		}
		return nil, fmt.Errorf("%s %s%s: %w", method, c.baseURL, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return data, nil
	}
	e := &Error{Status: resp.StatusCode, Body: data}
	var er ErrorResponse
	if json.Unmarshal(data, &er) == nil && er.Error != "" {
		e.Message, e.Field = er.Error, er.Field
	} else if s := strings.TrimSpace(string(data)); s != "" && len(s) < 300 && !strings.HasPrefix(s, "<") {
		e.Message = s
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		var secs int
		if _, err := fmt.Sscan(ra, &secs); err == nil && secs > 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return nil, e
}
