package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/toygres/toygres/internal/api"
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
--password-stdin.`,
		Example: `  toygres login --url http://toygres.example:8080
  echo "$PW" | toygres login --url http://10.0.0.5:8080 --password-stdin`,
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
			c := cli.NewClient(url, "")
			var ans api.LoginResponse
			err := c.Do(cmd.Context(), http.MethodPost, "/api/login", api.LoginRequest{Username: username, Password: pw}, &ans)
			if err != nil {
				if cli.StatusOf(err) == http.StatusUnauthorized {
					return errors.New("login failed: wrong user name or password")
				}
				return err
			}
			path, err := cli.UserTokenPath()
			if err != nil {
				return err
			}
			if err := cli.WriteCredentials(path, &cli.Credentials{URL: url, Token: ans.Token, ExpiresAt: ans.ExpiresAt, Username: username}); err != nil {
				return fmt.Errorf("save token: %w", err)
			}
			fmt.Fprintf(g.stdout, "Logged in to %s as %s; token saved in %s", url, username, path)
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
				_ = cli.NewClient(c.URL, c.Token).Do(cmd.Context(), http.MethodPost, "/api/logout", nil, nil)
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
