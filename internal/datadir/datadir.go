// Package datadir is the one answer to "where does Toygres keep its data by
// default": the server's data directory (database, secret key, logs,
// credentials) and, under it, the local data plane's instances.
package datadir

import (
	"os"
	"path/filepath"
)

// Root is the default data directory when running as root: a directory the
// unprivileged accounts that run local PostgreSQL servers can traverse
// (they cannot enter /root).
const Root = "/var/lib/toygres"

// Env names the environment variable that overrides the default.
const Env = "TOYGRES_HOME"

// Default is $TOYGRES_HOME, or Root for root, or ~/.toygres.
func Default() string {
	if d := os.Getenv(Env); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return Root
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".toygres")
	}
	return ".toygres"
}

// Instances is where the local data plane keeps instances under dir.
func Instances(dir string) string { return filepath.Join(dir, "instances") }
