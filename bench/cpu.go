package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// CPU accounting of a run's timed part, so that runs on a shared machine
// can be compared by the work they cost, not only by wall time (which
// other processes' load stretches).

// clockTick is the unit of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// processCPU returns this process's user+system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postmasterOf finds the PostgreSQL server process behind url: the parent
// of a backend (the server runs on this machine in the benchmark). 0 when
// it cannot be found.
func postmasterOf(ctx context.Context, url string) int {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0
	}
	_, ppid, _ := procStat(backend)
	return ppid
}

// procStat returns a process's CPU time (user+system, and with waited-for
// children when withChildren) and parent pid from /proc/<pid>/stat.
func procStat(pid int) (self time.Duration, ppid int, children time.Duration) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may contain spaces
	if i < 0 {
		return 0, 0, 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0, 0
	}
	num := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	ppid = int(num(4))
	self = time.Duration(num(14)+num(15)) * clockTick
	children = time.Duration(num(16)+num(17)) * clockTick
	return self, ppid, children
}

// serverCPU returns the CPU time used so far by the server pm and its
// processes (live ones, and those it has reaped).
func serverCPU(pm int) time.Duration {
	if pm == 0 {
		return 0
	}
	self, _, reaped := procStat(pm)
	total := self + reaped
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pm {
			continue
		}
		if cpu, ppid, _ := procStat(pid); ppid == pm {
			total += cpu
		}
	}
	return total
}
