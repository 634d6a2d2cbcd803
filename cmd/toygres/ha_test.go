package main

// High availability: several real toygres server processes on one
// PostgreSQL store (a pgtest throwaway cluster).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/toygres/toygres/duroxide/postgres/pgtest"
	"github.com/toygres/toygres/internal/cms"
)

// takeoverBound is how long after a server is killed the other must have
// finished its work. The servers run with their default leases (30 s for an
// activity): the takeover comes from duroxide's owner liveness (a dead
// owner's leases are free about 5 s after its last heartbeat), not from
// short leases.
const takeoverBound = 15 * time.Second

// haCluster is one PostgreSQL store for several servers of one test.
type haCluster struct {
	t       *testing.T
	bin     string
	pg      *pgtest.Cluster
	dbURL   string
	keyFile string
}

func newHACluster(t *testing.T) *haCluster {
	t.Helper()
	requirePostgres(t)
	if testing.Short() {
		t.Skip("end-to-end test (builds the binary, runs servers and PostgreSQL)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	bin := filepath.Join(t.TempDir(), "toygres")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	h := &haCluster{t: t, bin: bin, pg: pg, dbURL: pg.NewDatabase(t)}
	h.keyFile = h.newKeyFile()
	return h
}

// newKeyFile writes a fresh random secret key to a file.
func (h *haCluster) newKeyFile() string {
	h.t.Helper()
	b := make([]byte, cms.KeySize)
	_, _ = rand.Read(b)
	path := filepath.Join(h.t.TempDir(), "secret.key")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return path
}

// server returns a new installation (data dir) using the cluster's binary.
func (h *haCluster) server() *e2e {
	h.t.Helper()
	dataDir, err := os.MkdirTemp("/tmp", "toygres-ha-")
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chmod(dataDir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	e := &e2e{t: h.t, bin: h.bin, dataDir: dataDir, home: h.t.TempDir()}
	h.t.Cleanup(e.cleanup)
	return e
}

// startFails starts a server in the foreground and expects it to refuse
// with one line containing every string of want.
func (e *e2e) startFails(what string, args []string, want ...string) {
	e.t.Helper()
	out, errOut, code := e.run(append([]string{"server", "start", "-f", "--port", "0"}, args...)...)
	if code == 0 {
		e.t.Fatalf("%s: the server started\n%s", what, out)
	}
	line := strings.TrimSpace(errOut)
	if i := strings.LastIndex(line, "\ntoygres: "); i >= 0 {
		line = line[i+1:] // the log lines of the foreground server come first
	}
	for _, w := range want {
		assertOneLineError(e.t, what, line, w)
	}
}

// TestSharedStoreStartChecks: on a shared store, a server without a secret
// key, one with another key than the store's, and a second server with the
// local data plane are refused at start with one line saying what to do.
func TestSharedStoreStartChecks(t *testing.T) {
	h := newHACluster(t)
	a, b := h.server(), h.server()

	a.startFails("no secret key", []string{"--database-url", h.dbURL},
		"every Toygres server on it must use the same secret key", "--secret-key-file", "TOYGRES_SECRET_KEY", "openssl rand -hex 32")
	if _, err := os.Stat(filepath.Join(a.dataDir, "secret.key")); err == nil {
		t.Fatal("a key was generated for a shared store")
	}

	a.startServer("--database-url", h.dbURL, "--secret-key-file", h.keyFile)

	// Another key: refused, naming both fingerprints.
	keyA, err := cms.ReadKeyFile(h.keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := h.newKeyFile()
	keyB, _ := cms.ReadKeyFile(other, nil)
	b.startFails("another key", []string{"--database-url", h.dbURL, "--secret-key-file", other},
		"this database's passwords are encrypted with key "+cms.KeyID(keyA), "this server has key "+cms.KeyID(keyB), "--secret-key-file")

	// The same key but a second local data plane: refused, naming the first.
	host, _ := os.Hostname()
	b.startFails("second local data plane", []string{"--database-url", h.dbURL, "--secret-key-file", h.keyFile},
		"another Toygres server with the local data plane is using this database (host "+host, "use --dataplane kubernetes for several servers")

	// Once the first is gone (even killed), the second may start.
	pid, _ := readPID(a.dataDir)
	if pid <= 0 {
		t.Fatal("no PID of the first server")
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !waitExit(pid, 10*time.Second) {
		t.Fatal("the first server did not die")
	}
	b.eventually("the lock of the killed server to go", 30*time.Second, func() bool {
		b.port = freePort(t)
		_, _, code := b.run("server", "start", "--port", strconv.Itoa(b.port), "--database-url", h.dbURL, "--secret-key-file", h.keyFile)
		return code == 0
	})
}

// kubeClient is the admin client of the test cluster ($KUBECONFIG).
func kubeClient(t *testing.T) (k8s.Interface, string) {
	t.Helper()
	path := os.Getenv("KUBECONFIG")
	if path == "" {
		t.Fatal("KUBECONFIG is not set: run the tests via ../shared/k8s/with-k8s.sh go test ./... (or eval \"$(../shared/k8s/up.sh)\")")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	c, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, path
}

// TestHAFailover runs two servers on one PostgreSQL store with the
// Kubernetes data plane, kills one with SIGKILL while creates run, and
// checks that the other finishes everything within takeoverBound: the
// creates reach running, the health actors keep reporting, and deletes
// complete. The test cluster's pods never really run, but its load
// balancers answer on 127.0.0.1, so the instances' Services expose the
// pgtest server's port (--k8s-service-port) and connection tests reach it.
func TestHAFailover(t *testing.T) {
	kc, kubeconfig := kubeClient(t)
	h := newHACluster(t)
	ctx := context.Background()
	ns, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-ha-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := kc.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("delete namespace %s: %v", ns.Name, err)
		}
	})
	flags := []string{"--database-url", h.dbURL, "--secret-key-file", h.keyFile,
		"--dataplane", "kubernetes", "--kubeconfig", kubeconfig, "--namespace", ns.Name,
		"--k8s-service-port", strconv.Itoa(h.pg.Port())}
	a, b := h.server(), h.server()
	a.startServer(flags...)
	b.startServer(flags...)

	// Internal instances cannot be reached from outside the cluster: refused at once.
	_, errOut, code := b.run("create", "inner", "--password", "secret-pw", "--internal")
	if code == 0 {
		t.Fatal("an internal create was accepted outside the cluster")
	}
	assertOneLineError(t, "internal create", errOut, "internal instances are not reachable from this server")

	names := []string{"ha-one", "ha-two", "ha-three", "ha-four", "ha-five", "ha-six"}
	for i, n := range names {
		srv := a
		if i%2 == 1 {
			srv = b
		}
		srv.ok("create", n, "--password", "secret-pw-"+n)
	}
	pid, _ := readPID(a.dataDir)
	if pid <= 0 {
		t.Fatal("no PID of server A")
	}
	states := map[string]string{}
	for _, n := range names {
		states[n] = b.get(n).State
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed server A (PID %d) with the instances %v", pid, states)
	if !waitExit(pid, 10*time.Second) {
		t.Fatal("server A did not die")
	}

	// Every create finishes on B.
	for _, n := range names {
		left := takeoverBound - time.Since(killed)
		in, _ := b.waitState(n, "running", max(left, time.Second))
		if !strings.Contains(in.ConnectionString, ":"+strconv.Itoa(h.pg.Port())+"/") {
			t.Errorf("%s: connection string %q", n, in.ConnectionString)
		}
	}
	t.Logf("all creates finished %v after the kill", time.Since(killed).Round(100*time.Millisecond))

	// The health actors (some started by A) keep reporting, now on B.
	since := time.Now()
	for _, n := range names {
		b.eventually(n+" health checks after the kill", takeoverBound, func() bool {
			var checks struct {
				Checks []struct {
					Status    string    `json:"status"`
					CheckedAt time.Time `json:"checked_at"`
				} `json:"health_checks"`
			}
			if code := b.api("/api/instances/"+n, &checks); code != 200 {
				t.Fatalf("GET health checks of %s: HTTP %d", n, code)
			}
			for _, c := range checks.Checks {
				if c.Status == "healthy" && c.CheckedAt.After(since) {
					return true
				}
			}
			return false
		})
	}

	// Deletes complete, and nothing is left in the cluster.
	for _, n := range names {
		b.ok("delete", n)
	}
	start := time.Now()
	for _, n := range names {
		b.waitState(n, "deleted", max(takeoverBound-time.Since(start), time.Second))
	}
	b.eventually("the instances' resources gone", 30*time.Second, func() bool {
		sts, err := kc.AppsV1().StatefulSets(ns.Name).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=toygres"})
		if err != nil {
			t.Fatal(err)
		}
		return len(sts.Items) == 0
	})
	fmt.Fprintln(os.Stderr) // keep go test -v output readable after the servers' lines
}
