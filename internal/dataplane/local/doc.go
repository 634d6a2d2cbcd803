// Package local is Toygres' local data plane: every instance is a real
// PostgreSQL server process that Toygres runs on this machine, from the
// PostgreSQL binaries installed here.
//
// # Binaries and versions
//
// The server binaries (initdb, pg_ctl, postgres) are looked up on PATH and
// under /usr/lib/postgresql/*/bin (Debian and Ubuntu), or only in
// Options.BinDirs when it is set. Each directory provides one major version;
// Versions lists them newest first, and Spec.PostgresVersion picks one ("" is
// the newest). Install them with
//
//	apt-get install -y postgresql
//
// # On-disk layout
//
// Every instance lives in its own directory under Options.Dir (owners and
// modes when Toygres runs as root; "acct" is the instance's own account):
//
//	<Dir>/                   root 0711: accounts pass through, cannot list
//	<Dir>/<name>/            root 0711
//	    instance.json        root 0600: version, port, addresses, spec, progress
//	    data/                acct 0700: the cluster (PGDATA) made by initdb
//	    data/toygres.conf    settings Toygres manages (included from postgresql.conf)
//	    data/pg_hba.conf     see "Tenant isolation"
//	    data/pg_ident.conf   maps Toygres' OS account to AdminUser
//	    postgres.log         acct 0600: the server log (pg_ctl -l)
//	    run/                 acct 0700: the server's private Unix socket
//	                         (when the path is short enough, else TCP only)
//
// The port is picked from Options.MinPort..MaxPort when the instance is
// created and recorded in instance.json; it never changes once the server has
// started (clients hold it), and it is free again once the instance is
// deleted.
//
// # Tenant isolation
//
// Instances belong to different users; the owner of one must not read,
// change or stop another, nor reach the machine. Three layers:
//
// Roles. Clients log in as User ("postgres", the connection string's user)
// with the password given to Deploy. It is no superuser: it owns the
// database "postgres", has CREATEDB and CREATEROLE, and is a member of
// pg_monitor and pg_signal_backend (it may cancel or end non-superuser
// sessions only); it is in none of pg_execute_server_program,
// pg_read_server_files, pg_write_server_files, so COPY … PROGRAM, COPY to
// or from files, lo_import/lo_export and pg_read_file are refused, and so
// is ALTER SYSTEM. The cluster's bootstrap superuser is AdminUser
// ("toygres_admin"): it has no password; pg_hba.conf lets it in only over
// the private Unix socket by peer authentication as the OS account Toygres
// runs as (pg_ident.conf), and rejects it over TCP. Every other login needs
// its SCRAM password. initdb makes the cluster with AdminUser; User is then
// created in single-user mode (no server listening) from a SCRAM verifier
// computed here for ASCII passwords, so the plain password reaches neither
// a file nor the server (other passwords are sent in that session's input
// and hashed by the server). Caveat: before PostgreSQL 16, CREATEROLE lets
// a role grant itself the predefined roles above (the PostgreSQL manual
// calls such roles "almost-superuser"); PostgreSQL 16 requires ADMIN OPTION
// for that. There, only the next two layers hold.
//
// Accounts. When Toygres runs as root, each instance's server (initdb,
// pg_ctl, postgres) runs under an OS account of its own, "tg-" and 12 hex
// digits of a hash of the instance directory, created with useradd
// (--system, its own group, no home, /usr/sbin/nologin) and removed with
// its processes on Delete. The processes get no supplementary group (the
// Debian postgres account has ssl-cert, which reads the machine's TLS
// key). The account name is derived, never read from a file the instance
// can change. Whatever a superuser escape runs stays inside that account:
// it cannot enter the other instances' directories, signal their servers,
// list the instance directory or read Toygres' files. Options.RunAs
// restores one shared account (weaker).
//
// Files. Toygres runs as root and never follows a link an instance's
// account controls: the instance directory is root's, the log, the pid
// file and the metadata are opened with openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS (per-component O_NOFOLLOW on older kernels) and must
// be regular files (a link fails with ErrLink, a FIFO cannot hang a read),
// and the recursive chown of a migration opens every directory with
// O_NOFOLLOW relative to its parent.
//
// Not running as root (a developer's machine), every server runs as the
// current user, so the Accounts layer is absent; New logs a warning.
//
// Instances made by an older Toygres (every server the shared postgres
// account's, the data directory tenant-owned) are migrated by Adopt and
// Readopt: a running server is stopped once, the account is created, the
// instance directory given to root and the data directory to the account,
// and the server started under it. Their role layout stays: their User is
// the bootstrap superuser, which PostgreSQL cannot demote (metadata
// "roles" absent); for them only the Accounts and Files layers hold.
// Recreate such an instance to get the role layout.
//
// # Idempotency and interruption
//
// Every step is safe to interrupt (the Toygres process SIGKILLed at any
// point) and to run again, which then resumes or cleans up:
//
//   - Deploy records the metadata first (atomically: temporary file, fsync,
//     rename, fsync of the directory). initdb and the configuration go into
//     data.init, which is renamed to data/ only when complete, so data/ is
//     either absent or whole; then the metadata marks the instance
//     initialized. The role setup runs on data.init too, before the rename.
//     A rerun kills an orphaned initdb (anything still working in the
//     instance directory), wipes data.init, and starts over; a server
//     started but not recorded is recognised. The instance's account is
//     created (if missing) and every owner and mode set (ensureLayout)
//     before initdb and before each start, so an account made but a
//     directory not yet given to it is finished by the next call; Delete
//     removes the account (killing its processes) before the directory.
//   - Before each start toygres.conf is rewritten from the metadata, so a
//     port move interrupted half way cannot leave them disagreeing; a data
//     directory with missing files is never started (Problem
//     "missing-config"), lest a damaged cluster serve clients.
//   - Delete first writes a deletion marker (.deleting) into the instance
//     directory, then stops the server (pg_ctl stop -m fast, then -m
//     immediate, then SIGKILL) and every process working in the directory,
//     then removes the directory, the marker last. A deletion interrupted at
//     any point is finished by the next Delete, Deploy, Readopt or Adopt;
//     Status reports it as Deleting. Deleting an unknown instance succeeds.
//
// Before starting a server that died without shutting down, the driver
// waits for its orphaned backends to exit and removes the pid and socket
// lock files it left, which would otherwise stop the new server when their
// pid is a zombie or was reused. Within one Driver, calls for the same
// instance are serialized. One directory must be used by one Driver (one
// Toygres process) at a time. Spec.StorageGB is recorded but not enforced:
// instances share the file system of Options.Dir.
//
// # Supervision
//
// The driver supervises the servers it started or adopted: it polls each
// postmaster (Supervision.PollInterval, 250 ms; the postmaster runs as
// another account and is no child of ours) and restarts a dead one after a
// backoff doubling from 500 ms up to 30 s. Five deaths (failed restarts
// included) within two minutes are a crash loop: the supervisor reports it
// and stops restarting the server until Readopt or Deploy succeeds. Every
// restart, failed restart and crash loop is logged, counted
// (toygres_instance_restarts_total, toygres_instance_restart_failures_total,
// toygres_instance_crash_loops_total, by instance, in Options.Metrics) and
// handed to Options.OnEvent as a dataplane.Event. Status reports a dead
// server as Restarting or CrashLoop. Delete ends the supervision before it
// stops the server; Close ends all supervision (the servers keep running).
//
// # Standby servers
//
// The driver implements dataplane.Replicator: an instance may have up to
// two standbys (SetReplicas), each a server of the instance's account with
// its own data directory and port under <Dir>/<name>/server-<id>/,
// streaming from the primary over its private socket as ReplicationUser
// (peer authentication, no password), with a replication slot each, and
// synchronous when asked. Fence, Promote and Rebuild (pg_rewind, else a
// fresh base backup) carry out a failover; roles are recorded in
// instance.json before anything runs, so a crash never leaves two
// primaries, and Adopt never starts a fenced server. With standbys the
// supervisor does not restart a dead primary: it reports
// dataplane.EventPrimaryDown (Status: PrimaryDown) for the failover to
// act. Endpoint lists every server (the primary first) with MultiHost, so
// the read-write URL keeps working across failovers. See replicas.go.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When Toygres runs as root (euid 0), the
// driver runs initdb, pg_ctl and the servers as each instance's account
// (see "Tenant isolation"). Those accounts must reach their instances, so
// every directory on the way to Options.Dir must be searchable by others
// (mode 0711 suffices): New fails with a clear error otherwise (for example
// under /root, which is mode 0700). The default data directory for root is
// therefore /var/lib/toygres (see datadir.Default), not one under root's
// home.
//
// # Surviving a Toygres restart
//
// Servers run in their own session (pg_ctl start detaches them with setsid),
// so they are not children that die with Toygres. At start-up, Adopt scans
// Options.Dir: servers still running are adopted as they are, initialized
// instances whose server is not running (after a reboot, a crash, or a stop
// behind Toygres' back) are started again, interrupted deletions are
// finished, and all are put under supervision. Adopt never fails because of
// one instance: it returns a dataplane.AdoptReport listing each instance's
// outcome and the problems (half-deleted, missing-config, port-taken,
// unreadable, version-missing, start-failed); Readopt retries one.
package local
