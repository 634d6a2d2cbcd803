package sqlite

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// TestWALFramesPerOp logs how many pages (WAL frames) each step of a
// typical orchestration writes: the main cost of a commit is writing them.
// It is a diagnostic for optimizing the schema; run it with
// DUROXIDE_SQLITE_FRAMES=1 go test -run WALFrames -v.
func TestWALFramesPerOp(t *testing.T) {
	if os.Getenv("DUROXIDE_SQLITE_FRAMES") == "" {
		t.Skip("diagnostic; set DUROXIDE_SQLITE_FRAMES=1")
	}
	s := openFile(t)
	ctx := context.Background()
	wal := s.path + "-wal"
	// warm up: a few flows so that tables have pages
	for i := range 20 {
		benchFlow(&testing.B{}, s, "warm"+string(rune('a'+i)))
	}
	size := func() int64 {
		fi, err := os.Stat(wal)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	last := size()
	step := func(name string) {
		n := size()
		t.Logf("%-28s %d frames", name, (n-last)/(4096+24))
		last = n
	}
	must(t, s.EnqueueOrchestratorItem(ctx, start("f1"), 0))
	step("enqueue start")
	it, _ := s.FetchOrchestrationItem(ctx, time.Minute)
	step("fetch")
	c := startedTurn(1)
	c.HistoryDelta = append(c.HistoryDelta, duroxide.Event{EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "A", Input: "x"})
	c.WorkerItems = []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: it.Instance, ExecutionID: 1, ID: 2, Name: "A", Input: "x"}}
	must(t, s.AckOrchestrationItem(ctx, it.LockToken, c))
	step("ack (create, schedule)")
	l, _ := s.FetchWorkItem(ctx, time.Minute)
	step("fetch work")
	must(t, s.AckWorkItem(ctx, l.LockToken, &duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: "f1", ExecutionID: 1, ID: 2, Result: "y"}))
	step("ack work + completion")
	it, _ = s.FetchOrchestrationItem(ctx, time.Minute)
	step("fetch")
	c = startedTurn(1)
	c.HistoryDelta = []duroxide.Event{{EventID: 3, Kind: duroxide.EventActivityCompleted, SourceEventID: 2, Result: "y"}, {EventID: 4, Kind: duroxide.EventActivityScheduled, Name: "B"}}
	c.WorkerItems = []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: it.Instance, ExecutionID: 1, ID: 4, Name: "B", Input: "x"}}
	must(t, s.AckOrchestrationItem(ctx, it.LockToken, c))
	step("ack (running turn)")
	l, _ = s.FetchWorkItem(ctx, time.Minute)
	must(t, s.AckWorkItem(ctx, l.LockToken, &duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: "f1", ExecutionID: 1, ID: 4, Result: "y"}))
	it, _ = s.FetchOrchestrationItem(ctx, time.Minute)
	step("work+fetch")
	c = &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", OrchestrationVersion: "1.0.0", Status: duroxide.StatusCompleted, Output: "y",
		HistoryDelta: []duroxide.Event{{EventID: 5, Kind: duroxide.EventActivityCompleted, SourceEventID: 4, Result: "y"}, {EventID: 6, Kind: duroxide.EventOrchestrationCompleted, Result: "y"}}}
	must(t, s.AckOrchestrationItem(ctx, it.LockToken, c))
	step("ack (complete)")
}
