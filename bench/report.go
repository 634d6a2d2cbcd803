package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"syscall"
)

const syncFlag = syscall.O_DSYNC

// durability describes each store setting as applied to every engine.
var durability = map[string]string{
	"sqlite-normal":   "SQLite file, WAL, synchronous=NORMAL",
	"sqlite-full":     "SQLite file, WAL, synchronous=FULL",
	"sqlite-off":      "SQLite file, WAL, synchronous=OFF",
	"memory":          "in-memory SQLite",
	"postgres":        "PostgreSQL, fsync+synchronous_commit on",
	"postgres-nosync": "PostgreSQL, fsync+synchronous_commit off",
}

type report struct {
	Env       envInfo
	Scenarios []string
	Engines   []string
	Stores    []string
	Reps      int
	Scale     int
	Probes    int
	PgError   string `json:",omitempty"`
	Results   []result
}

// cell aggregates the runs of one (engine, store, scenario).
type cell struct {
	engine, store, scenario string
	walls                   []float64
	wf, act                 int
	first10, last10         []float64
	lat                     []float64
	partial                 []int
	winFirst, winLast       []float64 // long: median ms/activity over activities 2–200 and 1801–2000
	commits                 []float64
	cpuProc, cpuServer      []float64 // CPU seconds of the timed part
	starts                  []float64 // seconds the starts took
	err, na                 string
}

func (c *cell) ok() bool { return len(c.walls) > 0 && c.err == "" }

func (c *cell) med() float64 { return percentile(c.walls, 50) }

// key metric for ratios: median wall, or p50 latency for the latency probe.
func (c *cell) metric() float64 {
	if c.scenario == "latency" {
		return percentile(c.lat, 50)
	}
	return c.med()
}

func (r *report) cells() map[string]*cell {
	m := map[string]*cell{}
	for _, res := range r.Results {
		k := res.Engine + "|" + res.Store + "|" + res.Scenario
		c := m[k]
		if c == nil {
			c = &cell{engine: res.Engine, store: res.Store, scenario: res.Scenario}
			m[k] = c
		}
		switch {
		case res.NA != "":
			c.na = res.NA
		case res.Err != "":
			c.err = res.Err
		default:
			c.walls = append(c.walls, res.Wall)
			c.wf, c.act = res.Workflows, res.Activities
			if res.Scenario == "long" {
				c.first10 = append(c.first10, res.First10)
				c.last10 = append(c.last10, res.Last10)
				c.partial = append(c.partial, res.Partial)
				if len(res.Curve) > 1 {
					c.winFirst = append(c.winFirst, res.Curve[0])
					c.winLast = append(c.winLast, res.Curve[len(res.Curve)-1])
				}
			}
			if res.PgCommits > 0 {
				c.commits = append(c.commits, float64(res.PgCommits))
			}
			if res.StartWall > 0 {
				c.starts = append(c.starts, res.StartWall)
			}
			if res.CPUProcess > 0 {
				c.cpuProc = append(c.cpuProc, res.CPUProcess)
				c.cpuServer = append(c.cpuServer, res.CPUServer)
			}
			c.lat = append(c.lat, res.Lat...)
		}
	}
	return m
}

func (r *report) markdown() string {
	var b strings.Builder
	e := r.Env
	fmt.Fprintf(&b, "Run %s on %d × %s, %s, Linux %s", e.Date, e.NProc, e.CPU, e.Go, e.Kernel)
	if e.Postgres != "" {
		fmt.Fprintf(&b, ", %s (throwaway pgtest cluster)", e.Postgres)
	}
	fmt.Fprintf(&b, ".\n%d repetitions, engines alternating within each; %s in total. 1-minute load at the start of each repetition: %s (%.2f at the end); fsync probe (ms per 4 KiB O_DSYNC write): %s.\n\n",
		r.Reps, e.Elapsed, floats(e.Load, 2), e.LoadEnd, floats(e.Fsync, 2))
	if r.Scale > 1 {
		fmt.Fprintf(&b, "Workflow counts of seq, fan, timer and retry multiplied by %d.\n\n", r.Scale)
	}
	cells := r.cells()
	get := func(eng, store, sc string) *cell { return cells[eng+"|"+store+"|"+sc] }
	b.WriteString("| engine | store | durability | scenario | wall min / median / max (s) | workflows/s | activities/s | peer ÷ duroxide | notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, store := range r.Stores {
		for _, sc := range r.Scenarios {
			base := get("duroxide", store, sc)
			for _, eng := range duroxideFirst(r.Engines) {
				c := get(eng, store, sc)
				if c == nil {
					continue
				}
				row := []string{eng, store, durability[store], sc}
				switch {
				case c.na != "":
					row = append(row, "n/a", "", "", "", "n/a: "+c.na)
				case !c.ok():
					row = append(row, "failed", "", "", "", "FAILED: "+mdEscape(trunc(c.err, 400)))
				default:
					mn, md, mx := minf(c.walls), c.med(), maxf(c.walls)
					wfs := "–"
					if c.wf > 0 {
						wfs = fmt.Sprintf("%.1f", float64(c.wf)/md)
					}
					row = append(row, fmt.Sprintf("%.3f / %.3f / %.3f", mn, md, mx), wfs, fmt.Sprintf("%.0f", float64(c.act)/md))
					ratio := ""
					if eng != "duroxide" && base != nil && base.ok() {
						ratio = fmt.Sprintf("%.2f", c.metric()/base.metric())
						if len(c.partial) > 0 && c.partial[0] > 0 {
							ratio = "> " + ratio // unfinished at the budget
						}
					}
					row = append(row, ratio, notes(c))
				}
				b.WriteString("| " + strings.Join(row, " | ") + " |\n")
			}
		}
	}
	b.WriteString("\n\"peer ÷ duroxide\": the peer's median wall time divided by duroxide's on the same store and durability " +
		"(latency: ratio of the p50s); above 1 means duroxide is faster. workflows/s and activities/s are taken at the median wall time " +
		"(retry: every attempt counts as an activity). long: time per activity is the median of the 10 intervals between " +
		"consecutive activity starts around activity 10 and around activity 2,000 (median over runs); the 200-activity windows " +
		"take the median over activities 2–200 and 1801–2000, which a single checkpoint or scheduling hiccup cannot move. " +
		"\"PG transactions\" counts every committed transaction in the run's database (pg_stat_database.xact_commit), " +
		"read-only ones and the benchmark's own status polls included. " +
		"A cell whose first run took longer than the -slow limit is not repeated (fewer runs).\n")
	b.WriteString(r.goals(get))
	return b.String()
}

func notes(c *cell) string {
	var parts []string
	if len(c.walls) > 0 {
		parts = append(parts, fmt.Sprintf("%d runs", len(c.walls)))
	}
	switch c.scenario {
	case "long":
		f, l := percentile(c.first10, 50), percentile(c.last10, 50)
		if n := c.partial[0]; n > 0 {
			parts = append(parts, fmt.Sprintf("**unfinished**: %d of 2,000 activities within the %.0f s budget; ms/activity: 1–10 %.3f, %d–%d %.3f (×%.2f)",
				n, c.walls[0], f, n-9, n, l, l/f))
		} else {
			parts = append(parts, fmt.Sprintf("ms/activity: 1–10 %.3f, 1991–2000 %.3f (×%.2f)", f, l, l/f))
		}
		if len(c.winFirst) > 0 && c.partial[0] == 0 {
			wf, wl := percentile(c.winFirst, 50), percentile(c.winLast, 50)
			parts = append(parts, fmt.Sprintf("per 200-activity window: 1–200 %.3f, 1801–2000 %.3f (×%.2f)", wf, wl, wl/wf))
		}
	case "latency":
		parts = append(parts, fmt.Sprintf("p50 %.2f ms, p99 %.2f ms (%d probes)", percentile(c.lat, 50), percentile(c.lat, 99), len(c.lat)))
	case "retry":
		parts = append(parts, fmt.Sprintf("%d attempts", c.act))
	}
	if len(c.commits) > 0 && c.wf > 0 {
		parts = append(parts, fmt.Sprintf("%.1f PG transactions/workflow", percentile(c.commits, 50)/float64(c.wf)))
	}
	if len(c.starts) > 0 && c.scenario != "long" {
		parts = append(parts, fmt.Sprintf("starts %.3f s", percentile(c.starts, 50)))
	}
	if len(c.cpuProc) > 0 && c.wf > 0 {
		p := 1000 * percentile(c.cpuProc, 50) / float64(c.wf)
		if sv := percentile(c.cpuServer, 50); sv > 0 {
			s := 1000 * sv / float64(c.wf)
			parts = append(parts, fmt.Sprintf("CPU ms/workflow: %.2f (process %.2f + server %.2f)", p+s, p, s))
		} else {
			parts = append(parts, fmt.Sprintf("CPU ms/workflow: %.2f (process)", p))
		}
	}
	return strings.Join(parts, "; ")
}

// goals evaluates the performance goals on this run's numbers.
func (r *report) goals(get func(eng, store, sc string) *cell) string {
	var b strings.Builder
	b.WriteString("\n**Goals (from this run):**\n\n| goal | store | measured | met |\n|---|---|---|---|\n")
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	for _, sc := range []string{"seq", "fan"} {
		if !contains(r.Scenarios, sc) {
			continue
		}
		for _, store := range r.Stores {
			if store == "sqlite-off" || store == "postgres-nosync" {
				continue
			}
			d := get("duroxide", store, sc)
			if d == nil || !d.ok() {
				continue
			}
			best, bestEng := math.Inf(1), ""
			for _, eng := range r.Engines {
				if c := get(eng, store, sc); eng != "duroxide" && c != nil && c.ok() && c.med() < best {
					best, bestEng = c.med(), eng
				}
			}
			if bestEng == "" {
				fmt.Fprintf(&b, "| %s ≥ 2× best peer | %s | no peer ran | – |\n", sc, store)
				continue
			}
			ratio := best / d.med()
			fmt.Fprintf(&b, "| %s ≥ 2× best peer | %s | duroxide %.3f s vs %s %.3f s: ×%.2f | %s |\n", sc, store, d.med(), bestEng, best, ratio, yes(ratio >= 2))
		}
	}
	if contains(r.Scenarios, "long") {
		for _, store := range r.Stores {
			d := get("duroxide", store, "long")
			if d == nil || !d.ok() {
				continue
			}
			f, l := percentile(d.first10, 50), percentile(d.last10, 50)
			win := ""
			if len(d.winFirst) > 0 {
				wf, wl := percentile(d.winFirst, 50), percentile(d.winLast, 50)
				win = fmt.Sprintf(" (200-activity windows: %.3f → %.3f ms, ×%.2f)", wf, wl, wl/wf)
			}
			fmt.Fprintf(&b, "| long: ms/activity at 2,000 ≤ 1.5× at 10 | %s | %.3f → %.3f ms: ×%.2f%s | %s |\n", store, f, l, l/f, win, yes(l/f <= 1.5))
		}
	}
	if contains(r.Scenarios, "latency") {
		if d := get("duroxide", "sqlite-normal", "latency"); d != nil && d.ok() {
			p50 := percentile(d.lat, 50)
			fmt.Fprintf(&b, "| latency p50 < 5 ms | sqlite-normal | p50 %.2f ms, p99 %.2f ms | %s |\n", p50, percentile(d.lat, 99), yes(p50 < 5))
		}
	}
	return b.String()
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	// nearest rank
	idx := int(math.Ceil(p/100*float64(len(s)))) - 1
	if idx < 0 {
		idx = 0
	}
	if idx >= len(s) {
		idx = len(s) - 1
	}
	if p == 50 && len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[idx]
}

func minf(v []float64) float64 {
	m := math.Inf(1)
	for _, x := range v {
		m = math.Min(m, x)
	}
	return m
}

func maxf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

func floats(v []float64, prec int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.*f", prec, x)
	}
	return strings.Join(s, ", ")
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	return strings.ReplaceAll(s, "\n", " ")
}

// duroxideFirst orders table rows: duroxide, then the peers as given.
func duroxideFirst(engines []string) []string {
	out := []string{}
	if contains(engines, "duroxide") {
		out = append(out, "duroxide")
	}
	for _, e := range engines {
		if e != "duroxide" {
			out = append(out, e)
		}
	}
	return out
}
