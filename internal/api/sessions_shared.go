package api

import (
	"context"
	"errors"
	"time"

	"github.com/toygres/toygres/internal/cms"
)

// sessionKeeper issues, checks and revokes login sessions.
type sessionKeeper interface {
	issue(kind string, ttl time.Duration) (token string, expires time.Time, err error)
	lookup(token string) (session, error)
	revoke(token string) error
	revokeAll() error
}

// sessionOpTimeout bounds one call to a shared session store.
const sessionOpTimeout = 5 * time.Second

// sharedSessions keeps sessions in a store every replica shares, by token
// hash. Each request looks its token up there, so a logout on one replica
// ends the session on all at once.
type sharedSessions struct {
	store cms.SessionStore
	now   func() time.Time
}

func (s *sharedSessions) issue(kind string, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		return "", time.Time{}, errors.New("session lifetime must be positive")
	}
	tok, err := randomToken(32)
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now().UTC()
	exp := now.Add(ttl)
	ctx, cancel := context.WithTimeout(context.Background(), sessionOpTimeout)
	defer cancel()
	if err := s.store.PutSession(ctx, cms.Session{TokenHash: tokenHash(tok), Kind: kind, CreatedAt: now, ExpiresAt: exp}); err != nil {
		return "", time.Time{}, err
	}
	return tok, exp, nil
}

func (s *sharedSessions) lookup(token string) (session, error) {
	if token == "" || len(token) > 256 {
		return session{}, errUnknown
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionOpTimeout)
	defer cancel()
	se, err := s.store.GetSession(ctx, tokenHash(token))
	switch {
	case errors.Is(err, cms.ErrNotFound):
		return session{}, errUnknown
	case err != nil:
		return session{}, err
	case !s.now().Before(se.ExpiresAt):
		return session{}, errExpired
	}
	return session{Kind: se.Kind, CreatedAt: se.CreatedAt, ExpiresAt: se.ExpiresAt}, nil
}

func (s *sharedSessions) revoke(token string) error {
	if token == "" || len(token) > 256 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionOpTimeout)
	defer cancel()
	_, err := s.store.DeleteSession(ctx, tokenHash(token))
	return err
}

func (s *sharedSessions) revokeAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), sessionOpTimeout)
	defer cancel()
	return s.store.DeleteSessions(ctx)
}
