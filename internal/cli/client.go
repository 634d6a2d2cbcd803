package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/toygres/toygres/client"
)

// APIError is an error answer of the REST API: the public client's *Error
// (status, message, field).
type APIError = client.Error

// StatusOf returns the HTTP status of an APIError (0 for other errors).
func StatusOf(err error) int { return client.StatusOf(err) }

// UnreachableError means the server could not be reached at all.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the Toygres server at %s (is it running? start it with 'toygres server start'): %v", e.URL, shortNetErr(e.Err))
}

func (e *UnreachableError) Unwrap() error { return e.Err }

func shortNetErr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// Client is the CLI's view of the public Go client (package client): the
// same requests, with errors that tell a person at a terminal what to do
// (log in, start the server, pin the certificate). API is the typed client;
// pass its errors through Explain.
type Client struct {
	BaseURL string
	Token   string
	// TokenSource describes where the token came from (for error messages).
	TokenSource string
	// Fingerprint is the pinned server certificate (see Pin), "" if none.
	Fingerprint string
	// API is the public client the requests go through.
	API *client.Client

	pinSource string
}

// NewClient returns a client for a server URL.
func NewClient(baseURL, token string) *Client {
	c := &Client{BaseURL: NormalizeURL(baseURL), Token: token}
	c.API, _ = client.New(c.BaseURL, client.WithToken(token), client.WithUserAgent("toygres-cli"))
	if c.API == nil {
		// An unparsable URL: keep a client whose requests fail with the
		// URL error rather than a nil pointer.
		c.API, _ = client.New("http://invalid.invalid", client.WithToken(token))
	}
	return c
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when non-nil; a *json.RawMessage receives the raw answer).
// Answers other than 2xx become *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	return c.Explain(c.API.Do(ctx, method, path, body, out))
}

// Explain turns an error of the public client into the CLI's: a 401 says
// where the token came from and how to get one, a refused certificate how
// to check and pin it, a failed connection that the server may not run.
func (c *Client) Explain(err error) error {
	if err == nil {
		return nil
	}
	var ae *client.Error
	var ce *client.CertificateError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &ae):
		if ae.Status == http.StatusUnauthorized {
			cp := *ae
			cp.Message = c.authHint(ae.Message)
			return &cp
		}
		return err
	case errors.As(err, &ce):
		return &CertificateError{URL: c.BaseURL, Pinned: ce.Pinned, Got: ce.Got, PinSource: c.pinSource, Err: ce.Err}
	}
	if strings.HasPrefix(c.BaseURL, "https://") && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("the server at %s speaks plain HTTP, not HTTPS: use an http:// URL", c.BaseURL)
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) {
		return &UnreachableError{URL: c.BaseURL, Err: err}
	}
	return err
}

func (c *Client) authHint(msg string) string {
	if msg == "" {
		msg = "authentication required"
	}
	msg = strings.TrimRight(msg, ". ")
	if c.Token == "" {
		return msg + ": no token (run 'toygres login', or run the CLI as the account that runs the server so it can read its credentials.json)"
	}
	return fmt.Sprintf("%s: the token from %s was rejected (run 'toygres login')", msg, c.TokenSource)
}

// Get is Do with GET.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// Health calls the public GET /health.
func (c *Client) Health(ctx context.Context) (*client.Health, error) {
	h, err := c.API.Health(ctx)
	return h, c.Explain(err)
}

// PathEscape escapes one path segment.
func PathEscape(s string) string { return url.PathEscape(s) }
