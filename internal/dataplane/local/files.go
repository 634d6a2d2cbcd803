package local

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const metaFormat = 1

// metadata is an instance's instance.json.
type metadata struct {
	Format  int    `json:"format"`
	Name    string `json:"name"`
	Version string `json:"postgres_version"` // major version deployed
	Port    int    `json:"port"`
	// ListenAddress is the server's listen_addresses.
	ListenAddress string `json:"listen_address"`
	// Host is what Endpoint reports.
	Host string     `json:"host"`
	Spec specRecord `json:"spec"`
	// Initialized is set once initdb and the configuration are complete.
	Initialized bool `json:"initialized"`
	// Started is set once the server has started; its port is fixed then.
	Started   bool      `json:"started"`
	CreatedAt time.Time `json:"created_at"`
	// Roles is the role layout of the cluster: 0 for an instance made
	// before rolesSeparate, whose User is its superuser.
	Roles int `json:"roles,omitempty"`
	// NoArchive turns WAL archiving off (SetArchiving).
	NoArchive bool `json:"no_archive,omitempty"`
	// Restore is set on an instance made by Restore.
	Restore *restoreRecord `json:"restore,omitempty"`
	// Servers are the instance's servers once it has had standbys (see
	// replicas.go); absent, the instance has one server, "0", primary, on
	// Port. Server "0" is always on Port.
	Servers []serverRecord `json:"servers,omitempty"`
	// Sync: the primary waits at commit for one of its standbys.
	Sync bool `json:"sync,omitempty"`
}

// rolesSeparate: the bootstrap superuser is AdminUser (no password, private
// socket only) and User is a non-superuser role with the Deploy password.
const rolesSeparate = 1

// specRecord is the dataplane.Spec the instance was created with.
type specRecord struct {
	PostgresVersion string `json:"postgres_version,omitempty"` // as requested
	StorageGB       int    `json:"storage_gb"`
	Internal        bool   `json:"internal"`
	DNSLabel        string `json:"dns_label,omitempty"`
}

// readMeta reads instance.json, following no link.
func readMeta(path string) (*metadata, error) {
	b, err := readBeneath(filepath.Dir(path), filepath.Base(path), 1<<20)
	if err != nil {
		return nil, fmt.Errorf("local: read metadata: %w", err)
	}
	var m metadata
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("local: read metadata %s: %w", path, err)
	}
	if m.Format != metaFormat || m.Name == "" || m.Version == "" || m.Port == 0 {
		return nil, fmt.Errorf("local: read metadata %s: unsupported or incomplete content", path)
	}
	return &m, nil
}

// writeMeta replaces instance.json atomically. It stays Toygres' (root's,
// 0600): PostgreSQL does not need it.
func writeMeta(path string, m *metadata) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("local: encode metadata: %w", err)
	}
	if err := writeFile(path, append(b, '\n'), 0o600, nil); err != nil {
		return fmt.Errorf("local: write metadata: %w", err)
	}
	return nil
}

// writeFile replaces path atomically (temporary file, fsync, rename); chown,
// if not nil, is applied to the new file before it takes path's place.
func writeFile(path string, data []byte, perm os.FileMode, chown func(string) error) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && chown != nil {
		err = chown(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes the entries of dir (a rename, a removal) durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// markerFile, in an instance directory, says the instance is being deleted.
const markerFile = ".deleting"

// markDeleting marks the instance for deletion, durably.
func markDeleting(p paths) error {
	if err := writeFile(p.marker, []byte("deletion in progress\n"), 0o600, nil); err != nil {
		return fmt.Errorf("mark for deletion: %w", err)
	}
	return nil
}

// deleting reports whether the instance is marked for deletion.
func deleting(p paths) bool {
	_, err := os.Lstat(p.marker)
	return err == nil
}

// dataComplete checks that a data directory holds a whole cluster
// configured by Toygres; it names what is missing otherwise.
func dataComplete(data string) error {
	var missing []string
	for _, f := range []string{"PG_VERSION", "global/pg_control", "base", "postgresql.conf", confFile, "pg_hba.conf"} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		if b, err := readBeneath(data, "postgresql.conf", 16<<20); err != nil || !bytes.Contains(b, []byte(includeLine)) {
			missing = append(missing, "the include of "+confFile+" in postgresql.conf")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("data directory %s incomplete: missing %s", data, strings.Join(missing, ", "))
	}
	return nil
}

const (
	confFile    = "toygres.conf"
	includeLine = "include = '" + confFile + "'"
	// maxSocketPath is the longest Unix socket path PostgreSQL accepts
	// (sizeof(sun_path) - 1).
	maxSocketPath = 107
)

// writeConfig writes the settings Toygres manages into toygres.conf
// (included from postgresql.conf) and pg_hba.conf of the data directory
// data, and pg_hba.conf and pg_ident.conf (see hbaFor), all owned by acct.
func (d *Driver) writeConfig(m *metadata, p paths, data string, acct *account) error {
	conf := filepath.Join(data, "postgresql.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if !bytes.Contains(b, []byte(includeLine)) {
		f, err := os.OpenFile(conf, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("configure: %w", err)
		}
		_, err = f.WriteString("\n# Settings managed by Toygres.\n" + includeLine + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("configure: %w", err)
		}
	}
	if err := d.writeServerConfig(m, p, data, acct); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(data, "pg_hba.conf"), []byte(hbaFor()), 0o600, chowner(acct)); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if err := writeFile(filepath.Join(data, "pg_ident.conf"), []byte(identFor(acct)), 0o600, chowner(acct)); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	return nil
}

// writeServerConfig (re)writes toygres.conf from the metadata unless it
// already says the same.
func (d *Driver) writeServerConfig(m *metadata, p paths, data string, acct *account) error {
	path := filepath.Join(data, confFile)
	want := []byte(serverConfig(m, p))
	if have, err := readBeneath(data, confFile, 1<<20); err == nil && bytes.Equal(have, want) {
		return nil
	}
	if err := writeFile(path, want, 0o600, chowner(acct)); err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	return nil
}

func serverConfig(m *metadata, p paths) string {
	// The private socket directory (0700, the server's account): only
	// the server's account and root reach the socket.
	socketDir := p.run
	if len(socketDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		socketDir = "" // too long for a Unix socket: TCP only
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by Toygres for instance %s; do not edit.\n", m.Name)
	fmt.Fprintf(&b, "listen_addresses = %s\n", confQuote(m.ListenAddress))
	fmt.Fprintf(&b, "port = %d\n", m.server(p.id).Port)
	fmt.Fprintf(&b, "unix_socket_directories = %s\n", confQuote(socketDir))
	b.WriteString("unix_socket_permissions = 0700\n")
	fmt.Fprintf(&b, "cluster_name = %s\n", confQuote(m.Name))
	b.WriteString("password_encryption = 'scram-sha-256'\n")
	b.WriteString("logging_collector = off\n")
	b.WriteString("log_destination = 'stderr'\n")
	b.WriteString("log_line_prefix = '%m [%p] '\n")
	b.WriteString(archiveConfig(m, p))
	b.WriteString(replicationConfig(m, p))
	return b.String()
}

// confQuote quotes a postgresql.conf string value.
func confQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// maxLogRead bounds how much of a log Logs reads.
const maxLogRead = 8 << 20

// tailLines returns the last n lines of the file rel of dir (n < 0: every
// line within the last maxLogRead bytes). It follows no link (openBeneath):
// the file belongs to an instance's account.
func tailLines(dir, rel string, n int) ([]string, error) {
	if n == 0 {
		return []string{}, nil
	}
	f, err := openBeneath(dir, rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const chunk = 64 << 10
	var buf []byte
	off := fi.Size()
	for off > 0 && len(buf) < maxLogRead {
		size := int64(chunk)
		if off < size {
			size = off
		}
		off -= size
		b := make([]byte, size)
		if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		buf = append(b, buf...)
		// n+1 line breaks guarantee n complete lines (the last may end the file).
		if n > 0 && bytes.Count(buf, []byte{'\n'}) > n {
			break
		}
	}
	text := strings.TrimRight(string(buf), "\n")
	if text == "" {
		return []string{}, nil
	}
	lines := strings.Split(text, "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // probably cut in the middle
	}
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}

// tailLinesQuiet is tailLines of the server log for messages: errors
// yield nothing.
func tailLinesQuiet(p paths, n int) []string {
	lines, _ := tailLines(p.dir, filepath.Base(p.log), n)
	return lines
}

// postmaster is what data/postmaster.pid says about the server.
type postmaster struct {
	pid     int
	running bool   // a live process of this data directory holds the pid file
	status  string // "starting", "ready", "stopping", "standby" or "" (not yet known)
	stale   bool   // the pid file names a process that is not this server
}

// readPostmaster inspects the data directory's pid file and checks that the
// process it names is alive (not a zombie) and works in this data directory
// (the postmaster's working directory is its data directory), so that a
// stale file whose pid was reused is not mistaken for a running server.
func readPostmaster(dataDir string) postmaster {
	b, err := readBeneath(dataDir, "postmaster.pid", 1<<16)
	if err != nil {
		return postmaster{}
	}
	lines := strings.Split(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		// Being written right now, or garbage; pg_ctl and the postmaster
		// deal with the latter.
		return postmaster{}
	}
	pm := postmaster{pid: pid}
	if !isServerProcess(pid, dataDir) {
		pm.stale = true
		return pm
	}
	pm.running = true
	if len(lines) >= 8 {
		pm.status = strings.TrimSpace(lines[7])
	}
	return pm
}

func isServerProcess(pid int, dataDir string) bool {
	if !processAlive(pid) {
		return false
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		// Gone meanwhile, or we may not look (not root, other user): trust
		// the pid.
		return !errors.Is(err, fs.ErrNotExist)
	}
	want, err := filepath.EvalSymlinks(dataDir)
	if err != nil {
		want = dataDir
	}
	return cwd == want
}
