package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/toygres/toygres/internal/dataplane"
)

// Standby servers (dataplane.Replicator).
//
// An instance may run up to dataplane.MaxReplicas standbys beside its
// primary. Every server of an instance is a server process of the same
// instance account, with a data directory, a private socket directory, a
// log and a port of its own:
//
//	<dir>/data, run/, postgres.log          server "0" (the instance's first)
//	<dir>/server-<id>/                      root 0711: server <id> ("1", "2")
//	    data/, run/, postgres.log           as for server "0"
//	    data.init/                          a base backup being taken
//
// The metadata (instance.json, metadata.Servers) records every server's
// port and role (primary, standby, fenced, building) and is the truth: a
// server is started only as its role says (toygres.conf and standby.signal
// are rewritten from it before each start), fenced and building servers
// are never started, and there is at most one primary in it at any time,
// so no crash at any point of a failover leads to two primaries.
//
// Replication. A standby streams from the primary over the primary's
// private Unix socket as ReplicationUser (REPLICATION, no superuser), by
// peer authentication: pg_ident.conf maps the instance's own account, which
// runs the standbys, to that role, and pg_hba.conf rejects it over TCP. So
// no password exists, and no other instance's account can reach the
// socket. Each standby has a physical replication slot "server_<id>" on the
// primary (so the primary keeps the WAL it needs; Promote makes them on the
// new primary for every other server) and connects with application_name
// "server_<id>". Standbys are made with pg_basebackup (-X stream, the slot);
// primary_conninfo, primary_slot_name and standby.signal are written by
// Toygres (the equivalent of pg_basebackup -R, but in toygres.conf rather
// than postgresql.auto.conf, whose settings would override it), so that
// they follow promotions. With Sync the primary's synchronous_standby_names
// is ANY 1 (...) of its built standbys (synchronous_commit stays on): a
// commit returns once one of them has it, so a failover to the most
// advanced standby loses no committed transaction. Right after a failover,
// until Rebuild makes the old primary a standby, the new primary may have
// no standby to wait for: commits then do not wait.
//
// Every server sets wal_log_hints = on (from its next start, for instances
// made before), so that a fenced primary can be rewound (pg_rewind) onto
// the new primary's timeline; ReplicationUser may execute the functions
// pg_rewind needs. Caveat: before PostgreSQL 16 the user's role (CREATEROLE)
// can grant itself ReplicationUser's rights, which reach the instance's own
// data directory files (see "Tenant isolation" in doc.go).
//
// Supervision. When an instance has standbys, the supervisor does not
// restart a dead primary (that would race a failover): it reports
// dataplane.EventPrimaryDown and leaves it down for the failover
// orchestration (Fence, Promote, Rebuild). Dead standbys are restarted as
// servers without standbys always are.
//
// Endpoint. Host and Port are the primary's; Standbys list the other
// servers (fenced ones too) in server order, MultiHost is set, so the
// read-write URL lists every server's address with
// target_session_attrs=read-write. Ports never change, so a URL taken
// before a failover reaches the new primary; only the order changes.

// ReplicationUser is the role standbys replicate as (and pg_rewind reads
// the primary as): REPLICATION, no password, private socket only.
const ReplicationUser = "toygres_replication"

// Phases of Status specific to instances with standbys.
const (
	// PhasePrimaryDown: the primary died and the instance has standbys:
	// the supervisor leaves it down for a failover.
	PhasePrimaryDown = "PrimaryDown"
	// PhaseNoPrimary: every server is fenced, building or a standby (a
	// failover between Fence and Promote).
	PhaseNoPrimary = "NoPrimary"
)

// rebuildStreamWait bounds how long Rebuild waits for a rewound server to
// stream before it takes a fresh base backup instead.
const rebuildStreamWait = 20 * time.Second

var _ dataplane.Replicator = (*Driver)(nil)

// serverRecord is one server of an instance in its metadata.
type serverRecord struct {
	ID   string         `json:"id"`
	Port int            `json:"port"`
	Role dataplane.Role `json:"role"`
}

// servers returns the instance's servers in ID order.
func (m *metadata) servers() []serverRecord {
	if len(m.Servers) == 0 {
		return []serverRecord{{ID: "0", Port: m.Port, Role: dataplane.RolePrimary}}
	}
	return slices.Clone(m.Servers)
}

// lookup returns server id.
func (m *metadata) lookup(id string) (serverRecord, bool) {
	for _, s := range m.servers() {
		if s.ID == id {
			return s, true
		}
	}
	return serverRecord{}, false
}

// server returns server id ("0" when absent: it is always on Port).
func (m *metadata) server(id string) serverRecord {
	if s, ok := m.lookup(id); ok {
		return s
	}
	return serverRecord{ID: "0", Port: m.Port, Role: dataplane.RolePrimary}
}

// primary returns the primary, if the instance has one.
func (m *metadata) primary() (serverRecord, bool) {
	for _, s := range m.servers() {
		if s.Role == dataplane.RolePrimary {
			return s, true
		}
	}
	return serverRecord{}, false
}

// setRole records the role of server id (in memory).
func (m *metadata) setRole(id string, role dataplane.Role) {
	m.Servers = m.servers()
	for i := range m.Servers {
		if m.Servers[i].ID == id {
			m.Servers[i].Role = role
		}
	}
}

// hasStandbys reports whether a server other than the primary is a
// standby (built, so one a failover could promote).
func (m *metadata) hasStandbys() bool {
	for _, s := range m.servers() {
		if s.Role == dataplane.RoleStandby {
			return true
		}
	}
	return false
}

func slotName(id string) string { return "server_" + id }

// serverPaths returns the paths of server id of instance name.
func (d *Driver) serverPaths(name, id string) paths {
	p := d.paths(name)
	if id == "0" || id == "" {
		return p
	}
	dir := filepath.Join(p.inst, "server-"+id)
	p.dir = dir
	p.data = filepath.Join(dir, "data")
	p.initdata = filepath.Join(dir, "data.init")
	p.log = filepath.Join(dir, "postgres.log")
	p.run = filepath.Join(dir, "run")
	p.id = id
	return p
}

// primaryPaths returns the paths and record of the primary (of the first
// server when there is none).
func (d *Driver) primaryPaths(name string, m *metadata) (paths, serverRecord) {
	s, ok := m.primary()
	if !ok {
		s = m.servers()[0]
	}
	return d.serverPaths(name, s.ID), s
}

// replicationConfig is the replication part of toygres.conf of server p.id.
func replicationConfig(m *metadata, p paths) string {
	var b strings.Builder
	b.WriteString("wal_log_hints = on\n")
	srv := m.server(p.id)
	if srv.Role == dataplane.RolePrimary {
		var names []string
		for _, s := range m.servers() {
			if s.Role == dataplane.RoleStandby {
				names = append(names, slotName(s.ID))
			}
		}
		if m.Sync && len(names) > 0 {
			fmt.Fprintf(&b, "synchronous_standby_names = %s\n", confQuote("ANY 1 ("+strings.Join(names, ", ")+")"))
		}
		return b.String()
	}
	prim, ok := m.primary()
	if !ok {
		return b.String() // no primary to follow (not started meanwhile)
	}
	run := filepath.Join(p.inst, "run")
	if prim.ID != "0" {
		run = filepath.Join(p.inst, "server-"+prim.ID, "run")
	}
	conninfo := fmt.Sprintf("host=%s port=%d user=%s application_name=%s connect_timeout=5",
		conninfoQuote(run), prim.Port, ReplicationUser, slotName(srv.ID))
	fmt.Fprintf(&b, "primary_conninfo = %s\n", confQuote(conninfo))
	fmt.Fprintf(&b, "primary_slot_name = %s\n", confQuote(slotName(srv.ID)))
	b.WriteString("hot_standby = on\n")
	return b.String()
}

// conninfoQuote quotes a libpq keyword/value.
func conninfoQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

// ensureSignal makes standby.signal of server p agree with its role: a
// replicated primary has none, any other server has one (a fenced server
// started by mistake comes up as a standby, never as a primary). A
// single-server instance is left alone (a restore recovers with
// recovery.signal).
func ensureSignal(m *metadata, p paths, data string, acct *account) error {
	sig := filepath.Join(data, "standby.signal")
	if m.server(p.id).Role == dataplane.RolePrimary {
		if len(m.Servers) == 0 {
			return nil
		}
		if err := os.Remove(sig); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if _, err := os.Lstat(sig); err == nil {
		return nil
	}
	return writeFile(sig, nil, 0o600, chowner(acct))
}

// adminConnTo connects as AdminUser to server sp listening on port.
func (d *Driver) adminConnTo(ctx context.Context, sp paths, port int) (*pgx.Conn, error) {
	if len(sp.run)+len("/.s.PGSQL.65535") > maxSocketPath {
		return nil, fmt.Errorf("the socket directory %s is too long for a Unix socket; move the data directory to a shorter path", sp.run)
	}
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database = sp.run, uint16(port), AdminUser, Database
	cfg.ConnectTimeout = 10 * time.Second
	cfg.RuntimeParams = map[string]string{"application_name": "toygres"}
	return pgx.ConnectConfig(ctx, cfg)
}

// execOn runs statements on server sp as AdminUser.
func (d *Driver) execOn(ctx context.Context, sp paths, port int, stmts ...string) error {
	conn, err := d.adminConnTo(ctx, sp, port)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// reloadServer rewrites toygres.conf of server sp and makes it reload its
// configuration when it runs.
func (d *Driver) reloadServer(ctx context.Context, m *metadata, sp paths) error {
	if _, err := os.Lstat(sp.data); err != nil {
		return nil
	}
	acct := d.ownerAccount(sp.data)
	if err := d.writeServerConfig(m, sp, sp.data, acct); err != nil {
		return err
	}
	if !readPostmaster(sp.data).running {
		return nil
	}
	if err := d.execOn(ctx, sp, m.server(sp.id).Port, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("reload server %s: %w", sp.id, err)
	}
	return nil
}

// ensureReplicationAuth makes the primary ready to serve standbys: its
// pg_hba.conf and pg_ident.conf let ReplicationUser in over the private
// socket (instances made before standbys lack the lines), and the role
// exists with the rights of replication and pg_rewind.
func (d *Driver) ensureReplicationAuth(ctx context.Context, m *metadata, pp paths, prim serverRecord) error {
	acct := d.ownerAccount(pp.data)
	changed := false
	for file, want := range map[string]string{"pg_hba.conf": hbaFor(), "pg_ident.conf": identFor(acct)} {
		if have, err := readBeneath(pp.data, file, 1<<20); err == nil && string(have) == want {
			continue
		}
		if err := writeFile(filepath.Join(pp.data, file), []byte(want), 0o600, chowner(acct)); err != nil {
			return fmt.Errorf("configure replication: %w", err)
		}
		changed = true
	}
	stmts := []string{
		`DO $$BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '` + ReplicationUser + `') THEN
				CREATE ROLE ` + ReplicationUser + ` LOGIN REPLICATION;
			END IF;
		END$$`,
		"ALTER ROLE " + ReplicationUser + " LOGIN REPLICATION NOSUPERUSER PASSWORD NULL",
		"COMMENT ON ROLE " + ReplicationUser + " IS " + sqlString("Toygres' standbys: no password, private Unix socket only"),
		"GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO " + ReplicationUser,
		"GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO " + ReplicationUser,
		"GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO " + ReplicationUser,
		"GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO " + ReplicationUser,
	}
	if changed {
		stmts = append(stmts, "SELECT pg_reload_conf()")
	}
	if err := d.execOn(ctx, pp, prim.Port, stmts...); err != nil {
		return fmt.Errorf("configure replication: %w", err)
	}
	return nil
}

// ensureSlot makes the replication slot of server id on the primary
// (reserving WAL from now on).
func (d *Driver) ensureSlot(ctx context.Context, pp paths, prim serverRecord, id string) error {
	return d.execOn(ctx, pp, prim.Port, `SELECT pg_create_physical_replication_slot('`+slotName(id)+`', true)
		WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '`+slotName(id)+`')`)
}

// syncSlots makes the primary's slots those of the other servers.
func (d *Driver) syncSlots(ctx context.Context, m *metadata, pp paths, prim serverRecord) error {
	want := map[string]bool{}
	for _, s := range m.servers() {
		if s.ID != prim.ID {
			want[slotName(s.ID)] = true
			if err := d.ensureSlot(ctx, pp, prim, s.ID); err != nil {
				return err
			}
		}
	}
	conn, err := d.adminConnTo(ctx, pp, prim.Port)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' AND slot_name LIKE 'server\\_%'")
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range names {
		if !want[n] {
			if err := dropSlot(ctx, conn, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// dropSlot drops a slot, waiting a little for its walsender to end.
func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	var last error
	err := waitFor(ctx, 10*time.Second, func() bool {
		_, last = conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot)
		return last == nil
	})
	if err != nil {
		return fmt.Errorf("drop replication slot %s: %w (%v)", slot, err, last)
	}
	return nil
}

// SetReplicas converges the instance to n standbys (see Replicator): extra
// servers are removed (fenced ones first, then the newest), with their
// slots and data; missing ones are built from the primary with
// pg_basebackup and started. It returns once the new standbys run.
func (d *Driver) SetReplicas(ctx context.Context, name string, n int, sync bool) error {
	if n < 0 || n > dataplane.MaxReplicas {
		return fmt.Errorf("local: set replicas of %s: %d standbys; want 0..%d", name, n, dataplane.MaxReplicas)
	}
	p, m, unlock, err := d.lockedMeta(name)
	if err != nil {
		return err
	}
	defer unlock()
	if !m.Initialized || (m.Restore != nil && !m.Restore.Promoted) {
		return fmt.Errorf("local: set replicas of %s: deployment incomplete", name)
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		return fmt.Errorf("local: set replicas of %s: %w", name, err)
	}
	prim, ok := m.primary()
	if !ok {
		return fmt.Errorf("local: set replicas of %s: the instance has no primary (a failover is under way)", name)
	}
	pp := d.serverPaths(name, prim.ID)
	others := func() []serverRecord {
		var out []serverRecord
		for _, s := range m.servers() {
			if s.ID != prim.ID {
				out = append(out, s)
			}
		}
		return out
	}
	for o := others(); len(o) > n; o = others() {
		victim := o[len(o)-1]
		for _, rank := range []dataplane.Role{dataplane.RoleStandby, dataplane.RoleBuilding, dataplane.RoleFenced} {
			for _, s := range o {
				if s.Role == rank {
					victim = s
				}
			}
		}
		if err := d.removeServer(ctx, m, p, in, victim.ID); err != nil {
			return fmt.Errorf("local: set replicas of %s: remove server %s: %w", name, victim.ID, err)
		}
	}
	if m.Sync != sync {
		m.Sync = sync
		if err := writeMeta(p.meta, m); err != nil {
			return err
		}
	}
	if len(others()) < n {
		if !readPostmaster(pp.data).running {
			return fmt.Errorf("local: set replicas of %s: the primary is not running", name)
		}
		if len(pp.run)+len("/.s.PGSQL.65535") > maxSocketPath {
			return fmt.Errorf("local: set replicas of %s: the socket directory %s is too long for a Unix socket, which standbys need; use a shorter data directory", name, pp.run)
		}
		if err := d.ensureReplicationAuth(ctx, m, pp, prim); err != nil {
			return fmt.Errorf("local: set replicas of %s: %w", name, err)
		}
	}
	for len(others()) < n {
		if err := d.addServer(m, p); err != nil {
			return fmt.Errorf("local: set replicas of %s: %w", name, err)
		}
	}
	for _, s := range m.servers() {
		if s.Role == dataplane.RoleBuilding {
			if err := d.build(ctx, m, p, in, s.ID); err != nil {
				return fmt.Errorf("local: set replicas of %s: %w", name, err)
			}
		}
	}
	if err := d.reloadServer(ctx, m, pp); err != nil {
		return fmt.Errorf("local: set replicas of %s: %w", name, err)
	}
	d.supervise(p)
	return nil
}

// addServer records a new server (role building) with a port of its own.
func (d *Driver) addServer(m *metadata, p paths) error {
	id := ""
	for i := 0; i <= dataplane.MaxReplicas; i++ {
		if _, ok := m.lookup(strconv.Itoa(i)); !ok {
			id = strconv.Itoa(i)
			break
		}
	}
	if id == "" {
		return errors.New("no free server id")
	}
	d.allocMu.Lock()
	defer d.allocMu.Unlock()
	port := m.Port // server "0" is always on the instance's port
	if id != "0" {
		var err error
		if port, err = d.allocatePort(m.ListenAddress, m.Name, m); err != nil {
			return err
		}
	}
	m.Servers = append(m.servers(), serverRecord{ID: id, Port: port, Role: dataplane.RoleBuilding})
	slices.SortFunc(m.Servers, func(a, b serverRecord) int { return strings.Compare(a.ID, b.ID) })
	if err := writeMeta(p.meta, m); err != nil {
		return err
	}
	d.log.Info("adding standby", "instance", m.Name, "server", id, "port", port)
	return nil
}

// removeServer stops server id, drops its slot, forgets it and removes its
// files.
func (d *Driver) removeServer(ctx context.Context, m *metadata, p paths, in install, id string) error {
	sp := d.serverPaths(p.name, id)
	if err := d.stop(ctx, sp, in.binDir); err != nil {
		return err
	}
	if prim, ok := m.primary(); ok {
		pp := d.serverPaths(p.name, prim.ID)
		if readPostmaster(pp.data).running {
			conn, err := d.adminConnTo(ctx, pp, prim.Port)
			if err != nil {
				return err
			}
			err = dropSlot(ctx, conn, slotName(id))
			conn.Close(context.WithoutCancel(ctx))
			if err != nil {
				return err
			}
		}
	}
	var keep []serverRecord
	for _, s := range m.servers() {
		if s.ID != id {
			keep = append(keep, s)
		}
	}
	m.Servers = keep
	if len(keep) == 1 && keep[0].ID == "0" && keep[0].Role == dataplane.RolePrimary {
		m.Servers = nil // a single server again, as before any standby
	}
	if err := writeMeta(p.meta, m); err != nil {
		return err
	}
	if id == "0" {
		for _, dir := range []string{sp.data, sp.initdata} {
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
	} else if err := os.RemoveAll(sp.dir); err != nil {
		return err
	}
	d.log.Info("removed server", "instance", m.Name, "server", id)
	return nil
}

// build makes server id a fresh standby of the primary: a base backup into
// data.init (wiped first), the configuration, the rename to data, the role
// standby, the start.
func (d *Driver) build(ctx context.Context, m *metadata, p paths, in install, id string) error {
	start := time.Now()
	prim, ok := m.primary()
	if !ok {
		return errors.New("no primary")
	}
	pp := d.serverPaths(p.name, prim.ID)
	sp := d.serverPaths(p.name, id)
	if err := d.stop(ctx, sp, in.binDir); err != nil {
		return err
	}
	if id != "0" {
		if err := d.ensureRootDir(sp.dir, 0o711); err != nil {
			return err
		}
	}
	for _, dir := range []string{sp.data, sp.initdata} {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	acct, err := d.ensureLayout(ctx, sp)
	if err != nil {
		return err
	}
	if err := d.ensureSlot(ctx, pp, prim, id); err != nil {
		return err
	}
	var out string
	for attempt := 1; ; attempt++ {
		if err := os.RemoveAll(sp.initdata); err != nil {
			return err
		}
		if err := ensureOwnedDir(sp.initdata, acct); err != nil {
			return err
		}
		out, err = d.run(ctx, acct, sp.dir, filepath.Join(in.binDir, "pg_basebackup"),
			"-h", pp.run, "-p", strconv.Itoa(prim.Port), "-U", ReplicationUser, "--no-password",
			"-D", sp.initdata, "-Fp", "-X", "stream", "-S", slotName(id), "-c", "fast")
		if err == nil {
			break
		}
		// A primary that has just reloaded pg_hba.conf may not have it yet.
		if attempt == 3 || ctx.Err() != nil {
			return fmt.Errorf("pg_basebackup for server %s: %w\n%s", id, err, out)
		}
		d.log.Warn("pg_basebackup failed; retrying", "instance", m.Name, "server", id, "err", err, "output", out)
		time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
	}
	d.step("build:copied")
	if err := d.writeConfig(m, sp, sp.initdata, acct); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(sp.initdata, "standby.signal"), nil, 0o600, chowner(acct)); err != nil {
		return err
	}
	if err := os.Rename(sp.initdata, sp.data); err != nil {
		return err
	}
	if err := syncDir(sp.dir); err != nil {
		return err
	}
	m.setRole(id, dataplane.RoleStandby)
	if err := writeMeta(p.meta, m); err != nil {
		return err
	}
	if _, err := d.start(ctx, m, sp, in); err != nil {
		return err
	}
	d.log.Info("standby built", "instance", m.Name, "server", id, "elapsed", time.Since(start))
	return nil
}

// Fence stops server id (cleanly when it answers: a fast shutdown sends
// every WAL record to the connected standbys first; then immediate, then
// SIGKILL) after recording it fenced, so that no supervisor, Adopt or
// Readopt starts it again; its data directory gets a standby.signal.
func (d *Driver) Fence(ctx context.Context, name, id string) error {
	p, m, unlock, err := d.lockedMeta(name)
	if err != nil {
		return err
	}
	defer unlock()
	srv, ok := m.lookup(id)
	if !ok {
		return nil
	}
	if srv.Role != dataplane.RoleFenced {
		m.setRole(id, dataplane.RoleFenced)
		if err := writeMeta(p.meta, m); err != nil {
			return fmt.Errorf("local: fence %s/%s: %w", name, id, err)
		}
		d.step("fence:recorded")
	}
	d.supervise(p) // a watch without the fenced server
	if err := d.fenceStop(ctx, m, id); err != nil {
		return fmt.Errorf("local: fence %s/%s: %w", name, id, err)
	}
	if prim, ok := m.primary(); ok && srv.Role == dataplane.RoleStandby {
		// The primary waits no more for it.
		if err := d.reloadServer(ctx, m, d.serverPaths(name, prim.ID)); err != nil {
			d.log.Warn("could not reconfigure the primary after fencing a standby", "instance", name, "err", err)
		}
	}
	d.log.Info("server fenced", "instance", name, "server", id)
	return nil
}

// fenceStop stops fenced server id and marks its data directory a standby.
func (d *Driver) fenceStop(ctx context.Context, m *metadata, id string) error {
	sp := d.serverPaths(m.Name, id)
	if err := d.stop(ctx, sp, d.binDirFor(ctx, sp, m)); err != nil {
		return err
	}
	if _, err := os.Lstat(sp.data); err == nil {
		return ensureSignal(m, sp, sp.data, d.ownerAccount(sp.data))
	}
	return nil
}

// Promote makes standby id the primary (see Replicator). Any other server
// recorded as primary is fenced first (the caller should have done so);
// the new roles are recorded before the promotion, so a crash leaves at
// most one primary, which the next start brings up as such.
func (d *Driver) Promote(ctx context.Context, name, id string) error {
	p, m, unlock, err := d.lockedMeta(name)
	if err != nil {
		return err
	}
	defer unlock()
	srv, ok := m.lookup(id)
	if !ok || (srv.Role != dataplane.RoleStandby && srv.Role != dataplane.RolePrimary) {
		return fmt.Errorf("local: promote %s/%s (role %q): %w", name, id, srv.Role, dataplane.ErrNotStandby)
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		return fmt.Errorf("local: promote %s/%s: %w", name, id, err)
	}
	start := time.Now()
	sp := d.serverPaths(name, id)
	if srv.Role == dataplane.RoleStandby && !readPostmaster(sp.data).running {
		return fmt.Errorf("local: promote %s/%s: the standby is not running", name, id)
	}
	var old []string
	for _, s := range m.servers() {
		if s.ID != id && s.Role == dataplane.RolePrimary {
			m.setRole(s.ID, dataplane.RoleFenced)
			old = append(old, s.ID)
		}
	}
	if srv.Role != dataplane.RolePrimary || len(old) > 0 {
		m.setRole(id, dataplane.RolePrimary)
		if err := writeMeta(p.meta, m); err != nil {
			return fmt.Errorf("local: promote %s/%s: %w", name, id, err)
		}
		d.step("promote:recorded")
	}
	d.supervise(p)
	for _, o := range old {
		d.log.Warn("fencing the old primary before promoting", "instance", name, "server", o)
		if err := d.fenceStop(ctx, m, o); err != nil {
			return fmt.Errorf("local: promote %s/%s: fence old primary %s: %w", name, id, o, err)
		}
	}
	if !readPostmaster(sp.data).running {
		if _, err := d.start(ctx, m, sp, in); err != nil {
			return err
		}
	}
	conn, err := d.adminConnTo(ctx, sp, srv.Port)
	if err != nil {
		return fmt.Errorf("local: promote %s/%s: %w", name, id, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("local: promote %s/%s: %w", name, id, err)
	}
	if inRecovery {
		var done bool
		if err := conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&done); err != nil {
			return fmt.Errorf("local: promote %s/%s: %w", name, id, err)
		}
		if !done {
			return fmt.Errorf("local: promote %s/%s: not promoted within 60 s; server log:\n%s", name, id, strings.Join(tailLinesQuiet(sp, 15), "\n"))
		}
	}
	// Writable: a transaction that writes WAL commits.
	if _, err := conn.Exec(ctx, "SELECT txid_current()"); err != nil {
		return fmt.Errorf("local: promote %s/%s: not writable: %w", name, id, err)
	}
	promoted := time.Since(start)
	// pg_control names the new timeline only after a checkpoint, which a
	// promotion requests but does not wait for; pg_rewind reads it.
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("local: promote %s/%s: checkpoint: %w", name, id, err)
	}
	// Its configuration as the primary, its slots, then the standbys.
	if err := d.reloadServer(ctx, m, sp); err != nil {
		return fmt.Errorf("local: promote %s/%s: %w", name, id, err)
	}
	if err := ensureSignal(m, sp, sp.data, d.ownerAccount(sp.data)); err != nil {
		return fmt.Errorf("local: promote %s/%s: %w", name, id, err)
	}
	if err := d.syncSlots(ctx, m, sp, srv); err != nil {
		return fmt.Errorf("local: promote %s/%s: replication slots: %w", name, id, err)
	}
	for _, s := range m.servers() {
		if s.ID != id {
			if err := d.reloadServer(ctx, m, d.serverPaths(name, s.ID)); err != nil {
				return fmt.Errorf("local: promote %s/%s: repoint server %s: %w", name, id, s.ID, err)
			}
		}
	}
	d.log.Info("server promoted", "instance", name, "server", id, "port", srv.Port, "promote_elapsed", promoted, "elapsed", time.Since(start))
	return nil
}

// Rebuild turns server id into a streaming standby of the primary:
// pg_rewind onto the primary's timeline when its data directory allows it,
// else (or when the rewound server does not stream within
// rebuildStreamWait) a fresh base backup.
func (d *Driver) Rebuild(ctx context.Context, name, id string) error {
	p, m, unlock, err := d.lockedMeta(name)
	if err != nil {
		return err
	}
	defer unlock()
	srv, ok := m.lookup(id)
	if !ok {
		return fmt.Errorf("local: rebuild %s/%s: no such server: %w", name, id, dataplane.ErrNotFound)
	}
	if srv.Role == dataplane.RolePrimary {
		return fmt.Errorf("local: rebuild %s/%s: it is the primary", name, id)
	}
	prim, ok := m.primary()
	if !ok {
		return fmt.Errorf("local: rebuild %s/%s: the instance has no primary", name, id)
	}
	pp := d.serverPaths(name, prim.ID)
	sp := d.serverPaths(name, id)
	if !readPostmaster(pp.data).running {
		return fmt.Errorf("local: rebuild %s/%s: the primary is not running", name, id)
	}
	if srv.Role == dataplane.RoleStandby && readPostmaster(sp.data).running && d.streaming(ctx, pp, prim, id) {
		return nil
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		return fmt.Errorf("local: rebuild %s/%s: %w", name, id, err)
	}
	start := time.Now()
	if srv.Role != dataplane.RoleBuilding {
		m.setRole(id, dataplane.RoleBuilding)
		if err := writeMeta(p.meta, m); err != nil {
			return err
		}
	}
	d.supervise(p)
	if err := d.stop(ctx, sp, in.binDir); err != nil {
		return fmt.Errorf("local: rebuild %s/%s: %w", name, id, err)
	}
	if err := d.ensureReplicationAuth(ctx, m, pp, prim); err != nil {
		return fmt.Errorf("local: rebuild %s/%s: %w", name, id, err)
	}
	if err := d.ensureSlot(ctx, pp, prim, id); err != nil {
		return fmt.Errorf("local: rebuild %s/%s: %w", name, id, err)
	}
	// pg_rewind compares the timelines of the control files (see Promote).
	if err := d.execOn(ctx, pp, prim.Port, "CHECKPOINT"); err != nil {
		return fmt.Errorf("local: rebuild %s/%s: checkpoint: %w", name, id, err)
	}
	method := "rewind"
	err = d.rewind(ctx, m, p, in, id)
	if err == nil {
		m.setRole(id, dataplane.RoleStandby)
		if err = writeMeta(p.meta, m); err == nil {
			if _, err = d.start(ctx, m, sp, in); err == nil {
				err = d.waitStreaming(ctx, pp, prim, id, rebuildStreamWait)
			}
		}
	}
	if err == nil {
		d.step("rebuild:rewound")
	}
	if err != nil {
		d.log.Warn("cannot rewind the server; taking a fresh base backup", "instance", name, "server", id, "err", err)
		method = "base backup"
		m.setRole(id, dataplane.RoleBuilding)
		if err := writeMeta(p.meta, m); err != nil {
			return err
		}
		if err := d.build(ctx, m, p, in, id); err != nil {
			return fmt.Errorf("local: rebuild %s/%s: %w", name, id, err)
		}
		if err := d.waitStreaming(ctx, pp, prim, id, time.Minute); err != nil {
			return fmt.Errorf("local: rebuild %s/%s: %w", name, id, err)
		}
	}
	if err := d.reloadServer(ctx, m, pp); err != nil {
		return fmt.Errorf("local: rebuild %s/%s: %w", name, id, err)
	}
	d.supervise(p)
	d.log.Info("server rebuilt as a standby", "instance", name, "server", id, "method", method, "elapsed", time.Since(start))
	return nil
}

// rewind runs pg_rewind on the stopped server id against the primary. The
// next start writes its configuration (pg_rewind copies the primary's).
func (d *Driver) rewind(ctx context.Context, m *metadata, p paths, in install, id string) error {
	sp := d.serverPaths(p.name, id)
	if err := dataComplete(sp.data); err != nil {
		return err
	}
	prim, _ := m.primary()
	pp := d.serverPaths(p.name, prim.ID)
	acct, err := d.ensureLayout(ctx, sp)
	if err != nil {
		return err
	}
	// pg_rewind recovers a server that was not shut down cleanly in
	// single-user mode, which refuses standby mode.
	if err := os.Remove(filepath.Join(sp.data, "standby.signal")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	src := fmt.Sprintf("host=%s port=%d user=%s dbname=%s application_name=toygres_rewind",
		conninfoQuote(pp.run), prim.Port, ReplicationUser, Database)
	out, err := d.run(ctx, acct, sp.dir, filepath.Join(in.binDir, "pg_rewind"),
		"--target-pgdata="+sp.data, "--source-server="+src)
	// Standby again whatever happened, lest a start make it a primary.
	if serr := writeFile(filepath.Join(sp.data, "standby.signal"), nil, 0o600, chowner(acct)); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("pg_rewind: %w\n%s", err, out)
	}
	d.log.Info("server rewound", "instance", m.Name, "server", id, "output", out)
	return nil
}

// streaming reports whether the primary streams to server id.
func (d *Driver) streaming(ctx context.Context, pp paths, prim serverRecord, id string) bool {
	conn, err := d.adminConnTo(ctx, pp, prim.Port)
	if err != nil {
		return false
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", slotName(id)).Scan(&n)
	return err == nil && n > 0
}

func (d *Driver) waitStreaming(ctx context.Context, pp paths, prim serverRecord, id string, limit time.Duration) error {
	if err := waitFor(ctx, limit, func() bool { return d.streaming(ctx, pp, prim, id) }); err != nil {
		return fmt.Errorf("server %s does not stream from the primary within %v: %w; its log:\n%s", id, limit, err,
			strings.Join(tailLinesQuiet(d.serverPaths(pp.name, id), 10), "\n"))
	}
	return nil
}

// Servers reports every server of the instance, the primary first: role,
// readiness, and for standbys streaming, sync and lag (from the primary's
// pg_stat_replication, or the standby's own receive and replay positions
// when the primary does not answer), and timelines.
func (d *Driver) Servers(ctx context.Context, name string) ([]dataplane.ServerState, error) {
	p, err := d.existing(name)
	if err != nil {
		return nil, err
	}
	m, err := readMeta(p.meta)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local: servers of %s: deployment incomplete", name)
	}
	if err != nil {
		return nil, err
	}
	type repl struct {
		state, sync string
		lag         int64
	}
	reps := map[string]repl{}
	primaryUp := false
	list := m.servers()
	slices.SortStableFunc(list, func(a, b serverRecord) int {
		ap, bp := a.Role == dataplane.RolePrimary, b.Role == dataplane.RolePrimary
		switch {
		case ap && !bp:
			return -1
		case bp && !ap:
			return 1
		}
		return 0
	})
	var out []dataplane.ServerState
	for _, s := range list {
		sp := d.serverPaths(name, s.ID)
		st := dataplane.ServerState{ID: s.ID, Role: s.Role, Host: m.Host, Port: s.Port}
		pm := readPostmaster(sp.data)
		if !pm.running {
			st.Message = "server is not running"
			if s.Role == dataplane.RolePrimary {
				if phase, msg := d.sup.view(name); phase != "" {
					st.Message = msg
				}
			}
			out = append(out, st)
			continue
		}
		st.Ready, st.Message = ping(ctx, pingHost(m.ListenAddress), s.Port)
		if !st.Ready {
			out = append(out, st)
			continue
		}
		conn, err := d.adminConnTo(ctx, sp, s.Port)
		if err != nil {
			st.Message = err.Error()
			out = append(out, st)
			continue
		}
		if s.Role == dataplane.RolePrimary {
			primaryUp = true
			var seg string
			if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&seg); err == nil && len(seg) >= 8 {
				tli, _ := strconv.ParseInt(seg[:8], 16, 64)
				st.Timeline = int(tli)
			}
			rows, err := conn.Query(ctx, `SELECT application_name, state, sync_state,
				COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint FROM pg_stat_replication`)
			if err == nil {
				for rows.Next() {
					var app string
					var r repl
					if rows.Scan(&app, &r.state, &r.sync, &r.lag) == nil {
						reps[app] = r
					}
				}
				rows.Close()
			}
		} else {
			var tli *int32
			var lag *int64
			_ = conn.QueryRow(ctx, `SELECT (SELECT received_tli FROM pg_stat_wal_receiver),
				pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint`).Scan(&tli, &lag)
			if tli != nil {
				st.Timeline = int(*tli)
			} else {
				var t int32
				if conn.QueryRow(ctx, "SELECT timeline_id FROM pg_control_checkpoint()").Scan(&t) == nil {
					st.Timeline = int(t)
				}
			}
			if r, ok := reps[slotName(s.ID)]; ok && primaryUp {
				st.Streaming = r.state == "streaming"
				st.Sync = r.sync == "sync" || r.sync == "quorum"
				st.LagBytes = r.lag
			} else if lag != nil {
				st.LagBytes = max(*lag, 0)
			}
			if !st.Streaming {
				st.Message += "; not streaming from the primary"
			}
		}
		conn.Close(context.WithoutCancel(ctx))
		out = append(out, st)
	}
	return out, nil
}
