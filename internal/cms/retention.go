package cms

import (
	"context"
	"fmt"
	"time"
)

// HealthCheckRetention selects the health checks PruneHealthChecks deletes.
// The two conditions are ORed: a check goes when it is too old or when
// its instance has too many newer ones.
type HealthCheckRetention struct {
	// OlderThan deletes checks whose CheckedAt is before it (zero: none by age).
	OlderThan time.Time
	// KeepPerInstance keeps only the newest n checks of each instance
	// (0: no cap).
	KeepPerInstance int
}

// PruneHealthChecks implements Store. It returns the number of checks deleted.
func (s *store) PruneHealthChecks(ctx context.Context, r HealthCheckRetention) (int64, error) {
	var total int64
	if !r.OlderThan.IsZero() {
		res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM {p}instance_health_checks WHERE checked_at < ?`),
			s.d.ts(r.OlderThan.UTC().Truncate(time.Millisecond)))
		if err != nil {
			return total, fmt.Errorf("cms: prune health checks by age: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	if r.KeepPerInstance > 0 {
		// Same order as HealthChecks: newest CheckedAt first, then newest id.
		res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM {p}instance_health_checks WHERE id IN (
			SELECT id FROM (
				SELECT id, row_number() OVER (PARTITION BY internal_name ORDER BY checked_at DESC, id DESC) AS rn
				FROM {p}instance_health_checks
			) ranked WHERE rn > ?)`), r.KeepPerInstance)
		if err != nil {
			return total, fmt.Errorf("cms: prune health checks per instance: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}
