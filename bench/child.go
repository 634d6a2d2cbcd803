package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"
)

// result is what one child run (one engine, store, scenario) reports on
// stdout as a JSON line.
type result struct {
	Engine, Store, Scenario string
	Rep                     int
	Err                     string    `json:",omitempty"`
	NA                      string    `json:",omitempty"` // not applicable: reason
	Wall                    float64   // seconds, first start to last completion
	Workflows               int       // workflows completed
	Activities              int       // activity executions (retry: every attempt)
	First10, Last10         float64   `json:",omitempty"` // long: ms per activity (median) at activities 1–10 and 1991–2000
	Lat                     []float64 `json:",omitempty"` // latency: ms per probe
	Partial                 int       `json:",omitempty"` // long: activities done when the budget ran out (0: finished)
	Curve                   []float64 `json:",omitempty"` // long: median ms per activity in each window of 200 activities
	PgCommits               int64     `json:",omitempty"` // postgres: transactions committed in the run's database
	StartWall               float64   `json:",omitempty"` // seconds the starts took (seq, fan, timer, retry, long)
	CPUProcess              float64   `json:",omitempty"` // seconds of CPU of the engine's process in the timed part (seq, fan, timer, retry)
	CPUServer               float64   `json:",omitempty"` // postgres: seconds of CPU of the server's processes in the same part
	Load1                   float64   // 1-minute load average when the run started
}

type childFlags struct {
	engine, store, scenario string
	dir, pgURL              string
	scale                   int
	timeout                 time.Duration
	cpuProfile, mutexProf   string
	memProfile              string
	probes                  int
	longBudget, latBudget   time.Duration
}

func runChild(f childFlags) {
	res := result{Engine: f.engine, Store: f.store, Scenario: f.scenario, Load1: load1()}
	var e Engine
	err := func() error {
		var err error
		e, err = newEngine(f.engine)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		defer cancel()
		cfg := runConfig{Store: f.store, Dir: f.dir, PgURL: f.pgURL}
		if f.cpuProfile != "" {
			cfg.CountCalls = strings.TrimSuffix(f.cpuProfile, ".cpu.pprof") + ".fetches.txt"
		}
		if err := e.Start(ctx, cfg); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		if f.mutexProf != "" {
			runtime.SetMutexProfileFraction(5)
		}
		if f.memProfile != "" {
			// Allocations of the timed part only: what came before is
			// subtracted (pprof -diff_base against the ".before" file).
			runtime.MemProfileRate = 4096
			if err := writeAllocs(f.memProfile + ".before"); err != nil {
				return err
			}
		}
		if f.cpuProfile != "" {
			pf, err := os.Create(f.cpuProfile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(pf); err != nil {
				return err
			}
			defer func() {
				pprof.StopCPUProfile()
				pf.Close()
			}()
		}
		err = runScenario(ctx, e, f, &res)
		if f.memProfile != "" {
			if werr := writeAllocs(f.memProfile); werr != nil && err == nil {
				err = werr
			}
		}
		if f.mutexProf != "" {
			if mf, merr := os.Create(f.mutexProf); merr == nil {
				_ = pprof.Lookup("mutex").WriteTo(mf, 0)
				mf.Close()
			}
		}
		if err != nil && (errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil) {
			err = fmt.Errorf("timed out after %v (%d workflows finished): %w", f.timeout, res.Workflows, err)
		}
		if err != nil {
			if le := e.LastError(); le != "" {
				err = fmt.Errorf("%w; last engine error: %s", err, le)
			}
		}
		return err
	}()
	if err != nil {
		res.Err = err.Error()
	}
	// Report first: stopping a busy engine (a long run cut at its budget)
	// may take a while or hang, and the parent only needs this line.
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	os.Stdout.Sync()
	if e != nil {
		done := make(chan struct{})
		go func() {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			_ = e.Stop(sctx)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(12 * time.Second):
		}
	}
	os.Exit(0)
}

// waitAll waits for the instances in creation order, polling each engine's
// status API every poll interval (the same way for every engine).
func waitAll(ctx context.Context, e Engine, ids []string, poll time.Duration, done *int) error {
	for _, id := range ids {
		if err := waitOne(ctx, e, id, poll); err != nil {
			return err
		}
		*done++
	}
	return nil
}

func waitOne(ctx context.Context, e Engine, id string, poll time.Duration) error {
	for {
		ok, err := e.Done(ctx, id)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Polling periods of the status checks.
const (
	pollThroughput = 5 * time.Millisecond
	pollLatency    = 1 * time.Millisecond
)

func runScenario(ctx context.Context, e Engine, f childFlags, res *result) error {
	scale := max(f.scale, 1)
	var kind string
	var n, input, acts int
	switch f.scenario {
	case "seq":
		kind, n, input, acts = "seq", 200*scale, 3, 3
	case "fan":
		kind, n, input, acts = "fan", 20*scale, 50, 50
	case "timer":
		kind, n, input, acts = "timer", 200*scale, 10, 0
	case "retry":
		kind, n, input, acts = "retry", 200*scale, -1, retryAttempts
	case "long":
		kind, n, input, acts = "long", 1, 2000, 2000
		stamps = make([]atomic.Int64, input)
	case "latency":
		return runLatency(ctx, e, f, res)
	default:
		return fmt.Errorf("unknown scenario %q", f.scenario)
	}
	ids := make([]string, n)
	inputs := make([]int, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", kind, i)
		inputs[i] = input
		if input < 0 {
			inputs[i] = i
		}
	}
	pm := 0
	if f.pgURL != "" {
		pm = postmasterOf(ctx, f.pgURL)
	}
	cpu0, srv0 := processCPU(), serverCPU(pm)
	start := time.Now()
	for i, id := range ids {
		if err := e.StartWorkflow(ctx, kind, id, inputs[i]); err != nil {
			return fmt.Errorf("start %s: %w", id, err)
		}
	}
	res.StartWall = time.Since(start).Seconds()
	wctx := ctx
	if f.scenario == "long" && f.longBudget > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, f.longBudget)
		defer cancel()
	}
	if err := waitAll(wctx, e, ids, pollThroughput, &res.Workflows); err != nil {
		if f.scenario == "long" && ctx.Err() == nil && wctx.Err() != nil {
			return longPartial(f, res)
		}
		return err
	}
	res.Wall = time.Since(start).Seconds()
	res.CPUProcess = (processCPU() - cpu0).Seconds()
	if pm != 0 {
		res.CPUServer = (serverCPU(pm) - srv0).Seconds()
	}
	res.Activities = n * acts
	if f.scenario == "retry" {
		res.Activities = int(attempts.Load())
	}
	if f.scenario == "long" {
		res.First10, res.Last10 = perActivity(1), perActivity(input-10)
		res.Curve = curve(len(stamps))
	}
	return verify(ctx, e, kind, ids, inputs)
}

// longPartial reports a long run that did not finish within its budget:
// time per activity over the first 10 and over the last 10 that started.
func longPartial(f childFlags, res *result) error {
	done := 0
	for i := range stamps {
		if stamps[i].Load() == 0 {
			break
		}
		done = i + 1
	}
	if done < 21 {
		return fmt.Errorf("only %d of %d activities within the %v budget", done, len(stamps), f.longBudget)
	}
	res.Wall = f.longBudget.Seconds()
	res.Activities = done
	res.Partial = done
	res.First10, res.Last10 = perActivity(1), perActivity(done-10)
	res.Curve = curve(done)
	return nil
}

// curve returns the median time per activity in consecutive windows of 200
// activities (the shape of the cost over the history's growth).
func curve(done int) []float64 {
	var c []float64
	for from := 1; from < done; from += 200 {
		var d []float64
		for i := from; i < from+200 && i < done; i++ {
			d = append(d, float64(stamps[i].Load()-stamps[i-1].Load())/1e6)
		}
		c = append(c, math.Round(percentile(d, 50)*1000)/1000)
	}
	return c
}

// perActivity returns the time per activity around activities from+1 …
// from+10 (1-based): the median of the 10 intervals between the start of
// activity i and of activity i+1 (one full activity round trip: result
// committed, orchestration turn, next activity scheduled and started). The
// median keeps one checkpoint or scheduling hiccup from deciding the number.
func perActivity(from int) float64 {
	d := make([]float64, 0, 10)
	for i := from; i < from+10 && i < len(stamps); i++ {
		d = append(d, float64(stamps[i].Load()-stamps[i-1].Load())/1e6)
	}
	return percentile(d, 50)
}

func verify(ctx context.Context, e Engine, kind string, ids []string, inputs []int) error {
	for i, id := range ids {
		v, err := e.Result(ctx, id)
		if err != nil {
			return fmt.Errorf("result of %s: %w", id, err)
		}
		if want := expected(kind, inputs[i]); v != want {
			return fmt.Errorf("result of %s: got %d, want %d", id, v, want)
		}
	}
	return nil
}

// runLatency starts one seq(3) workflow at a time on an otherwise idle
// engine and measures start to observed completion.
func runLatency(ctx context.Context, e Engine, f childFlags, res *result) error {
	probes := f.probes
	if probes <= 0 {
		probes = 200
	}
	ids := make([]string, probes)
	inputs := make([]int, probes)
	begin := time.Now()
	for i := range ids {
		if f.latBudget > 0 && time.Since(begin) > f.latBudget && i >= 20 {
			ids, inputs = ids[:i], inputs[:i]
			break
		}
		ids[i] = fmt.Sprintf("lat-%d", i)
		inputs[i] = 3
		t0 := time.Now()
		if err := e.StartWorkflow(ctx, "seq", ids[i], 3); err != nil {
			return err
		}
		if err := waitOne(ctx, e, ids[i], pollLatency); err != nil {
			return err
		}
		res.Lat = append(res.Lat, float64(time.Since(t0).Microseconds())/1000)
		res.Workflows++
	}
	res.Wall = time.Since(begin).Seconds()
	res.Activities = 3 * len(ids)
	return verify(ctx, e, "seq", ids, inputs)
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var l float64
	fmt.Sscanf(string(b), "%f", &l)
	return l
}

// writeAllocs writes the allocation profile so far to path.
func writeAllocs(path string) error {
	runtime.GC() // the profile shows allocations as of the last GC
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("allocs").WriteTo(f, 0)
}
