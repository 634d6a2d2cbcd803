package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/toygres/toygres/duroxide"
)

// deletable reports whether an instance with this current status may be
// deleted without force. A current execution that continued as new is a
// chain still in flight (its next execution is about to start), so it
// counts as running.
func deletable(status duroxide.Status) bool {
	return status.IsTerminal() && status != duroxide.StatusContinuedAsNew
}

// DeleteInstances implements duroxide.Store. The instances and all their
// descendants (found through parent_instance inside the same transaction,
// so a child created concurrently cannot be orphaned) are deleted all or
// nothing. A sub-orchestration may be listed only together with an
// ancestor; a sub-orchestration whose parent no longer exists counts as a
// root.
func (s *Store) DeleteInstances(ctx context.Context, p duroxide.DeleteParams) (duroxide.DeleteResult, error) {
	ids, force := p.IDs, p.Force
	const op = "delete instances"
	var res duroxide.DeleteResult
	if len(ids) == 0 {
		return res, nil
	}
	ids = dedupe(ids)
	idsJSON, _ := json.Marshal(ids)
	err := s.write(ctx, func(c context.Context, ns *notes) error {
		type row struct {
			id, parent   string
			parentExists bool
		}
		rows, err := s.wconn.QueryContext(c, `SELECT j.value, i.instance IS NOT NULL, coalesce(i.parent_instance, ''),
				EXISTS (SELECT 1 FROM instances p WHERE p.instance = i.parent_instance)
			FROM json_each(?) j LEFT JOIN instances i ON i.instance = j.value`, string(idsJSON))
		if err != nil {
			return err
		}
		var req []row
		for rows.Next() {
			var r row
			var exists bool
			if err := rows.Scan(&r.id, &exists, &r.parent, &r.parentExists); err != nil {
				rows.Close()
				return err
			}
			if !exists {
				rows.Close()
				return fmt.Errorf("instance %q: %w", r.id, duroxide.ErrNotFound)
			}
			req = append(req, r)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		tree, err := s.descendants(c, string(idsJSON))
		if err != nil {
			return err
		}
		for _, r := range req {
			if r.parent != "" && r.parentExists {
				if _, ok := tree.status[r.parent]; !ok {
					return fmt.Errorf("instance %q (parent %q): %w", r.id, r.parent, duroxide.ErrIsSubOrchestration)
				}
			}
		}
		if !force {
			for _, id := range tree.ids {
				if st := tree.status[id]; !deletable(st) {
					return fmt.Errorf("instance %q is %s: %w", id, st, duroxide.ErrInstanceRunning)
				}
			}
		}
		res, err = s.deleteTree(c, tree.ids)
		return err
	})
	if err != nil {
		return duroxide.DeleteResult{}, wrap(op, err)
	}
	return res, nil
}

// DeleteInstancesBulk implements duroxide.Store. Matching terminal roots
// are taken oldest completion first, up to Limit, and deleted with all
// their descendants. Roots whose chain is still in flight (current status
// ContinuedAsNew) are skipped like running ones.
func (s *Store) DeleteInstancesBulk(ctx context.Context, filter duroxide.BulkDeleteFilter) (duroxide.DeleteResult, error) {
	const op = "delete instances bulk"
	var res duroxide.DeleteResult
	limit := filter.Limit
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT i.instance FROM instances i
		LEFT JOIN executions e ON e.instance = i.instance AND e.execution_id = i.current_execution_id
		WHERE i.status IN ('Completed', 'Failed', 'Cancelled')
		  AND (i.parent_instance IS NULL OR NOT EXISTS (SELECT 1 FROM instances p WHERE p.instance = i.parent_instance))`
	var args []any
	if len(filter.InstanceIDs) > 0 {
		b, _ := json.Marshal(filter.InstanceIDs)
		q += ` AND i.instance IN (SELECT value FROM json_each(?))`
		args = append(args, string(b))
	}
	if !filter.CompletedBefore.IsZero() {
		q += ` AND coalesce(e.completed_at, i.updated_at) < ?`
		args = append(args, filter.CompletedBefore.UnixMilli())
	}
	q += ` ORDER BY coalesce(e.completed_at, i.updated_at), i.instance LIMIT ?`
	args = append(args, limit)
	err := s.write(ctx, func(c context.Context, ns *notes) error {
		roots, err := queryStrings(c, s.wconn, q, args...)
		if err != nil || len(roots) == 0 {
			return err
		}
		b, _ := json.Marshal(roots)
		tree, err := s.descendants(c, string(b))
		if err != nil {
			return err
		}
		res, err = s.deleteTree(c, tree.ids)
		return err
	})
	if err != nil {
		return duroxide.DeleteResult{}, wrap(op, err)
	}
	return res, nil
}

type instanceTree struct {
	ids    []string
	status map[string]duroxide.Status
}

// descendants returns the existing instances among rootsJSON (a JSON array)
// and all their descendants, with their statuses.
func (s *Store) descendants(c context.Context, rootsJSON string) (*instanceTree, error) {
	rows, err := s.wconn.QueryContext(c, `WITH RECURSIVE tree(id) AS (
			SELECT i.instance FROM json_each(?) j JOIN instances i ON i.instance = j.value
			UNION
			SELECT i.instance FROM instances i JOIN tree t ON i.parent_instance = t.id
		)
		SELECT i.instance, i.status FROM tree t JOIN instances i ON i.instance = t.id`, rootsJSON)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	t := &instanceTree{status: map[string]duroxide.Status{}}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			return nil, err
		}
		t.ids = append(t.ids, id)
		t.status[id] = duroxide.Status(st)
	}
	return t, rows.Err()
}

// deleteTree removes everything stored for the given instances.
func (s *Store) deleteTree(c context.Context, ids []string) (duroxide.DeleteResult, error) {
	var res duroxide.DeleteResult
	if len(ids) == 0 {
		return res, nil
	}
	b, _ := json.Marshal(ids)
	list := string(b)
	steps := []struct {
		table string
		count *int
	}{
		{"history", &res.EventsDeleted},
		{"executions", &res.ExecutionsDeleted},
		{"orchestrator_queue", &res.QueueMessagesDeleted},
		{"worker_queue", &res.QueueMessagesDeleted},
		{"instances", &res.InstancesDeleted},
	}
	for _, st := range steps {
		r, err := s.wconn.ExecContext(c, `DELETE FROM `+st.table+` WHERE instance IN (SELECT value FROM json_each(?))`, list)
		if err != nil {
			return res, fmt.Errorf("delete from %s: %w", st.table, err)
		}
		if st.count != nil {
			n, _ := r.RowsAffected()
			*st.count += int(n)
		}
	}
	return res, nil
}

// PruneExecutions implements duroxide.Store. The newest max(KeepLast, 1)
// executions are kept, as are the current and any running execution;
// with CompletedBefore set, only executions completed before it go.
func (s *Store) PruneExecutions(ctx context.Context, instance string, opts duroxide.PruneOptions) (duroxide.PruneResult, error) {
	const op = "prune executions"
	var res duroxide.PruneResult
	err := s.write(ctx, func(c context.Context, ns *notes) error {
		var current int64
		err := s.wconn.QueryRowContext(c, `SELECT current_execution_id FROM instances WHERE instance = ?`, instance).Scan(&current)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("instance %q: %w", instance, duroxide.ErrNotFound)
		}
		if err != nil {
			return err
		}
		res, err = s.prune(c, instance, current, opts)
		return err
	})
	if err != nil {
		return duroxide.PruneResult{}, wrap(op, err)
	}
	return res, nil
}

// prune deletes old executions of instance (whose current execution is
// current) inside a write transaction; PruneExecutions and the ack of a
// commit with KeepExecutions share it.
func (s *Store) prune(c context.Context, instance string, current int64, opts duroxide.PruneOptions) (duroxide.PruneResult, error) {
	var res duroxide.PruneResult
	q := `SELECT execution_id FROM executions
		WHERE instance = ?1 AND execution_id <> ?2 AND status <> 'Running'
		  AND execution_id NOT IN (SELECT execution_id FROM executions WHERE instance = CAST(?1 AS TEXT) ORDER BY execution_id DESC LIMIT ?3)`
	args := []any{instance, current, max(opts.KeepLast, 1)}
	if !opts.CompletedBefore.IsZero() {
		q += ` AND completed_at IS NOT NULL AND completed_at < ?4`
		args = append(args, opts.CompletedBefore.UnixMilli())
	}
	rows, err := s.wconn.QueryContext(c, q, args...)
	if err != nil {
		return res, err
	}
	var execs []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return res, err
		}
		execs = append(execs, id)
	}
	if err := rows.Close(); err != nil {
		return res, err
	}
	for _, id := range execs {
		r, err := s.wconn.ExecContext(c, `DELETE FROM history WHERE instance = ? AND execution_id = ?`, instance, id)
		if err != nil {
			return res, err
		}
		n, _ := r.RowsAffected()
		res.EventsDeleted += int(n)
		if _, err := s.wconn.ExecContext(c, `DELETE FROM executions WHERE instance = ? AND execution_id = ?`, instance, id); err != nil {
			return res, err
		}
		res.ExecutionsDeleted++
	}
	return res, nil
}

func queryStrings(c context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(c, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
