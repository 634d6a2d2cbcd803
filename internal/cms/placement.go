package cms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ClaimPlacement implements Store: the first host recorded for an instance
// stays; later claims return it unchanged.
func (s *store) ClaimPlacement(ctx context.Context, internalName, host string) (string, error) {
	if host == "" {
		return "", errors.New("cms: claim placement: empty host")
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO {p}instance_placements (internal_name, host, created_at)
		VALUES (?, ?, ?) ON CONFLICT (internal_name) DO NOTHING`), internalName, host, s.d.ts(s.now()))
	if err != nil && s.d.foreignKeyViolation(err) {
		err = ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("cms: claim placement of %q: %w", internalName, err)
	}
	return s.Placement(ctx, internalName)
}

// Placement implements Store.
func (s *store) Placement(ctx context.Context, internalName string) (string, error) {
	var host string
	err := s.db.QueryRowContext(ctx, s.q("SELECT host FROM {p}instance_placements WHERE internal_name = ?"), internalName).Scan(&host)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cms: placement of %q: %w", internalName, err)
	}
	return host, nil
}
