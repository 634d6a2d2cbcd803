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
// # Idempotency
//
// Deploy converges: it records the metadata first, then runs initdb (wiping a
// data directory a crashed attempt left half made), writes the configuration,
// marks the instance initialized and starts the server unless it already
// runs. Delete stops the server (pg_ctl stop -m fast, then -m immediate, then
// SIGKILL) and removes the directory; deleting an unknown instance succeeds.
// Before starting a server that died without shutting down, the driver
// waits for its orphaned backends to exit and removes the pid and socket
// lock files it left, which would otherwise stop the new server when their
// pid is a zombie or was reused. Within one Driver, calls for the same
// instance are serialized. One directory must be used by one Driver (one
// Toygres process) at a time. Spec.StorageGB is recorded but not enforced:
// instances share the file system of Options.Dir.
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
// Options.Dir: servers still running are adopted as they are, and initialized
// instances whose server is not running (after a reboot, a crash, or a stop
// behind Toygres' back) are started again.
package local
