package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/toygres/toygres/internal/cli"
)

func newLoginCmd(g *globals) *cobra.Command {
	var username string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in to a Toygres server and save the token (0600) for later commands",
		Long: `Log in with the admin account and save the bearer token in
~/.config/toygres/token.json (mode 0600). Later commands use it before the
local server's credentials.json. On the machine that runs the server no
login is needed.

The password is prompted for without echo, or read from stdin with
--password-stdin.

HTTPS. A server listening beyond loopback speaks HTTPS. With a certificate
from a CA this machine trusts, nothing more is needed. With the server's
self-signed certificate, pass its fingerprint, which 'toygres server start'
prints (and keeps in the server's credentials.json and server log):
--fingerprint SHA256:…. The fingerprint is saved with the token, and later
commands accept exactly that certificate: a server presenting another one
is refused. There is no silent trust on first use: without --fingerprint,
an untrusted certificate is refused with its fingerprint in the message,
to compare with the one the server printed before passing it.`,
		Example: `  toygres login --url http://127.0.0.1:8080
  toygres login --url https://toygres.example:8080 --fingerprint SHA256:5f1c…
  echo "$PW" | toygres login --url https://10.0.0.5:8080 --fingerprint SHA256:5f1c… --password-stdin`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			url := cli.NormalizeURL(g.url)
			if url == "" {
				url = cli.DefaultURL
				if c, err := cli.ReadCredentials(cli.ServerCredentialsPath(g.dataDir)); err == nil {
					url = cli.NormalizeURL(c.URL)
				}
			}
			var pw string
			if passwordStdin {
				p, err := readPasswordLine(g.stdin)
				if err != nil {
					return err
				}
				pw = p
			} else {
				f, ok := g.stdin.(*os.File)
				if !ok || !term.IsTerminal(int(f.Fd())) {
					return usagef("no terminal to prompt for the password; use --password-stdin")
				}
				fmt.Fprintf(g.stderr, "Password for %s at %s: ", username, url)
				b, err := term.ReadPassword(int(f.Fd()))
				fmt.Fprintln(g.stderr)
				if err != nil {
					return fmt.Errorf("read password: %w", err)
				}
				pw = string(b)
			}
			if pw == "" {
				return usagef("empty password")
			}
			fp, src := g.localServerPin(url)
			c, err := g.newClient(url, "", fp, src)
			if err != nil {
				return err
			}
			ans, err := c.API.Login(cmd.Context(), username, pw)
			if err != nil {
				err = c.Explain(err)
				if cli.StatusOf(err) == http.StatusUnauthorized {
					return errors.New("login failed: wrong user name or password")
				}
				return err
			}
			path, err := cli.UserTokenPath()
			if err != nil {
				return err
			}
			if err := cli.WriteCredentials(path, &cli.Credentials{URL: url, Token: ans.Token, ExpiresAt: ans.ExpiresAt, Username: username,
				Fingerprint: c.Fingerprint}); err != nil {
				return fmt.Errorf("save token: %w", err)
			}
			fmt.Fprintf(g.stdout, "Logged in to %s as %s; token saved in %s", url, username, path)
			if c.Fingerprint != "" {
				fmt.Fprintf(g.stdout, " (TLS certificate pinned: %s)", c.Fingerprint)
			}
			if !ans.ExpiresAt.IsZero() {
				fmt.Fprintf(g.stdout, " (expires %s)", cli.FormatTime(ans.ExpiresAt))
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	cmd.Flags().StringVarP(&username, "username", "u", firstNonEmpty(os.Getenv("TOYGRES_ADMIN_USERNAME"), "admin"), "user name")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	return cmd
}

func newLogoutCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Forget the token saved by 'toygres login'",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := cli.UserTokenPath()
			if err != nil {
				return err
			}
			if c, err := cli.ReadCredentials(path); err == nil {
				// Best effort: end the session on the server too.
				if lc, err := g.newClient(c.URL, c.Token, c.Fingerprint, path); err == nil {
					_ = lc.API.Logout(cmd.Context())
				}
			}
			if err := os.Remove(path); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					fmt.Fprintln(g.stdout, "Not logged in")
					return nil
				}
				return err
			}
			fmt.Fprintln(g.stdout, "Logged out; removed "+path)
			return nil
		},
	}
}
