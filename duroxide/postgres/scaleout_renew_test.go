//go:build unix

package postgres_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/postgres"
)

// slowHistoryStore makes ReadHistory slow, as reading and replaying a long
// history is, and counts failed orchestration acks.
type slowHistoryStore struct {
	*postgres.Store
	delay      time.Duration
	failedAcks atomic.Int64
}

func (s *slowHistoryStore) ReadHistory(ctx context.Context, id string, exec int64) ([]duroxide.Event, error) {
	time.Sleep(s.delay)
	return s.Store.ReadHistory(ctx, id, exec)
}

func (s *slowHistoryStore) AckOrchestrationItem(ctx context.Context, token string, c *duroxide.TurnCommit) error {
	err := s.Store.AckOrchestrationItem(ctx, token, c)
	if err != nil {
		s.failedAcks.Add(1)
	}
	return err
}

// TestScaleOutLongTurnKeepsItsLock is a regression test for the turn-lock
// renewal (Runtime.processItem): a turn that takes longer than 1.5 lock
// timeouts must keep its lock, as Options.OrchestrationLockTimeout promises
// ("renewed while a turn runs"). With the former one-shot renewal at half
// the timeout, such a turn lost its lock on every attempt: its ack failed
// with ErrLockLost, the poison path (which reads history too) failed the
// same way, and the instance was re-fetched forever without completing or
// failing.
func TestScaleOutLongTurnKeepsItsLock(t *testing.T) {
	cl := soCluster(t)
	schema := cl.NewSchemaName(t)
	ctx := context.Background()
	st, err := postgres.Open(ctx, cl.URL, postgres.WithSchema(schema), postgres.WithPoolSize(4))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const lockTimeout = 400 * time.Millisecond
	slow := &slowHistoryStore{Store: st, delay: 2 * lockTimeout}
	reg := duroxide.NewRegistry()
	duroxide.Must(duroxide.RegisterActivity(reg, "Echo", func(_ context.Context, s string) (string, error) { return s, nil }))
	duroxide.Must(duroxide.RegisterOrchestration(reg, "EchoTwice", func(ctx *duroxide.OrchestrationContext, s string) (string, error) {
		a, err := duroxide.CallActivityTyped[string](ctx, "Echo", s)
		if err != nil {
			return "", err
		}
		b, err := duroxide.CallActivityTyped[string](ctx, "Echo", s)
		return a + b, err
	}))
	logs := &rsLogBuffer{}
	rt, err := duroxide.Start(ctx, slow, reg, duroxide.Options{
		OrchestrationLockTimeout: lockTimeout,
		CacheSize:                -1, // every turn after the first reads its history (slowly)
		MaxAttempts:              4,
		PollInterval:             50 * time.Millisecond,
		Logger:                   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	shutdown := func() {
		once.Do(func() {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			rt.Shutdown(sctx)
		})
	}
	defer shutdown()
	c := duroxide.NewClient(st)
	if err := c.StartOrchestration(ctx, "long-turn", "EchoTwice", "hi"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := c.WaitForCompletion(wctx, "long-turn")
	shutdown()
	if err != nil {
		t.Fatalf("%v; failed acks %d; runtime log:\n%s", err, slow.failedAcks.Load(), logs.tail(3000))
	}
	if res.Status != duroxide.StatusCompleted || res.Output != `"hihi"` {
		t.Errorf("turns taking 2x the lock timeout: status %s, output %s, error %v; runtime log:\n%s", res.Status, res.Output, res.Err(), logs.tail(3000))
	}
	if n := slow.failedAcks.Load(); n != 0 {
		t.Errorf("%d orchestration acks failed (lock lost during a long turn)", n)
	}
	if s := logs.tail(3000); strings.Contains(s, "level=") {
		t.Errorf("unexpected runtime warnings:\n%s", s)
	}
}
