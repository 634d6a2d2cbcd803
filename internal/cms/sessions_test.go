package cms

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func testSessions(t *testing.T, newDB factory) {
	s := newStore(t, newDB)
	ctx := ctxT(t)
	h1, h2, gone := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := s.GetSession(ctx, h1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown session: %v, want ErrNotFound", err)
	}
	for _, se := range []Session{
		{TokenHash: h1, Kind: "token", CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
		{TokenHash: h2, Kind: "browser", CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
		{TokenHash: gone, Kind: "token", CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)},
	} {
		if err := s.PutSession(ctx, se); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetSession(ctx, h1)
	if err != nil || got.Kind != "token" || !got.ExpiresAt.Equal(now.Add(time.Hour)) || !got.CreatedAt.Equal(now) {
		t.Fatalf("GetSession = %+v, %v", got, err)
	}
	if _, err := s.GetSession(ctx, gone); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired session: %v, want ErrNotFound", err)
	}
	if err := s.PutSession(ctx, Session{TokenHash: "short"}); err == nil {
		t.Fatal("a malformed hash was stored")
	}
	if ok, err := s.DeleteSession(ctx, h1); err != nil || !ok {
		t.Fatalf("DeleteSession = %v, %v; want true", ok, err)
	}
	if ok, err := s.DeleteSession(ctx, h1); err != nil || ok {
		t.Fatalf("DeleteSession again = %v, %v; want false", ok, err)
	}
	if _, err := s.GetSession(ctx, h1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted session: %v", err)
	}
	if _, err := s.GetSession(ctx, h2); err != nil {
		t.Fatalf("the other session went too: %v", err)
	}
	if err := s.DeleteSessions(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, h2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after DeleteSessions: %v", err)
	}
}
