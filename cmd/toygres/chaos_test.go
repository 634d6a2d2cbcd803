package main

// The chaos test (issue 18): the real toygres binary, run in the
// foreground, is killed with SIGKILL at random moments while instances are
// created (one by one through the CLI and the API, and in bulk) and deleted
// (running ones, and ones still being created), over several rounds, on
// both stores (embedded SQLite, and PostgreSQL through --database-url), with
// the local data plane. After each restart the server must start, and
// within 30 s every interrupted create must be running (or cleanly failed:
// no directory, no process) and every requested delete complete. At the
// end everything is deleted and nothing may be left: no PostgreSQL process
// under the test's data dir, no instance directory, no port held by an
// instance, no stored secret of a deleted instance, no duplicate server.
//
// The default is a short run for CI (3 rounds per store, at least 12
// instances per store). The long run, 50 rounds per store:
//
//	go test ./cmd/toygres -run TestChaos -count=1 -v -chaos.rounds 50 -timeout 2h
//
// Every run logs its seed; replay a run's choices with -chaos.seed N
// (timing still varies). -chaos.instances sets how many instances each
// store creates in total (at least 10), -chaos.store runs one store only.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "github.com/mattn/go-sqlite3"

	"github.com/toygres/toygres/duroxide/postgres/pgtest"
	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/apptest"
	"github.com/toygres/toygres/internal/dataplane/local"
)

var (
	chaosRounds    = flag.Int("chaos.rounds", 3, "chaos test: kill/restart rounds per store")
	chaosSeed      = flag.Uint64("chaos.seed", 0, "chaos test: random seed (0: from the clock; the seed used is logged)")
	chaosInstances = flag.Int("chaos.instances", 12, "chaos test: instances each store creates in total (at least 10)")
	chaosStore     = flag.String("chaos.store", "", "chaos test: run only this store (sqlite or postgres)")
)

// Chaos timing. converge is the bound the issue sets; the others bound
// waits that must not hang the test.
const (
	chaosConverge        = 30 * time.Second // after a restart: interrupted operations finish
	chaosServerStart     = 60 * time.Second // a restarted server answers /health
	chaosTeardown        = 90 * time.Second // the final delete of everything
	chaosMaxLive         = 4                // running instances kept between rounds
	chaosMaxFailedRounds = 2                // rounds that may fail before the run stops
	chaosPassword        = "chaos-pw-1"
	chaosDataPrefix      = "toygres-chaos-"
)

// chaosSecretKey is the secret key of the servers on the PostgreSQL store.
const chaosSecretKey = "3c1f0e5a9b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"

func TestChaos(t *testing.T) {
	requirePostgres(t)
	if err := apptest.CheckRunAs(); err != nil {
		t.Fatal(err)
	}
	if testing.Short() {
		t.Skip("chaos test (builds the binary, kills servers, runs PostgreSQL instances)")
	}
	if *chaosInstances < 10 {
		t.Fatalf("-chaos.instances %d: the chaos test needs at least 10", *chaosInstances)
	}
	if *chaosRounds < 1 {
		t.Fatalf("-chaos.rounds %d: want at least 1", *chaosRounds)
	}
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("chaos seed %d (replay with -chaos.seed %d), %d rounds, %d instances per store", seed, seed, *chaosRounds, *chaosInstances)
	apptest.ReapStale(chaosDataPrefix)

	bin := filepath.Join(t.TempDir(), "toygres")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for i, store := range []string{"sqlite", "postgres"} {
		if *chaosStore != "" && *chaosStore != store {
			continue
		}
		t.Run(store, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			c := newChaosRun(t, bin, store, rng)
			c.run()
		})
	}
}

// chaosInstance is what the test knows of one instance it asked for.
type chaosInstance struct {
	name, internal string
	via            string // how it was created: cli, api, bulk
	round          int
	createAcked    bool // the create was answered (else the server died during it)
	deleteWanted   bool // a delete was requested (answered or not)
	deleteAcked    bool
	deleteVia      string
	deleteRound    int
	port           int
	last           api.Instance // last view seen
	seen           bool         // the server knows it
}

type chaosRun struct {
	t     *testing.T
	e     *e2e
	store string
	dbURL string
	rng   *rand.Rand
	http  *http.Client

	srv     *exec.Cmd
	srvDone chan error
	starts  int
	killed  atomic.Bool // the current server was (or is being) killed
	url     string
	token   string
	owed    int // creates not made (the server died first), made up in later rounds

	mu    sync.Mutex
	insts map[string]*chaosInstance
	order []string
	ports map[int]string // every port an instance had → its name
}

func newChaosRun(t *testing.T, bin, store string, rng *rand.Rand) *chaosRun {
	c := &chaosRun{t: t, store: store, rng: rng, http: &http.Client{Timeout: 2 * time.Minute},
		insts: map[string]*chaosInstance{}, ports: map[int]string{}}
	if store == "postgres" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cluster, err := pgtest.Start(ctx)
		cancel()
		if err != nil {
			t.Fatalf("start a throwaway PostgreSQL cluster for the store: %v (install: %s)", err, pgtest.InstallHint)
		}
		t.Cleanup(func() {
			if err := cluster.Stop(); err != nil {
				t.Logf("stop store cluster: %v", err)
			}
		})
		c.dbURL = cluster.NewDatabase(t)
	}
	dataDir := apptest.NewDataDir(t, chaosDataPrefix)
	c.e = &e2e{t: t, bin: bin, dataDir: dataDir, home: t.TempDir()}
	t.Cleanup(c.cleanup)
	t.Logf("%s store, data dir %s", store, dataDir)
	return c
}

func (c *chaosRun) instDir(internal string) string {
	return filepath.Join(c.e.dataDir, "instances", internal)
}

// ---- the server ----

// startServer starts the server in the foreground (a child of the test)
// and waits until it answers; it fails the test if it does not start.
func (c *chaosRun) startServer() {
	t := c.t
	t.Helper()
	c.starts++
	port := freePort(t)
	errPath := filepath.Join(c.e.dataDir, fmt.Sprintf("chaos-start-%d.stderr", c.starts))
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd := exec.Command(c.e.bin, "server", "start", "--foreground", "--port", strconv.Itoa(port), "--actor-interval", "1s")
	cmd.Env = append(c.e.env(), "TOYGRES_ADMIN_PASSWORD=chaos-admin-pw")
	if c.dbURL != "" {
		// A shared store needs a provided key (the same after every restart).
		cmd.Env = append(cmd.Env, "TOYGRES_DATABASE_URL="+c.dbURL, "TOYGRES_SECRET_KEY="+chaosSecretKey)
	}
	cmd.Stderr = errFile // stdout repeats server.log
	cmd.Dir = c.e.dataDir
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	c.srv, c.srvDone = cmd, done
	c.killed.Store(false)
	begin := time.Now()
	deadline := time.Now().Add(chaosServerStart)
	for {
		select {
		case err := <-done:
			c.srv = nil
			b, _ := os.ReadFile(errPath)
			t.Fatalf("server start #%d (%s store) failed: the process exited (%v) after %v\nstderr:\n%s\nlast server log lines:\n%s",
				c.starts, c.store, err, time.Since(begin).Round(time.Millisecond), strings.TrimSpace(string(b)), c.serverLogTail(30))
		default:
		}
		if c.serverReady(cmd.Process.Pid) {
			t.Logf("server start #%d (PID %d) answered after %v", c.starts, cmd.Process.Pid, time.Since(begin).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server start #%d (%s store, PID %d) did not answer /health within %v\nlast server log lines:\n%s",
				c.starts, c.store, cmd.Process.Pid, chaosServerStart, c.serverLogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serverReady reports whether the server with this PID wrote its
// credentials and answers /health; it loads the URL and token.
func (c *chaosRun) serverReady(pid int) bool {
	b, err := os.ReadFile(filepath.Join(c.e.dataDir, "credentials.json"))
	if err != nil {
		return false
	}
	var creds struct {
		URL   string `json:"url"`
		Token string `json:"token"`
		PID   int    `json:"pid"`
	}
	if json.Unmarshal(b, &creds) != nil || creds.PID != pid {
		return false
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(creds.URL + "/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	c.url, c.token = creds.URL, creds.Token
	return true
}

// kill SIGKILLs the server and waits until it is gone.
func (c *chaosRun) kill() {
	if c.srv == nil {
		return
	}
	c.killed.Store(true)
	_ = c.srv.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.srvDone:
	case <-time.After(30 * time.Second):
		c.t.Errorf("server PID %d still runs 30s after SIGKILL", c.srv.Process.Pid)
	}
	c.srv = nil
}

// stop stops the server gracefully (SIGTERM), killing it after 30 s.
func (c *chaosRun) stop() {
	if c.srv == nil {
		return
	}
	c.killed.Store(true)
	_ = c.srv.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.srvDone:
	case <-time.After(30 * time.Second):
		c.t.Errorf("server PID %d did not stop within 30s of SIGTERM; killing it", c.srv.Process.Pid)
		_ = c.srv.Process.Signal(syscall.SIGKILL)
		<-c.srvDone
	}
	c.srv = nil
}

func (c *chaosRun) serverLogTail(n int) string {
	b, err := os.ReadFile(logPath(c.e.dataDir))
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup kills the server and whatever instances are left, even after a
// failure, so that nothing outlives the test.
func (c *chaosRun) cleanup() {
	t := c.t
	if c.srv != nil {
		_ = c.srv.Process.Signal(syscall.SIGKILL)
		<-c.srvDone
		c.srv = nil
	}
	if t.Failed() {
		t.Logf("last server log lines (%s):\n%s", logPath(c.e.dataDir), c.serverLogTail(80))
	}
	if !apptest.DeleteInstances(c.e.dataDir) {
		t.Logf("cleanup: some instances under %s could not be deleted", c.e.dataDir)
	}
	for _, p := range apptest.PostgresUnder(c.e.dataDir) {
		if p.Postmaster {
			t.Logf("cleanup: killing leftover PostgreSQL server %s", p)
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	_ = os.RemoveAll(c.e.dataDir)
}

// ---- the API ----

// call sends a request to the API. A transport error (the server died
// during the call) is returned; an HTTP status is not an error.
func (c *chaosRun) call(method, path string, body, out any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, b, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, b, fmt.Errorf("decode %s %s: %w: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, b, nil
}

// list returns every instance the server knows, deleted ones included.
func (c *chaosRun) list() (map[string]api.Instance, error) {
	var l api.InstanceList
	code, body, err := c.call(http.MethodGet, "/api/instances?include_deleted=true", nil, &l)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /api/instances: %d %s", code, body)
	}
	m := make(map[string]api.Instance, len(l.Instances))
	for _, in := range l.Instances {
		if old, ok := m[in.Name]; !ok || in.CreatedAt.After(old.CreatedAt) {
			m[in.Name] = in
		}
	}
	return m, nil
}

// orchestration describes an orchestration for a failure message.
func (c *chaosRun) orchestration(id string) string {
	if id == "" {
		return "none"
	}
	var o api.Orchestration
	code, body, err := c.call(http.MethodGet, "/api/orchestrations/"+id, nil, &o)
	switch {
	case err != nil:
		return id + ": " + err.Error()
	case code != http.StatusOK:
		return fmt.Sprintf("%s: HTTP %d %s", id, code, strings.TrimSpace(string(body)))
	}
	s := fmt.Sprintf("%s %s (updated %s)", id, o.Status, o.UpdatedAt.UTC().Format("15:04:05.000"))
	if o.CustomStatus != nil && *o.CustomStatus != "" {
		s += ", step " + strconv.Quote(*o.CustomStatus)
	}
	return s
}

// ---- operations ----

func (c *chaosRun) track(name, via string, round int) *chaosInstance {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := &chaosInstance{name: name, via: via, round: round}
	c.insts[name] = in
	c.order = append(c.order, name)
	return in
}

func (c *chaosRun) get(name string) *chaosInstance {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.insts[name]
}

// died reports whether a failed operation is explained by the kill.
func (c *chaosRun) died(what string, detail string) bool {
	if c.killed.Load() {
		c.t.Logf("  %s: unanswered, the server was killed (%s)", what, firstLine(detail))
		return true
	}
	c.t.Errorf("%s failed while the server was up: %s", what, detail)
	return false
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// createCLI creates one instance with `toygres create`.
func (c *chaosRun) createCLI(name string, round int) {
	in := c.track(name, "cli", round)
	out, errOut, code := c.e.run("create", name, "--password", chaosPassword, "-o", "json")
	if code != 0 {
		c.died("toygres create "+name, fmt.Sprintf("exit %d: %s", code, errOut))
		return
	}
	var a api.Instance
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		c.t.Errorf("toygres create %s -o json: %v\n%s", name, err, out)
		return
	}
	in.internal, in.createAcked, in.last = a.InternalName, true, a
}

// createAPI creates one instance with POST /api/instances.
func (c *chaosRun) createAPI(name string, round int) {
	in := c.track(name, "api", round)
	var a api.Instance
	code, body, err := c.call(http.MethodPost, "/api/instances", api.CreateInstanceRequest{Name: name, Password: chaosPassword}, &a)
	if err != nil || code != http.StatusAccepted {
		c.died("POST /api/instances "+name, fmt.Sprintf("%v HTTP %d %s", err, code, body))
		return
	}
	in.internal, in.createAcked, in.last = a.InternalName, true, a
}

// createBulk creates base-1 … base-n with POST /api/instances/bulk.
func (c *chaosRun) createBulk(base string, n, round int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", base, i+1)
		c.track(names[i], "bulk", round)
	}
	var res api.BulkResponse
	code, body, err := c.call(http.MethodPost, "/api/instances/bulk", api.BulkCreateRequest{BaseName: base, Count: n, Password: chaosPassword}, &res)
	if err != nil || code != http.StatusAccepted {
		c.died(fmt.Sprintf("POST /api/instances/bulk %s ×%d", base, n), fmt.Sprintf("%v HTTP %d %s", err, code, body))
		return names
	}
	for _, it := range res.Results {
		in := c.get(it.Name)
		if in == nil {
			c.t.Errorf("bulk create answered for a name not asked for: %q", it.Name)
			continue
		}
		if !it.OK || it.Instance == nil {
			c.t.Errorf("bulk create of %s failed: HTTP %d %s", it.Name, it.Status, it.Error)
			continue
		}
		in.internal, in.createAcked, in.last = it.Instance.InternalName, true, *it.Instance
	}
	return names
}

// deleteCLI deletes with `toygres delete`.
func (c *chaosRun) deleteCLI(name string, round int) {
	in := c.get(name)
	in.deleteWanted, in.deleteVia, in.deleteRound = true, "cli", round
	_, errOut, code := c.e.run("delete", name, "-o", "json")
	if code != 0 {
		if strings.Contains(errOut, "not found") && !in.createAcked {
			return // the create never happened
		}
		c.died("toygres delete "+name, fmt.Sprintf("exit %d: %s", code, errOut))
		return
	}
	in.deleteAcked = true
}

// deleteBulk deletes with POST /api/instances/bulk-delete.
func (c *chaosRun) deleteBulk(names []string, round int) {
	for _, n := range names {
		in := c.get(n)
		in.deleteWanted, in.deleteVia, in.deleteRound = true, "bulk", round
	}
	var res api.BulkResponse
	code, body, err := c.call(http.MethodPost, "/api/instances/bulk-delete", api.BulkDeleteRequest{Names: names}, &res)
	if err != nil || (code != http.StatusAccepted && code != http.StatusNotFound) {
		c.died(fmt.Sprintf("POST /api/instances/bulk-delete %v", names), fmt.Sprintf("%v HTTP %d %s", err, code, body))
		return
	}
	for _, it := range res.Results {
		in := c.get(it.Name)
		if in == nil {
			continue
		}
		switch {
		case it.OK:
			in.deleteAcked = true
		case it.Status == http.StatusNotFound && !in.createAcked:
			// The create never happened.
		default:
			c.t.Errorf("bulk delete of %s (create answered: %v): HTTP %d %s", it.Name, in.createAcked, it.Status, it.Error)
		}
	}
}

// ---- rounds ----

func (c *chaosRun) run() {
	t := c.t
	rounds := *chaosRounds
	perRound := max(2, (*chaosInstances+rounds-1)/rounds)
	c.startServer()
	failed := 0
	for r := 1; r <= rounds; r++ {
		creates := perRound + c.owed
		c.owed = 0
		if c.round(r, creates, r == rounds) {
			continue
		}
		// Go on like a user would: delete what did not converge, so that
		// later rounds show further failures; but bound the time.
		if failed++; failed == chaosMaxFailedRounds {
			t.Errorf("stopping the %s store's rounds after %d failed rounds; tearing down", c.store, failed)
			break
		}
		c.giveUp(r)
	}
	created := 0
	for _, in := range c.insts {
		if in.createAcked || in.seen {
			created++
		}
	}
	t.Logf("%s store: %d instances created over %d server starts", c.store, created, c.starts)
	if !t.Failed() && created < *chaosInstances {
		t.Errorf("only %d instances were created, want at least %d", created, *chaosInstances)
	}
	c.teardown()
}

// round issues a mix of operations, kills the server at a random moment,
// restarts it and checks that everything converges. It reports whether the
// run can go on.
func (c *chaosRun) round(r, creates int, last bool) bool {
	t := c.t
	// Kill during the requests (a third of the rounds, never the last so
	// that every planned create is issued), or after them.
	during := !last && c.rng.IntN(3) == 0
	var killDelay time.Duration
	if during {
		// The requests take tens of milliseconds (a CLI call a little more).
		killDelay = time.Duration(c.rng.Int64N(int64(400 * time.Millisecond)))
	} else {
		killDelay = time.Duration(c.rng.Int64N(int64(4 * time.Second)))
	}
	when := "after the requests"
	if during {
		when = "during the requests"
	}
	t.Logf("round %d: %d creates, kill %v %s", r, creates, killDelay.Round(time.Millisecond), when)

	var timer *time.Timer
	killedCh := make(chan struct{})
	if during {
		timer = time.AfterFunc(killDelay, func() { c.kill(); close(killedCh) })
	}
	// Ops, in random order of kind; each checks whether the server is gone.
	nCLI, nAPI := 1, 0
	if creates >= 3 {
		nAPI = 1
	}
	nBulk := creates - nCLI - nAPI
	var fresh []string // created this round
	issued := 0
	type op func()
	ops := []op{
		func() {
			for i := range nCLI {
				if c.killed.Load() {
					return
				}
				n := fmt.Sprintf("r%d-c%d", r, i+1)
				c.createCLI(n, r)
				fresh = append(fresh, n)
				issued++
			}
		},
		func() {
			for i := range nAPI {
				if c.killed.Load() {
					return
				}
				n := fmt.Sprintf("r%d-a%d", r, i+1)
				c.createAPI(n, r)
				fresh = append(fresh, n)
				issued++
			}
		},
		func() {
			if nBulk < 1 || c.killed.Load() {
				return
			}
			fresh = append(fresh, c.createBulk(fmt.Sprintf("r%d-b", r), nBulk, r)...)
			issued += nBulk
		},
	}
	c.rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	for _, o := range ops {
		o()
	}
	c.owed += creates - issued

	// Delete one instance while it is still being created.
	if len(fresh) > 0 && !c.killed.Load() {
		n := fresh[c.rng.IntN(len(fresh))]
		if c.rng.IntN(2) == 0 {
			c.deleteCLI(n, r)
		} else {
			c.deleteBulk([]string{n}, r)
		}
		t.Logf("  delete of still-creating %s requested", n)
	}
	// Delete running instances of earlier rounds: at least one, and enough
	// to keep at most chaosMaxLive.
	var running []string
	for _, n := range c.order {
		in := c.insts[n]
		if in.round < r && !in.deleteWanted && in.last.State == "running" {
			running = append(running, n)
		}
	}
	c.rng.Shuffle(len(running), func(i, j int) { running[i], running[j] = running[j], running[i] })
	for i, n := range running {
		if c.killed.Load() || (i > 0 && len(running)-i <= chaosMaxLive) {
			break
		}
		c.deleteCLI(n, r)
		t.Logf("  delete of running %s requested", n)
	}

	if during {
		<-killedCh
	} else {
		time.Sleep(killDelay) // the chaos: a random moment while the work goes on
		c.kill()
	}
	if timer != nil {
		timer.Stop()
	}
	t.Logf("  server killed (SIGKILL)")

	c.startServer()
	return c.converge(r)
}

// converge waits until every instance the test asked for has reached its
// goal, and checks the processes. It reports whether all did.
func (c *chaosRun) converge(r int) bool {
	t := c.t
	begin := time.Now()
	deadline := begin.Add(chaosConverge)
	retried := false
	var problems []string
	for {
		views, err := c.list()
		if err != nil {
			t.Errorf("round %d: list instances after the restart: %v", r, err)
			return false
		}
		if !retried {
			// A client whose request got no answer asks again: deletes are
			// re-sent; creates the server never recorded are dropped.
			retried = true
			c.resend(views, r)
			continue
		}
		problems = c.check(views, false)
		if len(problems) == 0 {
			t.Logf("  round %d converged %v after the restart", r, time.Since(begin).Round(time.Millisecond))
			return true
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("round %d (%s store): %d problem(s) %v after server start #%d:\n  %s",
		r, c.store, len(problems), chaosConverge, c.starts, strings.Join(problems, "\n  "))
	return false
}

// giveUp deletes the instances of a failed round that did not converge
// and are not being deleted yet.
func (c *chaosRun) giveUp(r int) {
	var names []string
	for _, n := range c.order {
		in := c.insts[n]
		if !in.deleteWanted && in.seen && in.last.State != "running" && in.last.State != "deleted" {
			names = append(names, n)
		}
	}
	if len(names) > 0 {
		c.t.Logf("  round %d: deleting the instances that did not converge: %v", r, names)
		c.deleteBulk(names, r)
	}
}

// resend re-issues unanswered deletes and forgets creates that never
// reached the server.
func (c *chaosRun) resend(views map[string]api.Instance, r int) {
	var again []string
	for _, n := range c.order {
		in := c.insts[n]
		v, ok := views[n]
		if !ok {
			if in.createAcked {
				c.t.Errorf("round %d: instance %s (internal %s, created via %s in round %d, create answered) is unknown to the restarted server",
					r, n, in.internal, in.via, in.round)
			}
			continue
		}
		in.seen = true
		if in.internal == "" {
			in.internal = v.InternalName
		}
		if in.deleteWanted && !in.deleteAcked && v.State != "deleted" && v.State != "deleting" {
			again = append(again, n)
		}
	}
	for _, n := range c.order {
		if in := c.insts[n]; !in.seen && !in.createAcked {
			c.t.Logf("  create of %s never reached the server; dropped", n)
			delete(c.insts, n)
			c.owed++
		}
	}
	c.order = slices.DeleteFunc(c.order, func(n string) bool { return c.insts[n] == nil })
	if len(again) > 0 {
		c.t.Logf("  re-sending unanswered deletes: %v", again)
		c.deleteBulk(again, r)
	}
}

// check compares what the server says and what runs with what the test
// asked for; it returns one line per problem. final demands that nothing
// is left at all.
func (c *chaosRun) check(views map[string]api.Instance, final bool) []string {
	var problems []string
	procs := apptest.PostgresUnder(c.e.dataDir)
	servers := map[string][]apptest.Process{} // internal name → postmasters
	instRoot := filepath.Join(c.e.dataDir, "instances") + "/"
	for _, p := range procs {
		if !p.Postmaster {
			continue
		}
		internal, _, _ := strings.Cut(strings.TrimPrefix(p.DataDir, instRoot), "/")
		servers[internal] = append(servers[internal], p)
	}
	known := map[string]bool{}
	for _, n := range c.order {
		in := c.insts[n]
		v, ok := views[n]
		if !ok {
			continue // reported by resend
		}
		in.last = v
		if v.Port != 0 {
			c.ports[v.Port] = n
			in.port = v.Port
		}
		known[v.InternalName] = true
		want := "running (or failed, cleaned up)"
		if in.deleteWanted || final {
			want = "deleted"
		}
		_, dirErr := os.Stat(c.instDir(v.InternalName))
		dirExists := dirErr == nil
		pms := servers[v.InternalName]
		desc := func(what string) string {
			s := fmt.Sprintf("%s (internal %s, created via %s in round %d", n, v.InternalName, in.via, in.round)
			if in.deleteWanted {
				s += fmt.Sprintf(", delete via %s in round %d", in.deleteVia, in.deleteRound)
			}
			s += fmt.Sprintf("): state %s, want %s: %s", v.State, want, what)
			if v.FailureReason != "" {
				s += "; failure reason " + strconv.Quote(v.FailureReason)
			}
			s += "; create orchestration " + c.orchestration(v.CreateOrchestrationID)
			if in.deleteWanted || v.State == "deleting" || v.State == "deleted" {
				s += "; delete orchestration " + c.orchestration("delete-"+v.InternalName)
			}
			return s
		}
		switch {
		case want == "deleted" && v.State != "deleted":
			problems = append(problems, desc("not deleted"))
		case want == "deleted" || v.State == "failed":
			if dirExists {
				problems = append(problems, desc("its directory "+c.instDir(v.InternalName)+" is left"))
			}
			if len(pms) > 0 {
				problems = append(problems, desc(fmt.Sprintf("its PostgreSQL server still runs: %v", pms)))
			}
		case v.State != "running":
			problems = append(problems, desc("not running"))
		case len(pms) != 1:
			problems = append(problems, desc(fmt.Sprintf("%d PostgreSQL servers run for it, want 1: %v", len(pms), pms)))
		}
	}
	// Servers of instances the test does not know of, or duplicates.
	var names []string
	for internal := range servers {
		names = append(names, internal)
	}
	sort.Strings(names)
	for _, internal := range names {
		if !known[internal] {
			problems = append(problems, fmt.Sprintf("a PostgreSQL server runs for %s, which no instance the server lists has: %v", internal, servers[internal]))
		}
	}
	if final {
		for _, p := range procs {
			if !p.Postmaster {
				problems = append(problems, fmt.Sprintf("PostgreSQL process left: %s", p))
			}
		}
		entries, _ := os.ReadDir(filepath.Join(c.e.dataDir, "instances"))
		for _, e := range entries {
			problems = append(problems, fmt.Sprintf("instance directory left: %s", filepath.Join(c.e.dataDir, "instances", e.Name())))
		}
	}
	return problems
}

// ---- the end ----

// teardown deletes everything through the API, stops the server, and
// checks that nothing is left: processes, directories, ports, secrets.
func (c *chaosRun) teardown() {
	t := c.t
	if c.srv == nil {
		c.startServer()
	}
	views, err := c.list()
	if err != nil {
		t.Errorf("teardown: list instances: %v", err)
		return
	}
	var active []string
	for n, v := range views {
		if v.State != "deleted" && v.State != "deleting" {
			active = append(active, n)
		}
		if c.insts[n] == nil {
			c.insts[n] = &chaosInstance{name: n, internal: v.InternalName, via: "unknown", seen: true}
			c.order = append(c.order, n)
		}
	}
	sort.Strings(active)
	for len(active) > 0 {
		chunk := active[:min(len(active), 50)]
		active = active[len(chunk):]
		c.deleteBulk(chunk, 0)
	}
	begin := time.Now()
	var problems []string
	for {
		views, err := c.list()
		if err != nil {
			t.Errorf("teardown: list instances: %v", err)
			break
		}
		problems = c.check(views, true)
		problems = append(problems, c.runningBackups()...)
		if len(problems) == 0 {
			t.Logf("teardown: everything deleted after %v", time.Since(begin).Round(time.Millisecond))
			break
		}
		if time.Since(begin) > chaosTeardown {
			t.Errorf("teardown (%s store): %d problem(s) %v after deleting everything:\n  %s",
				c.store, len(problems), chaosTeardown, strings.Join(problems, "\n  "))
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.stop()

	// Nothing may be left once the server is down either.
	for _, p := range apptest.PostgresUnder(c.e.dataDir) {
		t.Errorf("leftover PostgreSQL process after the server stopped: %s", p)
	}
	if entries, _ := os.ReadDir(filepath.Join(c.e.dataDir, "instances")); len(entries) > 0 {
		var left []string
		for _, e := range entries {
			left = append(left, e.Name())
		}
		t.Errorf("leftover instance directories under %s: %v", filepath.Join(c.e.dataDir, "instances"), left)
	}
	// Each instance's OS account goes with it.
	c.mu.Lock()
	for _, n := range c.order {
		in := c.insts[n]
		if in.internal == "" {
			continue
		}
		acct := local.AccountName(c.instDir(in.internal))
		if _, err := user.Lookup(acct); err == nil {
			t.Errorf("leftover OS account %s of instance %s (%s)", acct, n, in.internal)
		}
	}
	c.mu.Unlock()
	c.checkArchives()
	ports := make([]int, 0, len(c.ports))
	for p := range c.ports {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	for _, port := range ports {
		for _, pid := range apptest.ListenerPIDs(port) {
			cmd := apptest.Cmdline(pid)
			if strings.Contains(cmd, c.e.dataDir) || slices.ContainsFunc(apptest.PostgresUnder(c.e.dataDir), func(p apptest.Process) bool { return p.PID == pid }) {
				t.Errorf("port %d of deleted instance %s is still held by PID %d (%s)", port, c.ports[port], pid, cmd)
			} else {
				t.Logf("port %d (once instance %s) is now used by another process, PID %d (%s)", port, c.ports[port], pid, cmd)
			}
		}
	}
	c.checkStore()
}

// runningBackups lists the backups still being taken (a teardown waits
// for them: a backup of a deleted instance ends as failed).
func (c *chaosRun) runningBackups() []string {
	var l api.BackupList
	code, body, err := c.call(http.MethodGet, "/api/backups", nil, &l)
	if err != nil || code != http.StatusOK {
		return []string{fmt.Sprintf("GET /api/backups: %d %s %v", code, body, err)}
	}
	var out []string
	for _, b := range l.Backups {
		if b.State == "running" {
			out = append(out, fmt.Sprintf("backup %s of %s (%s) is still running", b.ID, b.Instance, b.InternalName))
		}
	}
	return out
}

// checkArchives: the backups and WAL archive of a deleted instance are
// not leftovers; they are kept by design until its retention expires (so
// it can be restored) and are not counted as such. What is checked is
// that they are sealed: every file is root's, none is owned by the
// removed OS account (whose uid a later instance's account may get), and
// no archive belongs to an instance the run does not know.
func (c *chaosRun) checkArchives() {
	t := c.t
	root := filepath.Join(c.e.dataDir, "backups")
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Errorf("read %s: %v", root, err)
		return
	}
	known := map[string]bool{}
	c.mu.Lock()
	for _, in := range c.insts {
		known[in.internal] = true
	}
	c.mu.Unlock()
	kept := 0
	for _, e := range entries {
		if !known[e.Name()] {
			t.Errorf("backup archive %s belongs to no instance of this run", filepath.Join(root, e.Name()))
			continue
		}
		kept++
		_ = filepath.WalkDir(filepath.Join(root, e.Name()), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Errorf("walk %s: %v", path, err)
				return nil
			}
			fi, err := os.Lstat(path)
			if err != nil {
				return nil
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && (st.Uid != 0 || st.Gid != 0) {
				t.Errorf("%s of a deleted instance is owned by %d:%d, not root (the archive was not sealed)", path, st.Uid, st.Gid)
				return filepath.SkipDir
			}
			return nil
		})
	}
	t.Logf("teardown: %d backup archives of deleted instances kept for their retention (by design)", kept)
}

// checkStore reads the CMS tables directly: no secret of a deleted
// instance, and no instance left active.
func (c *chaosRun) checkStore() {
	t := c.t
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One database/sql handle on either store (pgx's stdlib driver for
	// PostgreSQL); only the table names differ.
	driver, dsn, prefix := "sqlite3", "file:"+filepath.Join(c.e.dataDir, "toygres.db")+"?mode=ro", "cms_"
	if c.dbURL != "" {
		driver, dsn, prefix = "pgx", c.dbURL, "toygres_cms."
	}
	secretsQ := `SELECT i.name || ' (' || i.internal_name || ')', i.state FROM ` + prefix + `instance_secrets s JOIN ` + prefix + `instances i ON i.internal_name = s.internal_name`
	activeQ := `SELECT name || ' (' || internal_name || ')', state FROM ` + prefix + `instances WHERE state <> 'deleted'`
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Errorf("open the %s store: %v", c.store, err)
		return
	}
	defer db.Close()
	rowsOf := func(q string) ([][2]string, error) {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out [][2]string
		for rows.Next() {
			var r [2]string
			if err := rows.Scan(&r[0], &r[1]); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, rows.Err()
	}
	secrets, err := rowsOf(secretsQ)
	if err != nil {
		t.Errorf("query stored secrets: %v", err)
	}
	for _, s := range secrets {
		t.Errorf("a secret is still stored for instance %s, state %s (every instance was deleted)", s[0], s[1])
	}
	active, err := rowsOf(activeQ)
	if err != nil {
		t.Errorf("query active instances: %v", err)
	}
	for _, a := range active {
		t.Errorf("the CMS still lists instance %s as %s after everything was deleted (0 servers run)", a[0], a[1])
	}
}
