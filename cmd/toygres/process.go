package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Files of a server in its data dir.
const (
	pidFileName      = "server.pid"
	logFileName      = "server.log"
	lockFileName     = "server.lock"
	passwordFileName = "initial-admin-password" // one-time, see writeInitialPassword
)

func pidPath(dataDir string) string  { return filepath.Join(dataDir, pidFileName) }
func logPath(dataDir string) string  { return filepath.Join(dataDir, logFileName) }
func lockPath(dataDir string) string { return filepath.Join(dataDir, lockFileName) }
func initialPasswordPath(dataDir string) string {
	return filepath.Join(dataDir, passwordFileName)
}

// readPID returns the PID in the PID file (0 if there is none).
func readPID(dataDir string) (int, error) {
	b, err := os.ReadFile(pidPath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("PID file %s holds no PID", pidPath(dataDir))
	}
	return pid, nil
}

func writePID(dataDir string, pid int) error {
	tmp := pidPath(dataDir) + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, pidPath(dataDir))
}

// removePIDIfOwn removes the PID file when it names pid.
func removePIDIfOwn(dataDir string, pid int) {
	if cur, err := readPID(dataDir); err == nil && cur == pid {
		_ = os.Remove(pidPath(dataDir))
	}
}

// alive reports whether a process exists and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A zombie (exited, not yet reaped) answers signal 0 too.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
	}
	return true
}

// isToygresServer reports whether a live process looks like a Toygres
// server (so a stale PID file reused by another process is not signalled).
// Where /proc is missing it trusts the PID file.
func isToygresServer(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return alive(pid)
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	hasServer, hasStart := false, false
	for _, a := range args {
		switch a {
		case "server":
			hasServer = true
		case "start":
			hasStart = true
		}
	}
	return hasServer && hasStart
}

// runningServer returns the PID of the live server of a data dir (0 if
// none); a stale PID file is removed.
func runningServer(dataDir string) (int, error) {
	pid, err := readPID(dataDir)
	if err != nil || pid == 0 {
		return 0, err
	}
	if alive(pid) && isToygresServer(pid) {
		return pid, nil
	}
	_ = os.Remove(pidPath(dataDir))
	return 0, nil
}

// lockDataDir takes an exclusive lock on the data dir for the server's
// lifetime: two servers on one data dir would share its instances.
func lockDataDir(dataDir string) (*os.File, error) {
	f, err := os.OpenFile(lockPath(dataDir), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			msg := fmt.Sprintf("another Toygres server is already running with data dir %s", dataDir)
			if pid, _ := readPID(dataDir); pid > 0 {
				msg += fmt.Sprintf(" (PID %d)", pid)
			}
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	return f, nil
}

// waitExit waits until pid has exited or the timeout passes.
func waitExit(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !alive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
