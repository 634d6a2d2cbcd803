package app_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
)

// TestStoreTransactionsPerCreateAndHealthCheck counts the PostgreSQL
// transactions (durable store and CMS share one database) that a create and
// a health check cost: the numbers the README quotes. A backend reports its
// counters when it exits, so every phase closes its app; what opening,
// idling and closing an app costs over the same time is measured alone and
// subtracted, and so are the test's own polling queries.
func TestStoreTransactionsPerCreateAndHealthCheck(t *testing.T) {
	const creates, checks = 10, 50
	dbURL := cluster.NewDatabase(t)
	admin, err := pgx.Connect(t.Context(), cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	dbName := ""
	if cfg, err := pgx.ParseConfig(dbURL); err == nil {
		dbName = cfg.Database
	}
	commits := func() int64 {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for { // backends of the app just closed may still be exiting
			var active int
			if err := admin.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", dbName).Scan(&active); err != nil {
				t.Fatal(err)
			}
			if active == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		var n int64
		if _, err := admin.Exec(t.Context(), "SELECT pg_stat_clear_snapshot()"); err != nil {
			t.Fatal(err)
		}
		if err := admin.QueryRow(t.Context(), "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", dbName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// phase opens an app, runs f with a poller that counts its own
	// queries, closes the app and returns the transactions committed less
	// the poller's, and the time it took.
	phase := func(interval time.Duration, f func(a *app.App, count func(sql string, args ...any) int)) (int64, time.Duration) {
		t.Helper()
		before := commits()
		began := time.Now()
		cfg := app.Config{DataDir: t.TempDir(), DatabaseURL: dbURL, SecretKey: testSecretKey, ActorInterval: interval,
			Retention: app.Retention{JanitorInterval: time.Hour, HealthChecksPerInstance: 1_000_000},
			Driver:    newProbeDriver(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		a, err := app.Open(t.Context(), cfg)
		if err != nil {
			t.Fatalf("open app: %v", err)
		}
		poll, err := pgx.Connect(t.Context(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		var own int64
		f(a, func(sql string, args ...any) int {
			own++
			var n int
			if err := poll.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		})
		_ = poll.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		return commits() - before - own, time.Since(began)
	}
	idle := func(d time.Duration) int64 {
		n, _ := phase(time.Hour, func(*app.App, func(string, ...any) int) { time.Sleep(d) })
		return n
	}
	const checksOf = "SELECT count(*) FROM " + cms.DefaultSchema + ".instance_health_checks WHERE internal_name = $1"
	phase(time.Hour, func(*app.App, func(string, ...any) int) {}) // migrations, janitor start

	// Creates, one after another: each until running and its health actor's
	// first check is recorded.
	createTx, took := phase(time.Hour, func(a *app.App, count func(string, ...any) int) {
		for i := range creates {
			inst, err := a.CreateInstance(t.Context(), app.CreateRequest{Name: "tx-" + string(rune('a'+i)), Password: "secret123", NoBackups: true})
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 30*time.Second, inst.Name+" checked", func() bool { return count(checksOf, inst.InternalName) >= 1 })
		}
	})
	perCreate := float64(createTx-idle(took)) / creates

	// Health checks every 10 ms of one more instance, over a fixed window
	// whose idle cost is measured first (afterwards the instance's actor
	// would keep checking); its create is subtracted at the rate above.
	const window = 5 * time.Second
	checkBase := idle(window)
	var done int
	checkTx, _ := phase(10*time.Millisecond, func(a *app.App, count func(string, ...any) int) {
		began := time.Now()
		inst, err := a.CreateInstance(t.Context(), app.CreateRequest{Name: "tx-checks", Password: "secret123", NoBackups: true})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(window - time.Since(began)) // a measurement window, not a wait for an event
		done = count(checksOf, inst.InternalName)
	})
	if done < checks {
		t.Fatalf("only %d health checks in %v", done, window)
	}
	perCheck := (float64(checkTx-checkBase) - perCreate) / float64(done)
	t.Logf("PostgreSQL transactions: %.1f per create (with its first health check; %d creates), %.2f per health check (%d checks)",
		perCreate, creates, perCheck, done)
	// Measured on a quiet machine: 24.3–25.3 and 9.03–9.05 (before the lean
	// create and the single health write: 31.6 and 11.05). Load adds lease
	// renewals and retries, so the ceilings only catch a gross regression.
	if perCreate <= 0 || perCheck <= 0 || perCreate > 35 || perCheck > 14 {
		t.Fatalf("%.1f transactions per create and %.2f per health check: want at most 35 and 14", perCreate, perCheck)
	}
}
