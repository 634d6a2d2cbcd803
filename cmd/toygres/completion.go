package main

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/toygres/toygres/client"
)

// Shell completion: cobra's `toygres completion bash|zsh|fish|powershell`
// prints the script; the NAME and ID arguments below are completed from
// the server (the same URL, token and pin as any command), quietly giving
// nothing when the server cannot be asked.

// completionTimeout bounds the server call behind one <TAB>.
const completionTimeout = 3 * time.Second

// setCompletions gives the commands that take an instance name or an
// orchestration id their completion functions.
func setCompletions(root *cobra.Command, g *globals) {
	root.InitDefaultCompletionCmd()
	for _, cmd := range root.Commands() {
		switch cmd.Name() {
		case "completion":
			// Without this an unknown shell prints the help and exits 0.
			cmd.Args = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usagef("unknown shell %q (want bash, zsh, fish or powershell)", args[0])
				}
				return nil
			}
			cmd.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
		case "get", "delete", "repair", "scale", "failover", "switchover":
			cmd.ValidArgsFunction = completeInstances(g, false)
		case "purge":
			// Purge works on failed and deleted records.
			cmd.ValidArgsFunction = completeInstances(g, true)
		case "backup":
			for _, sub := range cmd.Commands() {
				switch sub.Name() {
				case "create", "settings":
					sub.ValidArgsFunction = completeInstances(g, false)
				case "list":
					sub.ValidArgsFunction = completeInstances(g, true)
				case "delete":
					sub.ValidArgsFunction = completeBackups(g)
				}
			}
		case "restore":
			// The source may be deleted; NEW is a new name (nothing to offer).
			cmd.ValidArgsFunction = cobra.NoFileCompletions
			from := completeInstances(g, true)
			_ = cmd.RegisterFlagCompletionFunc("from", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return from(cmd, nil, toComplete)
			})
			_ = cmd.RegisterFlagCompletionFunc("backup", completeBackups(g))
		case "server":
			for _, sub := range cmd.Commands() {
				switch sub.Name() {
				case "orchestration", "cancel", "recreate", "raise-event":
					sub.ValidArgsFunction = completeOrchestrations(g)
				}
			}
		}
	}
}

// completeInstances completes the first argument with instance names (live
// ones, or every record's with all), each described by its state.
func completeInstances(g *globals, all bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return ask(g, func(ctx context.Context, api *client.Client) ([]cobra.Completion, error) {
			l, err := api.ListInstances(ctx, client.ListInstancesOptions{All: all})
			if err != nil {
				return nil, err
			}
			seen := map[string]bool{}
			var out []cobra.Completion
			for _, in := range l.Instances { // newest first: a name's newest state
				if seen[in.Name] || !strings.HasPrefix(in.Name, toComplete) {
					continue
				}
				seen[in.Name] = true
				out = append(out, cobra.CompletionWithDesc(in.Name, in.State))
			}
			sort.Strings(out)
			return out, nil
		})
	}
}

// completeOrchestrations completes the first argument with orchestration
// ids (the newest 200 matching the typed prefix), described by status.
func completeOrchestrations(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return ask(g, func(ctx context.Context, api *client.Client) ([]cobra.Completion, error) {
			l, err := api.ListOrchestrations(ctx, client.ListOrchestrationsOptions{Prefix: toComplete, Limit: 200})
			if err != nil {
				return nil, err
			}
			out := make([]cobra.Completion, 0, len(l.Orchestrations))
			for _, o := range l.Orchestrations {
				out = append(out, cobra.CompletionWithDesc(o.ID, o.Status+" "+o.Name))
			}
			return out, nil
		})
	}
}

// completeBackups completes a backup id (of the --from instance when that
// flag is set), described by its instance and state.
func completeBackups(g *globals) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if cmd.Flags().Lookup("from") == nil && len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		name := ""
		if f := cmd.Flags().Lookup("from"); f != nil {
			name = f.Value.String()
		}
		return ask(g, func(ctx context.Context, api *client.Client) ([]cobra.Completion, error) {
			l, err := api.ListBackups(ctx, name)
			if err != nil {
				return nil, err
			}
			var out []cobra.Completion
			for _, b := range l.Backups {
				if strings.HasPrefix(b.ID, toComplete) {
					out = append(out, cobra.CompletionWithDesc(b.ID, b.Instance+" "+b.State))
				}
			}
			return out, nil
		})
	}
}

// ask runs one completion query against the server, bounded by
// completionTimeout; any failure completes nothing (and says so to the
// shell) rather than printing an error into the command line.
func ask(g *globals, query func(ctx context.Context, api *client.Client) ([]cobra.Completion, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	c, err := g.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	out, err := query(ctx, c.API)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
