package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// APIError is an error answer of the REST API ({"error": "..."}).
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
}

// StatusOf returns the HTTP status of an APIError (0 for other errors).
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

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

// Client calls the Toygres REST API with a bearer token.
type Client struct {
	BaseURL string
	Token   string
	// TokenSource describes where the token came from (for error messages).
	TokenSource string
	HTTP        *http.Client
	// Fingerprint is the pinned server certificate (see Pin), "" if none.
	Fingerprint string

	pinSource string
}

// NewClient returns a client for a server URL.
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: NormalizeURL(baseURL), Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when non-nil). Answers other than 2xx become *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ce := c.certificateError(err); ce != nil {
			return ce
		}
		return &UnreachableError{URL: c.BaseURL, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Status: resp.StatusCode}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			ae.Message = e.Error
		} else if s := strings.TrimSpace(string(data)); s != "" && len(s) < 300 && !strings.HasPrefix(s, "<") {
			ae.Message = s
		}
		if resp.StatusCode == http.StatusUnauthorized {
			ae.Message = c.authHint(ae.Message)
		}
		return ae
	}
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
func (c *Client) Health(ctx context.Context) (map[string]any, error) {
	var h map[string]any
	err := c.Do(ctx, http.MethodGet, "/health", nil, &h)
	return h, err
}

// PathEscape escapes one path segment.
func PathEscape(s string) string { return url.PathEscape(s) }
