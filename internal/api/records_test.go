package api

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/toygres/toygres/internal/cms"
)

// TestListFiltersAndRecordErrors: the default list shows live instances
// (broken ones marked), all=true the rest; purge and repair answer 404 and
// 409 with one clear message.
func TestListFiltersAndRecordErrors(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	ctx := context.Background()
	n := uniq("rec")
	failed := fakeInstance(t, e, n, "", false)
	if _, err := e.app.CMS().UpdateState(ctx, failed, cms.StateFailed, cms.StateUpdate{FailureReason: "deploy failed: test"}); err != nil {
		t.Fatal(err)
	}
	live := fakeInstance(t, e, n, "", true)
	if err := e.app.CMS().SetProblem(ctx, live, "unreadable: test damage"); err != nil {
		t.Fatal(err)
	}
	list := func(q string) []Instance {
		t.Helper()
		var l InstanceList
		r := e.do("GET", "/api/instances?name="+n+q, nil, tok)
		expect(t, r, http.StatusOK)
		r.json(t, &l)
		return l.Instances
	}
	if l := list(""); len(l) != 1 || l[0].InternalName != live || !l[0].Broken || l[0].Problem != "unreadable: test damage" || l[0].ProblemAt == nil {
		t.Fatalf("default list: %+v", l)
	}
	if l := list("&all=true"); len(l) != 2 {
		t.Fatalf("all: %+v", l)
	}
	if l := list("&include_deleted=true"); len(l) != 2 {
		t.Fatalf("include_deleted: %+v", l)
	}
	if l := list("&state=failed"); len(l) != 1 || l[0].InternalName != failed || l[0].FailureReason == "" {
		t.Fatalf("state=failed: %+v", l)
	}
	if l := list("&state=broken"); len(l) != 1 || l[0].InternalName != live {
		t.Fatalf("state=broken: %+v", l)
	}
	expect(t, e.do("GET", "/api/instances?all=maybe", nil, tok), http.StatusBadRequest)

	// Purge: the active instance is left; the failed one has no resources.
	r := e.do("POST", "/api/instances/"+n+"/purge", nil, tok)
	expect(t, r, http.StatusOK)
	var pr PurgeResponse
	r.json(t, &pr)
	if len(pr.Purged) != 1 || pr.Purged[0] != failed || len(pr.Skipped) != 1 || pr.Skipped[0].InternalName != live ||
		!strings.Contains(pr.Skipped[0].Reason, "delete it first") {
		t.Fatalf("purge: %+v", pr)
	}
	// Nothing purgeable left: 409 naming the reason.
	r = e.do("POST", "/api/instances/"+n+"/purge", nil, tok)
	expect(t, r, http.StatusConflict)
	if msg := r.errMsg(t); !strings.Contains(msg, "nothing to purge") || !strings.Contains(msg, "running") {
		t.Fatalf("409 message: %q", msg)
	}
	ghost := uniq("ghost")
	expect(t, e.do("POST", "/api/instances/"+ghost+"/purge", nil, tok), http.StatusNotFound)
	expect(t, e.do("POST", "/api/instances/"+ghost+"/repair", nil, tok), http.StatusNotFound)

	// Repair of an instance without a server: 409, still broken, reason kept.
	r = e.do("POST", "/api/instances/"+n+"/repair", nil, tok)
	expect(t, r, http.StatusConflict)
	if msg := r.errMsg(t); !strings.Contains(msg, "still broken") {
		t.Fatalf("repair 409 message: %q", msg)
	}
	if got, _ := e.app.CMS().GetByInternalName(ctx, live); !strings.HasPrefix(got.Problem, "repair failed: ") {
		t.Fatalf("problem after a failed repair: %q", got.Problem)
	}
	// Repair of a failed instance: 409 with the way out.
	m := uniq("fail")
	fi := fakeInstance(t, e, m, "", false)
	if _, err := e.app.CMS().UpdateState(ctx, fi, cms.StateFailed, cms.StateUpdate{FailureReason: "x"}); err != nil {
		t.Fatal(err)
	}
	r = e.do("POST", "/api/instances/"+m+"/repair", nil, tok)
	expect(t, r, http.StatusConflict)
	if msg := r.errMsg(t); !strings.Contains(msg, "delete it") {
		t.Fatalf("repair of a failed instance: %q", msg)
	}
}
