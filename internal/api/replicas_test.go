package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReplicaEndpointsRefuse: requests the control plane refuses whatever
// the data plane (through the OpenAPI validator, like every API test).
func TestReplicaEndpointsRefuse(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	for _, c := range []struct {
		method, path string
		body         any
		status       int
		field        string
	}{
		{"POST", "/api/instances", CreateInstanceRequest{Name: uniq("rp"), Password: "ReplicaPw42", Replicas: 3}, http.StatusBadRequest, "replicas"},
		{"POST", "/api/instances", CreateInstanceRequest{Name: uniq("rp"), Password: "ReplicaPw42", Replicas: -1}, http.StatusBadRequest, "replicas"},
		{"POST", "/api/instances", CreateInstanceRequest{Name: uniq("rp"), Password: "ReplicaPw42", SyncReplica: true}, http.StatusBadRequest, "sync_replica"},
		{"POST", "/api/instances/no-such-instance/scale", ScaleRequest{Replicas: 3}, http.StatusBadRequest, "replicas"},
		{"POST", "/api/instances/no-such-instance/scale", ScaleRequest{Replicas: 1}, 0, ""},
		{"POST", "/api/instances/no-such-instance/failover", nil, 0, ""},
		{"POST", "/api/instances/no-such-instance/switchover", nil, 0, ""},
	} {
		r := e.do(c.method, c.path, c.body, tok)
		if c.status == 0 {
			// 404 where the data plane runs standbys, else 400 (no replicas).
			if r.status != http.StatusNotFound && r.status != http.StatusBadRequest {
				t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
			}
			continue
		}
		expect(t, r, c.status)
		var er ErrorResponse
		r.json(t, &er)
		if er.Field != c.field || !strings.Contains(er.Error, c.field) {
			t.Errorf("%s %s %+v: error %+v", c.method, c.path, c.body, er)
		}
	}
}

// TestReplicaEndpoints drives the replica endpoints against a real instance
// on the local data plane: create with a synchronous standby, the detail's
// servers and read-only connection string (with the password), a
// switchover, a failover request while one runs, and scale to 0.
func TestReplicaEndpoints(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	const pw = "ReplicaApiPw42"
	name := uniq("rep")
	detail := func() InstanceDetail {
		t.Helper()
		r := e.do("GET", "/api/instances/"+name, nil, tok)
		expect(t, r, http.StatusOK)
		var d InstanceDetail
		r.json(t, &d)
		return d
	}
	settled := func(standbys int, notPrimary string) func() (bool, string) {
		return func() (bool, string) {
			d := detail()
			if d.State == "failed" {
				t.Fatalf("%s failed: %s", name, d.FailureReason)
			}
			prim, streaming := 0, 0
			for _, s := range d.Servers {
				switch {
				case s.Role == "primary" && s.Ready && s.ID != notPrimary:
					prim++
				case s.Role == "standby" && s.Ready && s.Streaming:
					streaming++
				}
			}
			return d.State == "running" && d.Replicas == standbys && prim == 1 && streaming == standbys && len(d.Servers) == standbys+1,
				fmt.Sprintf("%s, %d replicas, %+v", d.State, d.Replicas, d.Servers)
		}
	}
	expect(t, e.do("POST", "/api/instances", CreateInstanceRequest{Name: name, Password: pw, StorageGB: 1, Replicas: 1, SyncReplica: true}, tok), http.StatusAccepted)
	eventually(t, 5*time.Minute, name+" running with a standby", settled(1, ""))
	d := detail()
	if d.Replicas != 1 || !d.SyncReplica || !strings.Contains(d.ReadOnlyConnectionString, pw) || !strings.Contains(d.ConnectionString, "target_session_attrs=read-write") {
		t.Fatalf("detail %+v", d.InstanceReplicas)
	}
	old := d.Servers[0].ID

	r := e.do("POST", "/api/instances/"+name+"/switchover", nil, tok)
	expect(t, r, http.StatusAccepted)
	var op OperationResponse
	r.json(t, &op)
	if !op.Started || op.OrchestrationID == "" {
		t.Fatalf("switchover: %+v", op)
	}
	// While it runs, another request names it instead of starting one.
	r = e.do("POST", "/api/instances/"+name+"/failover", nil, tok)
	expect(t, r, http.StatusAccepted)
	var again OperationResponse
	r.json(t, &again)
	if again.Started && again.OrchestrationID == op.OrchestrationID {
		t.Fatalf("second request: %+v", again)
	}
	eventually(t, 3*time.Minute, "the switchover", settled(1, old))

	r = e.do("POST", "/api/instances/"+name+"/scale", ScaleRequest{Replicas: 0}, tok)
	expect(t, r, http.StatusAccepted)
	var scale OperationResponse
	r.json(t, &scale)
	eventually(t, 3*time.Minute, "the scale orchestration", func() (bool, string) {
		r := e.do("GET", "/api/orchestrations/"+scale.OrchestrationID, nil, tok)
		if r.status == http.StatusNotFound {
			return false, "queued" // a start is queued until the runtime takes it
		}
		expect(t, r, http.StatusOK)
		var o OrchestrationDetail
		r.json(t, &o)
		if o.Status == "Failed" {
			t.Fatalf("scale failed: %+v", o.Error)
		}
		return o.Status == "Completed", o.Status
	})
	eventually(t, time.Minute, "scale to 0", settled(0, ""))
	if d := detail(); d.Replicas != 0 || d.ReadOnlyConnectionString != "" {
		t.Fatalf("after scale to 0: %+v", d.InstanceReplicas)
	}
	expect(t, e.do("POST", "/api/instances/"+name+"/failover", nil, tok), http.StatusConflict)
	expect(t, e.do("DELETE", "/api/instances/"+name, nil, tok), http.StatusAccepted)
}
