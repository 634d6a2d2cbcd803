package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/toygres/toygres/duroxide/postgres/pgtest"
)

// pgCluster is the throwaway PostgreSQL cluster shared by all postgres runs.
// pgtest starts it with fsync, synchronous_commit and full_page_writes off;
// the "postgres" store switches them back on (ALTER SYSTEM + reload), so
// every commit is flushed to disk as on a production server.
type pgCluster struct {
	c       *pgtest.Cluster
	durable *bool
	seq     int
	version string
}

func startPG(ctx context.Context) (*pgCluster, error) {
	c, err := pgtest.Start(ctx)
	if err != nil {
		return nil, err
	}
	p := &pgCluster{c: c}
	_ = p.query(ctx, "SHOW server_version", &p.version)
	return p, nil
}

func (p *pgCluster) exec(ctx context.Context, sqls ...string) error {
	conn, err := pgx.Connect(ctx, p.c.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, s := range sqls {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func (p *pgCluster) query(ctx context.Context, sql string, out *string) error {
	conn, err := pgx.Connect(ctx, p.c.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(out)
}

// setDurable switches the cluster between flushed commits (fsync,
// synchronous_commit and full_page_writes on) and pgtest's defaults (off).
func (p *pgCluster) setDurable(ctx context.Context, on bool) error {
	if p.durable != nil && *p.durable == on {
		return nil
	}
	v := "off"
	if on {
		v = "on"
	}
	if err := p.exec(ctx,
		"ALTER SYSTEM SET fsync = "+v,
		"ALTER SYSTEM SET synchronous_commit = "+v,
		"ALTER SYSTEM SET full_page_writes = "+v,
		"SELECT pg_reload_conf()"); err != nil {
		return err
	}
	// The reload is asynchronous: wait until new sessions see it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got string
		if err := p.query(ctx, "SELECT current_setting('fsync') || current_setting('synchronous_commit') || current_setting('full_page_writes')", &got); err != nil {
			return err
		}
		if got == v+v+v {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres settings did not change to %s (got %s)", v, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.durable = &on
	return nil
}

// newDatabase creates an empty database and returns its name, URL and a
// drop func.
func (p *pgCluster) newDatabase(ctx context.Context) (string, string, func(), error) {
	p.seq++
	name := fmt.Sprintf("bench_%d_%d", time.Now().Unix()%100000, p.seq)
	if err := p.exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", "", nil, err
	}
	u, err := pgtest.WithDatabase(p.c.URL, name)
	if err != nil {
		return "", "", nil, err
	}
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = p.exec(dctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
	return name, u, drop, nil
}

// commits returns the number of committed transactions of database name.
// Backends report their counters when they exit, so call it after the
// engine's connections are closed.
func (p *pgCluster) commits(ctx context.Context, name string) int64 {
	conn, err := pgx.Connect(ctx, p.c.URL)
	if err != nil {
		return 0
	}
	defer conn.Close(context.Background())
	var n int64
	_ = conn.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name).Scan(&n)
	return n
}

// functionStats returns pg_stat_user_functions of database name (needs
// track_functions = pl), one line per function: calls, total and self ms.
func (p *pgCluster) functionStats(ctx context.Context, name string) string {
	u, err := pgtest.WithDatabase(p.c.URL, name)
	if err != nil {
		return err.Error()
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err.Error()
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT schemaname || '.' || funcname, calls, total_time, self_time
		FROM pg_stat_user_functions ORDER BY total_time DESC`)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%-50s %8s %12s %12s %10s\n", "function", "calls", "total ms", "self ms", "µs/call")
	for rows.Next() {
		var fn string
		var calls int64
		var total, self float64
		if err := rows.Scan(&fn, &calls, &total, &self); err != nil {
			return err.Error()
		}
		fmt.Fprintf(&b, "%-50s %8d %12.1f %12.1f %10.1f\n", fn, calls, total, self, total*1000/float64(max(calls, 1)))
	}
	return b.String()
}

func (p *pgCluster) stop() {
	if p != nil && p.c != nil {
		_ = p.c.Stop()
	}
}

func (p *pgCluster) describe() string {
	return "PostgreSQL " + strings.TrimSpace(p.version)
}

// sampleWaits samples pg_stat_activity of database name every 5 ms until
// stop is closed, and returns how often each (state, wait event, query)
// was seen: where the engine's connections spend their time.
func (p *pgCluster) sampleWaits(name string, stop <-chan struct{}) string {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.c.URL)
	if err != nil {
		return err.Error()
	}
	defer conn.Close(ctx)
	counts := map[string]int{}
	samples := 0
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			type kv struct {
				k string
				n int
			}
			var all []kv
			for k, n := range counts {
				all = append(all, kv{k, n})
			}
			sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
			var b strings.Builder
			fmt.Fprintf(&b, "%d samples of pg_stat_activity (every 5 ms); average number of the engine's sessions in each state:\n", samples)
			for _, x := range all {
				fmt.Fprintf(&b, "%7.2f  %s\n", float64(x.n)/float64(max(samples, 1)), x.k)
			}
			return b.String()
		case <-t.C:
		}
		rows, err := conn.Query(ctx, `SELECT state, coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-'), left(regexp_replace(query, '\s+', ' ', 'g'), 60)
			FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND state <> 'idle'`, name)
		if err != nil {
			continue
		}
		samples++
		for rows.Next() {
			var st, wt, we, q string
			if rows.Scan(&st, &wt, &we, &q) == nil {
				counts[fmt.Sprintf("%-20s %-10s %-22s %s", st, wt, we, q)]++
			}
		}
		rows.Close()
	}
}
