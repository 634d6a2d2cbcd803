package local

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/toygres/toygres/internal/dataplane"
)

// replicated deploys an instance with n standbys and waits until they all
// stream.
func replicated(t *testing.T, d *Driver, name string, n int, sync bool) {
	t.Helper()
	deploy(t, d, dataplane.Spec{Name: name, StorageGB: 1})
	waitReady(t, d, name)
	start := time.Now()
	if err := d.SetReplicas(testCtx(t), name, n, sync); err != nil {
		t.Fatalf("SetReplicas(%d): %v", n, err)
	}
	t.Logf("SetReplicas(%d) took %v", n, time.Since(start))
	waitServers(t, d, name, func(ss []dataplane.ServerState) bool { return streamingCount(ss) == n })
}

func streamingCount(ss []dataplane.ServerState) int {
	n := 0
	for _, s := range ss {
		if s.Role == dataplane.RoleStandby && s.Streaming && s.Ready {
			n++
		}
	}
	return n
}

// waitServers polls Servers until cond holds.
func waitServers(t *testing.T, d *Driver, name string, cond func([]dataplane.ServerState) bool) []dataplane.ServerState {
	t.Helper()
	var ss []dataplane.ServerState
	err := waitFor(testCtx(t), 30*time.Second, func() bool {
		var err error
		ss, err = d.Servers(context.Background(), name)
		return err == nil && cond(ss)
	})
	if err != nil {
		t.Fatalf("servers of %s never as expected: %+v", name, ss)
	}
	return ss
}

// serverConn connects as the user to one server of an instance.
func serverConn(t *testing.T, d *Driver, name, id string) *pgx.Conn {
	t.Helper()
	ctx := testCtx(t)
	p, err := d.existing(name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := readMeta(p.meta)
	if err != nil {
		t.Fatal(err)
	}
	ep := dataplane.Endpoint{Host: m.Host, Port: m.server(id).Port, User: User, Database: Database}
	conn, err := pgx.Connect(ctx, ep.URL(testPassword))
	if err != nil {
		t.Fatalf("connect to server %s of %s: %v", id, name, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func countRows(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(testCtx(t), "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

// insert commits n rows through url, one transaction each.
func insert(t *testing.T, url string, n int) {
	t.Helper()
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := conn.Exec(ctx, "INSERT INTO t DEFAULT VALUES"); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
}

func roleOf(ss []dataplane.ServerState, id string) dataplane.ServerState {
	for _, s := range ss {
		if s.ID == id {
			return s
		}
	}
	return dataplane.ServerState{}
}

// waitRows polls until server id has n rows.
func waitRows(t *testing.T, d *Driver, name, id string, n int) {
	t.Helper()
	conn := serverConn(t, d, name, id)
	var got int
	if err := waitFor(testCtx(t), 15*time.Second, func() bool {
		return conn.QueryRow(testCtx(t), "SELECT count(*) FROM t").Scan(&got) == nil && got == n
	}); err != nil {
		t.Fatalf("server %s of %s has %d rows, want %d", id, name, got, n)
	}
}

// rebuildMethod runs Rebuild and reports how it made the standby:
// "rewind" or "base backup".
func rebuildMethod(t *testing.T, d *Driver, name, id string) string {
	t.Helper()
	var steps []string
	d.atStep = func(s string) { steps = append(steps, s) }
	defer func() { d.atStep = nil }()
	start := time.Now()
	if err := d.Rebuild(testCtx(t), name, id); err != nil {
		t.Fatalf("Rebuild %s: %v", id, err)
	}
	method := ""
	switch {
	case slices.Contains(steps, "build:copied"):
		method = "base backup"
	case slices.Contains(steps, "rebuild:rewound"):
		method = "rewind"
	}
	t.Logf("Rebuild %s (%s) took %v", id, method, time.Since(start))
	return method
}

// TestReplicaFailover: a synchronous standby has every committed row; the
// supervisor leaves a killed primary down; after Fence and Promote the URL
// taken before the failover writes to the new primary; Rebuild rewinds the
// old primary into a streaming standby.
func TestReplicaFailover(t *testing.T) {
	var ev events
	d := newDriverWith(t, Options{Dir: testDir(t), OnEvent: ev.add})
	ctx := testCtx(t)
	const name = "failover"
	replicated(t, d, name, 1, true)

	ep, err := d.Endpoint(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !ep.MultiHost || len(ep.Standbys) != 1 || ep.Standbys[0].Port == ep.Port {
		t.Fatalf("endpoint %+v: want the primary and one standby", ep)
	}
	url := ep.URL(testPassword)
	if !strings.Contains(url, "target_session_attrs=read-write") {
		t.Fatalf("URL %s is not multi-host read-write", ep.URL(""))
	}
	insert(t, url, 50)
	ss := waitServers(t, d, name, func(ss []dataplane.ServerState) bool {
		s := roleOf(ss, "1")
		return s.Streaming && s.Sync && s.LagBytes == 0
	})
	if ss[0].ID != "0" || ss[0].Role != dataplane.RolePrimary || !ss[0].Ready || ss[0].Timeline != 1 {
		t.Fatalf("servers %+v: want server 0 primary first, ready, timeline 1", ss)
	}
	if s := roleOf(ss, "1"); s.Role != dataplane.RoleStandby || s.Timeline != 1 {
		t.Fatalf("server 1: %+v, want a standby on timeline 1", s)
	}
	// Read-only on the standby, with every row.
	sb := serverConn(t, d, name, "1")
	if got := countRows(t, sb); got != 50 {
		t.Fatalf("standby has %d rows, want 50", got)
	}
	if _, err := sb.Exec(ctx, "INSERT INTO t DEFAULT VALUES"); err == nil {
		t.Fatal("the standby accepted a write")
	}

	killServer(t, d, name)
	ev.wait(t, name, dataplane.EventPrimaryDown, 10*time.Second)
	// Several polls later the primary is still down.
	var st dataplane.Status
	if err := waitFor(ctx, 5*time.Second, func() bool {
		st, _ = d.Status(ctx, name)
		return st.Phase == PhasePrimaryDown
	}); err != nil {
		t.Fatalf("Status %+v, want %s", st, PhasePrimaryDown)
	}
	time.Sleep(4 * d.sup.opts.Backoff) // a restart would have happened by now
	if readPostmaster(d.serverPaths(name, "0").data).running {
		t.Fatal("the supervisor restarted the dead primary of an instance with standbys")
	}
	for _, e := range ev.list() {
		if e.Kind == dataplane.EventRestart {
			t.Fatalf("restart event %+v", e)
		}
	}

	if err := d.Fence(ctx, name, "0"); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	start := time.Now()
	if err := d.Promote(ctx, name, "1"); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	t.Logf("Promote took %v", time.Since(start))
	// The URL taken before the failover reaches the new primary.
	insert(t, url, 10)
	ep2, _ := d.Endpoint(ctx, name)
	if ep2.Port != ep.Standbys[0].Port || len(ep2.Standbys) != 1 || ep2.Standbys[0].Port != ep.Port {
		t.Fatalf("endpoint after failover %+v; before %+v", ep2, ep)
	}
	if got := countRows(t, serverConn(t, d, name, "1")); got != 60 {
		t.Fatalf("new primary has %d rows, want 60 (none lost)", got)
	}
	if st, _ := d.Status(ctx, name); !st.Ready {
		t.Fatalf("Status after failover: %+v", st)
	}

	if m := rebuildMethod(t, d, name, "0"); m != "rewind" {
		t.Fatalf("Rebuild by %q; want pg_rewind", m)
	}
	ss = waitServers(t, d, name, func(ss []dataplane.ServerState) bool {
		s := roleOf(ss, "0")
		return s.Role == dataplane.RoleStandby && s.Streaming && s.Sync
	})
	if ss[0].ID != "1" || ss[0].Timeline != 2 || roleOf(ss, "0").Timeline != 2 {
		t.Fatalf("servers after rebuild %+v: want server 1 primary on timeline 2 first, server 0 following", ss)
	}
	insert(t, url, 5)
	waitRows(t, d, name, "0", 65)
	// Rebuilding a streaming standby does nothing.
	if err := d.Rebuild(ctx, name, "0"); err != nil {
		t.Fatalf("second Rebuild: %v", err)
	}
	// Promoting a standby while the primary runs fences the primary first:
	// never two primaries.
	if err := d.Promote(ctx, name, "0"); err != nil {
		t.Fatalf("Promote with a live primary: %v", err)
	}
	if readPostmaster(d.serverPaths(name, "1").data).running {
		t.Fatal("the old primary still runs after Promote")
	}
	ss, _ = d.Servers(ctx, name)
	if ss[0].ID != "0" || ss[0].Role != dataplane.RolePrimary || roleOf(ss, "1").Role != dataplane.RoleFenced {
		t.Fatalf("servers after a promotion over a live primary: %+v", ss)
	}
	insert(t, url, 1)
}

// TestReplicaSwitchover: a clean switchover and back loses nothing; a
// server whose WAL is damaged is rebuilt from a base backup.
func TestReplicaSwitchover(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	const name = "switchover"
	replicated(t, d, name, 1, true)
	ep, _ := d.Endpoint(ctx, name)
	url := ep.URL(testPassword)
	insert(t, url, 20)

	if err := d.Fence(ctx, name, "0"); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	if st, _ := d.Status(ctx, name); st.Phase != PhaseNoPrimary {
		t.Fatalf("Status between Fence and Promote: %+v", st)
	}
	if err := d.Promote(ctx, name, "1"); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	if err := d.Promote(ctx, name, "1"); err != nil {
		t.Fatalf("Promote again: %v", err)
	}
	if err := d.Promote(ctx, name, "0"); !errorsIs(err, dataplane.ErrNotStandby) {
		t.Fatalf("Promote of a fenced server: %v, want ErrNotStandby", err)
	}
	insert(t, url, 20)
	if m := rebuildMethod(t, d, name, "0"); m != "rewind" {
		t.Fatalf("Rebuild after a clean switchover by %q; want pg_rewind", m)
	}
	waitRows(t, d, name, "0", 40)

	// And back; then the old primary's WAL is lost: rewind cannot work.
	if err := d.Fence(ctx, name, "1"); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	if err := d.Promote(ctx, name, "0"); err != nil {
		t.Fatalf("Promote back: %v", err)
	}
	insert(t, url, 5)
	wal := filepath.Join(d.serverPaths(name, "1").data, "pg_wal")
	segs, _ := filepath.Glob(filepath.Join(wal, "0*"))
	for _, s := range segs {
		if err := os.Remove(s); err != nil {
			t.Fatal(err)
		}
	}
	if m := rebuildMethod(t, d, name, "1"); m != "base backup" {
		t.Fatalf("Rebuild without WAL by %q; want a base backup", m)
	}
	ss := waitServers(t, d, name, func(ss []dataplane.ServerState) bool { return streamingCount(ss) == 1 })
	if ss[0].ID != "0" || ss[0].Timeline != 3 {
		t.Fatalf("servers %+v: want server 0 primary on timeline 3", ss)
	}
	waitRows(t, d, name, "1", 45)
	if got := countRows(t, serverConn(t, d, name, "0")); got != 45 {
		t.Fatalf("primary has %d rows, want 45", got)
	}
}

func errorsIs(err, target error) bool {
	for err != nil {
		if err == target {
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// TestReplicasAddRemove: SetReplicas 0→1→0 on a live instance.
func TestReplicasAddRemove(t *testing.T) {
	d := newDriver(t, testDir(t))
	ctx := testCtx(t)
	const name = "addremove"
	deploy(t, d, dataplane.Spec{Name: name, StorageGB: 1})
	waitReady(t, d, name)
	ep0, _ := d.Endpoint(ctx, name)
	insert(t, ep0.URL(testPassword), 5)
	if err := d.SetReplicas(ctx, name, 1, false); err != nil {
		t.Fatalf("SetReplicas(1): %v", err)
	}
	ss := waitServers(t, d, name, func(ss []dataplane.ServerState) bool { return streamingCount(ss) == 1 })
	if s := roleOf(ss, "1"); s.Sync {
		t.Fatalf("asynchronous standby reported sync: %+v", s)
	}
	waitRows(t, d, name, "1", 5)
	ep1, _ := d.Endpoint(ctx, name)
	if !ep1.MultiHost || ep1.Port != ep0.Port || len(ep1.Standbys) != 1 {
		t.Fatalf("endpoint with a standby: %+v", ep1)
	}
	if ep1.ReadOnlyURL("") == "" {
		t.Fatal("no read-only URL")
	}
	// Standby files belong to the instance's account, like the primary's.
	fi, _ := os.Stat(d.serverPaths(name, "1").data)
	fp, _ := os.Stat(d.serverPaths(name, "0").data)
	if fi.Sys().(*syscall.Stat_t).Uid != fp.Sys().(*syscall.Stat_t).Uid || fi.Mode().Perm() != 0o700 {
		t.Fatalf("standby data directory mode %v uid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	// Idempotent.
	if err := d.SetReplicas(ctx, name, 1, true); err != nil {
		t.Fatalf("SetReplicas(1) again: %v", err)
	}
	waitServers(t, d, name, func(ss []dataplane.ServerState) bool { return roleOf(ss, "1").Sync })
	if err := d.SetReplicas(ctx, name, 0, true); err != nil {
		t.Fatalf("SetReplicas(0): %v", err)
	}
	if _, err := os.Lstat(d.serverPaths(name, "1").dir); err == nil {
		t.Fatal("the removed standby's directory is still there")
	}
	ss, err := d.Servers(ctx, name)
	if err != nil || len(ss) != 1 {
		t.Fatalf("Servers after SetReplicas(0): %+v, %v", ss, err)
	}
	conn := serverConn(t, d, name, "0")
	var slots int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots").Scan(&slots); err != nil || slots != 0 {
		t.Fatalf("slots left: %d (%v)", slots, err)
	}
	// Writes do not wait for a standby that is gone.
	insert(t, ep0.URL(testPassword), 1)
	if ep, _ := d.Endpoint(ctx, name); ep.MultiHost || len(ep.Standbys) != 0 {
		t.Fatalf("endpoint without standbys: %+v", ep)
	}
}

// TestReplicasAdoptKeepsRoles: after a failover and a control-plane
// restart (a new driver on the same directory, every server stopped as by
// a reboot), Adopt starts the new primary and the standbys, never the
// fenced server.
func TestReplicasAdoptKeepsRoles(t *testing.T) {
	dir := testDir(t)
	d := newDriver(t, dir)
	ctx := testCtx(t)
	const name = "adoptroles"
	replicated(t, d, name, 2, true)
	ep, _ := d.Endpoint(ctx, name)
	insert(t, ep.URL(testPassword), 10)
	if err := d.Fence(ctx, name, "0"); err != nil {
		t.Fatal(err)
	}
	if err := d.Promote(ctx, name, "1"); err != nil {
		t.Fatal(err)
	}
	waitServers(t, d, name, func(ss []dataplane.ServerState) bool { return streamingCount(ss) == 1 })
	d.Close()
	in, err := d.install(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"1", "2"} {
		if err := d.stop(ctx, d.serverPaths(name, id), in.binDir); err != nil {
			t.Fatal(err)
		}
	}

	d2 := newDriver(t, dir)
	r, err := d2.Adopt(ctx)
	if err != nil || len(r.Problems) > 0 || len(r.Restarted) != 1 {
		t.Fatalf("Adopt: %+v, %v", r, err)
	}
	if readPostmaster(d2.serverPaths(name, "0").data).running {
		t.Fatal("Adopt started the fenced server")
	}
	ss := waitServers(t, d2, name, func(ss []dataplane.ServerState) bool { return streamingCount(ss) == 1 })
	if ss[0].ID != "1" || ss[0].Role != dataplane.RolePrimary || roleOf(ss, "0").Role != dataplane.RoleFenced {
		t.Fatalf("servers after Adopt: %+v", ss)
	}
	insert(t, ep.URL(testPassword), 1) // the old URL still writes
	if _, err := d2.Readopt(ctx, name); err != nil {
		t.Fatalf("Readopt: %v", err)
	}
	if readPostmaster(d2.serverPaths(name, "0").data).running {
		t.Fatal("Readopt started the fenced server")
	}
	if err := d2.Rebuild(ctx, name, "0"); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	waitServers(t, d2, name, func(ss []dataplane.ServerState) bool { return streamingCount(ss) == 2 })
	waitRows(t, d2, name, "0", 11)
	// Delete removes every server.
	ports := []int{}
	for _, s := range ss {
		ports = append(ports, s.Port)
	}
	if err := d2.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	for _, port := range ports {
		if listening(port) {
			t.Fatalf("port %d still listening after Delete", port)
		}
	}
}
