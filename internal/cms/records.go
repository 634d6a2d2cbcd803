package cms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// EventProblem is the type of the event recorded when an instance's
// problem is set, changes or is cleared.
const EventProblem = "problem"

// SetProblem implements Store. The event's message is "broken: <problem>"
// or "repaired". Setting the problem an instance already has changes
// nothing.
func (s *store) SetProblem(ctx context.Context, internalName, problem string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var st, cur string
		err := tx.QueryRowContext(ctx, s.q("SELECT state, problem FROM {p}instances WHERE internal_name = ?"+s.d.forUpdate), internalName).Scan(&st, &cur)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if cur == problem || State(st) == StateDeleted {
			return nil
		}
		now := s.now()
		at, msg := s.d.ts(now), "broken: "+problem
		if problem == "" {
			at, msg = nil, "repaired"
		}
		if _, err := tx.ExecContext(ctx, s.q("UPDATE {p}instances SET problem = ?, problem_at = ?, updated_at = ? WHERE internal_name = ?"),
			problem, at, s.d.ts(now), internalName); err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, internalName, EventProblem, "", "", msg, now)
	})
	if err != nil {
		return fmt.Errorf("cms: set problem of %q: %w", internalName, err)
	}
	return nil
}

// Purge implements Store: everything recorded about the instance goes in
// one transaction.
func (s *store) Purge(ctx context.Context, internalName string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var st string
		err := tx.QueryRowContext(ctx, s.q("SELECT state FROM {p}instances WHERE internal_name = ?"+s.d.forUpdate), internalName).Scan(&st)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if State(st) != StateFailed && State(st) != StateDeleted {
			return fmt.Errorf("%w: it is %s", ErrActive, st)
		}
		for _, table := range []string{"instance_replicas", "instance_secrets", "instance_health_checks", "instance_events", "instances"} {
			if _, err := tx.ExecContext(ctx, s.q("DELETE FROM {p}"+table+" WHERE internal_name = ?"), internalName); err != nil {
				return fmt.Errorf("delete from %s: %w", table, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cms: purge %q: %w", internalName, err)
	}
	s.log.Debug("cms: instance purged", "instance", internalName)
	return nil
}
