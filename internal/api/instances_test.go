package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
)

// fakeInstance inserts a CMS record (no orchestration, no server) and
// returns its internal name. With running, it gets an endpoint and a password.
func fakeInstance(t *testing.T, e *env, name, password string, running bool) string {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	internal := name + "-" + hex.EncodeToString(b)
	if _, err := e.app.CMS().CreateInstance(ctx, cms.Instance{Name: name, InternalName: internal, Driver: "local",
		PostgresVersion: "15", StorageGB: 1, CreateOrchestrationID: "create-" + internal}); err != nil {
		t.Fatal(err)
	}
	if password != "" {
		if err := e.app.CMS().SetPassword(ctx, internal, password); err != nil {
			t.Fatal(err)
		}
	}
	if running {
		if _, err := e.app.CMS().UpdateState(ctx, internal, cms.StateRunning, cms.StateUpdate{Host: "127.0.0.1", Port: 65000,
			ConnectionString: "postgresql://postgres@127.0.0.1:65000/postgres", Message: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	return internal
}

// assertNothingCreated checks that no record and no orchestration exist for name.
func assertNothingCreated(t *testing.T, e *env, name string) {
	t.Helper()
	ctx := context.Background()
	list, err := e.app.CMS().List(ctx, cms.ListOptions{Name: name, IncludeDeleted: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Fatalf("instance %q was recorded: %+v", name, list)
	}
	page, err := e.app.Orchestrations().List(ctx, duroxide.ListFilter{InstancePrefix: "create-" + name + "-"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Instances) != 0 {
		t.Fatalf("an orchestration was started for %q: %+v", name, page.Instances)
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	n := uniq("bad")
	big := `{"name":"` + n + `","password":"` + strings.Repeat("p", maxBody) + `"}`
	cases := []struct {
		name, body string
		status     int
		want       string // part of the error message
	}{
		{"Upper" + n, `{"name":"Upper` + n + `","password":"long-enough"}`, 400, "invalid name"},
		{"1" + n, `{"name":"1` + n + `","password":"long-enough"}`, 400, "invalid name"},
		{n + "_x", `{"name":"` + n + `_x","password":"long-enough"}`, 400, "invalid name"},
		{n + "-", `{"name":"` + n + `-","password":"long-enough"}`, 400, "invalid name"},
		{n + strings.Repeat("a", 40), `{"name":"` + n + strings.Repeat("a", 40) + `","password":"long-enough"}`, 400, "invalid name"},
		{"", `{"password":"long-enough"}`, 400, "name is required"},
		{n, `{"name":"` + n + `"}`, 400, "password is required"},
		{n, `{"name":"` + n + `","password":"abc"}`, 400, "at least"},
		{n, `{"name":"` + n + `","password":"` + strings.Repeat("p", 129) + `"}`, 400, "at most"},
		{n, `{"name":"` + n + `","password":"long-enough","storage_gb":-1}`, 400, "storage"},
		{n, `{"name":"` + n + `","password":"long-enough","storage_gb":99999}`, 400, "storage"},
		{n, `{"name":"` + n + `","password":"long-enough","storage_gb":"ten"}`, 400, "storage_gb"},
		{n, `{"name":"` + n + `","password":"long-enough","postgres_version":"9"}`, 400, "not available"},
		{n, `{"name":"` + n + `","password":"long-enough","dns_label":"Bad_Label"}`, 400, "DNS label"},
		{n, `{"name":"` + n + `","password":"long-enough","colour":"blue"}`, 400, "unknown field"},
		{n, `{"name":"` + n + `","password":"long-enough"`, 400, "invalid JSON"},
		{n, `{"name":"` + n + `","password":"long-enough"} {"x":1}`, 400, "after the JSON object"},
		{n, `["` + n + `"]`, 400, "invalid JSON"},
		{n, ``, 400, "empty"},
		{n, big, 413, "too large"},
		// Invalid UTF-8 and unpaired surrogates are refused, not replaced by U+FFFD.
		{n, `{"name":"` + n + `","password":"long-` + "\xff" + `-enough"}`, 400, `field "password" is not valid UTF-8`},
		{n, `{"name":"` + n + `","password":"long-\ud800-enough"}`, 400, `field "password" is not valid UTF-8`},
		{n, `{"name":"` + n + `","password":"long-\udc00\ud800-enough"}`, 400, `field "password" is not valid UTF-8`},
	}
	for _, c := range cases {
		r := e.do("POST", "/api/instances", c.body, tok)
		if r.status != c.status {
			t.Errorf("%.60s: want %d, got %s", c.body, c.status, r)
			continue
		}
		msg := r.errMsg(t)
		if !strings.Contains(msg, c.want) {
			t.Errorf("%.60s: error %q lacks %q", c.body, msg, c.want)
		}
		if strings.Contains(msg, "long-enough") || strings.Contains(msg, "ppppp") {
			t.Errorf("error echoes the password: %q", msg)
		}
		if c.name != "" {
			assertNothingCreated(t, e, c.name)
		}
	}
	// Not JSON.
	r := e.do("POST", "/api/instances", nil, tok, hdr{"Content-Type": "text/plain"})
	expect(t, r, http.StatusUnsupportedMediaType)

	// A name held by an active instance: 409, and still one record.
	taken := uniq("taken")
	fakeInstance(t, e, taken, "", false)
	r = e.do("POST", "/api/instances", CreateInstanceRequest{Name: taken, Password: "long-enough"}, tok)
	expect(t, r, http.StatusConflict)
	if !strings.Contains(r.errMsg(t), taken) {
		t.Fatalf("409 message: %s", r)
	}
	list, _ := e.app.CMS().List(context.Background(), cms.ListOptions{Name: taken, IncludeDeleted: true})
	if len(list) != 1 {
		t.Fatalf("records of %s: %d", taken, len(list))
	}
}

func TestBulkRejectsBadInput(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	base := uniq("bulkv")
	cases := []struct {
		body   any
		status int
		want   string
		field  string // ErrorResponse.Field
	}{
		{BulkCreateRequest{BaseName: base, Count: 0, Password: "long-enough"}, 400, "count", "count"},
		{BulkCreateRequest{BaseName: base, Count: 51, Password: "long-enough"}, 400, "count", "count"},
		{BulkCreateRequest{Count: 2, Password: "long-enough"}, 400, "base_name", "base_name"},
		{BulkCreateRequest{BaseName: "Bad", Count: 2, Password: "long-enough"}, 400, "base_name", "base_name"},
		{BulkCreateRequest{BaseName: base + strings.Repeat("x", 30), Count: 10, Password: "long-enough"}, 400, "base_name", "base_name"},
		{BulkCreateRequest{BaseName: base, Count: 2, Password: "abc"}, 400, "password", "password"},
		{BulkCreateRequest{BaseName: base, Count: 2, Password: "long-enough", PostgresVersion: "8"}, 400, "not available", "postgres_version"},
		{BulkCreateRequest{BaseName: base, Count: 2, Password: "long-enough", StorageGB: -5}, 400, "storage", "storage_gb"},
		{`{"base_name":"` + base + `","count":2,"password":"long-enough","dns_label":"x"}`, 400, "unknown field", "dns_label"},
	}
	for _, c := range cases {
		r := e.do("POST", "/api/instances/bulk", c.body, tok)
		if r.status != c.status || !strings.Contains(r.errMsg(t), c.want) {
			t.Errorf("%+v: want %d with %q, got %s", c.body, c.status, c.want, r)
		}
		var er ErrorResponse
		if r.json(t, &er); er.Field != c.field {
			t.Errorf("%+v: field %q, want %q", c.body, er.Field, c.field)
		}
	}
	// One of the names is taken: nothing is created.
	fakeInstance(t, e, base+"-2", "", false)
	r := e.do("POST", "/api/instances/bulk", BulkCreateRequest{BaseName: base, Count: 3, Password: "long-enough"}, tok)
	expect(t, r, http.StatusConflict)
	if !strings.Contains(r.errMsg(t), base+"-2") {
		t.Fatalf("409 message: %s", r)
	}
	assertNothingCreated(t, e, base+"-1")
	assertNothingCreated(t, e, base+"-3")

	// Bulk delete input.
	for _, c := range []struct {
		body any
		want string
	}{
		{BulkDeleteRequest{}, "between 1 and 50"},
		{BulkDeleteRequest{Names: make([]string, 51)}, "between 1 and 50"},
		{BulkDeleteRequest{Names: []string{"ok-name", "Bad Name"}}, "invalid instance name"},
		{BulkDeleteRequest{Names: []string{"same", "same"}}, "twice"},
		{`{"instance_names":["a"]}`, "unknown field"},
	} {
		r := e.do("POST", "/api/instances/bulk-delete", c.body, tok)
		if r.status != http.StatusBadRequest || !strings.Contains(r.errMsg(t), c.want) {
			t.Errorf("%+v: want 400 with %q, got %s", c.body, c.want, r)
		}
	}
	// Only unknown names: 404 with per-item results.
	r = e.do("POST", "/api/instances/bulk-delete", BulkDeleteRequest{Names: []string{uniq("nope"), uniq("nope")}}, tok)
	expect(t, r, http.StatusNotFound)
	var br bulkBody
	r.json(t, &br)
	if br.Error == "" || br.Failed != 2 || br.Succeeded != 0 || len(br.Results) != 2 || br.Results[0].Status != 404 {
		t.Fatalf("bulk delete of unknown names: %s", r)
	}
}

func TestUnknownInstance404(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	n := uniq("ghost")
	for _, p := range []string{"", "/health", "/events", "/logs"} {
		r := e.do("GET", "/api/instances/"+n+p, nil, tok)
		expect(t, r, http.StatusNotFound)
		if !strings.Contains(r.errMsg(t), n) {
			t.Errorf("404 message lacks the name: %s", r)
		}
	}
	expect(t, e.do("DELETE", "/api/instances/"+n, nil, tok), http.StatusNotFound)
	assertNothingCreated(t, e, n)
	expect(t, e.do("GET", "/api/instances?state=bogus", nil, tok), http.StatusBadRequest)
	expect(t, e.do("GET", "/api/instances?include_deleted=maybe", nil, tok), http.StatusBadRequest)
	expect(t, e.do("GET", "/api/instances/"+n+"/logs?tail=0", nil, tok), http.StatusBadRequest)
}

func TestSecretsOnlyInAuthenticatedGet(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	const pw = "Sup3rSecretInstancePw"
	n := uniq("sec")
	internal := fakeInstance(t, e, n, pw, true)

	list := e.do("GET", "/api/instances", nil, tok)
	expect(t, list, http.StatusOK)
	if strings.Contains(string(list.body), pw) {
		t.Fatal("the list holds a password")
	}
	var il InstanceList
	list.json(t, &il)
	found := false
	for _, in := range il.Instances {
		if in.Name == n {
			found = true
			if in.InternalName != internal || in.State != "running" || in.Port != 65000 || in.CreatedAt.IsZero() {
				t.Fatalf("listed instance: %+v", in)
			}
		}
	}
	if !found || il.Count != len(il.Instances) {
		t.Fatalf("instance %s not listed (%d)", n, il.Count)
	}
	// Filters.
	var running InstanceList
	e.do("GET", "/api/instances?state=running&name="+n, nil, tok).json(t, &running)
	if running.Count != 1 {
		t.Fatalf("state filter: %+v", running)
	}
	var failed InstanceList
	e.do("GET", "/api/instances?state=failed&name="+n, nil, tok).json(t, &failed)
	if failed.Count != 0 {
		t.Fatalf("state filter: %+v", failed)
	}

	// Unauthenticated: 401, no password.
	r := e.do("GET", "/api/instances/"+n, nil, "")
	expect(t, r, http.StatusUnauthorized)
	if strings.Contains(string(r.body), pw) {
		t.Fatal("401 body holds the password")
	}
	// Authenticated: the connection string with the password.
	r = e.do("GET", "/api/instances/"+n, nil, tok)
	expect(t, r, http.StatusOK)
	var d InstanceDetail
	r.json(t, &d)
	u, err := url.Parse(d.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := u.User.Password(); got != pw || u.Host != "127.0.0.1:65000" {
		t.Fatalf("connection string %q", d.ConnectionString)
	}
	if len(d.Events) == 0 || d.Events[0].NewState != "running" {
		t.Fatalf("events: %+v", d.Events)
	}
	// Events and health endpoints; logs of an instance without a server: 404.
	var ev InstanceEvents
	e.do("GET", "/api/instances/"+n+"/events?limit=1", nil, tok).json(t, &ev)
	if len(ev.Events) != 1 {
		t.Fatalf("events: %+v", ev)
	}
	var h InstanceHealth
	e.do("GET", "/api/instances/"+n+"/health", nil, tok).json(t, &h)
	if h.Name != n || h.Health != "unknown" || h.Checks == nil {
		t.Fatalf("health: %+v", h)
	}
	expect(t, e.do("GET", "/api/instances/"+n+"/logs", nil, tok), http.StatusNotFound)
	for _, p := range []string{"/api/instances/" + n + "/events", "/api/instances/" + n + "/health", "/api/server/stats"} {
		if r := e.do("GET", p, nil, tok); strings.Contains(string(r.body), pw) {
			t.Fatalf("%s holds the password", p)
		}
	}
	// Every timestamp is RFC 3339 UTC.
	if !strings.Contains(string(r.body), `"created_at":"`) || strings.Contains(string(r.body), "+00:00") {
		t.Fatalf("timestamps: %s", r.body)
	}
}
