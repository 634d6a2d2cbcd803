package api

import (
	"net/http"
	"strings"
	"testing"
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
