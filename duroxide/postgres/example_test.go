package postgres_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/postgres"
)

// Open a store, enqueue a start message and take it as a runtime would.
// (Not run by go test: it needs a server; set DATABASE_URL to try it.)
func Example() {
	ctx := context.Background()
	st, err := postgres.Open(ctx, os.Getenv("DATABASE_URL"), postgres.WithSchema("example"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	// Wake up as soon as work arrives instead of polling.
	stop := st.Watch(func(q duroxide.Queue) {
		if q == duroxide.QueueOrchestrator {
			fmt.Println("orchestrator work may be available")
		}
	})
	defer stop()

	err = st.EnqueueOrchestratorItem(ctx, duroxide.WorkItem{
		Kind:     duroxide.WorkStartOrchestration,
		Instance: "order-42",
		Name:     "ProcessOrder",
		Input:    `{"order":42}`,
	}, 0)
	if err != nil {
		log.Fatal(err)
	}

	item, err := st.FetchOrchestrationItem(ctx, 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	if item != nil {
		fmt.Println(item.Instance, len(item.Messages), item.Exists)
		_ = st.AbandonOrchestrationItem(ctx, item.LockToken, duroxide.AbandonParams{Delay: 0, IgnoreAttempt: true})
	}
}

// A short-lived client (a script that starts one orchestration and exits)
// can skip the warm-up of the pool's connections, which pays off only for a
// process that goes on making calls. (Not run by go test: it needs a
// server; set DATABASE_URL to try it.)
func ExampleWithoutWarmup() {
	ctx := context.Background()
	st, err := postgres.Open(ctx, os.Getenv("DATABASE_URL"), postgres.WithSchema("example"),
		postgres.WithPoolSize(2), postgres.WithoutWarmup())
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	if err := duroxide.NewClient(st).StartOrchestration(ctx, "order-43", "ProcessOrder", map[string]int{"order": 43}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("started order-43")
}
