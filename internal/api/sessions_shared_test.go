package api

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestSharedSessionsAcrossReplicas: two servers of one control plane (own
// state dirs, one shared session store) honour each other's tokens, and a
// logout on one ends the session on the other. Without SharedSessions the
// second server refuses the first one's token (shown first).
func TestSharedSessionsAcrossReplicas(t *testing.T) {
	// Separate session files: replica b does not know a's token.
	a, b := newEnv(t, Options{}), newEnv(t, Options{})
	expect(t, b.do("GET", "/api/instances", nil, a.token()), http.StatusUnauthorized)

	shared := sharedApp(t).CMS()
	a, b = newEnv(t, Options{SharedSessions: shared}), newEnv(t, Options{SharedSessions: shared})
	tok := a.token()
	expect(t, b.do("GET", "/api/instances", nil, tok), http.StatusOK)
	expect(t, a.do("GET", "/api/instances", nil, tok), http.StatusOK)
	if _, err := os.Stat(filepath.Join(a.srv.opts.StateDir, "sessions.json")); !os.IsNotExist(err) {
		t.Fatalf("a shared-session server wrote sessions.json: %v", err)
	}
	expect(t, b.do("POST", "/api/logout", nil, tok), http.StatusOK)
	expect(t, a.do("GET", "/api/instances", nil, tok), http.StatusUnauthorized)
}
