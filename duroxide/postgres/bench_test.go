package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// benchStore opens a store in a fresh schema, dropped when b ends.
func benchStore(b *testing.B) *Store {
	b.Helper()
	ctx := context.Background()
	st, err := Open(ctx, cluster.URL, WithSchema(fmt.Sprintf("bench_%d", time.Now().UnixNano()%1e9)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		st.pool.Exec(ctx, "DROP SCHEMA "+st.q+" CASCADE")
		st.Close()
	})
	return st
}

// BenchmarkTurn measures one orchestration turn plus one activity round
// trip: enqueue, fetch, ack with an event and an activity, worker fetch,
// worker ack with the completion, and the completing turn (6 calls).
func BenchmarkTurn(b *testing.B) {
	ctx := context.Background()
	st := benchStore(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("b-%d", i)
		if err := st.EnqueueOrchestratorItem(ctx, start(id), 0); err != nil {
			b.Fatal(err)
		}
		it, err := st.FetchOrchestrationItem(ctx, time.Minute)
		if err != nil || it == nil {
			b.Fatal(it, err)
		}
		err = st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", Status: duroxide.StatusRunning,
			HistoryDelta: []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}, {EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "A"}},
			WorkerItems:  []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: id, ExecutionID: 1, ID: 2, Name: "A"}}})
		if err != nil {
			b.Fatal(err)
		}
		l, err := st.FetchWorkItem(ctx, time.Minute)
		if err != nil || l == nil {
			b.Fatal(l, err)
		}
		if err := st.AckWorkItem(ctx, l.LockToken, &duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: id, ExecutionID: 1, ID: 2, Result: "r"}); err != nil {
			b.Fatal(err)
		}
		it, err = st.FetchOrchestrationItem(ctx, time.Minute)
		if err != nil || it == nil {
			b.Fatal(it, err)
		}
		err = st.AckOrchestrationItem(ctx, it.LockToken, &duroxide.TurnCommit{ExecutionID: 1, Status: duroxide.StatusCompleted, Output: "r",
			HistoryDelta: []duroxide.Event{{EventID: 3, Kind: duroxide.EventActivityCompleted, SourceEventID: 2}, {EventID: 4, Kind: duroxide.EventOrchestrationCompleted}}})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFetchAmongLeased measures FetchWorkItem of one unleased message
// in a worker queue that also holds 2,000 messages leased to a live owner
// (what local dispatch leaves there while its activities run). The fetch
// reads neither them nor their owners (migration 4); before, it cost a
// check per leased row.
func BenchmarkFetchAmongLeased(b *testing.B) {
	ctx := context.Background()
	st := benchStore(b)
	const leased = 2000
	items := make([]duroxide.WorkItem, leased)
	for i := range items {
		items[i] = duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "leased", ExecutionID: 1, ID: int64(i + 2), Name: "A"}
	}
	c := &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", Status: duroxide.StatusRunning,
		HistoryDelta: []duroxide.Event{{EventID: 1, Kind: duroxide.EventOrchestrationStarted}}, WorkerItems: items}
	res, err := st.StartTurn(ctx, "leased", c, duroxide.LocalLease{Workers: leased, Timeout: time.Hour})
	if err != nil || len(res.Leases) != leased {
		b.Fatalf("lease %d messages: %d leases, %v", leased, len(res.Leases), err)
	}
	id := int64(0)
	run := func(b *testing.B, fetch func() (string, error)) {
		for i := 0; i < b.N; i++ {
			id++
			if err := st.EnqueueWorkItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: "free", ExecutionID: 1, ID: id, Name: "A"}); err != nil {
				b.Fatal(err)
			}
			tok, err := fetch()
			if err != nil {
				b.Fatalf("fetch: %v", err)
			}
			if err := st.AckWorkItem(ctx, tok, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("fetch_work_item2", func(b *testing.B) {
		run(b, func() (string, error) {
			l, err := st.FetchWorkItem(ctx, time.Minute)
			if err == nil && (l == nil || l.Item.Instance != "free") {
				err = fmt.Errorf("fetched %+v", l)
			}
			if err != nil {
				return "", err
			}
			return l.LockToken, nil
		})
	})
	b.Run("fetch_work_item(migration 2)", func(b *testing.B) {
		run(b, func() (string, error) {
			var data, tok string
			var attempts int
			err := st.pool.QueryRow(ctx, "SELECT * FROM "+st.fn("fetch_work_item")+"($1, $2)", int64(60000), st.owner).Scan(&data, &tok, &attempts)
			return tok, err
		})
	})
}
