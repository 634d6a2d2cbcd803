package apptest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Process is a process found in /proc.
type Process struct {
	PID  int
	PPID int
	// Postmaster is set for a PostgreSQL server's main process (started
	// with -D), as opposed to its backends and auxiliary processes.
	Postmaster bool
	// DataDir is the PostgreSQL data directory the process works in (its -D
	// argument, else its working directory), "" when unknown.
	DataDir string
	// Cmdline is the command line, arguments separated by spaces.
	Cmdline string
}

func (p Process) String() string {
	return fmt.Sprintf("pid %d (ppid %d) %q in %s", p.PID, p.PPID, p.Cmdline, p.DataDir)
}

// PostgresUnder lists the PostgreSQL processes (postmasters, backends and
// auxiliary processes) whose data directory is dir or lies under it,
// including those whose directory has been removed under them. It needs
// /proc, and root to see other accounts' working directories.
func PostgresUnder(dir string) []Process {
	dir = filepath.Clean(dir)
	var out []Process
	for _, p := range allProcesses() {
		if p.DataDir == dir || strings.HasPrefix(p.DataDir, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

func allProcesses() []Process {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProcess(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// readProcess reads a PostgreSQL process; ok is false for anything else.
func readProcess(pid int) (Process, bool) {
	base := "/proc/" + strconv.Itoa(pid)
	comm, err := os.ReadFile(base + "/comm")
	if err != nil {
		return Process{}, false
	}
	raw, _ := os.ReadFile(base + "/cmdline")
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	isPG := strings.TrimSpace(string(comm)) == "postgres" ||
		(len(args) > 0 && (filepath.Base(args[0]) == "postgres" || strings.HasPrefix(args[0], "postgres:")))
	if !isPG {
		return Process{}, false
	}
	p := Process{PID: pid, PPID: ppid(base), Cmdline: strings.Join(args, " ")}
	for i, a := range args {
		if a == "-D" && i+1 < len(args) {
			p.Postmaster = true
			p.DataDir = filepath.Clean(args[i+1])
		}
	}
	if p.DataDir == "" {
		if cwd, err := os.Readlink(base + "/cwd"); err == nil {
			p.DataDir = filepath.Clean(strings.TrimSuffix(cwd, " (deleted)"))
		}
	}
	return p, true
}

func ppid(base string) int {
	f, err := os.Open(base + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// ListenerPIDs returns the processes holding a TCP socket (IPv4 or IPv6)
// that listens on port. A port nobody listens on gives none.
func ListenerPIDs(port int) []int {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); ok && err == nil && int(p) == port {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		f.Close()
	}
	if len(inodes) == 0 {
		return nil
	}
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + e.Name() + "/fd")
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/" + e.Name() + "/fd/" + fd.Name()); err == nil && inodes[l] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// Cmdline returns a process's command line, arguments separated by spaces
// ("" when it is gone).
func Cmdline(pid int) string {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	return strings.Join(strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"), " ")
}
