package main

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestKilledInstanceServerHealsItself: SIGKILL of an instance's postmaster
// while Toygres runs. The local data plane's supervisor restarts it: the
// instance answers queries again within 15 s, and the restart is an event of
// the instance (CLI `get`). Without supervision nothing restarts the server
// until the next Toygres start, and the test times out.
func TestKilledInstanceServerHealsItself(t *testing.T) {
	e := newE2E(t)
	e.startServer()
	e.ok("create", "heal", "--password", "heal-pw-123")
	inst, _ := e.waitState("heal", "running", 2*time.Minute)
	pidFile := filepath.Join(e.dataDir, "instances", inst.InternalName, "data", "postmaster.pid")
	before := postmasterPID(pidFile)
	if before <= 0 {
		t.Fatalf("no postmaster pid in %s", pidFile)
	}
	if err := syscall.Kill(before, syscall.SIGKILL); err != nil {
		t.Fatalf("kill postmaster %d: %v", before, err)
	}
	killed := time.Now()
	// The kill took: the old postmaster is gone before anything is judged.
	e.eventually("the killed postmaster to exit", 10*time.Second, func() bool { return !alive(before) })

	e.eventually("the instance to answer again", 15*time.Second-time.Since(killed), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, inst.ConnectionString)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var one int
		return conn.QueryRow(ctx, "select 1").Scan(&one) == nil && one == 1
	})
	healed := time.Since(killed)
	after := postmasterPID(pidFile)
	if after <= 0 || after == before || !alive(after) {
		t.Fatalf("postmaster after the restart: %d (before %d)", after, before)
	}
	var restartEvent string
	e.eventually("a restart event", 15*time.Second-time.Since(killed), func() bool {
		for _, ev := range e.get("heal").Events {
			if strings.Contains(ev.Message, "restart") {
				restartEvent = ev.Message
				return true
			}
		}
		return false
	})
	t.Logf("answering again %v after the kill; event %q", healed.Round(time.Millisecond), restartEvent)
	e.ok("delete", "heal", "--wait")
}
