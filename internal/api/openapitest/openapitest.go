// Package openapitest checks HTTP traffic against an OpenAPI 3.1 document
// (with github.com/pb33f/libopenapi-validator), for tests: wrap a handler
// with Handler and every exchange a test makes is validated, failing the
// test on a route, parameter, status or field the document does not
// describe. It is imported by tests only.
package openapitest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
)

// Validator checks HTTP exchanges against an OpenAPI document. It is safe
// for concurrent use.
type Validator struct {
	mu sync.Mutex // the library's validator is not documented as safe for concurrent use
	v  validator.Validator
}

// New builds a Validator for an OpenAPI 3.1 document (JSON).
func New(doc []byte) (*Validator, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("parse the OpenAPI document: %w", err)
	}
	v, errs := validator.NewValidator(d, config.WithFormatAssertions())
	if len(errs) > 0 {
		return nil, fmt.Errorf("build the validator: %v", errs)
	}
	return &Validator{v: v}, nil
}

// ValidateDocument reports the document's problems as an OpenAPI 3.1
// document (none: nil).
func (v *Validator) ValidateDocument() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ok, errs := v.v.ValidateDocument(); !ok {
		return Describe("document", errs)
	}
	return nil
}

// DescribedPath reports whether Toygres' document is meant to describe a path:
// the API, the login and logout, health and metrics (the console's HTML
// pages are not part of the API).
func DescribedPath(p string) bool {
	return strings.HasPrefix(p, "/api/") || p == "/health" || p == "/metrics" || p == "/login" || p == "/logout"
}

// teeWriter passes a response through and keeps a copy.
type teeWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *teeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *teeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *teeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Handler wraps the API handler so that every exchange on a described
// path is checked against the document, failing t on any mismatch:
//   - the answer (status, content type, body) must be described, for errors
//     too;
//   - a request the server accepted (2xx/3xx) must be described: its path,
//     method, parameters and body (a field the document does not have
//     fails, as its schemas allow no other properties);
//   - a path the document does not have fails unless the server itself
//     answered that it does not exist (404/405) or refused the credentials
//     before routing (401).
func (v *Validator) Handler(t testing.TB, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !DescribedPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		reqBody, err := io.ReadAll(r.Body)
		if err != nil {
			// A body cut short (the slow-body tests): nothing to validate.
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(reqBody), errReader{err}))
			next.ServeHTTP(w, r)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
		tw := &teeWriter{ResponseWriter: w}
		next.ServeHTTP(tw, r)
		if tw.status == 0 {
			tw.status = http.StatusOK
		}
		if msg := v.Check(r, reqBody, tw.status, tw.Header(), tw.body.Bytes()); msg != "" {
			t.Errorf("the OpenAPI document does not describe %s %s → %d: %s", r.Method, r.URL.RequestURI(), tw.status, msg)
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// Check validates one exchange (see Handler) and returns what the document
// does not describe ("" if it describes all of it).
func (v *Validator) Check(r *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	req.ContentLength = int64(len(reqBody))
	if len(reqBody) > 0 && req.Header.Get("Content-Type") == "" {
		// The API takes a body without Content-Type as JSON (the document's
		// description says so); OpenAPI has no way to declare that.
		req.Header.Set("Content-Type", "application/json")
	}
	_, reqErrs := v.v.ValidateHttpRequestSync(req)
	for _, e := range reqErrs {
		if e.IsPathMissingError() || e.IsOperationMissingError() {
			switch status {
			case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusUnauthorized:
				return "" // the server agrees: no such route
			}
			return "the route is not described: " + e.Error()
		}
	}
	var msgs []string
	if status < 400 {
		msgs = append(msgs, Describe("request", reqErrs)...)
	}
	resp := &http.Response{
		StatusCode: status, Header: header.Clone(), Request: req,
		Body: io.NopCloser(bytes.NewReader(respBody)), ContentLength: int64(len(respBody)),
	}
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	if _, respErrs := v.v.ValidateHttpResponse(req, resp); len(respErrs) > 0 {
		body := string(respBody)
		if len(body) > 600 {
			body = body[:600] + "…"
		}
		msgs = append(msgs, Describe("response", respErrs)...)
		msgs = append(msgs, "response body: "+body)
	}
	return strings.Join(msgs, "; ")
}

// Describe renders validation errors as lines.
func Describe(what string, errs []*verrors.ValidationError) []string {
	var out []string
	for _, e := range errs {
		s := what + ": " + e.Message
		if e.Reason != "" {
			s += " (" + e.Reason + ")"
		}
		for _, se := range e.SchemaValidationErrors {
			s += fmt.Sprintf(" [%s: %s]", se.FieldPath, se.Reason)
		}
		out = append(out, s)
	}
	return out
}
