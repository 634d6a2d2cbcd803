package main

// Operator commands under `toygres server`: orchestrations, orchestration,
// cancel, recreate, raise-event, stats, workers, config and env. All but env
// call the REST API with the CLI's usual credentials (see internal/cli).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/cli"
	"github.com/toygres/toygres/internal/historyview"
	"github.com/toygres/toygres/internal/redact"
)

// withAdminCommands adds the operator commands to the `server` command.
func withAdminCommands(g *globals, server *cobra.Command) *cobra.Command {
	server.Short = "Run and manage the Toygres server; inspect and control its orchestrations"
	server.AddCommand(newOrchestrationsCmd(g), newOrchestrationCmd(g), newCancelCmd(g), newRecreateCmd(g),
		newRaiseEventCmd(g), newStatsCmd(g), newWorkersCmd(g), newConfigCmd(g), newEnvCmd(g))
	server.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name())
				}
			}
			return usagef("unknown server command %q (want one of: %s)", args[0], strings.Join(names, ", "))
		}
		return nil
	}
	return server
}

// orchestrationNotFound turns a 404 into "orchestration "x" not found".
func orchestrationNotFound(err error, id string) error {
	if cli.StatusOf(err) == http.StatusNotFound {
		return fmt.Errorf("orchestration %q not found", id)
	}
	return err
}

func orchestrationPath(id string) string { return "/api/orchestrations/" + cli.PathEscape(id) }

func idArg(args []string) (string, error) {
	id := strings.TrimSpace(args[0])
	if id == "" {
		return "", usagef("empty orchestration ID")
	}
	return id, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// ---- server orchestrations ----

type orchestrationsOptions struct {
	status   string
	instance string
	name     string
	prefix   string
	limit    int
	output   string
}

// maxScanPages bounds how many API pages -i may read looking for matches.
const maxScanPages = 200

func newOrchestrationsCmd(g *globals) *cobra.Command {
	o := &orchestrationsOptions{}
	cmd := &cobra.Command{
		Use:   "orchestrations",
		Short: "List orchestrations, newest first",
		Long: `List the durable orchestrations (create-instance, delete-instance and the
health actors), newest first. --status takes Running, Completed, Failed or
Cancelled (comma-separated for several); -i keeps the ids containing a text
(an instance name, for example); --name keeps one orchestration type.`,
		Example: `  toygres server orchestrations
  toygres server orchestrations --status Running,Failed -l 50
  toygres server orchestrations -i test-retry
  toygres server orchestrations --name instance-actor -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(o.output); err != nil {
				return err
			}
			if o.limit < 1 {
				return usagef("--limit must be at least 1")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			list, more, err := listOrchestrations(cmd.Context(), c, o)
			if err != nil {
				return err
			}
			if o.output == "json" {
				return cli.PrintJSON(g.stdout, struct {
					Orchestrations []api.Orchestration `json:"orchestrations"`
					Count          int                 `json:"count"`
					More           bool                `json:"more"`
				}{list, len(list), more})
			}
			if len(list) == 0 {
				fmt.Fprintln(g.stdout, "No orchestrations found")
				return nil
			}
			t := cli.NewTable(g.stdout, "ID", "NAME", "VERSION", "STATUS", "EXECUTION", "CREATED", "UPDATED")
			for _, x := range list {
				t.Row(x.ID, x.Name, x.Version, x.Status, strconv.FormatInt(x.ExecutionID, 10),
					cli.FormatTime(x.CreatedAt), cli.FormatTime(x.UpdatedAt))
			}
			if err := t.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\n%d orchestration(s)", len(list))
			if more {
				fmt.Fprintf(g.stdout, "; more exist (raise --limit)")
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.status, "status", "", "only these statuses: Running, Completed, Failed, Cancelled (comma-separated)")
	f.StringVarP(&o.instance, "instance", "i", "", "only ids containing this text")
	f.StringVar(&o.name, "name", "", "only this orchestration name (create-instance, delete-instance, instance-actor)")
	f.StringVar(&o.prefix, "prefix", "", "only ids starting with this text")
	f.IntVarP(&o.limit, "limit", "l", 20, "show at most this many")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	return cmd
}

// listOrchestrations pages through GET /api/orchestrations until limit
// matches; more reports whether further matches may exist.
func listOrchestrations(ctx context.Context, c *cli.Client, o *orchestrationsOptions) ([]api.Orchestration, bool, error) {
	out := []api.Orchestration{}
	cursor := ""
	for page := 0; ; page++ {
		size := o.limit - len(out) + 1 // one more than needed tells whether more exist
		if o.instance != "" {
			size = 500 // filtered here: read in big pages
		}
		size = min(max(size, 1), 1000)
		lo := client.ListOrchestrationsOptions{Limit: size, Name: o.name, Prefix: o.prefix, Cursor: cursor}
		if o.status != "" {
			lo.Statuses = []string{o.status}
		}
		l, err := c.API.ListOrchestrations(ctx, lo)
		if err != nil {
			return nil, false, c.Explain(err)
		}
		for _, x := range l.Orchestrations {
			if o.instance != "" && !strings.Contains(x.ID, o.instance) {
				continue
			}
			if len(out) == o.limit {
				return out, true, nil
			}
			out = append(out, x)
		}
		if l.NextCursor == "" || len(l.Orchestrations) == 0 {
			return out, false, nil
		}
		if page+1 >= maxScanPages {
			return out, true, nil
		}
		cursor = l.NextCursor
	}
}

// ---- server orchestration ----

func newOrchestrationCmd(g *globals) *cobra.Command {
	var history bool
	var executions int
	var output string
	cmd := &cobra.Command{
		Use:   "orchestration ID",
		Short: "Show an orchestration: status, output or error, and with --history its steps",
		Long: `Show one orchestration: status, name, version, execution, times, custom
status and its output (or error). --history lists the history of every
execution as steps (the console's reading): an activity call with each
attempt, its outcome and the backoff after it; timers, waits, events and
sub-orchestrations, with the events each step stands for. -o json also has
the raw events.`,
		Example: `  toygres server orchestration create-test-retry-1a2b3c4d --history
  toygres server orchestration actor-test-retry-1a2b3c4d --history --executions 2`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			if executions < 0 {
				return usagef("--executions must not be negative")
			}
			if cmd.Flags().Changed("executions") && !history {
				return usagef("--executions needs --history")
			}
			id, err := idArg(args)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			path := orchestrationPath(id)
			switch {
			case history && executions > 0:
				path += "?history=" + strconv.Itoa(executions)
			case history:
				path += "?history=full"
			}
			d, err := getView[api.OrchestrationDetail](cmd.Context(), g, c, path, output, "orchestration")
			if d == nil {
				return orchestrationNotFound(err, id)
			}
			printOrchestration(g.stdout, d, history, time.Now())
			return nil
		},
	}
	cmd.Flags().BoolVar(&history, "history", false, "list the history as steps")
	cmd.Flags().IntVar(&executions, "executions", 20, "with --history: only the newest N executions (0: all)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func timeAgo(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return cli.FormatTime(t) + " (" + cli.Ago(t, now) + ")"
}

func printOrchestration(w io.Writer, d *api.OrchestrationDetail, history bool, now time.Time) {
	execution := strconv.FormatInt(d.ExecutionID, 10)
	if n := len(d.Executions); n > 1 {
		execution += fmt.Sprintf(" (%d executions)", n)
	}
	custom := ""
	if d.CustomStatus != nil {
		custom = *d.CustomStatus
	}
	fmt.Fprintf(w, "Orchestration %s\n", d.ID)
	cli.Fields(w, "",
		"Status", d.Status,
		"Name", d.Name,
		"Version", d.Version,
		"Execution", execution,
		"Parent", d.Parent,
		"Created", timeAgo(d.CreatedAt, now),
		"Updated", timeAgo(d.UpdatedAt, now),
		"Custom status", custom,
	)
	if len(d.Output) > 0 {
		fmt.Fprintln(w, "\nOutput:")
		fmt.Fprintln(w, cli.IndentJSON(d.Output, "  "))
	}
	if e := d.Error; e != nil {
		fmt.Fprintln(w, "\nError:")
		msg := e.Message
		if e.Type != "" {
			msg += " (" + e.Type + ")"
		}
		var notes []string
		if e.NonRetryable {
			notes = append(notes, "non-retryable")
		}
		if e.Timeout {
			notes = append(notes, "timed out")
		}
		cli.Fields(w, "", "Category", e.Category, "Message", msg, "Notes", strings.Join(notes, ", "))
	}
	events := 0
	for _, ex := range d.Executions {
		events += ex.EventCount
	}
	if !history {
		fmt.Fprintln(w)
		switch n := len(d.Executions); {
		case n > 1:
			fmt.Fprintf(w, "Use --history to see %d events in %d executions.\n", events, n)
		default:
			fmt.Fprintf(w, "Use --history to see %d events.\n", events)
		}
		return
	}
	skipped := 0
	for _, ex := range d.Executions {
		if ex.History == nil {
			skipped++
			continue
		}
		fmt.Fprintln(w)
		head := fmt.Sprintf("Execution %d: %s, %d events, started %s", ex.ExecutionID, ex.Status, ex.EventCount, cli.FormatTime(ex.StartedAt))
		if ex.CompletedAt != nil {
			head += ", ended " + cli.FormatTime(*ex.CompletedAt)
		}
		fmt.Fprintln(w, head)
		t := cli.NewTable(w, "  STEP", "STATUS", "TIME", "EVENTS", "DETAIL")
		for _, row := range stepRows(ex.Steps) {
			row[0] = "  " + row[0]
			t.Row(row...)
		}
		_ = t.Flush()
	}
	if skipped > 0 {
		fmt.Fprintf(w, "\n(%d older execution(s) not shown; --executions 0 shows all)\n", skipped)
	}
}

// detailWidth bounds the DETAIL column of --history.
const detailWidth = 80

// stepRows renders an execution's steps (package historyview, as the API
// returns them), one row each: title, status, time, event ids and a short
// detail; an activity call's attempts and backoffs follow it, indented.
func stepRows(steps []api.HistoryStep) [][]string {
	var rows [][]string
	for _, st := range steps {
		status := st.StatusText
		if status == "" {
			status = st.Status
		}
		detail := st.Error
		if detail == "" {
			detail = withLabel(st.PayloadFor, cli.CompactJSON(st.Payload, detailWidth))
		}
		if detail == "" {
			detail = withLabel("input", cli.CompactJSON(st.Input, detailWidth))
		}
		if st.Link != "" {
			detail = strings.TrimPrefix(detail+"; → "+st.LinkText, "; ")
		}
		rows = append(rows, []string{st.Title, status, clock(st.At), cli.Truncate(st.IDList(), 24), cli.Truncate(detail, detailWidth+40)})
		if !st.ShowAttempts() {
			continue
		}
		if tt := st.Total; tt != nil {
			rows = append(rows, []string{"  whole-call timeout " + historyview.FormatDuration(tt.Delay), timerState(tt), "", "#" + strconv.FormatInt(tt.EventID, 10), ""})
		}
		for _, a := range st.Attempts {
			status := a.StatusText
			if a.Took > 0 {
				status += " after " + historyview.FormatDuration(a.Took)
			}
			rows = append(rows, []string{"  " + a.Label(), status, clock(a.At), "#" + strconv.FormatInt(a.EventID, 10), cli.Truncate(a.Error, detailWidth+40)})
			if b := a.Backoff; b != nil {
				rows = append(rows, []string{"  backoff " + historyview.FormatDuration(b.Delay), timerState(b), "", "#" + strconv.FormatInt(b.EventID, 10), ""})
			}
		}
	}
	return rows
}

func clock(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("15:04:05.000")
}

func timerState(t *api.HistoryTimer) string {
	if t.Fired {
		return "fired"
	}
	return "fires " + clock(t.FireAt)
}

func withLabel(label, v string) string {
	if v == "" {
		return ""
	}
	return label + " " + v
}

// ---- server cancel ----

func newCancelCmd(g *globals) *cobra.Command {
	var force bool
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a running orchestration (asks first unless -f)",
		Long: `Cancel a running orchestration. Its history records the cancellation and
its status becomes Cancelled once the runtime processes it. Finished
orchestrations cannot be cancelled. Without -f the command asks for
confirmation on the terminal (or reads y/N from stdin).`,
		Example: `  toygres server cancel actor-test-retry-1a2b3c4d
  toygres server cancel create-db1-1a2b3c4d -f --reason "stuck deploy"`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := idArg(args)
			if err != nil {
				return err
			}
			if len(reason) > 1000 {
				return usagef("--reason must be at most 1000 characters")
			}
			ctx := cmd.Context()
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.API.GetOrchestration(ctx, id, "")
			if err != nil {
				return orchestrationNotFound(c.Explain(err), id)
			}
			if finished(st.Status) {
				return fmt.Errorf("orchestration %q has already finished (%s); there is nothing to cancel", id, st.Status)
			}
			if !force {
				// The question goes to a terminal; an answer piped to stdin
				// is read without it.
				tty := isTerminal(g.stdin)
				if tty {
					fmt.Fprintf(g.stderr, "Cancel orchestration %s (%s, %s)? (y/N) ", id, st.Name, st.Status)
				}
				answer, ok := readAnswer(g.stdin)
				if !ok {
					if tty {
						fmt.Fprintln(g.stderr)
					}
					return fmt.Errorf("no answer on stdin: orchestration %q was not cancelled (use -f to cancel without asking)", id)
				}
				if answer != "y" && answer != "yes" {
					fmt.Fprintf(g.stdout, "Not cancelled: orchestration %s is still running.\n", id)
					return nil
				}
			}
			if _, err := c.API.CancelOrchestration(ctx, id, reason); err != nil {
				return orchestrationNotFound(c.Explain(err), id) // 409: finished in the meantime
			}
			fmt.Fprintf(g.stdout, "Cancellation of orchestration %s requested; it becomes Cancelled once the runtime processes it.\n", id)
			fmt.Fprintf(g.stdout, "Check it with: toygres server orchestration %s\n", id)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	cmd.Flags().StringVar(&reason, "reason", "", "reason recorded in the orchestration's history")
	return cmd
}

// finished reports whether an orchestration status is final.
func finished(status string) bool {
	switch status {
	case "Completed", "Failed", "Cancelled", "ContinuedAsNew":
		return true
	}
	return false
}

// readAnswer reads one line from stdin, lower-cased; ok is false when
// stdin is closed or empty (no one to answer).
func readAnswer(r io.Reader) (string, bool) {
	if r == nil {
		return "", false
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		return "", false
	}
	return strings.ToLower(strings.TrimSpace(line)), true
}

// ---- server recreate ----

func newRecreateCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "recreate ID",
		Short: "Start a finished orchestration again (same name, version and input) under a new id",
		Long: `Start the orchestration ID again, with the same name, version and original
input, under a new id (its trailing 8-hex-digit part replaced). ID must
have finished: cancel a running one first. Prints the new id.`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			id, err := idArg(args)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ans, err := c.API.RecreateOrchestration(cmd.Context(), id)
			if err != nil {
				return orchestrationNotFound(c.Explain(err), id)
			}
			if output == "json" {
				return cli.PrintJSON(g.stdout, ans)
			}
			fmt.Fprintf(g.stdout, "Recreated orchestration %s as %s (%s)\n", id, ans.NewID, strings.TrimSpace(ans.Name+" "+ans.Version))
			fmt.Fprintf(g.stdout, "New id: %s\n", ans.NewID)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// ---- server raise-event ----

func newRaiseEventCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "raise-event ID NAME [DATA]",
		Short: "Send an external event to a running orchestration",
		Long: `Send the external event NAME to the running orchestration ID. DATA is a JSON
value; text that is not JSON (and does not start like JSON: { [ ") is sent
as a JSON string. Without DATA the event carries null.`,
		Example: `  toygres server raise-event actor-db1-1a2b3c4d check-now
  toygres server raise-event my-orch approval '{"approved": true}'
  toygres server raise-event my-orch note "plain text becomes a JSON string"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usagef("missing %s argument (usage: %s)", []string{"ID", "NAME"}[len(args)], cmd.UseLine())
			}
			if len(args) > 3 {
				return usagef("unexpected argument %q (usage: %s; quote DATA)", args[3], cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := idArg(args)
			if err != nil {
				return err
			}
			name := strings.TrimSpace(args[1])
			if name == "" {
				return usagef("empty event NAME")
			}
			var data json.RawMessage
			if len(args) == 3 {
				if data, err = eventData(args[2]); err != nil {
					return err
				}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if _, err := c.API.RaiseEvent(cmd.Context(), id, name, data); err != nil {
				return orchestrationNotFound(c.Explain(err), id)
			}
			shown := "null"
			if len(data) > 0 {
				shown = cli.CompactJSON(data, 80)
			}
			fmt.Fprintf(g.stdout, "Raised event %q on orchestration %s (data %s)\n", name, id, shown)
			return nil
		},
	}
	return cmd
}

// eventData turns the DATA argument into JSON: valid JSON as it is, text
// that starts like JSON but is not valid is a usage error, other text a
// JSON string.
func eventData(s string) (json.RawMessage, error) {
	t := strings.TrimSpace(s)
	if t != "" && json.Valid([]byte(t)) {
		return json.RawMessage(t), nil
	}
	if t != "" && strings.ContainsRune("{[\"", rune(t[0])) {
		var v any
		err := json.Unmarshal([]byte(t), &v)
		return nil, usagef("DATA starts like JSON but is not valid JSON (%v); to send such text, pass it as a JSON string", err)
	}
	b, _ := json.Marshal(s)
	return b, nil
}

// ---- server stats ----

// statsInterval is the refresh period of stats -w.
const statsInterval = 2 * time.Second

var instanceStateOrder = []string{"creating", "running", "failed", "deleting", "deleted"}
var healthOrder = []string{"healthy", "unhealthy", "unknown"}
var statusOrder = []string{"Running", "Completed", "Failed", "Cancelled"}

func newStatsCmd(g *globals) *cobra.Command {
	var watch bool
	var output string
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show counts: instances by state and health, orchestrations by status, queue depths",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			show := func(ctx context.Context) error {
				var raw json.RawMessage
				if err := c.Get(ctx, "/api/server/stats", &raw); err != nil {
					return err
				}
				if output == "json" {
					return cli.PrintJSON(g.stdout, raw)
				}
				var st api.ServerStats
				if err := json.Unmarshal(raw, &st); err != nil {
					return fmt.Errorf("decode stats: %w", err)
				}
				printStats(g.stdout, &st)
				return nil
			}
			if !watch {
				return show(cmd.Context())
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			tty := isTerminal(g.stdout)
			for {
				if tty {
					fmt.Fprint(g.stdout, "\033[H\033[2J")
				}
				if err := show(ctx); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				if output == "table" {
					fmt.Fprintf(g.stdout, "\nRefreshing every %v; Ctrl-C stops.\n", statsInterval)
				}
				if !tty {
					fmt.Fprintln(g.stdout)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(statsInterval):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh every 2 seconds until Ctrl-C")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// ordered returns the keys of m in the given order, then any others sorted.
func ordered(m map[string]int, order []string) []string {
	keys := append([]string(nil), order...)
	var extra []string
	for k := range m {
		known := false
		for _, o := range order {
			known = known || o == k
		}
		if !known {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	return append(keys, extra...)
}

func printStats(w io.Writer, st *api.ServerStats) {
	in := st.Instances
	active := in.Total - in.ByState["deleted"]
	fmt.Fprintf(w, "Instances: %d total, %d not deleted\n", in.Total, active)
	t := cli.NewTable(w, "  STATE", "COUNT", "SHARE")
	for _, s := range ordered(in.ByState, instanceStateOrder) {
		t.Row("  "+s, strconv.Itoa(in.ByState[s]), cli.Percent(in.ByState[s], in.Total))
	}
	_ = t.Flush()
	checked := 0
	for _, n := range in.ByHealth {
		checked += n
	}
	fmt.Fprintf(w, "\nHealth of running instances: %d\n", checked)
	t = cli.NewTable(w, "  HEALTH", "COUNT", "SHARE")
	for _, h := range ordered(in.ByHealth, healthOrder) {
		t.Row("  "+h, strconv.Itoa(in.ByHealth[h]), cli.Percent(in.ByHealth[h], checked))
	}
	_ = t.Flush()
	o := st.Orchestrations
	fmt.Fprintf(w, "\nOrchestrations: %d total\n", o.Total)
	t = cli.NewTable(w, "  STATUS", "COUNT", "SHARE")
	for _, s := range ordered(o.ByStatus, statusOrder) {
		t.Row("  "+s, strconv.Itoa(o.ByStatus[s]), cli.Percent(o.ByStatus[s], o.Total))
	}
	_ = t.Flush()
	fmt.Fprintln(w, "\nQueues")
	cli.Fields(w, "", "Orchestrator queue", strconv.Itoa(o.OrchestratorQueue), "Worker queue", strconv.Itoa(o.WorkerQueue))
	fmt.Fprintf(w, "\nAs of %s\n", cli.FormatTime(st.GeneratedAt))
}

// ---- server workers ----

func newWorkersCmd(g *globals) *cobra.Command {
	var output string
	var limit int
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "Show the durable runtime: worker id, dispatchers and workers, in-flight work, running orchestrations",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			if limit < 0 {
				return usagef("--limit must not be negative")
			}
			ctx := cmd.Context()
			c, err := g.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := c.Get(ctx, "/api/server/workers", &raw); err != nil {
				if cli.StatusOf(err) == http.StatusNotFound {
					return errors.New("this server does not report its workers (GET /api/server/workers: 404); upgrade it")
				}
				return err
			}
			if output == "json" {
				return cli.PrintJSON(g.stdout, raw)
			}
			var wk api.ServerWorkers
			if err := json.Unmarshal(raw, &wk); err != nil {
				return fmt.Errorf("decode workers: %w", err)
			}
			fmt.Fprintf(g.stdout, "Runtime %s\n", wk.WorkerID)
			cli.Fields(g.stdout, "",
				"Orchestration dispatchers", fmt.Sprintf("%d (%d busy)", wk.OrchestrationConcurrency, wk.ActiveTurns),
				"Activity workers", fmt.Sprintf("%d (%d busy)", wk.ActivityConcurrency, wk.RunningActivities),
				"Orchestration lock", wk.OrchestrationLockTimeout,
				"Activity lock", wk.ActivityLockTimeout,
				"Poll interval", wk.PollInterval,
				"Max attempts", strconv.Itoa(wk.MaxAttempts),
				"Cache size", strconv.Itoa(wk.CacheSize),
			)
			fmt.Fprintln(g.stdout)
			cli.Fields(g.stdout, "Orchestrations",
				"Running", strconv.Itoa(wk.RunningOrchestrations),
				"Orchestrator queue", strconv.Itoa(wk.OrchestratorQueue),
				"Worker queue", strconv.Itoa(wk.WorkerQueue),
			)
			if limit == 0 || wk.RunningOrchestrations == 0 {
				return nil
			}
			list, more, err := listOrchestrations(ctx, c, &orchestrationsOptions{status: "Running", limit: limit})
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout)
			t := cli.NewTable(g.stdout, "RUNNING", "NAME", "EXECUTION", "CUSTOM STATUS", "STARTED", "UPDATED")
			for _, x := range list {
				custom := ""
				if x.CustomStatus != nil {
					custom = cli.Truncate(*x.CustomStatus, 40)
				}
				t.Row(x.ID, x.Name, strconv.FormatInt(x.ExecutionID, 10), custom, cli.FormatTime(x.CreatedAt), cli.FormatTime(x.UpdatedAt))
			}
			if err := t.Flush(); err != nil {
				return err
			}
			if more {
				fmt.Fprintf(g.stdout, "(first %d; see 'toygres server orchestrations --status Running -l N')\n", limit)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().IntVarP(&limit, "limit", "l", 10, "list at most this many running orchestrations (0: none)")
	return cmd
}

// ---- server config ----

func newConfigCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the server's effective configuration (secrets masked), retry policies and their sources included",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			sc, err := getView[api.ServerConfig](cmd.Context(), g, c, "/api/server/config", output, "config")
			if sc == nil {
				return err
			}
			now := time.Now()
			cli.Fields(g.stdout, "Server",
				"URL", c.BaseURL,
				"Version", sc.Version,
				"Go", sc.GoVersion,
				"Started", timeAgo(sc.StartedAt, now),
				"Data dir", sc.DataDir,
				"Log file", sc.LogFile,
			)
			fmt.Fprintln(g.stdout)
			cli.Fields(g.stdout, "Storage and data plane",
				"Database", sc.Database,
				"Data plane", sc.Dataplane,
				"PostgreSQL versions", strings.Join(sc.PostgresVersions, ", "),
			)
			fmt.Fprintln(g.stdout)
			cli.Fields(g.stdout, "Runtime",
				"Orchestration concurrency", strconv.Itoa(sc.OrchestrationConcurrency),
				"Activity concurrency", strconv.Itoa(sc.ActivityConcurrency),
				"Health check interval", sc.ActorInterval,
			)
			fmt.Fprintln(g.stdout)
			cli.Fields(g.stdout, "Retention",
				"Executions per chain", sc.Retention.ExecutionsPerChain,
				"Janitor interval", sc.Retention.JanitorInterval,
				"Finished orchestrations", sc.Retention.Orchestrations,
				"Health checks", sc.Retention.HealthChecks,
				"Health checks per instance", sc.Retention.HealthChecksPerInstance,
			)
			fmt.Fprintln(g.stdout)
			cli.Fields(g.stdout, "Access",
				"Admin user", sc.AdminUser,
				"Admin password", sc.AdminPassword,
				"Auth state dir", sc.StateDir,
				"Session lifetime", sc.SessionTTL,
				"Token lifetime", sc.TokenTTL,
				"Metrics", sc.Metrics,
				"Login rate limit", sc.LoginRateLimit,
			)
			printRetryConfig(g.stdout, sc)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// ---- server env ----

// envVar is an environment variable the binary reads.
type envVar struct {
	name   string
	secret bool
	url    bool   // a URL whose password is masked
	def    string // what applies when unset
	use    string
}

// envVars are the TOYGRES_* variables this binary reads (TestAdminEnvList
// checks the list against the source).
var envVars = []envVar{
	{name: "TOYGRES_HOME", use: "data directory (--data-dir)", def: "/var/lib/toygres for root, else ~/.toygres"},
	{name: "TOYGRES_URL", use: "server URL for CLI commands (--url)", def: "from the credentials, else " + cli.DefaultURL},
	{name: "TOYGRES_API_URL", use: "older name of TOYGRES_URL", def: "-"},
	{name: "TOYGRES_TOKEN", secret: true, use: "bearer token for CLI commands (--token)", def: "saved login token, else the server's credentials.json"},
	{name: "TOYGRES_PORT", use: "server start: HTTP port (--port)", def: "8080"},
	{name: "TOYGRES_DATABASE_URL", url: true, use: "server start: PostgreSQL store (--database-url)", def: "SQLite in the data dir"},
	{name: "TOYGRES_ADMIN_USERNAME", use: "admin user name (server start --admin-user, login -u)", def: "admin"},
	{name: "TOYGRES_ADMIN_PASSWORD", secret: true, use: "server start: admin password", def: "stored hash, or generated on the first start"},
	{name: "TOYGRES_LOG_LEVEL", use: "server start: log level (--log-level)", def: "info"},
	{name: "TOYGRES_DATAPLANE", use: "server start: where instances run, local or kubernetes (--dataplane)", def: "local"},
	{name: "TOYGRES_NAMESPACE", use: "server start: Kubernetes namespace for instances (--namespace)", def: "toygres"},
	{name: "TOYGRES_SECRET_KEY", secret: true, use: "server start: secret key encrypting instance passwords, 64 hex digits or base64; required with --database-url", def: "<data dir>/secret.key (SQLite only)"},
	{name: "TOYGRES_SECRET_KEY_FILE", use: "server start: file holding the secret key (--secret-key-file)", def: "-"},
	{name: "TOYGRES_TLS", use: "server start: HTTPS auto (beyond loopback), on or off (--tls)", def: "auto"},
	{name: "TOYGRES_TLS_CERT", use: "server start: PEM certificate for HTTPS (--tls-cert)", def: "self-signed, in <data dir>/tls"},
	{name: "TOYGRES_TLS_KEY", use: "server start: PEM key of the certificate (--tls-key)", def: "-"},
	{name: "TOYGRES_TLS_FINGERPRINT", use: "CLI: accept exactly the server certificate with this SHA-256 fingerprint (--fingerprint)", def: "saved by login, or in credentials.json"},
	{name: "TOYGRES_CONFIG", use: "server start: YAML/TOML file of retry policies and the data-plane breaker (--config); TOYGRES_RETRY__<ACTIVITY>__<FIELD> and TOYGRES_BREAKER__<FIELD> override it", def: "-"},
	{name: "TOYGRES_K8S_ALLOWED_SOURCES", use: "server start: CIDRs allowed to reach public Kubernetes instances (--k8s-allowed-sources)", def: "any address"},
}

func newEnvCmd(g *globals) *cobra.Command {
	var showSecrets bool
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Show the TOYGRES_* environment variables this binary reads, and computed values (local)",
		Long: `Show the TOYGRES_* environment variables this binary reads, with their
values in this shell (secrets masked unless --show-secrets), their defaults,
and computed values: the data dir, the server's credential file and PID,
the saved login token. Nothing is sent to the server.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			printEnv(g, showSecrets)
			return nil
		},
	}
	cmd.Flags().BoolVar(&showSecrets, "show-secrets", false, "show secret values instead of ***")
	return cmd
}

func envValue(v envVar, val string, show bool) string {
	switch {
	case show || val == "":
		return val
	case v.url:
		return redact.URL(val)
	case v.secret:
		return redact.Secret(val)
	}
	return val
}

func printEnv(g *globals, show bool) {
	w := g.stdout
	fmt.Fprintln(w, "Environment (TOYGRES_* variables this binary reads)")
	t := cli.NewTable(w, "  VARIABLE", "VALUE", "WHEN UNSET", "USE")
	known := map[string]bool{}
	for _, v := range envVars {
		known[v.name] = true
		val, set := os.LookupEnv(v.name)
		shown := envValue(v, val, show)
		if !set {
			shown = "(unset)"
		} else if val == "" {
			shown = `""`
		}
		t.Row("  "+v.name, shown, v.def, v.use)
	}
	_ = t.Flush()

	var unknown []string
	for _, kv := range os.Environ() {
		name, val, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "TOYGRES_") && !known[name] {
			if !show && redact.IsSecretName(name) {
				val = redact.Secret(val)
			}
			unknown = append(unknown, fmt.Sprintf("  %s=%s", name, val))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		fmt.Fprintln(w, "\nSet but not read by this binary (misspelt?)")
		fmt.Fprintln(w, strings.Join(unknown, "\n"))
	}

	fmt.Fprintln(w)
	credPath := cli.ServerCredentialsPath(g.dataDir)
	cred := "absent (no server has started here, or it was stopped)"
	if c, err := cli.ReadCredentials(credPath); err == nil {
		cred = "present, for " + c.URL
		if !c.ExpiresAt.IsZero() {
			cred += ", token expires " + cli.FormatTime(c.ExpiresAt)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		cred = "unreadable: " + oneLine(err.Error())
	}
	server := "not running"
	if pid, err := runningServer(g.dataDir); err != nil {
		server = "unknown: " + oneLine(err.Error())
	} else if pid != 0 {
		server = fmt.Sprintf("running (PID %d)", pid)
	}
	login := "none"
	if p, err := cli.UserTokenPath(); err == nil {
		login = p + ": absent"
		if c, err := cli.ReadCredentials(p); err == nil {
			login = fmt.Sprintf("%s: for %s", p, c.URL)
			if c.Expired(time.Now()) {
				login += " (expired)"
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			login = p + ": unreadable"
		}
	}
	token := g.token
	if token == "" {
		token = os.Getenv("TOYGRES_TOKEN")
	}
	creds, err := cli.Resolve(cli.ResolveOptions{URL: g.url, Token: token, DataDir: g.dataDir})
	source := "none found"
	if err == nil {
		source = creds.Source
	}
	cli.Fields(w, "Computed",
		"Data dir", g.dataDir,
		"Server", server,
		"Credentials file", credPath+": "+cred,
		"Login token", login,
		"Server URL used", creds.URL,
		"Token used", source,
		"Log file", logPath(g.dataDir),
		"Home", os.Getenv("HOME"),
	)
}
