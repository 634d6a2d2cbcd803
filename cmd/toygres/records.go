package main

import (
	"context"
	"fmt"
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

// stateText is the state shown for an instance: its state, marked when its
// data-plane resources are broken.
func stateText(in *api.Instance) string {
	if in.Broken {
		return in.State + " (broken)"
	}
	return in.State
}

// noteText explains a broken or failed instance in a list, shortened.
func noteText(in *api.Instance) string {
	s := in.Problem
	if s == "" && in.State == "failed" {
		s = in.FailureReason
	}
	s = oneLine(s)
	if len(s) > 70 {
		s = s[:67] + "..."
	}
	return s
}

// ---- delete ----

func newDeleteCmd(g *globals) *cobra.Command {
	var wait, purge, purgeBackups bool
	var timeout time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an instance: stop its server and remove its data (returns at once unless --wait)",
		Long: `Delete the instance NAME: its server, data and stored password. Every record
of the name that is not deleted yet goes: the active instance and failed
ones (whose delete removes what their failed create left behind).

With --purge, wait until they are deleted, then remove the records of the
name's deleted and failed instances for good (see 'toygres purge').

The instance's backups and WAL archive stay until they expire (its backup
retention), so it can still be restored ('toygres restore NEW --from NAME');
--purge-backups removes them with it.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			return runDelete(cmd.Context(), g, args[0], wait || purge, purge, purgeBackups, timeout, output)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the instance is deleted")
	cmd.Flags().BoolVar(&purgeBackups, "purge-backups", false, "remove the instance's backups and WAL archive too")
	cmd.Flags().BoolVar(&purge, "purge", false, "wait, then remove the name's deleted and failed records for good")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait: how long to wait")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func runDelete(ctx context.Context, g *globals, name string, wait, purge, purgeBackups bool, timeout time.Duration, output string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	var ans client.DeleteResponse
	res, err := c.API.DeleteInstanceWithOptions(ctx, name, client.DeleteInstanceOptions{PurgeBackups: purgeBackups})
	if err == nil {
		ans = *res
	}
	err = c.Explain(err)
	if err != nil && !(purge && cli.StatusOf(err) == http.StatusNotFound) {
		return err // 404: "instance "x" not found or already deleted"
	}
	deleting := err == nil
	if output == "json" && !wait {
		return cli.PrintJSON(g.stdout, ans)
	}
	if deleting && output == "table" {
		if len(ans.Records) > 1 {
			fmt.Fprintf(g.stdout, "Instance %q is being deleted (%d records: %s).\n", name, len(ans.Records), recordList(ans.Records))
		} else {
			fmt.Fprintf(g.stdout, "Instance %q is being deleted.\n", name)
		}
		cli.Fields(g.stdout, "", "Internal name", ans.InternalName, "Orchestration", ans.DeleteOrchestrationID)
		if !wait {
			fmt.Fprintf(g.stdout, "\nFollow it with:\n  toygres get %s\n", name)
			return nil
		}
		fmt.Fprintln(g.stdout)
	}
	if deleting {
		if err := waitDeleted(ctx, g, c, name, ans.Records, timeout, output == "table"); err != nil {
			return err
		}
	}
	if !purge {
		if output == "json" {
			_, raw, err := getInstance(ctx, c, name)
			if err != nil {
				return err
			}
			return cli.PrintJSON(g.stdout, raw)
		}
		fmt.Fprintf(g.stdout, "Instance %q is deleted.\n", name)
		return nil
	}
	if deleting && output == "table" {
		fmt.Fprintf(g.stdout, "Instance %q is deleted.\n", name)
	}
	return runPurge(ctx, g, c, name, output)
}

func recordList(recs []api.DeletingRecord) string {
	parts := make([]string, len(recs))
	for i, r := range recs {
		parts[i] = r.InternalName + " (" + r.State + ")"
	}
	return strings.Join(parts, ", ")
}

// waitDeleted polls the name's records until every one of recs is deleted
// (or purged), failing when the delete orchestration of one fails.
func waitDeleted(ctx context.Context, g *globals, c *cli.Client, name string, recs []api.DeletingRecord, timeout time.Duration, progress bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, stop := signalContext(ctx)
	defer stop()
	tty := false
	if f, ok := g.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	start, last := time.Now(), ""
	defer func() {
		if tty && last != "" {
			fmt.Fprintln(g.stdout)
		}
	}()
	for {
		l, err := c.API.ListInstances(ctx, client.ListInstancesOptions{All: true, Name: name})
		if err != nil {
			if ctx.Err() != nil {
				return waitErr(ctx, name, timeout)
			}
			return c.Explain(err)
		}
		states := map[string]string{}
		for _, in := range l.Instances {
			states[in.InternalName] = in.State
		}
		done := 0
		for _, r := range recs {
			st, ok := states[r.InternalName]
			if !ok || st == "deleted" {
				done++
				continue
			}
			if o, err := c.API.GetOrchestration(ctx, r.DeleteOrchestrationID, ""); err == nil &&
				(o.Status == "Failed" || o.Status == "Cancelled") {
				return fmt.Errorf("deleting instance %q (%s) failed: %s", name, r.InternalName, deleteFailure(ctx, c, r.InternalName, name, o))
			}
		}
		if progress {
			line := "deleting"
			if len(recs) > 1 {
				line = fmt.Sprintf("deleting: %d of %d records deleted", done, len(recs))
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
		if done == len(recs) {
			return nil
		}
		select {
		case <-ctx.Done():
			return waitErr(ctx, name, timeout)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// deleteFailure is the reason a delete failed: the record's latest event
// (the delete orchestration records "delete failed: …"), else the
// orchestration's error.
func deleteFailure(ctx context.Context, c *cli.Client, internal, name string, o *api.OrchestrationDetail) string {
	if d, err := c.API.GetInstance(ctx, name, client.GetInstanceOptions{Events: 5, Checks: -1}); err == nil && d.InternalName == internal {
		for _, e := range d.Events {
			if strings.HasPrefix(e.Message, "delete failed") {
				return e.Message
			}
		}
	}
	if o.Error != nil && o.Error.Message != "" {
		return o.Error.Message
	}
	return "see 'toygres server orchestration " + o.ID + "'"
}

// ---- purge ----

func newPurgeCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "purge NAME",
		Short: "Remove the records of NAME's deleted and failed instances for good",
		Long: `Remove the records (with their events and health checks) of the deleted and
failed instances named NAME, once nothing of them is left on the data plane.
A failed instance that still has resources must be deleted first
('toygres delete NAME', or 'toygres delete NAME --purge' to do both).
An active instance of the name is not touched.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			return runPurge(cmd.Context(), g, c, args[0], output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func runPurge(ctx context.Context, g *globals, c *cli.Client, name, output string) error {
	res, err := c.API.PurgeInstance(ctx, name)
	if err != nil {
		return notFound(c.Explain(err), name)
	}
	if output == "json" {
		return cli.PrintJSON(g.stdout, res)
	}
	fmt.Fprintf(g.stdout, "Purged %d record(s) of %q: %s\n", len(res.Purged), name, strings.Join(res.Purged, ", "))
	for _, s := range res.Skipped {
		fmt.Fprintf(g.stdout, "  kept %s (%s): %s\n", s.InternalName, s.State, s.Reason)
	}
	return nil
}

// ---- repair ----

func newRepairCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "repair NAME",
		Short: "Take a broken instance's server over again (after fixing what broke it)",
		Long: `An instance is broken when its data-plane resources could not be taken over
(when the server started: missing or unreadable files, a server that does not
start). 'toygres get NAME' shows why. Fix the cause, then repair: the data
plane re-reads the instance and starts its server. If it cannot be repaired,
delete it.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			name := args[0]
			in, err := c.API.RepairInstance(cmd.Context(), name)
			if err != nil {
				return notFound(c.Explain(err), name)
			}
			if output == "json" {
				return cli.PrintJSON(g.stdout, in)
			}
			fmt.Fprintf(g.stdout, "Instance %q is repaired (state %s).\n", name, in.State)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
