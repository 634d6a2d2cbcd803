package sqlite

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/toygres/toygres/duroxide"
)

// ReadHistory implements duroxide.Store.
func (s *Store) ReadHistory(ctx context.Context, instance string, executionID int64) ([]duroxide.Event, error) {
	const op = "read history"
	var raw [][]byte
	err := s.readHot(ctx, func(_ querier, rs *readStmts) error {
		raw = raw[:0]
		var rows *sql.Rows
		var err error
		if executionID > 0 {
			rows, err = rs.history.QueryContext(ctx, instance, executionID)
		} else {
			rows, err = rs.historyCurrent.QueryContext(ctx, instance)
		}
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				return err
			}
			raw = append(raw, b)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	// Decode outside the (possibly write-) connection.
	events := make([]duroxide.Event, len(raw))
	for i, b := range raw {
		if err := json.Unmarshal(b, &events[i]); err != nil {
			return nil, wrap(op, fmt.Errorf("decode event %d of %q: %w", i+1, instance, err))
		}
	}
	return events, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanInstance(sc scanner, info *duroxide.InstanceInfo) error {
	var status string
	var custom sql.NullString
	var created, updated int64
	if err := sc.Scan(&info.Instance, &info.OrchestrationName, &info.OrchestrationVersion, &info.ExecutionID,
		&status, &info.Output, &info.ParentInstance, &custom, &info.CustomStatusVersion, &created, &updated); err != nil {
		return err
	}
	info.Status = duroxide.Status(status)
	if custom.Valid {
		v := custom.String
		info.CustomStatus = &v
	}
	info.CreatedAt = msTime(created)
	info.UpdatedAt = msTime(updated)
	return nil
}

// GetInstance implements duroxide.Store.
func (s *Store) GetInstance(ctx context.Context, instance string) (*duroxide.InstanceInfo, error) {
	const op = "get instance"
	info := &duroxide.InstanceInfo{}
	err := s.readHot(ctx, func(_ querier, rs *readStmts) error {
		return scanInstance(rs.instance.QueryRowContext(ctx, instance), info)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, wrap(op, fmt.Errorf("instance %q: %w", instance, duroxide.ErrNotFound))
	}
	if err != nil {
		return nil, wrap(op, err)
	}
	return info, nil
}

type listCursor struct {
	CreatedAt int64  `json:"c"`
	Instance  string `json:"i"`
}

// ListInstances implements duroxide.Store. Instances come newest first
// (created_at, then instance id, descending); NextCursor is an opaque
// keyset cursor, stable under concurrent inserts and deletes.
func (s *Store) ListInstances(ctx context.Context, filter duroxide.ListFilter) (*duroxide.InstancePage, error) {
	const op = "list instances"
	limit := filter.Limit
	if limit <= 0 {
		limit = 100
	}
	var (
		where []string
		args  []any
	)
	if len(filter.Statuses) > 0 {
		ph := make([]string, len(filter.Statuses))
		for i, st := range filter.Statuses {
			ph[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "status IN ("+strings.Join(ph, ",")+")")
	}
	if filter.OrchestrationName != "" {
		where = append(where, "orchestration_name = CAST(? AS TEXT)")
		args = append(args, filter.OrchestrationName)
	}
	if filter.InstancePrefix != "" {
		where = append(where, "substr(instance, 1, length(CAST(? AS TEXT))) = CAST(? AS TEXT)")
		args = append(args, filter.InstancePrefix, filter.InstancePrefix)
	}
	if filter.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(filter.Cursor)
		var cur listCursor
		if err == nil {
			err = json.Unmarshal(raw, &cur)
		}
		if err != nil {
			return nil, wrap(op, fmt.Errorf("invalid cursor %q", filter.Cursor))
		}
		where = append(where, "(created_at < CAST(? AS INTEGER) OR (created_at = CAST(? AS INTEGER) AND instance < CAST(? AS TEXT)))")
		args = append(args, cur.CreatedAt, cur.CreatedAt, cur.Instance)
	}
	q := "SELECT " + instanceCols + " FROM instances"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, instance DESC LIMIT ?"
	args = append(args, limit+1)

	page := &duroxide.InstancePage{Instances: []duroxide.InstanceInfo{}}
	err := s.read(ctx, func(db querier, rs *readStmts) error {
		rows, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var info duroxide.InstanceInfo
			if err := scanInstance(rows, &info); err != nil {
				return err
			}
			page.Instances = append(page.Instances, info)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	if len(page.Instances) > limit {
		page.Instances = page.Instances[:limit]
		last := page.Instances[limit-1]
		b, _ := json.Marshal(listCursor{CreatedAt: last.CreatedAt.UnixMilli(), Instance: last.Instance})
		page.NextCursor = base64.RawURLEncoding.EncodeToString(b)
	}
	return page, nil
}

// ListExecutions implements duroxide.Store.
func (s *Store) ListExecutions(ctx context.Context, instance string) ([]duroxide.ExecutionInfo, error) {
	const op = "list executions"
	var out []duroxide.ExecutionInfo
	found := false
	err := s.read(ctx, func(db querier, rs *readStmts) error {
		rows, err := rs.executions.QueryContext(ctx, instance)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e duroxide.ExecutionInfo
			var status string
			var started, completed int64
			if err := rows.Scan(&e.ExecutionID, &status, &e.Output, &started, &completed, &e.EventCount); err != nil {
				return err
			}
			e.Status = duroxide.Status(status)
			e.StartedAt = msTime(started)
			e.CompletedAt = msTime(completed)
			out = append(out, e)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(out) > 0 {
			found = true
			return nil
		}
		var one int
		err = db.QueryRowContext(ctx, `SELECT 1 FROM instances WHERE instance = ?`, instance).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	if !found {
		return nil, wrap(op, fmt.Errorf("instance %q: %w", instance, duroxide.ErrNotFound))
	}
	if out == nil {
		out = []duroxide.ExecutionInfo{}
	}
	return out, nil
}

// ListChildren implements duroxide.Store. An unknown instance has no
// children.
func (s *Store) ListChildren(ctx context.Context, instance string) ([]string, error) {
	const op = "list children"
	out := []string{}
	err := s.read(ctx, func(_ querier, rs *readStmts) error {
		rows, err := rs.children.QueryContext(ctx, instance)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			out = append(out, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// GetCustomStatus implements duroxide.Store.
func (s *Store) GetCustomStatus(ctx context.Context, instance string, lastSeenVersion int64) (duroxide.CustomStatus, error) {
	status, version, changed, err := s.getCustomStatus(ctx, instance, lastSeenVersion)
	return duroxide.CustomStatus{Value: status, Version: version, Changed: changed}, err
}

func (s *Store) getCustomStatus(ctx context.Context, instance string, lastSeenVersion int64) (*string, int64, bool, error) {
	const op = "get custom status"
	var (
		custom  sql.NullString
		version int64
	)
	err := s.readHot(ctx, func(_ querier, rs *readStmts) error {
		return rs.customStatus.QueryRowContext(ctx, instance).Scan(&custom, &version)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, wrap(op, err)
	}
	if version <= lastSeenVersion {
		return nil, version, false, nil
	}
	if !custom.Valid {
		return nil, version, true, nil
	}
	v := custom.String
	return &v, version, true, nil
}

// Stats implements duroxide.Store.
func (s *Store) Stats(ctx context.Context) (*duroxide.StoreStats, error) {
	const op = "stats"
	st := &duroxide.StoreStats{Instances: map[duroxide.Status]int{}}
	err := s.read(ctx, func(db querier, rs *readStmts) error {
		if err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM orchestrator_queue), (SELECT count(*) FROM worker_queue)`).
			Scan(&st.OrchestratorQueue, &st.WorkerQueue); err != nil {
			return err
		}
		rows, err := db.QueryContext(ctx, `SELECT status, count(*) FROM instances GROUP BY status`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var status string
			var n int
			if err := rows.Scan(&status, &n); err != nil {
				return err
			}
			st.Instances[duroxide.Status(status)] = n
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return st, nil
}
