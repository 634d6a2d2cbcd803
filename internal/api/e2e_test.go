package api

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/toygres/toygres/internal/cms"
)

// TestInstanceLifecycle drives a real local PostgreSQL instance through the
// API: create → running (connectable, health checked) → delete → deleted,
// and checks that its password shows up nowhere but in the authenticated GET.
func TestInstanceLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("deploys PostgreSQL")
	}
	e := newEnv(t, Options{})
	tok := e.token()
	if v, err := e.app.Versions(context.Background()); err != nil || len(v) == 0 {
		t.Fatalf("no PostgreSQL binaries found (install them: apt-get install -y postgresql): %v", err)
	}
	const pw = "E2eInstanceSecretPw42"
	name := uniq("e2e")

	r := e.do("POST", "/api/instances", CreateInstanceRequest{Name: name, Password: pw, StorageGB: 1}, tok)
	expect(t, r, http.StatusAccepted)
	if strings.Contains(string(r.body), pw) {
		t.Fatal("the create response echoes the password")
	}
	var created Instance
	r.json(t, &created)
	if created.Name != name || created.State != "creating" || created.CreateOrchestrationID == "" ||
		!strings.HasPrefix(created.InternalName, name+"-") || r.header.Get("Location") != "/api/instances/"+name {
		t.Fatalf("created: %s", r)
	}
	// The name is now taken.
	expect(t, e.do("POST", "/api/instances", CreateInstanceRequest{Name: name, Password: pw}, tok), http.StatusConflict)

	var d InstanceDetail
	eventually(t, 3*time.Minute, name+" running", func() (bool, string) {
		r := e.do("GET", "/api/instances/"+name, nil, tok)
		if r.status != http.StatusOK {
			return false, r.String()
		}
		d = InstanceDetail{}
		r.json(t, &d)
		if d.State == "failed" {
			t.Fatalf("create failed: %s", d.FailureReason)
		}
		return d.State == "running", d.State
	})
	if !strings.Contains(d.ConnectionString, pw) {
		t.Fatalf("connection string without the password: %q", d.ConnectionString)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.ConnectionString)
	if err != nil {
		t.Fatalf("connect with the API's connection string: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("query: %v", err)
	}
	conn.Close(ctx)

	// The health actor (500 ms interval) records checks.
	eventually(t, time.Minute, "a healthy check", func() (bool, string) {
		var h InstanceHealth
		r := e.do("GET", "/api/instances/"+name+"/health", nil, tok)
		expect(t, r, http.StatusOK)
		r.json(t, &h)
		return len(h.Checks) > 0 && h.Checks[0].Status == "healthy" && h.Health == "healthy", h.Health
	})
	logs := e.do("GET", "/api/instances/"+name+"/logs?tail=50", nil, tok)
	expect(t, logs, http.StatusOK)
	var il InstanceLogs
	logs.json(t, &il)
	if len(il.Lines) == 0 || len(il.Lines) > 50 || il.InternalName != created.InternalName {
		t.Fatalf("instance logs: %d lines", len(il.Lines))
	}
	// The password is nowhere else.
	for _, p := range []string{
		"/api/instances", "/api/instances?include_deleted=true", "/api/instances/" + name + "/events",
		"/api/instances/" + name + "/health", "/api/instances/" + name + "/logs",
		"/api/orchestrations?limit=1000", "/api/orchestrations/" + created.CreateOrchestrationID + "?history=full",
		"/api/orchestrations/actor-" + created.InternalName + "?history=full",
		"/api/server/logs?limit=10000", "/api/server/stats", "/api/server/config", "/metrics",
	} {
		r := e.do("GET", p, nil, tok)
		expect(t, r, http.StatusOK)
		if strings.Contains(string(r.body), pw) {
			t.Errorf("GET %s shows the password", p)
		}
	}
	co := e.orchestration(created.CreateOrchestrationID, "?history=full", tok)
	if co.Status != "Completed" || len(co.Executions) != 1 || len(co.Executions[0].History) < 5 {
		t.Fatalf("create orchestration: %s, %d executions", co.Status, len(co.Executions))
	}

	// Delete.
	r = e.do("DELETE", "/api/instances/"+name, nil, tok)
	expect(t, r, http.StatusAccepted)
	var del Instance
	r.json(t, &del)
	if del.DeleteOrchestrationID != "delete-"+created.InternalName {
		t.Fatalf("delete: %s", r)
	}
	eventually(t, 2*time.Minute, name+" deleted", func() (bool, string) {
		r := e.do("GET", "/api/instances/"+name, nil, tok)
		expect(t, r, http.StatusOK)
		d = InstanceDetail{}
		r.json(t, &d)
		return d.State == "deleted", d.State
	})
	if d.ConnectionString != "" || d.DeletedAt == nil {
		t.Fatalf("deleted instance: %+v", d)
	}
	expect(t, e.do("DELETE", "/api/instances/"+name, nil, tok), http.StatusNotFound)
	expect(t, e.do("GET", "/api/instances/"+name+"/logs", nil, tok), http.StatusNotFound)
	var active InstanceList
	e.do("GET", "/api/instances?name="+name, nil, tok).json(t, &active)
	if active.Count != 0 {
		t.Fatalf("deleted instance listed without include_deleted: %+v", active)
	}
	e.do("GET", "/api/instances?name="+name+"&include_deleted=true", nil, tok).json(t, &active)
	if active.Count != 1 || active.Instances[0].State != "deleted" {
		t.Fatalf("include_deleted: %+v", active)
	}
	// The server's own log never holds the password, and logs requests.
	b, err := os.ReadFile(appLog)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), pw) || strings.Contains(string(b), testAdminPassword) {
		t.Fatal("the server log holds a password")
	}
	if !strings.Contains(string(b), `"msg":"http request"`) {
		t.Fatal("requests are not logged")
	}
}

// TestBulkCreateAndDelete creates two instances in one request and deletes
// them (and an unknown name) in another, while they are still being created.
func TestBulkCreateAndDelete(t *testing.T) {
	if testing.Short() {
		t.Skip("deploys PostgreSQL")
	}
	e := newEnv(t, Options{})
	tok := e.token()
	if v, err := e.app.Versions(context.Background()); err != nil || len(v) == 0 {
		t.Fatalf("no PostgreSQL binaries found (install them: apt-get install -y postgresql): %v", err)
	}
	const pw = "BulkSecretPw77"
	base := uniq("bulk")
	r := e.do("POST", "/api/instances/bulk", BulkCreateRequest{BaseName: base, Count: 2, Password: pw, StorageGB: 1}, tok)
	expect(t, r, http.StatusAccepted)
	if strings.Contains(string(r.body), pw) {
		t.Fatal("bulk response echoes the password")
	}
	var br BulkResponse
	r.json(t, &br)
	if br.Requested != 2 || br.Succeeded != 2 || br.Failed != 0 || br.Results[0].Name != base+"-1" ||
		br.Results[1].Instance == nil || br.Results[1].OrchestrationID != br.Results[1].Instance.CreateOrchestrationID {
		t.Fatalf("bulk create: %s", r)
	}
	ghost := uniq("ghost")
	r = e.do("POST", "/api/instances/bulk-delete", BulkDeleteRequest{Names: []string{base + "-1", ghost, base + "-2"}}, tok)
	expect(t, r, http.StatusAccepted)
	r.json(t, &br)
	if br.Succeeded != 2 || br.Failed != 1 || br.Results[1].Status != http.StatusNotFound || !br.Results[0].OK ||
		!strings.HasPrefix(br.Results[0].OrchestrationID, "delete-"+base+"-1-") {
		t.Fatalf("bulk delete: %s", r)
	}
	for _, n := range []string{base + "-1", base + "-2"} {
		eventually(t, 3*time.Minute, n+" deleted", func() (bool, string) {
			inst, err := e.app.CMS().Get(context.Background(), n)
			if err != nil {
				return false, err.Error()
			}
			return inst.State == cms.StateDeleted, string(inst.State)
		})
	}
}
