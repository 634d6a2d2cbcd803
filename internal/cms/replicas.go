package cms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Replicas is an instance's standby configuration and where its servers
// stand: how many standbys it should have, whether one is synchronous, the
// read-only connection string (never with a password), which server is the
// primary, and the number of the latest failover or switchover started.
type Replicas struct {
	Replicas                 int
	Sync                     bool
	ReadOnlyConnectionString string
	// Primary is the data plane's id of the primary server ("" before the
	// first failover or scale: the server the instance was created with).
	Primary string
	// FailoverSeq numbers the instance's failovers and switchovers: the
	// orchestration of the latest one is FailoverID(internal name, seq).
	FailoverSeq int
}

// ReplicaStore records instances' standby configuration. An instance with
// no record has no standbys (the zero Replicas).
type ReplicaStore interface {
	// Replicas returns the instance's record (zero if none).
	Replicas(ctx context.Context, internalName string) (Replicas, error)
	// SetReplicaCount records the desired standby count and synchronous
	// mode.
	SetReplicaCount(ctx context.Context, internalName string, n int, sync bool) error
	// SetReplicaEndpoint records the primary server's id and the read-only
	// connection string, which must not carry a password.
	SetReplicaEndpoint(ctx context.Context, internalName, primary, readOnlyConnectionString string) error
	// NextFailoverSeq moves FailoverSeq from cur to cur+1 unless it moved
	// already, and returns the value after: callers that raced from the
	// same cur all get the same number (and so the same orchestration id).
	NextFailoverSeq(ctx context.Context, internalName string, cur int) (int, error)
}

// Replicas implements ReplicaStore.
func (s *store) Replicas(ctx context.Context, internalName string) (Replicas, error) {
	var r Replicas
	var sync int
	err := s.db.QueryRowContext(ctx, s.q(`SELECT replicas, sync_replica, read_only_connection_string, primary_server, failover_seq
		FROM {p}instance_replicas WHERE internal_name = ?`), internalName).
		Scan(&r.Replicas, &sync, &r.ReadOnlyConnectionString, &r.Primary, &r.FailoverSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return Replicas{}, nil
	}
	if err != nil {
		return Replicas{}, fmt.Errorf("cms: replicas of %s: %w", internalName, err)
	}
	r.Sync = sync != 0
	return r, nil
}

// SetReplicaCount implements ReplicaStore.
func (s *store) SetReplicaCount(ctx context.Context, internalName string, n int, sync bool) error {
	if n < 0 {
		return fmt.Errorf("cms: set replicas of %s: negative count %d", internalName, n)
	}
	syncInt := 0
	if sync {
		syncInt = 1
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO {p}instance_replicas (internal_name, replicas, sync_replica, updated_at)
		VALUES (?, ?, ?, ?) ON CONFLICT (internal_name) DO UPDATE SET replicas = excluded.replicas,
		sync_replica = excluded.sync_replica, updated_at = excluded.updated_at`),
		internalName, n, syncInt, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("cms: set replicas of %s: %w", internalName, err)
	}
	return nil
}

// SetReplicaEndpoint implements ReplicaStore.
func (s *store) SetReplicaEndpoint(ctx context.Context, internalName, primary, readOnly string) error {
	if hasPassword(readOnly) {
		return fmt.Errorf("cms: set replica endpoint of %s: the read-only connection string carries a password", internalName)
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO {p}instance_replicas (internal_name, primary_server, read_only_connection_string, updated_at)
		VALUES (?, ?, ?, ?) ON CONFLICT (internal_name) DO UPDATE SET primary_server = excluded.primary_server,
		read_only_connection_string = excluded.read_only_connection_string, updated_at = excluded.updated_at`),
		internalName, primary, readOnly, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("cms: set replica endpoint of %s: %w", internalName, err)
	}
	return nil
}

// NextFailoverSeq implements ReplicaStore.
func (s *store) NextFailoverSeq(ctx context.Context, internalName string, cur int) (int, error) {
	var next int
	err := s.tx(ctx, func(tx *sql.Tx) error {
		now := s.now().UnixMilli()
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO {p}instance_replicas (internal_name, updated_at) VALUES (?, ?)
			ON CONFLICT (internal_name) DO NOTHING`), internalName, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE {p}instance_replicas SET failover_seq = ?, updated_at = ?
			WHERE internal_name = ? AND failover_seq = ?`), cur+1, now, internalName, cur); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, s.q(`SELECT failover_seq FROM {p}instance_replicas WHERE internal_name = ?`), internalName).Scan(&next)
	})
	if err != nil {
		return 0, fmt.Errorf("cms: next failover of %s: %w", internalName, err)
	}
	return next, nil
}
