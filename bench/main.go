// Command bench runs the same workloads on duroxide (this working tree) and
// on go-workflows v1.2.0, durabletask-go v0.6.0 and DBOS Transact v1.8.0,
// alternating engines within each repetition, and prints a Markdown table.
//
//	cd bench && go run . [-reps 3] [-scenarios seq,fan,timer,retry,long,latency]
//	    [-engines duroxide,go-workflows,durabletask-go,dbos]
//	    [-stores sqlite-normal,sqlite-full,memory,postgres] [-out results.md]
//
// Every (engine, store, scenario, repetition) runs in a fresh child process
// (this binary with -child) on a fresh database, so no engine inherits
// another's heap, goroutines or files. See README.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

var allScenarios = []string{"seq", "fan", "timer", "retry", "long", "latency"}

func main() {
	var (
		child     = flag.Bool("child", false, "internal: run one engine/store/scenario and print a JSON result")
		engine    = flag.String("engine", "", "internal (child): engine")
		store     = flag.String("store", "", "internal (child): store")
		scenario  = flag.String("scenario", "", "internal (child): scenario")
		dir       = flag.String("dir", "", "internal (child): directory for SQLite files")
		pgURL     = flag.String("pgurl", "", "internal (child): PostgreSQL database URL")
		cpuProf   = flag.String("cpuprofile", "", "internal (child): write a CPU profile of the timed part")
		mutexProf = flag.String("mutexprofile", "", "internal (child): write a mutex profile")
		memProf   = flag.String("memprofile", "", "internal (child): write allocation profiles, before (FILE.before) and after the timed part")

		reps       = flag.Int("reps", 5, "repetitions of every (engine, store, scenario)")
		scenarios  = flag.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run")
		engines    = flag.String("engines", "duroxide,go-workflows,durabletask-go,dbos", "engines to run")
		stores     = flag.String("stores", "sqlite-normal,sqlite-full,memory,postgres", "stores: sqlite-normal, sqlite-full, memory, postgres (also sqlite-off, postgres-nosync)")
		out        = flag.String("out", "", "also write the Markdown report to this file")
		jsonOut    = flag.String("json", "", "also write every raw result to this JSON file")
		render     = flag.String("render", "", "do not run: render the report from a JSON file written by -json")
		scale      = flag.Int("scale", 1, "multiply the number of workflows of seq, fan, timer and retry")
		probes     = flag.Int("probes", 200, "latency: probes per run")
		timeout    = flag.Duration("timeout", 90*time.Second, "time limit of one run (long: 4×)")
		profileDir = flag.String("profile", "", "write CPU and mutex profiles of every duroxide run into this directory")
		longBudget = flag.Duration("long-budget", 30*time.Second, "long: stop waiting after this and report time per activity over the activities done so far")
		latBudget  = flag.Duration("latency-budget", 10*time.Second, "latency: stop probing after this (at least 20 probes)")
		slow       = flag.Duration("slow", 25*time.Second, "a cell whose first run takes longer than this is not repeated")
		tryKnown   = flag.Bool("try-known-failures", false, "run combinations known not to work instead of listing them as n/a")
		workDir    = flag.String("workdir", "", "directory for the SQLite files (default: the system temp dir)")
	)
	flag.Parse()
	if *child {
		runChild(childFlags{engine: *engine, store: *store, scenario: *scenario, dir: *dir, pgURL: *pgURL,
			scale: *scale, timeout: *timeout, cpuProfile: *cpuProf, mutexProf: *mutexProf, memProfile: *memProf, probes: *probes,
			longBudget: *longBudget, latBudget: *latBudget})
		return
	}
	if *render != "" {
		var rep report
		b, err := os.ReadFile(*render)
		if err == nil {
			err = json.Unmarshal(b, &rep)
		}
		if err != nil {
			fatal(err)
		}
		emit(rep.markdown(), *out)
		return
	}
	// The report's files are written after the whole matrix ran: make
	// their directories now, and fail before the run, not 12 minutes into
	// it, when they cannot be written.
	for _, path := range []string{*out, *jsonOut} {
		if err := prepareOutput(path); err != nil {
			fatal(err)
		}
	}
	p := parent{
		reps: *reps, scenarios: split(*scenarios), engines: split(*engines), stores: split(*stores),
		scale: *scale, probes: *probes, timeout: *timeout, profileDir: *profileDir, tryKnown: *tryKnown, workDir: *workDir,
		longBudget: *longBudget, latBudget: *latBudget, slow: *slow,
	}
	rep, err := p.run()
	if err != nil {
		fatal(err)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", " ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fatal(err)
		}
	}
	emit(rep.markdown(), *out)
}

// prepareOutput creates the directory of output file path (if path is set)
// and checks that the file can be opened for writing.
func prepareOutput(path string) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("output %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("output %s: %w", path, err)
	}
	return f.Close()
}

func emit(md, out string) {
	fmt.Print(md)
	if out != "" {
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			fatal(err)
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func split(s string) []string {
	var r []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			r = append(r, p)
		}
	}
	return r
}

type parent struct {
	reps                       int
	scenarios, engines, stores []string
	scale, probes              int
	timeout                    time.Duration
	profileDir, workDir        string
	tryKnown                   bool
	longBudget, latBudget      time.Duration
	slow                       time.Duration
}

func (p *parent) run() (*report, error) {
	for _, s := range p.scenarios {
		if !contains(allScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q", s)
		}
	}
	for _, s := range p.stores {
		if _, ok := durability[s]; !ok {
			return nil, fmt.Errorf("unknown store %q", s)
		}
	}
	for _, e := range p.engines {
		if _, err := newEngine(e); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	rep := &report{Env: environment(), Scenarios: p.scenarios, Engines: p.engines, Stores: p.stores, Reps: p.reps, Scale: p.scale, Probes: p.probes}
	var pg *pgCluster
	for _, s := range p.stores {
		if strings.HasPrefix(s, "postgres") {
			logf("starting a throwaway PostgreSQL cluster (pgtest)")
			if pg, err = startPG(ctx); err != nil {
				rep.PgError = err.Error()
				logf("PostgreSQL unavailable: %v", err)
			} else {
				rep.Env.Postgres = pg.describe()
				if p.profileDir != "" {
					if err := pg.exec(ctx, "ALTER SYSTEM SET track_functions = 'pl'", "SELECT pg_reload_conf()"); err != nil {
						logf("track_functions: %v", err)
					}
				}
			}
			break
		}
	}
	defer pg.stop()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		logf("interrupted: stopping the PostgreSQL cluster")
		pg.stop()
		os.Exit(130)
	}()
	if p.profileDir != "" {
		if err := os.MkdirAll(p.profileDir, 0o755); err != nil {
			return nil, err
		}
	}
	failed := map[string]string{}
	slowCells := map[string]bool{}
	begin := time.Now()
	for r := 1; r <= p.reps; r++ {
		probe := fsyncProbe(p.workDir)
		rep.Env.Fsync = append(rep.Env.Fsync, probe)
		rep.Env.Load = append(rep.Env.Load, load1())
		logf("repetition %d/%d (load %.2f, fsync probe %.2f ms)", r, p.reps, load1(), probe)
		for _, store := range p.stores {
			for _, sc := range p.scenarios {
				order := rotate(p.engines, r-1)
				for _, eng := range order {
					key := eng + "|" + store + "|" + sc
					if na := notApplicable(eng, store, sc); na != "" && !p.tryKnown {
						if r == 1 {
							rep.Results = append(rep.Results, result{Engine: eng, Store: store, Scenario: sc, NA: na})
						}
						continue
					}
					if strings.HasPrefix(store, "postgres") && pg == nil {
						if r == 1 {
							rep.Results = append(rep.Results, result{Engine: eng, Store: store, Scenario: sc, NA: "PostgreSQL could not be started: " + rep.PgError})
						}
						continue
					}
					if _, ok := failed[key]; ok {
						continue
					}
					if _, ok := slowCells[key]; ok {
						continue
					}
					res := p.runOne(ctx, self, pg, eng, store, sc, r)
					res.Rep = r
					rep.Results = append(rep.Results, res)
					if res.Err != "" {
						failed[key] = res.Err
						logf("  %-14s %-13s %-7s FAILED: %s", eng, store, sc, trunc(res.Err, 300))
					} else {
						logf("  %-14s %-13s %-7s %7.3fs%s", eng, store, sc, res.Wall, extraLog(res))
						if p.slow > 0 && res.Wall > p.slow.Seconds() {
							slowCells[key] = true
						}
					}
				}
			}
		}
	}
	rep.Env.Elapsed = time.Since(begin).Round(time.Second).String()
	rep.Env.LoadEnd = load1()
	return rep, nil
}

func (p *parent) runOne(ctx context.Context, self string, pg *pgCluster, eng, store, sc string, rep int) result {
	res := result{Engine: eng, Store: store, Scenario: sc}
	var dbName string
	dir, err := os.MkdirTemp(p.workDir, "duroxide-bench-")
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer os.RemoveAll(dir)
	args := []string{"-child", "-engine", eng, "-store", store, "-scenario", sc, "-dir", dir,
		"-scale", fmt.Sprint(p.scale), "-probes", fmt.Sprint(p.probes),
		"-long-budget", p.longBudget.String(), "-latency-budget", p.latBudget.String()}
	timeout := p.timeout
	if sc == "long" {
		timeout = max(timeout, p.longBudget+30*time.Second)
	}
	args = append(args, "-timeout", timeout.String())
	if strings.HasPrefix(store, "postgres") {
		if err := pg.setDurable(ctx, store == "postgres"); err != nil {
			res.Err = err.Error()
			return res
		}
		name, url, drop, err := pg.newDatabase(ctx)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		defer drop()
		dbName = name
		args = append(args, "-pgurl", url)
	}
	if p.profileDir != "" && eng == "duroxide" {
		base := filepath.Join(p.profileDir, fmt.Sprintf("%s-%s-%d", store, sc, rep))
		args = append(args, "-cpuprofile", base+".cpu.pprof", "-mutexprofile", base+".mutex.pprof")
	}
	cctx, cancel := context.WithTimeout(ctx, timeout+45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, self, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var waits chan string
	stopSampling := make(chan struct{})
	if dbName != "" && p.profileDir != "" && eng == "duroxide" {
		waits = make(chan string, 1)
		go func() { waits <- pg.sampleWaits(dbName, stopSampling) }()
	}
	runErr := cmd.Run()
	close(stopSampling)
	if waits != nil {
		_ = os.WriteFile(filepath.Join(p.profileDir, fmt.Sprintf("%s-%s-%d.pgwaits.txt", store, sc, rep)), []byte(<-waits), 0o644)
	}
	var last string
	sc2 := bufio.NewScanner(&stdout)
	sc2.Buffer(make([]byte, 1<<20), 16<<20)
	for sc2.Scan() {
		if line := strings.TrimSpace(sc2.Text()); strings.HasPrefix(line, "{") {
			last = line
		}
	}
	if last == "" || json.Unmarshal([]byte(last), &res) != nil {
		msg := "child produced no result"
		if runErr != nil {
			msg = "child: " + runErr.Error()
		}
		res.Err = msg + ": " + tail(stderr.String(), 600)
	}
	if dbName != "" {
		if p.profileDir != "" && eng == "duroxide" {
			stats := pg.functionStats(ctx, dbName)
			_ = os.WriteFile(filepath.Join(p.profileDir, fmt.Sprintf("%s-%s-%d.pgfunctions.txt", store, sc, rep)), []byte(stats), 0o644)
		}
		// Wait for the child's backends to exit and report their counters.
		time.Sleep(300 * time.Millisecond)
		res.PgCommits = pg.commits(ctx, dbName)
	}
	return res
}

func extraLog(r result) string {
	switch {
	case r.Scenario == "long":
		return fmt.Sprintf("  ms/act first10 %.3f last10 %.3f (partial %d) per 200: %v", r.First10, r.Last10, r.Partial, r.Curve)
	case len(r.Lat) > 0:
		return fmt.Sprintf("  p50 %.2f ms p99 %.2f ms", percentile(r.Lat, 50), percentile(r.Lat, 99))
	}
	return ""
}

func rotate(s []string, k int) []string {
	if len(s) == 0 {
		return s
	}
	k %= len(s)
	return append(append([]string(nil), s[k:]...), s[:k]...)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// fsyncProbe writes 200 blocks of 4 KiB with O_DSYNC in dir and returns the
// mean milliseconds per write (the disk's flush latency at this moment).
func fsyncProbe(dir string) float64 {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return -1
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	f, err = os.OpenFile(name, os.O_WRONLY|syncFlag, 0o600)
	if err != nil {
		return -1
	}
	defer f.Close()
	buf := make([]byte, 4096)
	const n = 200
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := f.WriteAt(buf, int64(i%16)*4096); err != nil {
			return -1
		}
	}
	return float64(time.Since(start).Microseconds()) / 1000 / n
}

type envInfo struct {
	Date, CPU, Go, Kernel string
	NProc                 int
	Postgres              string    `json:",omitempty"`
	Load                  []float64 // 1-minute load at the start of each repetition
	LoadEnd               float64
	Fsync                 []float64 // fsync probe (ms per 4 KiB O_DSYNC write) at each repetition
	Elapsed               string
}

func environment() envInfo {
	e := envInfo{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH, NProc: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if i := strings.Index(l, ":"); i >= 0 {
					e.CPU = strings.TrimSpace(l[i+1:])
				}
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	return e
}
