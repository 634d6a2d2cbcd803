package sqlite

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// benchFlow runs one orchestration with one activity through the store:
// start, turn 1 (schedule), activity, turn 2 (complete).
func benchFlow(b *testing.B, s *Store, id string) {
	ctx := context.Background()
	if err := s.EnqueueOrchestratorItem(ctx, start(id), 0); err != nil {
		b.Fatal(err)
	}
	it, err := s.FetchOrchestrationItem(ctx, time.Minute)
	if err != nil || it == nil {
		b.Fatal(err, it)
	}
	c := startedTurn(1)
	c.HistoryDelta = append(c.HistoryDelta, duroxide.Event{EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "A", Input: "x"})
	c.WorkerItems = []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: it.Instance, ExecutionID: 1, ID: 2, Name: "A", Input: "x"}}
	if err := s.AckOrchestrationItem(ctx, it.LockToken, c); err != nil {
		b.Fatal(err)
	}
	l, err := s.FetchWorkItem(ctx, time.Minute)
	if err != nil || l == nil {
		b.Fatal(err, l)
	}
	if err := s.AckWorkItem(ctx, l.LockToken, &duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: l.Item.Instance, ExecutionID: 1, ID: 2, Result: "y"}); err != nil {
		b.Fatal(err)
	}
	it, err = s.FetchOrchestrationItem(ctx, time.Minute)
	if err != nil || it == nil {
		b.Fatal(err, it)
	}
	h, err := s.ReadHistory(ctx, it.Instance, 0)
	if err != nil || len(h) != 2 {
		b.Fatal(err, h)
	}
	c = &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", OrchestrationVersion: "1.0.0", Status: duroxide.StatusCompleted, Output: "y",
		HistoryDelta: []duroxide.Event{{EventID: 3, Kind: duroxide.EventActivityCompleted, SourceEventID: 2, Result: "y"}, {EventID: 4, Kind: duroxide.EventOrchestrationCompleted, Result: "y"}}}
	if err := s.AckOrchestrationItem(ctx, it.LockToken, c); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkFlowFile(b *testing.B) {
	s := openFile(b)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		benchFlow(b, s, fmt.Sprintf("inst-%d", i))
	}
}

func BenchmarkFlowMemory(b *testing.B) {
	s, _ := Open(context.Background(), MemoryPath)
	defer s.Close()
	for i := 0; b.Loop(); i++ {
		benchFlow(b, s, fmt.Sprintf("inst-%d", i))
	}
}

// Parallel: many instances in flight; each goroutine drives whole flows, so
// fetches may pick any instance.
func BenchmarkFlowFileParallel(b *testing.B) {
	s := openFile(b)

	var n atomic.Int64
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			id := fmt.Sprintf("inst-%d", n.Add(1))
			_ = s.EnqueueOrchestratorItem(ctx, start(id), 0)
			for {
				it, err := s.FetchOrchestrationItem(ctx, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				if it == nil {
					break
				}
				c := startedTurn(1)
				if it.Exists {
					c.HistoryDelta = []duroxide.Event{{EventID: it.LastEventID + 1, Kind: duroxide.EventOrchestrationCompleted}}
					c.Status = duroxide.StatusCompleted
				} else {
					c.HistoryDelta = append(c.HistoryDelta, duroxide.Event{EventID: 2, Kind: duroxide.EventActivityScheduled, Name: "A"})
					c.WorkerItems = []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: it.Instance, ExecutionID: 1, ID: 2, Name: "A"}}
				}
				if err := s.AckOrchestrationItem(ctx, it.LockToken, c); err != nil {
					b.Fatal(err)
				}
				l, err := s.FetchWorkItem(ctx, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				if l != nil {
					if err := s.AckWorkItem(ctx, l.LockToken, &duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: l.Item.Instance, ExecutionID: 1, ID: 2}); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	})
}

// BenchmarkFanout mimics a runtime with 2 orchestration dispatchers and 2
// workers running FanoutOrchestration (5 activities joined) with 20
// instances in flight; one op is one completed orchestration.
func BenchmarkFanout(b *testing.B) {
	for _, mode := range []string{"file", "memory"} {
		b.Run(mode, func(b *testing.B) {
			var s *Store
			if mode == "file" {
				s = openFile(b)
			} else {
				s, _ = Open(context.Background(), MemoryPath)
				defer s.Close()
			}
			runFanout(b, s, s, b.N, 2, 2, 20, 5)
		})
	}
}

// runFanout drives total orchestrations; dispatchers use sd, workers and
// the client use sw (the same store, or another handle on the same file).
func runFanout(b testing.TB, sd, sw *Store, total, dispatchers, workers, inflight, tasks int) {
	s := sd
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	fail := func(err error) {
		if ctx.Err() == nil {
			b.Error(err)
		}
	}
	wakeO := make(chan struct{}, 1)
	wakeW := make(chan struct{}, 1)
	done := make(chan string, total)
	poke := func(ch chan struct{}) {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	stop := s.Watch(func(q duroxide.Queue) {
		switch q {
		case duroxide.QueueOrchestrator:
			poke(wakeO)
		case duroxide.QueueWorker:
			poke(wakeW)
		}
	})
	defer stop()
	wait := func(ch chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-time.After(5 * time.Millisecond):
			return true
		case <-ctx.Done():
			return false
		}
	}
	for range dispatchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				it, err := s.FetchOrchestrationItem(ctx, 5*time.Second)
				if err != nil {
					fail(err)
					return
				}
				if it == nil {
					if !wait(wakeO) {
						return
					}
					continue
				}
				poke(wakeO) // others may have work too
				c := &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Fanout", Status: duroxide.StatusRunning}
				next := it.LastEventID + 1
				ev := func(e duroxide.Event) { e.EventID = next; next++; c.HistoryDelta = append(c.HistoryDelta, e) }
				if !it.Exists {
					ev(duroxide.Event{Kind: duroxide.EventOrchestrationStarted, Name: "Fanout"})
					for i := range tasks {
						ev(duroxide.Event{Kind: duroxide.EventActivityScheduled, Name: "Task", Input: fmt.Sprint(i)})
						c.WorkerItems = append(c.WorkerItems, duroxide.WorkItem{Kind: duroxide.WorkActivityExecute, Instance: it.Instance, ExecutionID: 1, ID: next - 1, Name: "Task"})
					}
				} else {
					for _, m := range it.Messages {
						ev(duroxide.Event{Kind: duroxide.EventActivityCompleted, SourceEventID: m.ID, Result: m.Result})
					}
					// Completed activities are 2+tasks.. ; count them from the event ids.
					if next-1 >= int64(1+tasks+tasks) {
						ev(duroxide.Event{Kind: duroxide.EventOrchestrationCompleted, Result: "ok"})
						c.Status, c.Output = duroxide.StatusCompleted, "ok"
					}
				}
				if err := s.AckOrchestrationItem(ctx, it.LockToken, c); err != nil {
					fail(err)
					return
				}
				if c.Status == duroxide.StatusCompleted {
					done <- it.Instance
				}
			}
		}()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				l, err := sw.FetchWorkItem(ctx, 30*time.Second)
				if err != nil {
					fail(err)
					return
				}
				if l == nil {
					if !wait(wakeW) {
						return
					}
					continue
				}
				poke(wakeW)
				comp := duroxide.WorkItem{Kind: duroxide.WorkActivityCompleted, Instance: l.Item.Instance, ExecutionID: 1, ID: l.Item.ID, Result: "r"}
				if err := sw.AckWorkItem(ctx, l.LockToken, &comp); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	bb, isBench := b.(*testing.B)
	if isBench {
		bb.ResetTimer()
	}
	started := 0
	for ; started < min(inflight, total); started++ {
		must(b, sw.EnqueueOrchestratorItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkStartOrchestration, Instance: fmt.Sprintf("f-%d", started), Name: "Fanout"}, 0))
	}
	for range total {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.Fatal("stalled")
		}
		if started < total {
			must(b, sw.EnqueueOrchestratorItem(ctx, duroxide.WorkItem{Kind: duroxide.WorkStartOrchestration, Instance: fmt.Sprintf("f-%d", started), Name: "Fanout"}, 0))
			started++
		}
	}
	if isBench {
		bb.StopTimer()
		bb.ReportMetric(float64(total)/bb.Elapsed().Seconds(), "orch/s")
	}
}

// BenchmarkActivityTurn commits the step of a sequence of activities as a
// runtime with local dispatch does (CommitActivityTurn: the completion of
// the leased activity, the turn's two events and the next activity leased
// at once), on a SQLite file with synchronous=NORMAL: the store's share of
// a step of the 2,000-activity workflow in bench/.
func BenchmarkActivityTurn(b *testing.B) {
	s := openFile(b)
	ctx := context.Background()
	const inst = "long"
	schedule := func(c *duroxide.TurnCommit, id int64) {
		c.HistoryDelta = append(c.HistoryDelta, duroxide.Event{EventID: id, Kind: duroxide.EventActivityScheduled, Name: "Noop", Input: "1", TimestampMs: nowMs()})
		c.WorkerItems = []duroxide.WorkItem{{Kind: duroxide.WorkActivityExecute, Instance: inst, ExecutionID: 1, ID: id, Name: "Noop", Input: "1", OrchestrationName: "Orch"}}
	}
	c := startedTurn(1)
	schedule(c, 2)
	leases, _, err := s.startTurn(ctx, inst, c, 1, time.Minute)
	if err != nil || len(leases) != 1 {
		b.Fatal(err, leases)
	}
	last := int64(2)
	for b.Loop() {
		c := &duroxide.TurnCommit{ExecutionID: 1, OrchestrationName: "Orch", OrchestrationVersion: "1.0.0", Status: duroxide.StatusRunning,
			HistoryDelta: []duroxide.Event{{EventID: last + 1, Kind: duroxide.EventActivityCompleted, SourceEventID: last, Result: "1", TimestampMs: nowMs()}}}
		schedule(c, last+2)
		leases, err = s.CommitActivityTurn(ctx, duroxide.ActivityTurnParams{Instance: inst, WorkTokens: []string{leases[0].LockToken}, LastEventID: last,
			Commit: c, Lease: duroxide.LocalLease{Workers: 1, Timeout: time.Minute}})
		if err != nil || len(leases) != 1 {
			b.Fatal(err, leases)
		}
		last += 2
	}
}
