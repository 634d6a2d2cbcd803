package sqlite_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/sqlite"
)

// Example drives one orchestration turn through a file store by hand, the
// way a runtime does: a client enqueues a start message, a dispatcher
// fetches it, and acks the turn with its history and a scheduled activity.
func Example() {
	dir, err := os.MkdirTemp("", "duroxide-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "duroxide.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	// Client: start an orchestration (this does not create the instance).
	err = st.EnqueueOrchestratorItem(ctx, duroxide.WorkItem{
		Kind: duroxide.WorkStartOrchestration, Instance: "order-1", Name: "ProcessOrder", Input: `{"id":1}`,
	}, 0)
	if err != nil {
		log.Fatal(err)
	}

	// Runtime: lock the instance and run a turn.
	item, err := st.FetchOrchestrationItem(ctx, 5*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("fetched", item.Instance, item.OrchestrationName, "exists:", item.Exists)

	err = st.AckOrchestrationItem(ctx, item.LockToken, &duroxide.TurnCommit{
		ExecutionID:       1,
		OrchestrationName: "ProcessOrder",
		Status:            duroxide.StatusRunning,
		HistoryDelta: []duroxide.Event{
			{EventID: 1, Kind: duroxide.EventOrchestrationStarted, Name: "ProcessOrder", Input: `{"id":1}`},
			{EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "Charge", Input: `{"id":1}`},
		},
		WorkerItems: []duroxide.WorkItem{
			{Kind: duroxide.WorkActivityExecute, Instance: "order-1", ExecutionID: 1, ID: 2, Name: "Charge", Input: `{"id":1}`},
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	info, err := st.GetInstance(ctx, "order-1")
	if err != nil {
		log.Fatal(err)
	}
	history, err := st.ReadHistory(ctx, "order-1", 0)
	if err != nil {
		log.Fatal(err)
	}
	lease, err := st.FetchWorkItem(ctx, 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Instance, info.Status, len(history), "events; activity:", lease.Item.Name)
	// Output:
	// fetched order-1 ProcessOrder exists: false
	// order-1 Running 2 events; activity: Charge
}
