package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/cli"
)

func newBackupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Take, list and delete base backups of instances",
		Long: `Every instance archives its write-ahead log continuously and takes a
verified base backup on a schedule (daily by default, the first when it is
created); together they let 'toygres restore' make a new instance as of any
moment of the retention window (7 days by default). See "Backups" in the README.`,
	}
	cmd.AddCommand(newBackupCreateCmd(g), newBackupListCmd(g), newBackupDeleteCmd(g), newBackupSettingsCmd(g))
	return cmd
}

func newBackupCreateCmd(g *globals) *cobra.Command {
	var wait bool
	var timeout time.Duration
	var output string
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Take a base backup of a running instance now (returns at once unless --wait)",
		Example: "  toygres backup create db1 --wait",
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			b, err := c.API.CreateBackup(ctx, args[0])
			if err != nil {
				return notFound(c.Explain(err), args[0])
			}
			if wait {
				if b, err = waitBackup(ctx, c, b.ID, timeout); err != nil {
					return err
				}
			}
			if output == "json" {
				return cli.PrintJSON(g.stdout, b)
			}
			printBackup(g, b)
			if b.State == client.BackupFailed {
				return fmt.Errorf("backup %s failed: %s", b.ID, b.Error)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the backup is verified (exit status 1 if it fails)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "with --wait: how long to wait")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// waitBackup polls a backup until it is completed or failed.
func waitBackup(ctx context.Context, c *cli.Client, id string, timeout time.Duration) (*client.Backup, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, stop := signalContext(ctx)
	defer stop()
	b, err := c.API.WaitForBackup(ctx, id, 500*time.Millisecond)
	return b, c.Explain(err)
}

func printBackup(g *globals, b *client.Backup) {
	fields := []string{"Backup", b.ID, "Instance", b.Instance, "Kind", b.Kind, "State", b.State}
	if b.FinishedAt != nil && b.State == "completed" {
		fields = append(fields, "Finished", b.FinishedAt.Local().Format(time.RFC3339), "Size", cli.Bytes(b.SizeBytes),
			"Duration", (time.Duration(b.DurationMs) * time.Millisecond).String())
	}
	if b.Error != "" {
		fields = append(fields, "Error", b.Error)
	}
	cli.Fields(g.stdout, "", fields...)
}

func newBackupListCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list [NAME]",
		Short: "List base backups (of every instance, or of those named NAME, deleted ones included)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var out client.InstanceBackups
			name := ""
			if len(args) == 1 {
				name = args[0]
				ib, err := c.API.InstanceBackups(ctx, name)
				if err != nil {
					return notFound(c.Explain(err), name)
				}
				out = *ib
			}
			all, err := c.API.ListBackups(ctx, name) // earlier instances of the name too
			if err != nil {
				return c.Explain(err)
			}
			out.Backups = all.Backups
			if output == "json" {
				return cli.PrintJSON(g.stdout, out)
			}
			if len(args) == 1 {
				win := "none (no verified backup)"
				if out.Window.Earliest != nil && out.Window.Latest != nil {
					win = out.Window.Earliest.Local().Format(time.RFC3339) + " to " + out.Window.Latest.Local().Format(time.RFC3339)
				}
				cli.Fields(g.stdout, "", "Instance", out.Instance, "Restore window", win,
					"Schedule", fmt.Sprintf("every %s, kept %s, enabled %t", out.Settings.Interval, out.Settings.Retention, out.Settings.Enabled))
				fmt.Fprintln(g.stdout)
			}
			t := cli.NewTable(g.stdout, "ID", "INSTANCE", "KIND", "STATE", "FINISHED", "SIZE", "DURATION")
			for _, b := range out.Backups {
				fin := ""
				if b.FinishedAt != nil {
					fin = b.FinishedAt.Local().Format(time.RFC3339)
				}
				t.Row(b.ID, b.Instance, b.Kind, b.State, fin, cli.Bytes(b.SizeBytes), (time.Duration(b.DurationMs) * time.Millisecond).String())
			}
			return t.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newBackupDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a base backup",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			b, err := c.API.DeleteBackup(cmd.Context(), args[0])
			if err != nil {
				if errors.Is(err, client.ErrNotFound) {
					return fmt.Errorf("backup %q not found", args[0])
				}
				return c.Explain(err)
			}
			fmt.Fprintf(g.stdout, "Backup %s of %q is being deleted.\n", b.ID, b.Instance)
			return nil
		},
	}
}

func newBackupSettingsCmd(g *globals) *cobra.Command {
	var every, keep string
	var enable, disable bool
	cmd := &cobra.Command{
		Use:     "settings NAME [--every DURATION] [--retention DURATION] [--enable|--disable]",
		Short:   "Show or change an instance's backup schedule and retention",
		Example: "  toygres backup settings db1 --every 6h --retention 72h",
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if enable && disable {
				return usagef("--enable and --disable are exclusive")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req := client.BackupSettingsRequest{Interval: every, Retention: keep}
			if enable || disable {
				req.Enabled = &enable
			}
			s, err := c.API.SetBackupSettings(cmd.Context(), args[0], req)
			if err != nil {
				return notFound(c.Explain(err), args[0])
			}
			cli.Fields(g.stdout, "", "Enabled", fmt.Sprint(s.Enabled), "Every", s.Interval, "Retention", s.Retention)
			return nil
		},
	}
	cmd.Flags().StringVar(&every, "every", "", "interval between scheduled base backups (e.g. 24h)")
	cmd.Flags().StringVar(&keep, "retention", "", "how long backups and WAL are kept (e.g. 168h)")
	cmd.Flags().BoolVar(&enable, "enable", false, "turn archiving and scheduled backups on")
	cmd.Flags().BoolVar(&disable, "disable", false, "turn archiving and scheduled backups off")
	return cmd
}

func newRestoreCmd(g *globals) *cobra.Command {
	var from, at, backupID, password string
	var wait, internal bool
	var timeout time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "restore NEW --from NAME [--at TIME | --backup ID]",
		Short: "Restore an instance's backups into a new instance (point in time)",
		Long: `Make the new instance NEW from the base backups and WAL archive of the
instance NAME (which may have been deleted, within its retention window):

  --at TIME     as of TIME (RFC 3339, e.g. 2025-01-02T15:04:05Z); the newest
                backup that finished before it is used
  --backup ID   as of the end of backup ID (with --at: start from that backup)
  neither       as far as the archive goes

The new instance runs under its own account with its own backups. Its user's
password is --password, or else the source's while Toygres still holds it.`,
		Example: `  toygres restore db1-copy --from db1 --at 2025-01-02T15:04:05Z --wait
  toygres restore db1-old --from db1 --backup m20250102t120000-1a2b3c4d`,
		Args: exactArgs("NEW"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			if from == "" {
				return usagef("missing --from (the instance to restore; usage: %s)", cmd.UseLine())
			}
			req := client.RestoreRequest{Name: args[0], From: from, BackupID: backupID, Password: password, Internal: internal}
			if at != "" {
				t, err := time.Parse(time.RFC3339Nano, at)
				if err != nil {
					return usagef("invalid --at %q: want RFC 3339, e.g. 2025-01-02T15:04:05Z", at)
				}
				req.At = &t
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			in, err := c.API.Restore(ctx, req)
			if err != nil {
				return c.Explain(err)
			}
			ans := instanceAnswer{Instance: *in}
			name := args[0]
			if !wait {
				if output == "json" {
					return cli.PrintJSON(g.stdout, ans)
				}
				fmt.Fprintf(g.stdout, "Instance %q is being restored from %q.\n", name, from)
				cli.Fields(g.stdout, "", "Internal name", ans.InternalName, "Orchestration", ans.CreateOrchestrationID)
				fmt.Fprintf(g.stdout, "\nFollow it with:\n  toygres get %s\n", name)
				return nil
			}
			d, err := waitFor(ctx, g, c, name, ans.CreateOrchestrationID, timeout, output == "table", func(d *api.InstanceDetail) (bool, error) {
				switch d.State {
				case "running":
					return true, nil
				case "failed", "deleting", "deleted":
					return true, fmt.Errorf("restore of %q failed: %s", name, strings.TrimSpace(failureText(d)))
				}
				return false, nil
			})
			if err != nil {
				return err
			}
			if output == "json" {
				return printDetailJSON(g, c, ctx, name)
			}
			fmt.Fprintf(g.stdout, "Instance %q is restored and running.\n", name)
			cli.Fields(g.stdout, "", "Connection", d.ConnectionString)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the instance to restore (required; may be deleted)")
	f.StringVar(&at, "at", "", "restore to this moment (RFC 3339)")
	f.StringVar(&backupID, "backup", "", "restore from this backup")
	f.StringVarP(&password, "password", "p", "", "password of the new instance's user (default: the source's)")
	f.BoolVar(&internal, "internal", false, "reachable only from inside the platform")
	f.BoolVar(&wait, "wait", false, "wait until the restored instance runs")
	f.DurationVar(&timeout, "timeout", 30*time.Minute, "with --wait: how long to wait")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
