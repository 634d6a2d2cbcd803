package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/toygres/toygres/internal/cms"
)

// SecretKeyHint tells an operator how to give a server its secret key.
const SecretKeyHint = "pass --secret-key-file FILE or set TOYGRES_SECRET_KEY (32 bytes as 64 hex digits or base64; make one with: openssl rand -hex 32)"

// ErrNoSecretKey is returned by Open for a shared store (DatabaseURL) when
// no secret key is provided: replicas must not each generate their own.
var ErrNoSecretKey = errors.New("no secret key provided")

// keyOptions returns the CMS key options for cfg. The embedded SQLite store
// keeps generating <data dir>/secret.key on first start. A shared store
// (PostgreSQL) needs the same key in every server, so the key must be
// provided (Config.SecretKey); an existing <data dir>/secret.key from a
// single-server install is still read, never created, and the CMS refuses
// it unless it is the key the store records.
func keyOptions(cfg Config) (cms.Options, error) {
	keyFile := filepath.Join(cfg.DataDir, "secret.key")
	switch {
	case len(cfg.SecretKey) > 0:
		return cms.Options{SecretKey: cfg.SecretKey}, nil
	case cfg.DatabaseURL == "":
		return cms.Options{KeyFile: keyFile}, nil
	}
	key, err := cms.ReadKeyFile(keyFile, cfg.Logger)
	if errors.Is(err, fs.ErrNotExist) {
		return cms.Options{}, fmt.Errorf("%w: the store is shared (--database-url), so every Toygres server on it must use the same secret key: %s", ErrNoSecretKey, SecretKeyHint)
	}
	if err != nil {
		return cms.Options{}, err
	}
	cfg.Logger.Warn("using the secret key file of the data dir with a shared store; give every server this key", "key_file", keyFile, "key_id", cms.KeyID(key), "hint", SecretKeyHint)
	return cms.Options{SecretKey: key}, nil
}

// explainKeyMismatch adds what to do to a CMS key mismatch.
func explainKeyMismatch(err error) error {
	if errors.Is(err, cms.ErrKeyMismatch) {
		return fmt.Errorf("%w; every Toygres server on one store must use the same secret key: %s", err, SecretKeyHint)
	}
	return err
}

// HostID identifies where local instances of this server live: the host
// name and the data dir. It is recorded with each local instance on a
// shared store (cms.Store.ClaimPlacement).
func HostID(dataDir string) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return h + ":" + dataDir
}

// localLockKey is the PostgreSQL advisory lock a server with the local data
// plane holds on a shared store ("toygres" in ASCII).
const localLockKey int64 = 0x746f7967726573

// localLockCheck is how often the lock's connection is checked.
const localLockCheck = 5 * time.Second

// ErrLocalDataplaneInUse is returned by Open when another server with the
// local data plane uses the same PostgreSQL store.
var ErrLocalDataplaneInUse = errors.New("another Toygres server with the local data plane is using this database")

// localLock is a session advisory lock held on a dedicated connection for
// the server's lifetime: the database releases it when the process dies.
type localLock struct {
	url, hostID string
	log         *slog.Logger

	mu     sync.Mutex
	conn   *pgx.Conn
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

// acquireLocalLock takes the local data plane's lock on the database at
// url, or fails with ErrLocalDataplaneInUse naming the holder.
func acquireLocalLock(ctx context.Context, url, hostID string, log *slog.Logger) (*localLock, error) {
	l := &localLock{url: url, hostID: hostID, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	conn, err := l.lock(ctx)
	if err != nil {
		return nil, err
	}
	l.conn = conn
	go l.watch()
	return l, nil
}

// lock connects and takes the lock.
func (l *localLock) lock(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(l.url)
	if err != nil {
		return nil, fmt.Errorf("local data plane lock: parse database URL: %w", err)
	}
	name := "toygres-local " + l.hostID
	if len(name) > 63 { // PostgreSQL truncates application_name to NAMEDATALEN-1
		name = name[:63]
	}
	cfg.RuntimeParams["application_name"] = name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("local data plane lock: connect: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", localLockKey).Scan(&ok); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("local data plane lock: %w", err)
	}
	if !ok {
		holder := lockHolder(ctx, conn)
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("%w (%s); local instances live on one machine — use --dataplane kubernetes for several servers", ErrLocalDataplaneInUse, holder)
	}
	return conn, nil
}

// lockHolder describes the session holding the lock, from pg_locks and
// pg_stat_activity (its application_name carries the holder's host id).
func lockHolder(ctx context.Context, conn *pgx.Conn) string {
	var app, addr string
	var pid int
	err := conn.QueryRow(ctx, `SELECT coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'), a.pid
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.classid::bigint = $1 AND l.objid::bigint = $2`,
		localLockKey>>32, localLockKey&0xffffffff).Scan(&app, &addr, &pid)
	if err != nil {
		return "holder unknown"
	}
	host := app
	if len(host) > len("toygres-local ") && host[:len("toygres-local ")] == "toygres-local " {
		host = host[len("toygres-local "):]
	}
	return fmt.Sprintf("host %s, connected from %s, backend pid %d", host, addr, pid)
}

// watch checks the connection and, should it break (the database restarted,
// the network failed), takes the lock again on a new one. If another server
// took it meanwhile, that is logged as an error on every check.
func (l *localLock) watch() {
	defer close(l.done)
	t := time.NewTicker(localLockCheck)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		conn := l.conn
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), localLockCheck)
		if conn != nil {
			if err := conn.Ping(ctx); err == nil {
				cancel()
				continue
			}
			conn.Close(ctx)
		}
		nc, err := l.lock(ctx)
		cancel()
		l.mu.Lock()
		if err != nil {
			l.conn = nil
			l.log.Error("lost the local data plane lock on the database and cannot take it again", "error", err.Error())
		} else if l.closed {
			nc.Close(context.Background())
		} else {
			l.conn = nc
			l.log.Warn("local data plane lock taken again on a new database connection")
		}
		l.mu.Unlock()
	}
}

// Close releases the lock (by closing its connection).
func (l *localLock) Close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.stop)
	l.mu.Unlock()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.conn.Close(ctx)
		l.conn = nil
	}
}
