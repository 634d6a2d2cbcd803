package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/internal/datadir"
	"github.com/toygres/toygres/internal/dataplane"
)

// DriverName is the name the local driver reports (Driver.Name).
const DriverName = "local"

// InstallHint is the command that installs the PostgreSQL server binaries on
// Debian and Ubuntu.
const InstallHint = "apt-get install -y postgresql"

// Defaults of Options.
const (
	DefaultListenAddress = "127.0.0.1"
	DefaultMinPort       = 15432
	DefaultMaxPort       = 16431
	// DefaultRunAs is the account that ran every instance before each got
	// an account of its own; instances still owned by it are migrated by
	// Adopt.
	DefaultRunAs = "postgres"
	// RootDataDir is the default Toygres data directory when running as
	// root: a directory the unprivileged PostgreSQL account can traverse.
	RootDataDir = datadir.Root
)

// Roles and maintenance database of every instance.
const (
	// User is the role clients log in as, with the password given to
	// Deploy: it owns Database and may create databases and roles, but it
	// is no superuser (see doc.go, "Tenant isolation"). Instances made
	// before this role layout have User as their superuser.
	User = "postgres"
	// AdminUser is Toygres' own superuser (the cluster's bootstrap user):
	// no password; it logs in only over the instance's private Unix socket,
	// by peer authentication as the account Toygres runs as.
	AdminUser = "toygres_admin"
	Database  = "postgres"
)

// Phases reported by Status.
const (
	// PhasePending: the instance has resources but Deploy has not finished
	// creating them (it converges when called again).
	PhasePending = "Pending"
	// PhaseStopped: the server process is not running.
	PhaseStopped = "Stopped"
	// PhaseStarting: the server runs but does not accept connections yet.
	PhaseStarting = "Starting"
	// PhaseStopping: the server is shutting down.
	PhaseStopping = "Stopping"
	// PhaseReady: the server accepts connections.
	PhaseReady = "Ready"
	// PhaseDeleting: a deletion was interrupted; Delete (or Adopt,
	// Readopt, Deploy) finishes it.
	PhaseDeleting = "Deleting"
	// PhaseRestarting: the server died and the supervisor is restarting it.
	PhaseRestarting = "Restarting"
	// PhaseCrashLoop: the server died too often; the supervisor stopped
	// restarting it until Readopt or Deploy succeeds.
	PhaseCrashLoop = "CrashLoop"
)

var (
	// ErrNoPostgres is returned (wrapped) when no PostgreSQL server binaries
	// are installed.
	ErrNoPostgres = errors.New("no PostgreSQL server binaries found")
	// ErrVersionNotInstalled is returned (wrapped) when the requested major
	// version is not installed.
	ErrVersionNotInstalled = errors.New("PostgreSQL version not installed")
)

// Options configures a Driver. The zero value is usable.
type Options struct {
	// Dir holds one directory per instance. Default: DefaultDir(), that is
	// <Toygres data dir>/instances. When running as root every directory on
	// the way to it must be searchable by the RunAs account.
	Dir string
	// ListenAddress is the listen_addresses value of non-internal instances:
	// an IP address, a host name or "*" (default 127.0.0.1). Internal
	// instances always listen on 127.0.0.1 only.
	ListenAddress string
	// AdvertiseHost is the host clients are told to connect to for
	// non-internal instances (Endpoint.Host). Default: ListenAddress, or
	// 127.0.0.1 when that is a wildcard ("*", "0.0.0.0").
	AdvertiseHost string
	// MinPort and MaxPort bound the TCP ports given to instances (default
	// 15432–16431).
	MinPort, MaxPort int
	// BinDirs, when set, are the only directories searched for PostgreSQL
	// binaries (each holding initdb, pg_ctl and postgres of one version).
	// Default: PATH, then /usr/lib/postgresql/*/bin.
	BinDirs []string
	// RunAs, when set and Toygres runs as root, is one account that runs
	// every instance's server (weaker isolation: an instance's superuser
	// escape reaches the others). Default: each instance runs as an account
	// of its own, created by the driver. Ignored when not running as root:
	// servers then run as the current user.
	RunAs string
	// Logger receives the driver's logs (default slog.Default()).
	Logger *slog.Logger
	// Supervision configures how the driver restarts servers that die.
	Supervision Supervision
	// OnEvent, when set, receives every supervision event (restart,
	// restart-failed, crash-loop). It is called from the supervisor's
	// goroutines, never with a driver lock held, one event at a time per
	// instance; it should return quickly.
	OnEvent func(dataplane.Event)
	// Metrics, when set, receives the supervision counters
	// (toygres_instance_restarts_total and friends, see Supervision).
	Metrics prometheus.Registerer
	// BackupDir holds the instances' WAL archives and base backups (see
	// backup.go). Default: "backups" beside Dir.
	BackupDir string
}

// Driver runs PostgreSQL instances as local server processes. It implements
// dataplane.Driver; its methods are safe for concurrent use.
type Driver struct {
	dir       string
	backupDir string
	listen    string
	advertise string
	minPort   int
	maxPort   int
	binDirs   []string
	runAs     string
	cred      *syscall.Credential // nil unless running as root
	shared    *account            // Options.RunAs as root, else nil (an account per instance)
	log       *slog.Logger

	allocMu sync.Mutex // serializes port allocation
	locksMu sync.Mutex
	locks   map[string]*nameLock

	versionsMu sync.Mutex
	versionOf  map[string]string // bin dir → major version

	sup supervisor

	// atStep, set by tests, is called at the named points of Deploy and
	// Delete where a crash leaves a distinct state on disk.
	atStep func(step string)
}

var _ dataplane.Driver = (*Driver)(nil)

// DefaultDir is the default Options.Dir: the instances directory under
// Toygres' default data directory (datadir.Default), the same one the server
// uses when given no data directory.
func DefaultDir() string { return datadir.Instances(datadir.Default()) }

// New returns a driver keeping its instances in opts.Dir, which it creates if
// needed. When running as root it looks up the account that runs PostgreSQL
// and fails if that account cannot reach opts.Dir. Missing PostgreSQL
// binaries are reported by Versions and Deploy, not by New.
func New(opts Options) (*Driver, error) {
	d := &Driver{
		dir:       opts.Dir,
		listen:    opts.ListenAddress,
		advertise: opts.AdvertiseHost,
		minPort:   opts.MinPort,
		maxPort:   opts.MaxPort,
		binDirs:   append([]string(nil), opts.BinDirs...),
		runAs:     opts.RunAs,
		log:       opts.Logger,
		locks:     map[string]*nameLock{},
		versionOf: map[string]string{},
	}
	if d.dir == "" {
		d.dir = DefaultDir()
	}
	abs, err := filepath.Abs(d.dir)
	if err != nil {
		return nil, fmt.Errorf("local: instance directory %q: %w", d.dir, err)
	}
	d.dir = abs
	if d.backupDir = opts.BackupDir; d.backupDir == "" {
		d.backupDir = filepath.Join(filepath.Dir(d.dir), "backups")
	}
	if d.backupDir, err = filepath.Abs(d.backupDir); err != nil {
		return nil, fmt.Errorf("local: backup directory: %w", err)
	}
	if d.listen == "" {
		d.listen = DefaultListenAddress
	}
	if strings.ContainsAny(d.listen, ",' \t\n\\") {
		return nil, fmt.Errorf("local: listen address %q: want one IP address, host name or \"*\"", d.listen)
	}
	if d.minPort == 0 && d.maxPort == 0 {
		d.minPort, d.maxPort = DefaultMinPort, DefaultMaxPort
	}
	if d.minPort < 1 || d.maxPort > 65535 || d.minPort > d.maxPort {
		return nil, fmt.Errorf("local: bad port range %d–%d", d.minPort, d.maxPort)
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("driver", DriverName)
	if err := d.sup.init(opts); err != nil {
		return nil, err
	}

	if os.Geteuid() == 0 {
		d.cred = &syscall.Credential{} // root: servers run as other accounts
		if d.runAs != "" {
			if d.shared, err = lookupAccount(d.runAs); err != nil {
				return nil, err
			}
		}
		// Check before creating anything, and again once all exists.
		if err := checkTraversable(d.dir); err != nil {
			return nil, err
		}
	} else {
		d.log.Warn("not running as root: every instance's server runs as this account, so a superuser escape in one instance (possible through CREATEROLE before PostgreSQL 16) reaches the others and this account's files; run Toygres as root for an account per instance")
	}
	if err := os.MkdirAll(d.dir, 0o711); err != nil {
		return nil, fmt.Errorf("local: create instance directory: %w", err)
	}
	if d.cred != nil {
		// The instances' accounts pass through; they may not list it.
		if err := os.Chmod(d.dir, 0o711); err != nil {
			return nil, fmt.Errorf("local: instance directory: %w", err)
		}
		if err := checkTraversable(d.dir); err != nil {
			return nil, err
		}
	}
	if err := d.initBackupDir(); err != nil {
		return nil, err
	}
	return d, nil
}

// Name returns "local".
func (d *Driver) Name() string { return DriverName }

// Dir returns the directory holding the instances.
func (d *Driver) Dir() string { return d.dir }

// Versions lists the installed PostgreSQL major versions, newest first. It
// fails (wrapping ErrNoPostgres, with the install command) when none is
// installed.
func (d *Driver) Versions(ctx context.Context) ([]string, error) {
	ins, err := d.installs(ctx)
	if err != nil {
		return nil, fmt.Errorf("local: versions: %w", err)
	}
	vs := make([]string, len(ins))
	for i, in := range ins {
		vs[i] = in.version
	}
	return vs, nil
}

// Deploy creates the instance (initdb, configuration, server start) or
// converges to it: an instance already running is left alone, a stopped one
// is started, a half-made one is finished, and one whose deletion was
// interrupted is first removed completely. It returns once the server
// process runs (pg_ctl start -w, for at most 15 s); Status reports when it
// accepts connections. password is that of the user's role User (no
// superuser, see doc.go); it is set when the cluster is initialized and
// later calls do not change it. A successful Deploy puts the server under
// supervision (and clears a crash loop).
func (d *Driver) Deploy(ctx context.Context, spec dataplane.Spec, password string) error {
	if err := validName(spec.Name); err != nil {
		return err
	}
	if password == "" {
		return fmt.Errorf("local: deploy %s: empty password", spec.Name)
	}
	if strings.ContainsAny(password, "\r\n\x00") {
		return fmt.Errorf("local: deploy %s: the password must not contain line breaks or NUL", spec.Name)
	}
	unlock := d.lock(spec.Name)
	defer unlock()

	p := d.paths(spec.Name)
	// Older versions handed initdb the password in a file; a crash could
	// leave it behind: never let it outlive the next call.
	d.removePWFile(p)
	if deleting(p) {
		// The instance is doomed: finish its deletion, then start afresh.
		if err := d.deleteLocked(ctx, p); err != nil {
			return fmt.Errorf("local: deploy %s: finish interrupted deletion: %w", spec.Name, err)
		}
	}

	m, err := readMeta(p.meta)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if m, err = d.create(ctx, spec, p); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		if spec.PostgresVersion != "" && spec.PostgresVersion != m.Version {
			return fmt.Errorf("local: deploy %s: instance exists with PostgreSQL %s, not %s", spec.Name, m.Version, spec.PostgresVersion)
		}
		if spec.Internal != m.Spec.Internal {
			return fmt.Errorf("local: deploy %s: instance exists with internal=%t", spec.Name, m.Spec.Internal)
		}
	}
	in, err := d.install(ctx, m.Version)
	if err != nil {
		return fmt.Errorf("local: deploy %s: %w", spec.Name, err)
	}
	if !m.Initialized {
		if err := d.initialize(ctx, m, p, in, password); err != nil {
			return err
		}
	}
	// Every server of the instance, as its role says.
	if _, err := d.startExisting(ctx, m, p); err != nil {
		return err
	}
	return nil
}

// create records a new instance: it resolves the version, clears what a
// crashed attempt or an interrupted Delete left in the instance directory,
// allocates a port and writes the metadata.
func (d *Driver) create(ctx context.Context, spec dataplane.Spec, p paths) (*metadata, error) {
	in, err := d.install(ctx, spec.PostgresVersion)
	if err != nil {
		return nil, fmt.Errorf("local: deploy %s: %w", spec.Name, err)
	}
	if _, err := os.Lstat(p.dir); err == nil {
		// Left over without metadata: stop anything running there, then start over.
		d.log.Warn("removing incomplete instance directory", "instance", spec.Name, "dir", p.dir)
		if err := d.deleteLocked(ctx, p); err != nil {
			return nil, fmt.Errorf("local: deploy %s: remove leftovers: %w", spec.Name, err)
		}
	}
	// Toygres' own until initialize gives the parts the server writes to
	// the instance's account (ensureLayout).
	if err := os.Mkdir(p.dir, 0o700); err != nil {
		return nil, fmt.Errorf("local: deploy %s: create instance directory: %w", spec.Name, err)
	}
	d.step("create:mkdir")
	listen, host := d.addresses(spec.Internal)
	m := &metadata{
		Format:        metaFormat,
		Name:          spec.Name,
		Version:       in.version,
		ListenAddress: listen,
		Host:          host,
		Roles:         rolesSeparate,
		Spec: specRecord{
			PostgresVersion: spec.PostgresVersion,
			StorageGB:       spec.StorageGB,
			Internal:        spec.Internal,
			DNSLabel:        spec.DNSLabel,
		},
		CreatedAt: time.Now().UTC(),
	}
	// Allocate and record under allocMu, so that concurrent deploys see the
	// port as taken.
	d.allocMu.Lock()
	defer d.allocMu.Unlock()
	if m.Port, err = d.allocatePort(listen, spec.Name, nil); err != nil {
		return nil, fmt.Errorf("local: deploy %s: %w", spec.Name, err)
	}
	if err := writeMeta(p.meta, m); err != nil {
		return nil, fmt.Errorf("local: deploy %s: %w", spec.Name, err)
	}
	d.log.Info("creating instance", "instance", spec.Name, "version", m.Version, "port", m.Port, "listen", listen)
	d.step("create:meta")
	return m, nil
}

// initialize makes the cluster: initdb and the configuration go into a
// scratch directory (data.init) that takes the place of data/ only when
// complete, so data/ is either absent or whole. Then the instance is marked
// initialized. Whatever an interrupted attempt left (scratch directory,
// password file, an initdb still running) is cleared first.
func (d *Driver) initialize(ctx context.Context, m *metadata, p paths, in install, password string) error {
	// Stops a server and kills an orphaned initdb or its bootstrap backend.
	if err := d.stop(ctx, p, in.binDir); err != nil {
		return fmt.Errorf("local: deploy %s: %w", m.Name, err)
	}
	if err := dataComplete(p.data); err == nil {
		// Interrupted after the new cluster took its place: only the
		// metadata is missing.
		d.log.Info("cluster already initialized", "instance", m.Name)
	} else {
		for _, dir := range []string{p.data, p.initdata} {
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("local: deploy %s: remove incomplete data directory: %w", m.Name, err)
			}
		}
		acct, err := d.ensureLayout(ctx, p)
		if err != nil {
			return fmt.Errorf("local: deploy %s: %w", m.Name, err)
		}
		d.step("initdb:account")
		// initdb may not create it: the instance directory is Toygres'.
		if err := ensureOwnedDir(p.initdata, acct); err != nil {
			return fmt.Errorf("local: deploy %s: %w", m.Name, err)
		}
		d.step("initdb:pwfile")
		start := time.Now()
		d.step("initdb:start")
		// The bootstrap superuser is Toygres' admin, with no password; the
		// user's role is made by setupRoles.
		out, err := d.run(ctx, acct, p.dir, filepath.Join(in.binDir, "initdb"),
			"-D", p.initdata, "-U", AdminUser, "--auth-local=peer", "--auth-host=reject",
			"-E", "UTF8", "--locale=C")
		if err != nil {
			return fmt.Errorf("local: deploy %s: initdb: %w\n%s", m.Name, err, out)
		}
		d.log.Debug("initdb done", "instance", m.Name, "elapsed", time.Since(start), "output", out)
		d.step("initdb:done")
		if err := d.writeConfig(m, p, p.initdata, acct); err != nil {
			return fmt.Errorf("local: deploy %s: %w", m.Name, err)
		}
		d.step("initdb:configured")
		if err := d.setupRoles(ctx, acct, p, in, p.initdata, password); err != nil {
			return fmt.Errorf("local: deploy %s: %w", m.Name, err)
		}
		d.step("initdb:roles")
		if err := os.Rename(p.initdata, p.data); err != nil {
			return fmt.Errorf("local: deploy %s: %w", m.Name, err)
		}
		if err := syncDir(p.dir); err != nil {
			return fmt.Errorf("local: deploy %s: %w", m.Name, err)
		}
		d.step("initdb:renamed")
	}
	m.Initialized = true
	if err := writeMeta(p.meta, m); err != nil {
		return fmt.Errorf("local: deploy %s: %w", m.Name, err)
	}
	return nil
}

// startWait bounds how long pg_ctl start waits for the server to be ready;
// a server still starting after it (crash recovery) is left to Status.
const startWait = 15 * time.Second

// start starts the server unless it runs; it reports whether it started it.
// A server that has never started moves to another port when its port is
// taken (nobody knows the endpoint yet); one that has keeps its port. It
// refuses to start a cluster whose files are missing. Its errors are
// *dataplane.Problem.
func (d *Driver) start(ctx context.Context, m *metadata, p paths, in install) (bool, error) {
	problem := func(kind dataplane.ProblemKind, err error) error {
		return &dataplane.Problem{Instance: m.Name, Kind: kind, Err: err}
	}
	srv := m.server(p.id)
	if srv.Role == dataplane.RoleFenced || srv.Role == dataplane.RoleBuilding {
		// Never started: Rebuild (or SetReplicas) makes it a standby first.
		return false, nil
	}
	for attempt := 1; ; attempt++ {
		srv = m.server(p.id)
		pm := readPostmaster(p.data)
		if pm.running {
			// Started by a call that crashed before recording it.
			if err := d.recordStarted(m, p); err != nil {
				return false, problem(dataplane.ProblemStartFailed, err)
			}
			return false, nil
		}
		if err := dataComplete(p.data); err != nil {
			return false, problem(dataplane.ProblemMissingConfig, fmt.Errorf("local: start %s: %w; not starting a damaged cluster (Delete removes it)", m.Name, err))
		}
		if err := d.clearStale(ctx, m, p, pm); err != nil {
			return false, problem(dataplane.ProblemStartFailed, err)
		}
		if !portFree(m.ListenAddress, srv.Port) {
			if m.Started || p.id != "0" {
				return false, problem(dataplane.ProblemPortTaken, fmt.Errorf("local: start %s: port %d on %s is in use by another process", m.Name, srv.Port, m.ListenAddress))
			}
			if err := d.movePort(m, p); err != nil {
				return false, problem(dataplane.ProblemPortTaken, err)
			}
		}
		// The account, the owners and modes of the directories (an instance
		// of an older Toygres is migrated here).
		acct, err := d.ensureLayout(ctx, p)
		if err != nil {
			return false, problem(dataplane.ProblemStartFailed, fmt.Errorf("local: start %s: %w", m.Name, err))
		}
		if err := d.ensureArchive(p, acct); err != nil {
			return false, problem(dataplane.ProblemStartFailed, fmt.Errorf("local: start %s: %w", m.Name, err))
		}
		// toygres.conf follows the metadata, whatever an interrupted port
		// move left in it.
		if err := d.writeServerConfig(m, p, p.data, acct); err != nil {
			return false, problem(dataplane.ProblemStartFailed, fmt.Errorf("local: start %s: %w", m.Name, err))
		}
		if err := ensureSignal(m, p, p.data, acct); err != nil {
			return false, problem(dataplane.ProblemStartFailed, fmt.Errorf("local: start %s: %w", m.Name, err))
		}
		out, err := d.run(ctx, acct, p.dir, filepath.Join(in.binDir, "pg_ctl"),
			"start", "-D", p.data, "-l", p.log, "-w", "-t", strconv.Itoa(int(startWait/time.Second)))
		if err != nil {
			if readPostmaster(p.data).running {
				// Still starting (e.g. crash recovery): Status tells when it is ready.
				d.log.Info("server still starting", "instance", m.Name, "output", out)
			} else {
				// Another process may have held the port only briefly: the
				// server's own complaint counts as much as a probe now.
				logTail := tailLinesQuiet(p, 20)
				taken := !portFree(m.ListenAddress, srv.Port) || strings.Contains(strings.Join(logTail, "\n"), "Address already in use")
				if !m.Started && p.id == "0" && attempt < 3 && taken {
					if err := d.movePort(m, p); err != nil {
						return false, problem(dataplane.ProblemPortTaken, err)
					}
					d.log.Warn("port taken while starting, moved to another", "instance", m.Name, "port", m.Port)
					continue
				}
				kind := dataplane.ProblemStartFailed
				if taken {
					kind = dataplane.ProblemPortTaken
				}
				return false, problem(kind, fmt.Errorf("local: start %s: pg_ctl start: %w\n%s\nserver log:\n%s", m.Name, err, out, strings.Join(logTail, "\n")))
			}
		}
		d.step("start:started")
		if err := d.recordStarted(m, p); err != nil {
			return true, problem(dataplane.ProblemStartFailed, err)
		}
		d.log.Info("server started", "instance", m.Name, "server", p.id, "role", srv.Role, "port", srv.Port, "version", m.Version)
		return true, nil
	}
}

// recordStarted fixes the instance's port once its server has run.
func (d *Driver) recordStarted(m *metadata, p paths) error {
	if m.Started {
		return nil
	}
	m.Started = true
	if err := writeMeta(p.meta, m); err != nil {
		return fmt.Errorf("local: start %s: %w", m.Name, err)
	}
	return nil
}

// clearStale removes what a server that died without shutting down (killed,
// or the machine rebooted) left behind and the new server would trip over:
// a postmaster.pid and socket lock files naming a process that is now a
// zombie or (pid reuse) an unrelated process. It first waits for the dead
// server's orphaned backends to exit: starting beside them would be unsafe.
func (d *Driver) clearStale(ctx context.Context, m *metadata, p paths, pm postmaster) error {
	if waitFor(ctx, 10*time.Second, func() bool { return len(processesIn(p.data)) == 0 }) != nil {
		return fmt.Errorf("local: start %s: the previous server is gone but processes %v still use its data directory", m.Name, processesIn(p.data))
	}
	if pm.stale {
		if err := os.Remove(filepath.Join(p.data, "postmaster.pid")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("local: start %s: remove stale pid file: %w", m.Name, err)
		}
	}
	// The socket directory is the instance's own: with no server running,
	// its sockets and their lock files are stale.
	socks, _ := filepath.Glob(filepath.Join(p.dir, ".s.PGSQL.*")) // before run/ existed
	more, _ := filepath.Glob(filepath.Join(p.run, ".s.PGSQL.*"))
	for _, f := range append(socks, more...) {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("local: start %s: remove stale socket file: %w", m.Name, err)
		}
	}
	return nil
}

// movePort gives an instance that has never started a new free port. The
// next start writes it into toygres.conf.
func (d *Driver) movePort(m *metadata, p paths) error {
	d.allocMu.Lock()
	defer d.allocMu.Unlock()
	port, err := d.allocatePort(m.ListenAddress, m.Name, nil)
	if err != nil {
		return fmt.Errorf("local: start %s: %w", m.Name, err)
	}
	d.log.Info("port taken, moving instance", "instance", m.Name, "old_port", m.Port, "port", port)
	m.Port = port
	if err := writeMeta(p.meta, m); err != nil {
		return fmt.Errorf("local: start %s: %w", m.Name, err)
	}
	return nil
}

// Status reports the instance's phase: Pending (Deploy unfinished), Stopped,
// Starting, Stopping, Ready (accepting connections), Deleting (a deletion
// was interrupted), or the supervisor's view of a dead server: Restarting
// or CrashLoop. It returns ErrNotFound (wrapped) for an unknown instance.
func (d *Driver) Status(ctx context.Context, name string) (dataplane.Status, error) {
	p, err := d.existing(name)
	if err != nil {
		return dataplane.Status{}, err
	}
	if deleting(p) {
		return dataplane.Status{Phase: PhaseDeleting, Message: "deletion interrupted; Delete (or the next start of Toygres) finishes it"}, nil
	}
	m, err := readMeta(p.meta)
	if errors.Is(err, fs.ErrNotExist) {
		return dataplane.Status{Phase: PhasePending, Message: "deployment incomplete (no metadata yet)"}, nil
	}
	if err != nil {
		return dataplane.Status{}, err
	}
	if !m.Initialized {
		return dataplane.Status{Phase: PhasePending, Message: "deployment incomplete (cluster not initialized yet)"}, nil
	}
	prim, hasPrimary := m.primary()
	if !hasPrimary {
		return dataplane.Status{Phase: PhaseNoPrimary, Message: "no server is the primary (a failover is under way): promote a standby"}, nil
	}
	p = d.serverPaths(name, prim.ID)
	pm := readPostmaster(p.data)
	if !pm.running {
		if phase, msg := d.sup.view(name); phase != "" {
			return dataplane.Status{Phase: phase, Message: msg}, nil
		}
		msg := "server is not running"
		if last := tailLinesQuiet(p, 1); len(last) > 0 {
			msg += "; last log line: " + last[0]
		}
		return dataplane.Status{Phase: PhaseStopped, Message: msg}, nil
	}
	if pm.status == "stopping" {
		return dataplane.Status{Phase: PhaseStopping, Message: "server is shutting down"}, nil
	}
	ok, msg := ping(ctx, pingHost(m.ListenAddress), prim.Port)
	if !ok {
		return dataplane.Status{Phase: PhaseStarting, Message: msg}, nil
	}
	return dataplane.Status{Phase: PhaseReady, Ready: true, Message: msg}, nil
}

// Endpoint returns where clients reach the instance: its advertised host
// (127.0.0.1 by default), its port, the user's role User and database
// "postgres".
func (d *Driver) Endpoint(ctx context.Context, name string) (dataplane.Endpoint, error) {
	p, err := d.existing(name)
	if err != nil {
		return dataplane.Endpoint{}, err
	}
	m, err := readMeta(p.meta)
	if errors.Is(err, fs.ErrNotExist) {
		return dataplane.Endpoint{}, fmt.Errorf("local: endpoint %s: deployment incomplete", name)
	}
	if err != nil {
		return dataplane.Endpoint{}, err
	}
	// The primary first, the others in server order: the set of addresses
	// (and so a stored read-write URL) stays the same across failovers.
	_, prim := d.primaryPaths(name, m)
	ep := dataplane.Endpoint{Host: m.Host, Port: prim.Port, User: User, Database: Database}
	for _, s := range m.servers() {
		if s.ID != prim.ID {
			ep.Standbys = append(ep.Standbys, dataplane.HostPort{Host: m.Host, Port: s.Port})
		}
	}
	ep.MultiHost = len(ep.Standbys) > 0
	return ep, nil
}

// Delete ends the instance's supervision, stops its server (fast shutdown,
// then immediate, then SIGKILL) and every other process working in its
// directory, and removes the directory, which frees its port. It works on
// any state an interrupted Deploy or Delete left: it first marks the
// directory for deletion, so that a deletion interrupted at any point is
// finished by the next Delete, Deploy, Readopt or Adopt. Deleting an
// unknown instance succeeds.
func (d *Driver) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	// Cancel first, so that a restart under way gives up; the supervisor
	// rechecks under the lock.
	d.unsupervise(name)
	unlock := d.lock(name)
	defer unlock()
	p := d.paths(name)
	if err := d.deleteLocked(ctx, p); err != nil {
		return fmt.Errorf("local: delete %s: %w", name, err)
	}
	return nil
}

// deleteLocked is Delete with the instance lock held.
func (d *Driver) deleteLocked(ctx context.Context, p paths) error {
	d.unsupervise(p.name)
	if _, err := os.Lstat(p.dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if err := markDeleting(p); err != nil {
		return err
	}
	d.step("delete:marked")
	m, _ := readMeta(p.meta)
	// The standbys first (found on disk: the metadata may be gone).
	dirs, _ := filepath.Glob(filepath.Join(p.dir, "server-*"))
	for _, dir := range dirs {
		sp := d.serverPaths(p.name, strings.TrimPrefix(filepath.Base(dir), "server-"))
		if err := d.stop(ctx, sp, d.binDirFor(ctx, sp, m)); err != nil {
			return err
		}
	}
	if err := d.stop(ctx, p, d.binDirFor(ctx, p, m)); err != nil {
		return err
	}
	d.step("delete:stopped")
	// The archive outlives the instance; its account, and so its uid, do not.
	if err := d.sealArchive(p); err != nil {
		return err
	}
	if err := d.removeAccount(ctx, p); err != nil {
		return err
	}
	if err := d.removeInstanceDir(p); err != nil {
		return err
	}
	d.log.Info("instance deleted", "instance", p.name)
	return nil
}

// removeInstanceDir removes the directory of a stopped instance, its
// deletion marker last, so that until the very end a crash leaves a
// directory still marked for deletion.
func (d *Driver) removeInstanceDir(p paths) error {
	entries, err := os.ReadDir(p.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	removed := false
	for _, e := range entries {
		if e.Name() == markerFile {
			continue
		}
		if err := os.RemoveAll(filepath.Join(p.dir, e.Name())); err != nil {
			return err
		}
		if !removed {
			removed = true
			d.step("delete:removing")
		}
	}
	if err := os.Remove(p.marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Remove(p.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(p.dir))
}

// Logs returns up to tail of the most recent lines of the server log (all of
// them, up to a few MiB, when tail is negative).
func (d *Driver) Logs(ctx context.Context, name string, tail int) ([]string, error) {
	p, err := d.existing(name)
	if err != nil {
		return nil, err
	}
	if m, err := readMeta(p.meta); err == nil {
		p, _ = d.primaryPaths(name, m) // the primary's log
	}
	// Opened without following links: the server's account owns the log.
	lines, err := tailLines(p.dir, filepath.Base(p.log), tail)
	if errors.Is(err, fs.ErrNotExist) {
		return []string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("local: logs %s: %w", name, err)
	}
	return lines, nil
}

// Adopt is called when Toygres starts: it scans the instance directory,
// adopts the servers that still run, starts the initialized instances whose
// server does not run (after a reboot, say), finishes the deletions that
// were interrupted and puts the running servers under supervision.
// Instances whose Deploy never finished are listed as pending, for Deploy
// or Delete to converge. One instance's problem (a damaged directory, a
// taken port, …) is reported in the AdoptReport and never stops the scan;
// the error is only for a total failure (the instance directory cannot be
// read, ctx ends).
func (d *Driver) Adopt(ctx context.Context) (dataplane.AdoptReport, error) {
	var r dataplane.AdoptReport
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return r, fmt.Errorf("local: adopt: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || validName(e.Name()) != nil {
			continue
		}
		if ctx.Err() != nil {
			return r, fmt.Errorf("local: adopt: %w", ctx.Err())
		}
		name := e.Name()
		outcome, err := d.adoptOne(ctx, name)
		if err != nil {
			pr := asProblem(name, dataplane.ProblemStartFailed, err)
			d.log.Error("cannot adopt instance", "instance", name, "kind", pr.Kind, "err", pr.Err)
			r.Problems = append(r.Problems, pr)
			continue
		}
		switch outcome {
		case adopted:
			r.Adopted = append(r.Adopted, name)
		case restarted:
			r.Restarted = append(r.Restarted, name)
		case pending:
			r.Pending = append(r.Pending, name)
		case deleted:
			r.Deleted = append(r.Deleted, name)
		}
	}
	d.log.Info("adopted instances", "running", len(r.Adopted), "restarted", len(r.Restarted),
		"pending", len(r.Pending), "deleted", len(r.Deleted), "problems", len(r.Problems))
	return r, nil
}

type adoptOutcome int

const (
	adopted adoptOutcome = iota
	restarted
	pending
	deleted
)

// adoptOne adopts, restarts or finishes deleting one instance.
func (d *Driver) adoptOne(ctx context.Context, name string) (adoptOutcome, error) {
	unlock := d.lock(name)
	defer unlock()
	p := d.paths(name)
	d.removePWFile(p)
	if deleting(p) {
		d.log.Warn("finishing interrupted deletion", "instance", name)
		if err := d.deleteLocked(ctx, p); err != nil {
			return 0, &dataplane.Problem{Instance: name, Kind: dataplane.ProblemHalfDeleted, Err: fmt.Errorf("local: adopt %s: finish interrupted deletion: %w", name, err)}
		}
		return deleted, nil
	}
	m, err := readMeta(p.meta)
	if errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("instance deployment incomplete (no metadata)", "instance", name)
		return pending, nil
	}
	if err != nil {
		return 0, &dataplane.Problem{Instance: name, Kind: dataplane.ProblemUnreadable, Err: fmt.Errorf("local: adopt %s: %w", name, err)}
	}
	if !m.Initialized {
		d.log.Warn("instance deployment incomplete (cluster not initialized)", "instance", name)
		return pending, nil
	}
	started, err := d.startExisting(ctx, m, p)
	if err != nil {
		return 0, err
	}
	if started {
		return restarted, nil
	}
	d.log.Info("adopted running server", "instance", name, "port", m.Port)
	return adopted, nil
}

// Readopt retries the adoption of one instance, as Adopt does at start-up:
// it starts the server unless it runs and puts it under supervision again,
// which also clears a crash loop. It reports whether it started the server.
// An instance whose deletion was interrupted is deleted and ErrNotFound
// returned; one whose Deploy never finished is an error (Deploy or Delete
// converge it). Failures to start are *dataplane.Problem (errors.As).
func (d *Driver) Readopt(ctx context.Context, name string) (restarted bool, err error) {
	p, err := d.existing(name)
	if err != nil {
		return false, err
	}
	unlock := d.lock(name)
	defer unlock()
	d.removePWFile(p)
	if deleting(p) {
		if err := d.deleteLocked(ctx, p); err != nil {
			return false, &dataplane.Problem{Instance: name, Kind: dataplane.ProblemHalfDeleted, Err: fmt.Errorf("local: readopt %s: finish interrupted deletion: %w", name, err)}
		}
		return false, fmt.Errorf("local: readopt %s: finished an interrupted deletion: %w", name, dataplane.ErrNotFound)
	}
	m, err := readMeta(p.meta)
	if errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("local: readopt %s: deployment incomplete (no metadata); Deploy or Delete converge it", name)
	}
	if err != nil {
		return false, &dataplane.Problem{Instance: name, Kind: dataplane.ProblemUnreadable, Err: fmt.Errorf("local: readopt %s: %w", name, err)}
	}
	if !m.Initialized {
		return false, fmt.Errorf("local: readopt %s: deployment incomplete (cluster not initialized); Deploy or Delete converge it", name)
	}
	return d.startExisting(ctx, m, p)
}

// startExisting starts an initialized instance unless it runs, and
// supervises it. The caller holds the instance lock.
func (d *Driver) startExisting(ctx context.Context, m *metadata, p paths) (bool, error) {
	in, err := d.install(ctx, m.Version)
	if err != nil {
		return false, &dataplane.Problem{Instance: m.Name, Kind: dataplane.ProblemVersionMissing, Err: fmt.Errorf("local: start %s: %w", m.Name, err)}
	}
	if readPostmaster(p.data).running && d.needsMigration(p) {
		// Made by a Toygres before per-instance accounts: its server runs
		// as a shared account. Restart it once under its own account.
		d.log.Warn("restarting the server of an older instance under an account of its own", "instance", m.Name, "account", AccountName(p.dir))
		if err := d.stop(ctx, p, in.binDir); err != nil {
			return false, &dataplane.Problem{Instance: m.Name, Kind: dataplane.ProblemStartFailed, Err: fmt.Errorf("local: migrate %s: %w", m.Name, err)}
		}
	}
	started := false
	for _, s := range m.servers() {
		sp := d.serverPaths(m.Name, s.ID)
		if s.Role == dataplane.RoleFenced || s.Role == dataplane.RoleBuilding {
			// Never runs: a fenced server still running (a crash
			// between recording and stopping it) is stopped now.
			if readPostmaster(sp.data).running {
				d.log.Warn("stopping a fenced server found running", "instance", m.Name, "server", s.ID)
				if err := d.stop(ctx, sp, in.binDir); err != nil {
					return false, &dataplane.Problem{Instance: m.Name, Kind: dataplane.ProblemStartFailed, Err: fmt.Errorf("local: stop fenced server %s of %s: %w", s.ID, m.Name, err)}
				}
			}
			continue
		}
		ok, err := d.start(ctx, m, sp, in)
		if err != nil {
			return false, err
		}
		started = started || ok
	}
	d.supervise(p)
	return started, nil
}

// asProblem returns the *dataplane.Problem in err's chain, or wraps err in
// one of kind.
func asProblem(name string, kind dataplane.ProblemKind, err error) *dataplane.Problem {
	var pr *dataplane.Problem
	if errors.As(err, &pr) {
		return pr
	}
	return &dataplane.Problem{Instance: name, Kind: kind, Err: err}
}

// step marks a point where a crash leaves a distinct state (for tests).
func (d *Driver) step(name string) {
	if d.atStep != nil {
		d.atStep(name)
	}
}

// paths are the files of one instance.
type paths struct {
	name     string
	dir      string // instance directory
	data     string // PGDATA
	initdata string // where initdb makes the cluster before it becomes data
	log      string // server log
	run      string // the server's private Unix socket directory
	meta     string // instance.json
	pwfile   string // initdb password file of older versions (removed if found)
	marker   string // present while the instance is being deleted
	backup   string // <BackupDir>/<name>: its WAL archive and base backups
	// inst is the instance directory (dir is a standby's own directory
	// in the paths of a standby server, see serverPaths); the instance's
	// account is named after it.
	inst string
	// id is the server these paths are of ("0": the instance's first
	// server, whose files are directly in the instance directory).
	id string
}

func (d *Driver) paths(name string) paths {
	dir := filepath.Join(d.dir, name)
	return paths{
		name:     name,
		dir:      dir,
		data:     filepath.Join(dir, "data"),
		initdata: filepath.Join(dir, "data.init"),
		log:      filepath.Join(dir, "postgres.log"),
		run:      filepath.Join(dir, "run"),
		meta:     filepath.Join(dir, "instance.json"),
		pwfile:   filepath.Join(dir, ".pwfile"),
		marker:   filepath.Join(dir, markerFile),
		backup:   filepath.Join(d.backupDir, name),
		inst:     dir,
		id:       "0",
	}
}

// existing returns the paths of an instance that has resources, or
// ErrNotFound.
func (d *Driver) existing(name string) (paths, error) {
	if err := validName(name); err != nil {
		return paths{}, fmt.Errorf("%w: %w", dataplane.ErrNotFound, err)
	}
	p := d.paths(name)
	if _, err := os.Lstat(p.dir); errors.Is(err, fs.ErrNotExist) {
		return paths{}, fmt.Errorf("local: instance %s: %w", name, dataplane.ErrNotFound)
	} else if err != nil {
		return paths{}, fmt.Errorf("local: instance %s: %w", name, err)
	}
	return p, nil
}

func (d *Driver) removePWFile(p paths) {
	if err := os.Remove(p.pwfile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Error("cannot remove password file", "instance", p.name, "err", err)
	}
}

// binDirFor returns the binaries of an existing instance (from its metadata,
// else from PG_VERSION), or "" when they cannot be found.
func (d *Driver) binDirFor(ctx context.Context, p paths, m *metadata) string {
	v := ""
	if m != nil {
		v = m.Version
	} else if b, err := readBeneath(p.data, "PG_VERSION", 64); err == nil {
		v = strings.TrimSpace(string(b))
	}
	if v == "" {
		return ""
	}
	in, err := d.install(ctx, v)
	if err != nil {
		return ""
	}
	return in.binDir
}

// addresses returns listen_addresses and the endpoint host of an instance.
func (d *Driver) addresses(internal bool) (listen, host string) {
	if internal {
		return "127.0.0.1", "127.0.0.1"
	}
	listen = d.listen
	switch {
	case d.advertise != "":
		host = d.advertise
	case listen == "::":
		host = "localhost"
	case isWildcard(listen):
		host = "127.0.0.1"
	default:
		host = listen
	}
	return listen, host
}

func isWildcard(addr string) bool { return addr == "*" || addr == "0.0.0.0" || addr == "::" }

// pingHost is where Status checks a server listening on listen.
func pingHost(listen string) string {
	switch listen {
	case "*", "0.0.0.0":
		return "127.0.0.1"
	case "::":
		return "::1"
	}
	return listen
}

// allocatePort returns the lowest port of the range that no other instance
// claims and nothing listens on. The caller holds allocMu.
func (d *Driver) allocatePort(listen, self string, own *metadata) (int, error) {
	claimed := map[int]bool{}
	if own != nil {
		claimed[own.Port] = true
		for _, s := range own.Servers {
			claimed[s.Port] = true
		}
	}
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return 0, fmt.Errorf("allocate port: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == self || validName(e.Name()) != nil {
			continue
		}
		if m, err := readMeta(filepath.Join(d.dir, e.Name(), "instance.json")); err == nil {
			claimed[m.Port] = true
			for _, s := range m.Servers {
				claimed[s.Port] = true
			}
		}
	}
	for port := d.minPort; port <= d.maxPort; port++ {
		if !claimed[port] && portFree(listen, port) {
			return port, nil
		}
	}
	return 0, fmt.Errorf("allocate port: no free port in %d–%d", d.minPort, d.maxPort)
}

// portFree reports whether a server could listen on port at listen.
func portFree(listen string, port int) bool {
	host := listen
	if listen == "*" {
		host = ""
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

func validName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("local: invalid instance name %q: want lower-case letters, digits and hyphens, starting with a letter, at most 63 bytes", name)
	}
	return nil
}

// nameLock serializes the mutating calls of one instance.
type nameLock struct {
	mu   sync.Mutex
	refs int
}

// lockedMeta locks an existing instance and reads its metadata; the caller
// calls unlock when done (on error nothing is held).
func (d *Driver) lockedMeta(name string) (p paths, m *metadata, unlock func(), err error) {
	if p, err = d.existing(name); err != nil {
		return paths{}, nil, nil, err
	}
	unlock = d.lock(name)
	if m, err = readMeta(p.meta); err != nil {
		unlock()
		return paths{}, nil, nil, err
	}
	return p, m, unlock, nil
}

func (d *Driver) lock(name string) (unlock func()) {
	d.locksMu.Lock()
	l := d.locks[name]
	if l == nil {
		l = &nameLock{}
		d.locks[name] = l
	}
	l.refs++
	d.locksMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		d.locksMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(d.locks, name)
		}
		d.locksMu.Unlock()
	}
}

// lookupAccount returns the shared account Options.RunAs names, with no
// supplementary groups (a server keeps none, such as ssl-cert).
func lookupAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("local: running as root with RunAs %q, but there is no such account: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("local: account %q: bad uid/gid %q/%q", name, u.Uid, u.Gid)
	}
	if uid == 0 || gid == 0 {
		return nil, fmt.Errorf("local: account %q is root or in root's group; PostgreSQL must run as an unprivileged account", name)
	}
	return &account{name: name, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}, nil
}

// chowner returns a function giving a path to acct (nil when acct is nil:
// not root).
func chowner(acct *account) func(string) error {
	if acct == nil {
		return nil
	}
	return func(path string) error {
		if err := os.Lchown(path, int(acct.cred.Uid), int(acct.cred.Gid)); err != nil {
			return fmt.Errorf("chown %s to %s: %w", path, acct.name, err)
		}
		return nil
	}
}
