package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/cli"
)

// instanceAnswer decodes the answer of a create or delete: the instance,
// plus an orchestration id when the API names it separately.
type instanceAnswer struct {
	api.Instance
	OrchestrationID string `json:"orchestration_id,omitempty"`
}

func validOutput(o string) error {
	if o != "table" && o != "json" {
		return usagef("invalid output format %q (want table or json)", o)
	}
	return nil
}

func notFound(err error, name string) error {
	if cli.StatusOf(err) == http.StatusNotFound {
		return fmt.Errorf("instance %q not found", name)
	}
	return err
}

func getInstance(ctx context.Context, c *cli.Client, name string) (*api.InstanceDetail, json.RawMessage, error) {
	d, err := c.API.GetInstance(ctx, name, client.GetInstanceOptions{})
	if err != nil {
		return nil, nil, notFound(c.Explain(err), name)
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, nil, fmt.Errorf("encode instance: %w", err)
	}
	return d, raw, nil
}

// ---- create ----

type createOptions struct {
	password      string
	passwordStdin bool
	version       string
	storage       int
	internal      bool
	dnsLabel      string
	wait          bool
	timeout       time.Duration
	output        string
	noBackups     bool
	replicas      int
	syncReplica   bool
}

func newCreateCmd(g *globals) *cobra.Command {
	o := &createOptions{}
	cmd := &cobra.Command{
		Use:   "create NAME --password PASSWORD",
		Short: "Start creating a PostgreSQL instance (returns at once unless --wait)",
		Long: `Create a PostgreSQL instance. The request returns at once with the
instance in state "creating" while a durable orchestration deploys it;
follow it with 'toygres get NAME', or pass --wait to wait until it runs.

NAME: 1-40 lower-case letters, digits and hyphens, starting with a letter.
The password is that of the instance's user "postgres", the one in the
connection string. On the local data plane that role owns the database and
may create databases and roles but is no superuser (no server files, no
COPY ... PROGRAM, no ALTER SYSTEM); see "Security model" in the README.`,
		Example: `  toygres create test-retry --password test123
  toygres create db1 --password s3cret! --version 16 --storage 20 --wait`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(o.output); err != nil {
				return err
			}
			if o.passwordStdin {
				if o.password != "" {
					return usagef("--password and --password-stdin are exclusive")
				}
				pw, err := readPasswordLine(g.stdin)
				if err != nil {
					return err
				}
				o.password = pw
			}
			if o.password == "" {
				return usagef("missing --password (the password of the instance's user \"postgres\"; usage: %s)", cmd.UseLine())
			}
			if o.storage < 0 {
				return usagef("--storage must be positive")
			}
			return runCreate(cmd.Context(), g, o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.password, "password", "p", "", "password of the instance's user \"postgres\" (required)")
	f.BoolVar(&o.passwordStdin, "password-stdin", false, "read the password from stdin")
	f.StringVar(&o.version, "version", "", "PostgreSQL major version (default: the newest available)")
	f.IntVar(&o.storage, "storage", 0, "storage size in GB (default 10)")
	f.BoolVar(&o.internal, "internal", false, "reachable only from inside the platform (local: loopback only)")
	f.StringVar(&o.dnsLabel, "dns-label", "", "DNS label for a public instance")
	f.BoolVar(&o.noBackups, "no-backups", false, "no WAL archiving and no scheduled backups (no point-in-time restore)")
	f.IntVar(&o.replicas, "replicas", 0, "standby servers in streaming replication (0-2)")
	f.BoolVar(&o.syncReplica, "sync-replica", false, "make one standby synchronous (no acknowledged write lost at failover)")
	f.BoolVar(&o.wait, "wait", false, "wait until the instance runs (exit status 1 if it fails)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "with --wait: how long to wait")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	return cmd
}

func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func runCreate(ctx context.Context, g *globals, o *createOptions, name string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	req := client.CreateInstanceRequest{Name: name, Password: o.password, PostgresVersion: o.version,
		StorageGB: o.storage, Internal: o.internal, DNSLabel: o.dnsLabel, NoBackups: o.noBackups,
		Replicas: o.replicas, SyncReplica: o.syncReplica}
	in, err := c.API.CreateInstance(ctx, req)
	if err != nil {
		return c.Explain(err)
	}
	ans := instanceAnswer{Instance: *in}
	orch := firstNonEmpty(ans.OrchestrationID, ans.CreateOrchestrationID)
	if o.output == "json" && !o.wait {
		return cli.PrintJSON(g.stdout, ans)
	}
	if o.output == "table" {
		fmt.Fprintf(g.stdout, "Instance %q is being created.\n", firstNonEmpty(ans.Name, name))
		cli.Fields(g.stdout, "",
			"Name", firstNonEmpty(ans.Name, name),
			"Internal name", ans.InternalName,
			"State", ans.State,
			"PostgreSQL", ans.PostgresVersion,
			"Storage", storageText(ans.StorageGB),
			"Orchestration", orch,
		)
		if !o.wait {
			fmt.Fprintf(g.stdout, "\nFollow it with:\n  toygres get %s\n", name)
			if orch != "" {
				fmt.Fprintf(g.stdout, "  toygres server logs -o %s\n", orch)
			}
			return nil
		}
		fmt.Fprintln(g.stdout)
	}
	d, err := waitFor(ctx, g, c, name, orch, o.timeout, o.output == "table", func(d *api.InstanceDetail) (bool, error) {
		switch d.State {
		case "running":
			return true, nil
		case "failed":
			return true, fmt.Errorf("instance %q failed: %s", name, failureText(d))
		case "deleting", "deleted":
			return true, fmt.Errorf("instance %q is %s (deleted while being created)", name, d.State)
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	if o.output == "json" {
		return printDetailJSON(g, c, ctx, name)
	}
	fmt.Fprintf(g.stdout, "Instance %q is running.\n", name)
	cli.Fields(g.stdout, "", "Connection", d.ConnectionString)
	return nil
}

func printDetailJSON(g *globals, c *cli.Client, ctx context.Context, name string) error {
	_, raw, err := getInstance(ctx, c, name)
	if err != nil {
		return err
	}
	return cli.PrintJSON(g.stdout, raw)
}

func failureText(d *api.InstanceDetail) string {
	if d.FailureReason != "" {
		return d.FailureReason
	}
	for _, e := range d.Events {
		if e.Message != "" {
			return e.Message
		}
	}
	return "no reason recorded (see 'toygres get " + d.Name + "')"
}

func storageText(gb int) string {
	if gb == 0 {
		return ""
	}
	return fmt.Sprintf("%dGB", gb)
}

// waitFor polls the instance (and its orchestration's custom status) until
// done says so, showing progress: one line per change, redrawn in place on
// a terminal.
func waitFor(ctx context.Context, g *globals, c *cli.Client, name, orch string, timeout time.Duration, progress bool,
	done func(*api.InstanceDetail) (bool, error)) (*api.InstanceDetail, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, stop := signalContext(ctx)
	defer stop()
	tty := false
	if f, ok := g.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	start := time.Now()
	last := ""
	defer func() {
		if tty && last != "" {
			fmt.Fprintln(g.stdout)
		}
	}()
	for {
		d, _, err := getInstance(ctx, c, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil, waitErr(ctx, name, timeout)
			}
			return nil, err
		}
		if progress {
			step := ""
			if orch != "" {
				if st, err := c.API.GetOrchestration(ctx, orch, ""); err == nil {
					if st.CustomStatus != nil && *st.CustomStatus != "" {
						step = *st.CustomStatus
					}
				}
			}
			line := d.State
			if step != "" && step != d.State {
				line += " (" + step + ")"
			}
			if line != last {
				if tty {
					fmt.Fprintf(g.stdout, "\r\033[K[%5.1fs] %s", time.Since(start).Seconds(), line)
				} else {
					fmt.Fprintf(g.stdout, "[%5.1fs] %s\n", time.Since(start).Seconds(), line)
				}
				last = line
			}
		}
		if ok, err := done(d); ok {
			return d, err
		}
		select {
		case <-ctx.Done():
			return nil, waitErr(ctx, name, timeout)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func waitErr(ctx context.Context, name string, timeout time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("instance %q: still not done after %v (it goes on; see 'toygres get %s')", name, timeout, name)
	}
	return fmt.Errorf("stopped waiting for instance %q (it goes on; see 'toygres get %s')", name, name)
}

// ---- list ----

func newListCmd(g *globals) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List live instances (creating, running, deleting; --all: failed and deleted too)",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			path := "/api/instances"
			if all {
				path += "?all=true"
			}
			l, err := getView[api.InstanceList](cmd.Context(), g, c, path, output, "instance list")
			if l == nil {
				return err
			}
			t := cli.NewTable(g.stdout, "NAME", "STATE", "HEALTH", "VERSION", "STORAGE", "CREATED", "NOTE")
			for _, in := range l.Instances {
				t.Row(in.Name, stateText(&in), healthText(in.State, in.Health), in.PostgresVersion, storageText(in.StorageGB),
					cli.FormatTime(in.CreatedAt), noteText(&in))
			}
			if err := t.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\n%d instance(s)\n", len(l.Instances))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&all, "all", false, "include failed and deleted instances")
	return cmd
}

// ---- get ----

func newGetCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show an instance: status, identity, configuration, connection string, health and events",
		Long: `Show an instance. The connection string includes the password of the
instance's user "postgres" (only authenticated callers can read it).`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			d, raw, err := getInstance(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return cli.PrintJSON(g.stdout, raw)
			}
			printDetail(g.stdout, d)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printDetail(w io.Writer, d *api.InstanceDetail) {
	now := time.Now()
	problem := ""
	if d.Broken {
		problem = d.Problem + " (repair: toygres repair " + d.Name + ", or delete it)"
	}
	cli.Fields(w, "Status",
		"State", stateText(&d.Instance),
		"Health", healthText(d.State, d.Health),
		"Failure", d.FailureReason,
		"Problem", problem,
	)
	fmt.Fprintln(w)
	cli.Fields(w, "Identity",
		"Name", d.Name,
		"Internal name", d.InternalName,
		"ID", d.ID,
		"Driver", d.Driver,
	)
	fmt.Fprintln(w)
	cli.Fields(w, "Configuration",
		"PostgreSQL", d.PostgresVersion,
		"Storage", storageText(d.StorageGB),
		"Internal only", yesNo(d.Internal),
		"DNS label", d.DNSLabel,
	)
	fmt.Fprintln(w)
	endpoint := ""
	if d.Host != "" {
		endpoint = fmt.Sprintf("%s:%d", d.Host, d.Port)
	}
	conn := d.ConnectionString
	if conn == "" {
		conn = "(not available yet)"
		if d.State == "deleted" || d.State == "failed" {
			conn = "(none)"
		}
	}
	cli.Fields(w, "Connection",
		"Connection string", conn,
		"Endpoint", endpoint,
		"DNS name", d.DNSName,
		"External IP", d.ExternalIP,
	)
	printServers(w, d)
	fmt.Fprintln(w)
	cli.Fields(w, "Orchestrations",
		"Create", d.CreateOrchestrationID,
		"Health actor", d.ActorOrchestrationID,
		"Delete", d.DeleteOrchestrationID,
	)
	fmt.Fprintln(w)
	deleted := ""
	if d.DeletedAt != nil {
		deleted = cli.FormatTime(*d.DeletedAt)
	}
	cli.Fields(w, "Timestamps",
		"Created", cli.FormatTime(d.CreatedAt)+" ("+cli.Ago(d.CreatedAt, now)+")",
		"Updated", cli.FormatTime(d.UpdatedAt),
		"Deleted", deleted,
	)
	if len(d.HealthChecks) > 0 {
		fmt.Fprintln(w)
		h := d.HealthChecks[0]
		healthy := 0
		for _, c := range d.HealthChecks {
			if c.Status == "healthy" {
				healthy++
			}
		}
		detail := fmt.Sprintf("%s, %dms", h.Status, h.ResponseTimeMs)
		if h.Error != "" {
			detail = h.Status + ": " + h.Error
		}
		cli.Fields(w, "Latest health check",
			"Result", detail,
			"Checked", cli.FormatTime(h.CheckedAt)+" ("+cli.Ago(h.CheckedAt, now)+")",
			"Server", shortVersion(h.PostgresVersion),
			"Recent checks", fmt.Sprintf("%d healthy of the last %d", healthy, len(d.HealthChecks)),
		)
	}
	if len(d.Events) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Recent events")
		n := min(len(d.Events), 10)
		for _, e := range d.Events[:n] {
			what := e.Message
			if e.Type == "state_change" {
				what = fmt.Sprintf("%s → %s", firstNonEmpty(e.OldState, "(new)"), e.NewState)
				if e.Message != "" {
					what += ": " + e.Message
				}
			}
			fmt.Fprintf(w, "  %s  %s\n", cli.FormatTime(e.CreatedAt), oneLine(what))
		}
	}
}

// shortVersion trims "PostgreSQL 15.18 (Debian …) on x86_64…" to
// "PostgreSQL 15.18".
func shortVersion(v string) string {
	f := strings.Fields(v)
	if len(f) >= 2 && f[0] == "PostgreSQL" {
		return f[0] + " " + f[1]
	}
	return v
}

// healthText is the health worth showing: only running instances are
// checked, so others show none.
func healthText(state, health string) string {
	if state != "running" {
		return ""
	}
	return health
}
