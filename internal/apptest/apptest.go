// Package apptest helps tests run a real Toygres control plane: data
// directories that the account running local PostgreSQL instances can reach,
// and cleanup of instances that tests (or test binaries that died) left
// behind. It is imported by tests only.
package apptest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toygres/toygres/internal/dataplane/local"
)

const ownerFile = "owner.pid"

// Base is where test data directories go. When running as root the local
// driver runs PostgreSQL as the postgres account, which must be able to
// reach the instance directories, so they go under /tmp (mode 0755) rather
// than a 0700 t.TempDir().
func Base() string {
	if os.Geteuid() == 0 {
		return "/tmp"
	}
	return os.TempDir()
}

// CheckRunAs fails when running as root without the account local
// instances run as.
func CheckRunAs() error {
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		if _, err := user.Lookup(local.DefaultRunAs); err != nil {
			return fmt.Errorf("running as root needs the %s account (apt-get install -y postgresql creates it): %w", local.DefaultRunAs, err)
		}
	}
	return nil
}

// NewDataDir creates a data directory named prefix* under Base, readable by
// the instance account, and records this process as its owner so ReapStale
// can clean it up should this process die.
func NewDataDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp(Base(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// DeleteInstances stops and removes every local instance under dataDir and
// reports whether all of them are gone.
func DeleteInstances(dataDir string) bool {
	d, err := local.New(local.Options{Dir: filepath.Join(dataDir, "instances"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return false
	}
	entries, _ := os.ReadDir(d.Dir())
	clean := true
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := d.Delete(ctx, e.Name()); err != nil {
			clean = false
		}
		cancel()
	}
	return clean
}

// ReapStale removes data directories named prefix* whose owning test
// process is gone, stopping their PostgreSQL servers (detached, they would
// run forever).
func ReapStale(prefix string) {
	dirs, _ := filepath.Glob(filepath.Join(Base(), prefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) == nil || !strings.HasPrefix(filepath.Base(dir), prefix) {
			continue
		}
		if DeleteInstances(dir) {
			os.RemoveAll(dir)
		}
	}
}
