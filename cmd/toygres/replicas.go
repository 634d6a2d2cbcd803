package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/cli"
	"github.com/toygres/toygres/internal/orchestrations"
)

// ---- scale, failover, switchover ----

type operationOptions struct {
	wait    bool
	timeout time.Duration
	output  string
}

func (o *operationOptions) flags(cmd *cobra.Command, what string) {
	f := cmd.Flags()
	f.BoolVar(&o.wait, "wait", false, "wait until the "+what+" is done (exit status 1 if it fails)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "with --wait: how long to wait")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
}

func newScaleCmd(g *globals) *cobra.Command {
	o := &operationOptions{}
	var replicas int
	var sync bool
	cmd := &cobra.Command{
		Use:   "scale NAME --replicas N",
		Short: "Set the number of standby servers of an instance (0-2)",
		Long: `Set the number of standby servers of a running instance. Standbys are
base copies of the primary kept in streaming replication; with
--sync-replica one of them is synchronous (the primary waits for it at
commit, so a failover loses no acknowledged write). --replicas 0 removes
them. The read-write connection string keeps reaching the primary, also
after a failover; 'toygres get NAME' shows the read-only one.`,
		Example: `  toygres scale db1 --replicas 1 --sync-replica --wait
  toygres scale db1 --replicas 0`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(o.output); err != nil {
				return err
			}
			if !cmd.Flags().Changed("replicas") {
				return usagef("missing --replicas (usage: %s)", cmd.UseLine())
			}
			return runOperation(cmd.Context(), g, o, args[0], "scale", func(ctx context.Context, c *client.Client) (*client.OperationResponse, error) {
				return c.ScaleInstance(ctx, args[0], client.ScaleRequest{Replicas: replicas, SyncReplica: sync})
			})
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 0, "number of standby servers (0-2, required)")
	cmd.Flags().BoolVar(&sync, "sync-replica", false, "make one standby synchronous")
	o.flags(cmd, "scale")
	return cmd
}

func newFailoverCmd(g *globals, planned bool) *cobra.Command {
	o := &operationOptions{}
	use, what := "failover", "failover"
	short := "Promote a standby in place of the primary (the primary is fenced first)"
	long := `Promote a standby of the instance in place of its primary, whatever the
primary's state: the primary is fenced (stopped; it never accepts writes
again), the most advanced ready standby (the synchronous one first) is
promoted, the read-write connection string follows it, and the old
primary is rebuilt as a standby. Toygres starts failovers on its own when
the primary fails its health checks; this forces one.`
	if planned {
		use, what = "switchover", "switchover"
		short = "Hand the primary role to a standby, losing nothing (planned)"
		long = `Hand the primary role to a standby: the primary is stopped cleanly (its
standbys receive all its WAL), a streaming standby (the synchronous one
first) is promoted and the old primary is rebuilt as a standby. Clients
reconnect through the same read-write connection string.`
	}
	cmd := &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Long:  long,
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(o.output); err != nil {
				return err
			}
			return runOperation(cmd.Context(), g, o, args[0], what, func(ctx context.Context, c *client.Client) (*client.OperationResponse, error) {
				if planned {
					return c.Switchover(ctx, args[0])
				}
				return c.Failover(ctx, args[0])
			})
		},
	}
	o.flags(cmd, what)
	return cmd
}

func runOperation(ctx context.Context, g *globals, o *operationOptions, name, what string,
	start func(context.Context, *client.Client) (*client.OperationResponse, error)) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	op, err := start(ctx, c.API)
	if err != nil {
		return notFound(c.Explain(err), name)
	}
	if o.output == "json" && !o.wait {
		return cli.PrintJSON(g.stdout, op)
	}
	if o.output == "table" {
		if op.Started {
			fmt.Fprintf(g.stdout, "The %s of %q has started.\n", what, name)
		} else {
			fmt.Fprintf(g.stdout, "A failover or switchover of %q is running already.\n", name)
		}
		cli.Fields(g.stdout, "", "Orchestration", op.OrchestrationID)
		if !o.wait {
			fmt.Fprintf(g.stdout, "\nFollow it with:\n  toygres get %s\n  toygres server orchestration %s\n", name, op.OrchestrationID)
			return nil
		}
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	for {
		st, err := c.API.GetOrchestration(wctx, op.OrchestrationID, "")
		switch {
		case err != nil && wctx.Err() != nil:
			return fmt.Errorf("%s of %q: still not done after %v (it goes on; see 'toygres server orchestration %s')", what, name, o.timeout, op.OrchestrationID)
		case err != nil && cli.StatusOf(err) == http.StatusNotFound:
			// Queued: an orchestration exists once a dispatcher ran its
			// first turn.
		case err != nil:
			return c.Explain(err)
		case st.Status == "Completed":
			if o.output == "json" {
				return printDetailJSON(g, c, ctx, name)
			}
			fmt.Fprintf(g.stdout, "The %s of %q is done.\n", what, name)
			if d, _, err := getInstance(ctx, c, name); err == nil {
				printServers(g.stdout, d)
			}
			return nil
		case st.Status == "Failed" || st.Status == "Cancelled" || st.Status == "Terminated":
			msg := st.Status
			if st.Error != nil {
				msg = st.Error.Message
			}
			return fmt.Errorf("%s of %q failed: %s", what, name, msg)
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("%s of %q: still not done after %v (it goes on; see 'toygres server orchestration %s')", what, name, o.timeout, op.OrchestrationID)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// printServers prints an instance's standby configuration and servers
// (nothing for an instance that never had standbys).
func printServers(w io.Writer, d *api.InstanceDetail) {
	if d.Replicas == 0 && len(d.Servers) <= 1 && d.ReadOnlyConnectionString == "" {
		return
	}
	mode := "asynchronous"
	if d.SyncReplica {
		mode = "one synchronous"
	}
	fmt.Fprintln(w)
	cli.Fields(w, "Replicas",
		"Standbys", fmt.Sprintf("%d (%s)", d.Replicas, mode),
		"Read-only connection", d.ReadOnlyConnectionString,
		"Servers", d.ServersError,
	)
	if len(d.Servers) == 0 {
		return
	}
	t := cli.NewTable(w, "  SERVER", "ROLE", "ADDRESS", "READY", "SYNC", "STREAMING", "LAG", "TIMELINE", "MESSAGE")
	for _, s := range d.Servers {
		addr := ""
		if s.Host != "" {
			addr = s.Host + ":" + strconv.Itoa(s.Port)
		}
		lag := ""
		if s.Role == "standby" {
			lag = strconv.FormatInt(s.LagBytes, 10) + " B"
		}
		sync, streaming := "", ""
		if s.Role == "standby" {
			sync, streaming = yesNo(s.Sync), yesNo(s.Streaming)
		}
		t.Row("  "+s.ID, s.Role, addr, yesNo(s.Ready), sync, streaming, lag, strconv.Itoa(s.Timeline), oneLine(s.Message))
	}
	t.Flush()
}

// failoverFlags configure failure detection of instances with standbys
// (server start).
type failoverFlags struct {
	interval  time.Duration
	threshold int
}

func (f *failoverFlags) register(fs *pflag.FlagSet) {
	fs.DurationVar(&f.interval, "failover-check-interval", orchestrations.DefaultFailoverCheckInterval,
		"health check period of instances with standbys (their primary's failure is detected within about threshold × this)")
	fs.IntVar(&f.threshold, "failover-threshold", orchestrations.DefaultFailoverThreshold,
		"consecutive failed health checks of an instance's primary that start a failover to a standby")
}

func (f *failoverFlags) validate() error {
	if f.interval <= 0 {
		return usagef("--failover-check-interval must be positive")
	}
	if f.threshold < 1 {
		return usagef("--failover-threshold must be at least 1")
	}
	return nil
}

// args are the flags for the background server's command line.
func (f *failoverFlags) args() []string {
	return []string{"--failover-check-interval", f.interval.String(), "--failover-threshold", strconv.Itoa(f.threshold)}
}
