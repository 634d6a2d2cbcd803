package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/internal/wire"
)

// EnqueueWorkItem implements duroxide.Store.
func (s *Store) EnqueueWorkItem(ctx context.Context, item duroxide.WorkItem) error {
	const op = "enqueue work item"
	data, err := json.Marshal(&item)
	if err != nil {
		return wrap(op, err)
	}
	err = s.write1(ctx, func(c context.Context, ns *notes) error {
		_, err := s.ws.enqWorker.ExecContext(c, item.Instance, item.ExecutionID, item.ID, string(data), nowMs())
		*ns |= noteWorker
		return err
	})
	return wrap(op, err)
}

// FetchWorkItem implements duroxide.Store. It is a single UPDATE … RETURNING
// statement. The lock token embeds the message's row id.
func (s *Store) FetchWorkItem(ctx context.Context, lockTimeout time.Duration) (*duroxide.WorkItemLease, error) {
	const op = "fetch work item"
	random := newToken()
	var (
		id       int64
		data     []byte
		attempts int
		found    bool
	)
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		now := nowMs()
		err := s.ws.fetchWork.QueryRowContext(c, random, now+lockTimeout.Milliseconds(), now, s.owner).Scan(&id, &data, &attempts)
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
		return nil, nil
	}
	lease := &duroxide.WorkItemLease{LockToken: workerToken(id, random), AttemptCount: attempts}
	if err := json.Unmarshal(data, &lease.Item); err != nil {
		// The message stays locked and will be redelivered (and counted)
		// after the lock expires.
		return nil, wrap(op, fmt.Errorf("decode worker message %d: %w", id, err))
	}
	return lease, nil
}

// AckWorkItem implements duroxide.Store.
func (s *Store) AckWorkItem(ctx context.Context, lockToken string, completion *duroxide.WorkItem) error {
	const op = "ack work item"
	id, random, ok := parseWorkerToken(lockToken)
	if !ok {
		return wrap(op, errLockLost)
	}
	if completion == nil {
		err := s.write1(ctx, func(c context.Context, ns *notes) error {
			return s.ackWork(c, id, random)
		})
		return wrap(op, err)
	}
	if completion.Instance == "" {
		return wrap(op, errors.New("completion has no instance"))
	}
	data, err := wire.AppendWorkItem(nil, completion)
	if err != nil {
		return wrap(op, err)
	}
	err = s.write(ctx, func(c context.Context, ns *notes) error {
		if err := s.ackWork(c, id, random); err != nil {
			return err
		}
		err := s.enqueueOrch(c, completion.Instance, string(data), nowMs())
		*ns |= noteOrch
		return err
	})
	return wrap(op, err)
}

func (s *Store) ackWork(c context.Context, id int64, random string) error {
	if err := lockedExec(s.ws.ackWork.ExecContext(c, id, random, nowMs())); err != nil {
		return err
	}
	return nil
}

// RenewWorkItemLock implements duroxide.Store.
func (s *Store) RenewWorkItemLock(ctx context.Context, lockToken string, extend time.Duration) error {
	const op = "renew work item lock"
	id, random, ok := parseWorkerToken(lockToken)
	if !ok {
		return wrap(op, errLockLost)
	}
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		now := nowMs()
		if err := lockedExec(s.ws.renewWork.ExecContext(c, now+extend.Milliseconds(), id, random, now)); err != nil {
			return err
		}
		return nil
	})
	return wrap(op, err)
}

// AbandonWorkItem implements duroxide.Store. An unknown token, or one whose
// message was meanwhile fetched again, fails with ErrLockLost.
func (s *Store) AbandonWorkItem(ctx context.Context, lockToken string, p duroxide.AbandonParams) error {
	delay, ignoreAttempt := p.Delay, p.IgnoreAttempt
	const op = "abandon work item"
	id, random, ok := parseWorkerToken(lockToken)
	if !ok {
		return wrap(op, errLockLost)
	}
	err := s.write1(ctx, func(c context.Context, ns *notes) error {
		if err := lockedExec(s.ws.abandonWork.ExecContext(c, id, random, nowMs()+max(delay.Milliseconds(), 0), boolInt(ignoreAttempt))); err != nil {
			return err
		}
		*ns |= noteWorker
		return nil
	})
	return wrap(op, err)
}

// lockedExec checks the result of a statement guarded by a lock token: an
// error, or no row affected (the lock expired, was taken over, or the
// message is gone), which is errLockLost.
func lockedExec(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errLockLost
	}
	return nil
}
