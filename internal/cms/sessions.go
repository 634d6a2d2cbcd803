package cms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Session is a login session of the API, kept by the hash of its token
// (never the token itself).
type Session struct {
	TokenHash string
	Kind      string // "browser" or "token"
	CreatedAt time.Time
	ExpiresAt time.Time
}

// SessionStore keeps API login sessions where every server of a control
// plane sees them, so a token issued by one replica is honoured (and a
// logout is honoured) by all.
type SessionStore interface {
	// PutSession records a session (replacing one with the same hash) and
	// forgets expired ones.
	PutSession(ctx context.Context, s Session) error
	// GetSession returns the session with this token hash, or ErrNotFound
	// (also for an expired one).
	GetSession(ctx context.Context, tokenHash string) (Session, error)
	// DeleteSession forgets a session; an unknown hash changes nothing and
	// reports false.
	DeleteSession(ctx context.Context, tokenHash string) (bool, error)
	// DeleteSessions forgets every session.
	DeleteSessions(ctx context.Context) error
}

// PutSession implements SessionStore.
func (s *store) PutSession(ctx context.Context, se Session) error {
	if len(se.TokenHash) != 64 {
		return errors.New("cms: put session: malformed token hash")
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO {p}sessions (token_hash, kind, created_at, expires_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (token_hash) DO UPDATE SET kind = excluded.kind, created_at = excluded.created_at, expires_at = excluded.expires_at`),
		se.TokenHash, se.Kind, se.CreatedAt.UnixMilli(), se.ExpiresAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("cms: put session: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM {p}sessions WHERE expires_at <= ?`), s.now().UnixMilli()); err != nil {
		return fmt.Errorf("cms: forget expired sessions: %w", err)
	}
	return nil
}

// GetSession implements SessionStore.
func (s *store) GetSession(ctx context.Context, tokenHash string) (Session, error) {
	var kind string
	var created, expires int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT kind, created_at, expires_at FROM {p}sessions WHERE token_hash = ? AND expires_at > ?`),
		tokenHash, s.now().UnixMilli()).Scan(&kind, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("cms: get session: %w", err)
	}
	return Session{TokenHash: tokenHash, Kind: kind, CreatedAt: time.UnixMilli(created).UTC(), ExpiresAt: time.UnixMilli(expires).UTC()}, nil
}

// DeleteSession implements SessionStore.
func (s *store) DeleteSession(ctx context.Context, tokenHash string) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM {p}sessions WHERE token_hash = ?`), tokenHash)
	if err != nil {
		return false, fmt.Errorf("cms: delete session: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// DeleteSessions implements SessionStore.
func (s *store) DeleteSessions(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM {p}sessions`)); err != nil {
		return fmt.Errorf("cms: delete sessions: %w", err)
	}
	return nil
}
