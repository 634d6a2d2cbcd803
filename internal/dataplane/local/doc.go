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
// Every instance lives in its own directory under Options.Dir:
//
//	<Dir>/<name>/
//	    instance.json        metadata: version, port, addresses, spec, progress
//	    data/                the cluster (PGDATA) made by initdb
//	    data/toygres.conf    settings Toygres manages (included from postgresql.conf)
//	    data/pg_hba.conf     scram-sha-256 for every connection
//	    postgres.log         the server log (pg_ctl -l)
//	    .s.PGSQL.<port>      the server's Unix socket (when the path is short enough)
//
// The port is picked from Options.MinPort..MaxPort when the instance is
// created and recorded in instance.json; it never changes once the server has
// started (clients hold it), and it is free again once the instance is
// deleted. The superuser is "postgres" with the password given to Deploy,
// handed to initdb through a file that is removed right after (and removed
// again by the next Deploy or Adopt if a crash left it behind).
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
//     initialized. A rerun kills an orphaned initdb (anything still working
//     in the instance directory), wipes data.init and the password file, and
//     starts over; a server started but not recorded is recognised.
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
// # Running as root
//
// PostgreSQL refuses to run as root. When Toygres runs as root (euid 0), the
// driver runs initdb, pg_ctl and the servers as the unprivileged account
// Options.RunAs ("postgres" by default, created by the Debian package), with
// that account's uid, gid and groups, and chowns every instance directory to
// it. That account must be able to reach the instances, so every directory on
// the way to Options.Dir must be searchable by it: New fails with a clear
// error otherwise (for example under /root, which is mode 0700). The default
// data directory for root is therefore /var/lib/toygres (see DefaultDataDir),
// not one under root's home.
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
