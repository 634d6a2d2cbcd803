package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// BenchmarkTurn measures one orchestration turn plus one activity round
// trip: enqueue, fetch, ack with an event and an activity, worker fetch,
// worker ack with the completion, and the completing turn (6 calls).
func BenchmarkTurn(b *testing.B) {
	ctx := context.Background()
	schema := fmt.Sprintf("bench_%d", time.Now().UnixNano()%1e9)
	st, err := Open(ctx, cluster.URL, WithSchema(schema))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		st.pool.Exec(ctx, "DROP SCHEMA "+st.q+" CASCADE")
		st.Close()
	}()
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
