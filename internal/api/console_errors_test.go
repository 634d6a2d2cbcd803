package api

import (
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestConsoleSaysWhatTheAPISays: the console's forms and buttons refuse a
// bad request with the status and message the API gives for the same
// request (both describe errors with app.Describe), shown inline on the
// re-rendered form or as the flash notice after the redirect.
func TestConsoleSaysWhatTheAPISays(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.token()
	cookie := e.consoleCookie(t)
	ghost := uniq("ghost")

	// Forms re-rendered with the error: the page's status is the API's.
	for _, tc := range []struct {
		what          string
		apiMethod     string
		apiPath       string
		apiBody       any
		consolePath   string
		consoleForm   url.Values
		wantAPIStatus int
	}{
		{"create with a bad name", "POST", "/api/instances", CreateInstanceRequest{Name: "Bad_Name", Password: "long-enough"},
			"/instances", url.Values{"name": {"Bad_Name"}, "password": {"long-enough"}}, http.StatusBadRequest},
		{"create with a short password", "POST", "/api/instances", CreateInstanceRequest{Name: ghost, Password: "abc"},
			"/instances", url.Values{"name": {ghost}, "password": {"abc"}}, http.StatusBadRequest},
		{"bulk create of too many", "POST", "/api/instances/bulk", BulkCreateRequest{BaseName: ghost, Count: 51, Password: "long-enough"},
			"/instances/bulk", url.Values{"base_name": {ghost}, "count": {"51"}, "password": {"long-enough"}}, http.StatusBadRequest},
		{"bulk create with a bad base name", "POST", "/api/instances/bulk", BulkCreateRequest{BaseName: "Bad", Count: 2, Password: "long-enough"},
			"/instances/bulk", url.Values{"base_name": {"Bad"}, "count": {"2"}, "password": {"long-enough"}}, http.StatusBadRequest},
		{"raise an event to an unknown orchestration", "POST", "/api/orchestrations/" + ghost + "/raise-event", RaiseEventRequest{EventName: "x"},
			"/orchestrations/" + ghost + "/raise-event", url.Values{"event_name": {"x"}}, http.StatusNotFound},
	} {
		a := e.do(tc.apiMethod, tc.apiPath, tc.apiBody, tok)
		if a.status != tc.wantAPIStatus {
			t.Errorf("%s: API answered %s, want %d", tc.what, a, tc.wantAPIStatus)
			continue
		}
		msg := a.errMsg(t)
		c := e.postForm(tc.consolePath, tc.consoleForm, hdr{"Cookie": cookie})
		if c.status != a.status {
			t.Errorf("%s: console answered %d, the API %d", tc.what, c.status, a.status)
		}
		if tc.wantAPIStatus == http.StatusNotFound {
			continue // the console shows its not-found page for an unknown orchestration
		}
		if got := formError(string(c.body)); got != msg {
			t.Errorf("%s: the console's form error is %q, the API's %q", tc.what, got, msg)
		}
	}

	// Buttons redirect with the error as the flash notice.
	for _, tc := range []struct {
		what              string
		apiMethod         string
		apiPath           string
		apiBody           any
		consolePath       string
		consoleForm       url.Values
		prefix            string
		wantAPIStatus     int
		apiMsgIsBulkWhole bool
	}{
		{"delete an unknown instance", "DELETE", "/api/instances/" + ghost, nil,
			"/instances/" + ghost + "/delete", nil, "Delete failed: ", http.StatusNotFound, false},
		{"bulk delete with a bad name", "POST", "/api/instances/bulk-delete", BulkDeleteRequest{Names: []string{"Bad_Name"}},
			"/instances/bulk-delete", url.Values{"name": {"Bad_Name"}}, "Nothing was deleted: ", http.StatusBadRequest, false},
		{"bulk delete of unknown instances", "POST", "/api/instances/bulk-delete", BulkDeleteRequest{Names: []string{ghost}},
			"/instances/bulk-delete", url.Values{"name": {ghost}}, "Nothing was deleted: ", http.StatusNotFound, true},
		{"cancel an unknown orchestration", "POST", "/api/orchestrations/" + ghost + "/cancel", nil,
			"/orchestrations/" + ghost + "/cancel", url.Values{}, "Cancel failed: ", http.StatusNotFound, false},
		{"recreate an unknown orchestration", "POST", "/api/orchestrations/" + ghost + "/recreate", nil,
			"/orchestrations/" + ghost + "/recreate", nil, "Recreate failed: ", http.StatusNotFound, false},
		{"back up an unknown instance", "POST", "/api/instances/" + ghost + "/backups", nil,
			"/instances/" + ghost + "/backups", nil, "Backup failed to start: ", http.StatusNotFound, false},
	} {
		a := e.do(tc.apiMethod, tc.apiPath, tc.apiBody, tok)
		if a.status != tc.wantAPIStatus {
			t.Errorf("%s: API answered %s, want %d", tc.what, a, tc.wantAPIStatus)
			continue
		}
		msg := a.errMsg(t)
		if tc.apiMsgIsBulkWhole && !strings.HasPrefix(msg, "no instance was deleted: ") {
			t.Errorf("%s: API message %q", tc.what, msg)
		}
		c := e.postForm(tc.consolePath, tc.consoleForm, hdr{"Cookie": cookie})
		if c.status != http.StatusSeeOther {
			t.Errorf("%s: console answered %d, want 303", tc.what, c.status)
			continue
		}
		if got, want := flashOf(t, c), (flashNote{"error", tc.prefix + msg}); got != want {
			t.Errorf("%s: console flash %+v, want %+v", tc.what, got, want)
		}
	}
}

// formError is the text of the page's form error (<p class="form-error">).
func formError(page string) string {
	_, rest, ok := strings.Cut(page, `<p class="form-error" role="alert"`)
	if !ok {
		return ""
	}
	_, rest, _ = strings.Cut(rest, ">")
	text, _, _ := strings.Cut(rest, "</p>")
	return html.UnescapeString(text)
}

type flashNote struct {
	Kind string `json:"k"`
	Msg  string `json:"m"`
}

// flashOf decodes the console's flash cookie of a redirect.
func flashOf(t *testing.T, r resp) flashNote {
	t.Helper()
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name != "toygres_flash" {
			continue
		}
		b, err := base64.RawURLEncoding.DecodeString(c.Value)
		if err != nil {
			t.Fatalf("flash cookie %q: %v", c.Value, err)
		}
		var f flashNote
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("flash cookie %s: %v", b, err)
		}
		return f
	}
	t.Fatalf("no flash cookie in %v", r.header)
	return flashNote{}
}
