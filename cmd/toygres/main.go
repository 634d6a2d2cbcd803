// Command toygres is Toygres' one binary: the control-plane server (REST
// API, durable orchestrations, health actors) and the command line that
// talks to it.
//
//	toygres server start [-f]        start the server (background by default)
//	toygres create NAME --password P start creating a PostgreSQL instance
//	toygres get NAME | list [--all] | delete NAME [--purge] | purge NAME | repair NAME
//	toygres server status | stop | logs
//	toygres server orchestrations | orchestration ID | cancel ID | recreate ID
//	toygres server raise-event ID NAME [DATA] | stats | workers | config | env
//
// Files in the data dir (--data-dir, $TOYGRES_HOME, default /var/lib/toygres
// for root, else ~/.toygres): server.pid, server.log (JSON records, see
// internal/logging), server.lock (held by the running server),
// credentials.json (0600: the server's URL and a bearer token the local CLI
// uses, rewritten at every start and daily, removed on stop) and, after the
// first background start, initial-admin-password (0600: the generated admin
// password, printed once by `server start` and deleted; it is never written
// to the log), and for HTTPS without --tls-cert, tls/cert.pem and
// tls/key.pem (0600: the self-signed certificate; its fingerprint is in
// credentials.json).
//
// The CLI's token comes from --token/$TOYGRES_TOKEN, else the token saved by
// `toygres login` (~/.config/toygres/token.json, 0600), else the server's
// credentials.json (see internal/cli).
//
// Exit status: 0 on success, 2 for usage errors and input the server
// rejected (HTTP 400), 3 from `server status` when no server runs, 1 for
// every other error. Errors are one line on stderr: "toygres: <message>".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/toygres/toygres/internal/cli"
	"github.com/toygres/toygres/internal/datadir"
)

// version is the build's version (set with -ldflags "-X main.version=…").
var version = "0.1.0-dev"

// Exit statuses.
const (
	exitError      = 1
	exitUsage      = 2
	exitNotRunning = 3
)

// usageError is a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCodeError ends the program with a given status after printing its
// message (when it has one).
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

// globals are the flags every command has.
type globals struct {
	dataDir string
	url     string
	token   string
	// fingerprint pins the server's TLS certificate (--fingerprint).
	fingerprint string
	stdout      io.Writer
	stderr      io.Writer
	stdin       io.Reader
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &globals{stdout: stdout, stderr: stderr, stdin: stdin}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	setCompletions(root, g) // after SetOut: cobra's completion command keeps the writer
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := exitError
	msg := err.Error()
	var ue *usageError
	var ec *exitCodeError
	switch {
	case errors.As(err, &ec):
		code = ec.code
	case errors.As(err, &ue):
		code = exitUsage
	case cli.StatusOf(err) == 400:
		code = exitUsage
	case isCobraUsageError(msg):
		code = exitUsage
		if !strings.Contains(msg, "--help") {
			msg += " (see 'toygres --help')"
		}
	case errors.Is(err, context.Canceled):
		msg = "interrupted"
		code = 130
	}
	if msg != "" {
		fmt.Fprintf(stderr, "toygres: %s\n", oneLine(msg))
	}
	return code
}

// isCobraUsageError recognises the errors cobra itself returns for a bad
// command line (unknown commands and flags, wrong argument counts).
func isCobraUsageError(msg string) bool {
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "requires at most", "required flag", "bad flag syntax",
		"if any flags in the group"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "toygres",
		Short: "PostgreSQL instances as a service, run by durable workflows",
		Long: `Toygres creates, monitors and deletes PostgreSQL instances through durable
orchestrations. One binary is both the server and the command line.

Start a server, then create an instance (no login is needed on the machine
that runs the server: the CLI reads the server's credentials.json):

  toygres server start
  toygres create test-retry --password test123
  toygres get test-retry`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		// A bare `toygres` prints help; unknown words are usage errors.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q (see 'toygres --help')", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%v (see '%s --help')", err, cmd.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.dataDir, "data-dir", datadir.Default(), "server data directory: database, instances, log, PID and credentials.json (env TOYGRES_HOME)")
	pf.StringVar(&g.url, "url", firstEnv("TOYGRES_URL", "TOYGRES_API_URL"), "server URL (env TOYGRES_URL; default: from the credentials, else "+cli.DefaultURL+")")
	pf.StringVar(&g.token, "token", "", "bearer token (env TOYGRES_TOKEN; default: the token saved by 'toygres login', else the server's credentials.json)")
	pf.StringVar(&g.fingerprint, "fingerprint", os.Getenv("TOYGRES_TLS_FINGERPRINT"), "accept exactly the server TLS certificate with this SHA-256 fingerprint (SHA256:…, as 'toygres server start' prints it) (env TOYGRES_TLS_FINGERPRINT; default: the one saved by 'toygres login' or in the server's credentials.json, else the system's CAs)")

	root.AddCommand(newBackupCmd(g), newRestoreCmd(g))
	root.AddCommand(newScaleCmd(g), newFailoverCmd(g, false), newFailoverCmd(g, true))
	root.AddCommand(withAdminCommands(g, newServerCmd(g)), newCreateCmd(g), newDeleteCmd(g), newListCmd(g), newGetCmd(g),
		newPurgeCmd(g), newRepairCmd(g),
		newLoginCmd(g), newLogoutCmd(g), newVersionCmd(g))
	return root
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// exactArgs requires exactly the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usagef("missing %s argument (usage: %s)", strings.Join(names[len(args):], " "), cmd.UseLine())
		}
		if len(args) > len(names) {
			return usagef("unexpected argument %q (usage: %s)", args[len(names)], cmd.UseLine())
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q (usage: %s)", args[0], cmd.UseLine())
	}
	return nil
}

// client resolves the credentials and returns an API client.
// getView GETs an API path for a read-only command. With -o json it prints
// the server's JSON unchanged and returns nil; otherwise it decodes the body
// (what names it in errors) for the command's table view.
func getView[T any](ctx context.Context, g *globals, c *cli.Client, path, output, what string) (*T, error) {
	var raw json.RawMessage
	if err := c.Get(ctx, path, &raw); err != nil {
		return nil, err
	}
	if output == "json" {
		return nil, cli.PrintJSON(g.stdout, raw)
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", what, err)
	}
	return v, nil
}

// outputClient checks an -o value (table or json: a usage error otherwise)
// and returns the API client, the start of every command that prints.
func (g *globals) outputClient(output string) (*cli.Client, error) {
	if err := validOutput(output); err != nil {
		return nil, err
	}
	return g.client()
}

func (g *globals) client() (*cli.Client, error) {
	token := g.token
	if token == "" {
		token = os.Getenv("TOYGRES_TOKEN")
	}
	creds, err := cli.Resolve(cli.ResolveOptions{URL: g.url, Token: token, DataDir: g.dataDir})
	c, perr := g.newClient(creds.URL, creds.Token, creds.Fingerprint, creds.Source)
	if perr != nil {
		return nil, perr
	}
	c.TokenSource = creds.Source
	if errors.Is(err, cli.ErrNoCredentials) {
		// Without a token the API answers 401; say why before calling it.
		// A server that is not running at all is the likelier cause.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, herr := c.Health(ctx); herr != nil {
			var ue *cli.UnreachableError
			if errors.As(herr, &ue) {
				return nil, herr
			}
		}
		return nil, fmt.Errorf("not logged in to %s: %v; start the server on this machine with 'toygres server start' (its %s gives the CLI a token), or run 'toygres login'",
			creds.URL, err, cli.ServerCredentialsPath(g.dataDir))
	}
	return c, err
}

// newClient returns an API client for url that pins the server's TLS
// certificate: --fingerprint when given, else fingerprint (from source).
func (g *globals) newClient(url, token, fingerprint, source string) (*cli.Client, error) {
	c := cli.NewClient(url, token)
	if g.fingerprint != "" {
		fingerprint, source = g.fingerprint, "--fingerprint"
	}
	if err := c.Pin(fingerprint, source); err != nil {
		return nil, usagef("%v", err)
	}
	return c, nil
}

// localServerPin is the certificate fingerprint of the server on this
// machine when url is its URL (from its credentials.json), else "".
func (g *globals) localServerPin(url string) (fingerprint, source string) {
	path := cli.ServerCredentialsPath(g.dataDir)
	if c, err := cli.ReadCredentials(path); err == nil && cli.NormalizeURL(c.URL) == cli.NormalizeURL(url) {
		return c.Fingerprint, path
	}
	return "", ""
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(g.stdout, "toygres %s\n", version)
			return nil
		},
	}
}
