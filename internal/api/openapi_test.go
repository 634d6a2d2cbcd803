package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"

	"github.com/toygres/toygres/internal/api/openapitest"
)

// The tests keep openapi.json true: newEnv serves the API through
// validating, so every request a test makes and every answer it gets is
// checked against the document, and TestOpenAPIDocument checks the document
// itself and that it describes exactly the routes the server has.

var (
	oasOnce sync.Once
	oasErr  error
	oasV    *openapitest.Validator
)

func openAPIValidator(t testing.TB) *openapitest.Validator {
	t.Helper()
	oasOnce.Do(func() { oasV, oasErr = openapitest.New(openAPIDoc) })
	if oasErr != nil {
		t.Fatal(oasErr)
	}
	return oasV
}

// validating serves next with every exchange checked against openapi.json.
func validating(t testing.TB, next http.Handler) http.Handler {
	return openAPIValidator(t).Handler(t, next)
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
	if problems := openAPIValidator(t).ValidateDocument(); len(problems) > 0 {
		t.Fatalf("openapi.json is not a valid OpenAPI 3.1 document: %v", problems)
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
			h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
			body := c.respBody
			if body == "" {
				body = `{"id":"1","name":"a","internal_name":"a-1","driver":"local","postgres_version":"15","storage_gb":10,"internal":false,"state":"creating","health":"unknown","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}`
			}
			if msg := v.Check(r, []byte(c.reqBody), c.status, h, []byte(body)); msg == "" {
				t.Fatal("the exchange passed validation")
			} else {
				t.Log(msg)
			}
		})
	}
}
