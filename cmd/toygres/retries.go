package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/cli"
	"github.com/toygres/toygres/internal/config"
)

// configDefaults are the settings configuration starts from: the
// activities' registered policies and data-plane breaker.
func configDefaults() config.Defaults {
	return config.Defaults{Retry: activities.DefaultPolicies(), Breaker: activities.DefaultDataPlaneBreaker}
}

// loadServerConfig reads --config and the TOYGRES_RETRY__/TOYGRES_BREAKER__
// environment into o.config; a value that cannot be used stops the start
// with its key and the reason.
func loadServerConfig(o *serverOptions) error {
	if o.configFile != "" {
		abs, err := filepath.Abs(o.configFile)
		if err != nil {
			return err
		}
		o.configFile = abs // a background server runs in the data dir
	}
	cfg, err := config.Load(o.configFile, os.Environ(), configDefaults())
	if err != nil {
		return err
	}
	o.config = cfg
	return nil
}

// dataPlaneBreakers are the data-plane activities' breakers when
// configuration changed them (nil: as registered).
func dataPlaneBreakers(cfg *config.Config) map[string]duroxide.CircuitBreakerConfig {
	if cfg == nil || cfg.Breaker.Source == config.SourceDefault {
		return nil
	}
	return activities.Breakers(cfg.Breaker.Config)
}

// printRetryConfig prints the retry section of `server config`.
func printRetryConfig(w io.Writer, sc *api.ServerConfig) {
	if len(sc.Retry) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Retry policies (default < file < env)")
	t := cli.NewTable(w, "  ACTIVITY", "POLICY", "SOURCE")
	for _, p := range sc.Retry {
		t.Row("  "+p.Activity, p.Summary, sourceText(p.Source, p.Fields))
	}
	_ = t.Flush()
	if b := sc.CircuitBreaker; b != nil {
		fmt.Fprintln(w)
		cli.Fields(w, "Data-plane circuit breaker ("+sourceText(b.Source, b.Fields)+")",
			"Opens at", fmt.Sprintf("%s failed of at least %d calls in %s", pct(b.FailureRatio), b.MinCalls, b.Window),
			"Cool-down", b.CoolDown,
			"Probes", strconv.Itoa(b.Probes),
			"Activities", strings.Join(b.Activities, ", "),
		)
	}
}

func sourceText(src string, fields map[string]string) string {
	if len(fields) == 0 {
		return src
	}
	by := map[string][]string{}
	for f, s := range fields {
		by[s] = append(by[s], f)
	}
	var parts []string
	for _, s := range []string{"env", "file"} {
		if fs := by[s]; len(fs) > 0 {
			slices.Sort(fs)
			parts = append(parts, s+": "+strings.Join(fs, ","))
		}
	}
	return src + " (" + strings.Join(parts, "; ") + ")"
}

func pct(f float64) string { return strconv.FormatFloat(f*100, 'g', 3, 64) + "%" }

// ---- server retries ----

func newServerRetriesCmd(g *globals) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:   "retries",
		Short: "Show the retry tuning report: per activity its policy, which attempt sequences succeed on, time to success, exhausted sequences, timeouts, circuit state and advice",
		Long: `Show what the server observed of its activities' retry sequences since it
started: per activity the default policy in force, how many sequences
succeeded on attempt 1, 2, …, the time to success (mean, p50, p95),
sequences that exhausted their attempts or failed early, timed-out
attempts, the state of its circuit breakers, and advice for tuning the
policy (duroxide.Suggest). Activities without sequences yet are left out
unless --all. Policies are set with 'server start --config' and
TOYGRES_RETRY__<ACTIVITY>__<FIELD> (see 'toygres server config').`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.outputClient(output)
			if err != nil {
				return err
			}
			rep, err := getView[api.ServerRetries](cmd.Context(), g, c, "/api/server/retries", output, "retries")
			if rep == nil {
				return err
			}
			printRetries(g.stdout, rep, all)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&all, "all", false, "also list activities without retry sequences yet")
	return cmd
}

func printRetries(w io.Writer, rep *api.ServerRetries, all bool) {
	shown := 0
	for _, a := range rep.Activities {
		if a.Sequences == 0 && len(a.Circuits) == 0 && !all {
			continue
		}
		shown++
		policy := "-"
		if a.Policy != nil {
			policy = a.Policy.Summary + " [" + a.Policy.Source + "]"
		}
		dist := make([]string, 0, len(a.SuccessByAttempt))
		for _, s := range a.SuccessByAttempt {
			dist = append(dist, fmt.Sprintf("#%d: %d", s.Attempt, s.Sequences))
		}
		circuit := "-"
		if len(a.Circuits) > 0 {
			var cs []string
			for _, c := range a.Circuits {
				s := c.State
				if c.Key != "" {
					s = c.Key + " " + s
				}
				cs = append(cs, s)
			}
			circuit = strings.Join(cs, ", ")
		}
		tts := "-"
		if d := a.TimeToSuccess; d.Count > 0 {
			tts = fmt.Sprintf("mean %s, p50 %s, p95 %s, max %s (%d)", d.Mean, d.P50, d.P95, d.Max, d.Count)
		}
		fmt.Fprintln(w, a.Activity)
		cli.Fields(w, "",
			"Policy", policy,
			"Sequences", fmt.Sprintf("%d: %d succeeded, %d exhausted, %d failed early", a.Sequences, a.Succeeded, a.Exhausted, a.FailedEarly),
			"Succeeded on attempt", orDash(strings.Join(dist, ", ")),
			"Time to success", tts,
			"Attempts", fmt.Sprintf("%d: %d failed, %d timed out", a.Attempts, a.Failures, a.Timeouts),
			"Circuit", circuit,
		)
		for _, adv := range a.Advice {
			fmt.Fprintf(w, "  advice: %s\n", adv)
		}
		fmt.Fprintln(w)
	}
	if shown == 0 {
		fmt.Fprintln(w, "No retry sequences observed yet.")
	}
	fmt.Fprintf(w, "As of %s (since the server started)\n", cli.FormatTime(rep.GeneratedAt))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
