package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
)

// The tests keep openapi.json true: newEnv serves the API through
// validating, so every request a test makes and every answer it gets is
// checked against the document, and TestOpenAPIDocument checks the document
// itself and that it describes exactly the routes the server has.

var (
	oasOnce sync.Once
	oasErr  error
	oasV    validator.Validator
	oasMu   sync.Mutex // the validator is not documented as safe for concurrent use
)

func openAPIValidator(t testing.TB) validator.Validator {
	t.Helper()
	oasOnce.Do(func() {
		doc, err := libopenapi.NewDocument(openAPIDoc)
		if err != nil {
			oasErr = fmt.Errorf("parse openapi.json: %w", err)
			return
		}
		v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
		if len(errs) > 0 {
			oasErr = fmt.Errorf("build the validator: %v", errs)
			return
		}
		oasV = v
	})
	if oasErr != nil {
		t.Fatal(oasErr)
	}
	return oasV
}

// describedPath reports whether the document is meant to describe path:
// the API, the login and logout, health and metrics (the console's HTML
// pages are not part of the API).
func describedPath(p string) bool {
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

// validating wraps the API handler so that every exchange on a described
// path is checked against openapi.json, failing t on any mismatch:
//   - the answer (status, content type, body) must be described, for errors
//     too;
//   - a request the server accepted (2xx/3xx) must be described: its path,
//     method, parameters and body (a field the document does not have
//     fails, as its schemas allow no other properties);
//   - a path the document does not have fails unless the server itself
//     answered that it does not exist (404/405) or refused the credentials
//     before routing (401).
func validating(t testing.TB, next http.Handler) http.Handler {
	v := openAPIValidator(t)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !describedPath(r.URL.Path) {
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
		if msg := checkExchange(v, r, reqBody, tw); msg != "" {
			t.Errorf("openapi.json does not describe %s %s → %d: %s", r.Method, r.URL.RequestURI(), tw.status, msg)
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func checkExchange(v validator.Validator, r *http.Request, reqBody []byte, tw *teeWriter) string {
	oasMu.Lock()
	defer oasMu.Unlock()
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	req.ContentLength = int64(len(reqBody))
	if len(reqBody) > 0 && req.Header.Get("Content-Type") == "" {
		// The API takes a body without Content-Type as JSON (the document's
		// description says so); OpenAPI has no way to declare that.
		req.Header.Set("Content-Type", "application/json")
	}
	_, reqErrs := v.ValidateHttpRequestSync(req)
	for _, e := range reqErrs {
		if e.IsPathMissingError() || e.IsOperationMissingError() {
			switch tw.status {
			case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusUnauthorized:
				return "" // the server agrees: no such route
			}
			return "the route is not described: " + e.Error()
		}
	}
	var msgs []string
	if tw.status < 400 {
		msgs = append(msgs, describe("request", reqErrs)...)
	}
	resp := &http.Response{
		StatusCode: tw.status, Header: tw.Header().Clone(), Request: req,
		Body: io.NopCloser(bytes.NewReader(tw.body.Bytes())), ContentLength: int64(tw.body.Len()),
	}
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	if _, respErrs := v.ValidateHttpResponse(req, resp); len(respErrs) > 0 {
		body := tw.body.String()
		if len(body) > 600 {
			body = body[:600] + "…"
		}
		msgs = append(msgs, describe("response", respErrs)...)
		msgs = append(msgs, "response body: "+body)
	}
	return strings.Join(msgs, "; ")
}

func describe(what string, errs []*verrors.ValidationError) []string {
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

// TestOpenAPIDocument: the document is valid OpenAPI 3.1, is what GET
// /api/openapi.json serves, and describes exactly the server's routes.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := libopenapi.NewDocument(openAPIDoc)
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Fatalf("openapi version %q, want 3.1.0", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("openapi.json is not a valid OpenAPI 3.1 document: %v", describe("document", verrs))
	}

	// Every route the server registers is described, and nothing else.
	var raw struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &raw); err != nil {
		t.Fatal(err)
	}
	var described []string
	for p, item := range raw.Paths {
		for m := range item {
			if m == "parameters" {
				continue
			}
			described = append(described, strings.ToUpper(m)+" "+p)
		}
	}
	sort.Strings(described)
	served := serverRoutes(t)
	if strings.Join(described, "\n") != strings.Join(served, "\n") {
		t.Errorf("openapi.json describes\n  %s\nbut the server has\n  %s", strings.Join(described, "\n  "), strings.Join(served, "\n  "))
	}

	e := newEnv(t, Options{})
	r := e.do("GET", "/api/openapi.json", nil, e.token())
	expect(t, r, http.StatusOK)
	if !bytes.Equal(r.body, openAPIDoc) {
		t.Fatal("GET /api/openapi.json does not serve openapi.json")
	}
	// Without a token it is refused like the rest of /api.
	expect(t, e.do("GET", "/api/openapi.json", nil, ""), http.StatusUnauthorized)
}

// serverRoutes lists the server's routes ("METHOD /path") from the tables
// routes() registers.
func serverRoutes(t *testing.T) []string {
	t.Helper()
	s := &Server{}
	var out []string
	for _, rt := range append(s.publicRoutes(), s.apiRoutes()...) {
		out = append(out, rt.pattern)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIValidationFails: the validating wrapper does fail on what the
// document does not describe (else the suite's passing would mean nothing).
func TestOpenAPIValidationFails(t *testing.T) {
	v := openAPIValidator(t)
	cases := []struct {
		name, method, path, reqBody string
		status                      int
		respBody                    string
	}{
		{"undescribed response field", "GET", "/health", "", 200, `{"status":"healthy","service":"toygres","version":"1","extra":1}`},
		{"missing response field", "GET", "/api/session", "", 200, `{"user":"admin","kind":"token"}`},
		{"undescribed status body", "GET", "/api/server/stats", "", 500, `{"oops":"x"}`},
		{"undescribed route", "GET", "/api/server/secrets", "", 200, `{}`},
		{"undescribed request field", "POST", "/api/instances", `{"name":"a","password":"12345678","color":"red"}`, 202, ""},
		{"wrong query type", "GET", "/api/instances?limit=many", "", 200, `{"instances":[],"count":0}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.reqBody))
			r.Header.Set("Authorization", "Bearer x")
			if c.reqBody != "" {
				r.Header.Set("Content-Type", "application/json")
			}
			rec := httptest.NewRecorder()
			tw := &teeWriter{ResponseWriter: rec}
			tw.Header().Set("Content-Type", "application/json; charset=utf-8")
			tw.WriteHeader(c.status)
			body := c.respBody
			if body == "" {
				body = `{"id":"1","name":"a","internal_name":"a-1","driver":"local","postgres_version":"15","storage_gb":10,"internal":false,"state":"creating","health":"unknown","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}`
			}
			_, _ = tw.Write([]byte(body))
			if msg := checkExchange(v, r, []byte(c.reqBody), tw); msg == "" {
				t.Fatal("the exchange passed validation")
			} else {
				t.Log(msg)
			}
		})
	}
}
