package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/internal/apptest"
)

// The acceptance test runs a real `tofu` (OpenTofu, built by
// scripts/build-tofu.sh) with this provider (built here, installed through
// dev_overrides) against a real Toygres server on the local data plane.

const tofuVersion = "v1.10.10"

// tofuBinary finds the tofu that scripts/build-tofu.sh caches ($TOYGRES_TOFU
// overrides it) and fails the test, naming the script, when there is none.
func tofuBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TOYGRES_TOFU"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "toygres-tofu", tofuVersion, "tofu")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("OpenTofu %s is not built (%s missing): run scripts/build-tofu.sh (or set TOYGRES_TOFU to a tofu binary)", tofuVersion, p)
	}
	return p
}

func requirePostgres(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("initdb"); err == nil {
		return
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) > 0 {
		return
	}
	t.Fatal("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: apt-get install -y postgresql")
}

func build(t *testing.T, dir, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// world is a Toygres server, the provider and tofu.
type world struct {
	t       *testing.T
	toygres string
	tofu    string
	dataDir string
	home    string
	cliConf string
	url     string
	token   string
	c       *client.Client
}

func newWorld(t *testing.T) *world {
	t.Helper()
	requirePostgres(t)
	if err := apptest.CheckRunAs(); err != nil {
		t.Fatal(err)
	}
	tofu := tofuBinary(t)
	bin := t.TempDir()
	w := &world{t: t, toygres: filepath.Join(bin, "toygres"), tofu: tofu, home: t.TempDir()}
	build(t, "..", w.toygres, "./cmd/toygres")
	plugins := t.TempDir()
	build(t, ".", filepath.Join(plugins, "terraform-provider-toygres"), ".")
	w.cliConf = filepath.Join(w.home, "tofu.rc")
	conf := fmt.Sprintf("provider_installation {\n  dev_overrides {\n    %q = %q\n  }\n  direct {}\n}\n",
		"registry.opentofu.org/toygres/toygres", plugins)
	if err := os.WriteFile(w.cliConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	apptest.ReapStale("toygres-tf-")
	w.dataDir = apptest.NewDataDir(t, "toygres-tf-")
	t.Cleanup(w.cleanup)
	port := freePort(t)
	if out, err := w.toygresCmd("server", "start", "--port", strconv.Itoa(port), "--actor-interval", "1s"); err != nil {
		t.Fatalf("toygres server start: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(w.dataDir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cred struct{ URL, Token string }
	if err := json.Unmarshal(b, &cred); err != nil {
		t.Fatal(err)
	}
	w.url, w.token = cred.URL, cred.Token
	if w.c, err = client.New(w.url, client.WithToken(w.token)); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TOYGRES_") || strings.HasPrefix(kv, "TF_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TOYGRES_HOME="+w.dataDir, "HOME="+w.home)
}

func (w *world) toygresCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.toygres, args...)
	cmd.Env = w.env()
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// tofuRun runs tofu in dir and returns its combined output and exit code.
func (w *world) tofuRun(dir string, args ...string) (string, int) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.tofu, args...)
	cmd.Dir = dir
	cmd.Env = append(w.env(), "TF_CLI_CONFIG_FILE="+w.cliConf, "TF_IN_AUTOMATION=1",
		"TOYGRES_URL="+w.url, "TOYGRES_TOKEN="+w.token,
		"TF_LOG_PROVIDER=INFO", "TF_LOG_PATH="+filepath.Join(dir, "tofu.log"))
	b, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatalf("tofu %s: %v", strings.Join(args, " "), err)
	}
	return string(b), code
}

func (w *world) tofuOK(dir string, args ...string) string {
	w.t.Helper()
	out, code := w.tofuRun(dir, args...)
	if code != 0 {
		w.t.Fatalf("tofu %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func (w *world) cleanup() {
	if _, err := w.toygresCmd("server", "stop"); err != nil {
		w.t.Logf("cleanup: server stop: %v", err)
	}
	for _, p := range apptest.PostgresUnder(w.dataDir) {
		_ = syscall.Kill(p.PID, syscall.SIGQUIT)
	}
	if w.t.Failed() {
		if b, err := os.ReadFile(filepath.Join(w.dataDir, "logs", "toygres.log")); err == nil {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			w.t.Logf("last server log lines:\n%s", strings.Join(lines, "\n"))
		}
	}
	if apptest.DeleteInstances(w.dataDir) {
		_ = os.RemoveAll(w.dataDir)
	}
}

func writeConfig(t *testing.T, dir, body string) {
	t.Helper()
	head := `terraform {
  required_providers {
    toygres = { source = "toygres/toygres" }
  }
}

provider "toygres" {}

`
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(head+body), 0o644); err != nil {
		t.Fatal(err)
	}
}

const password = "tf-secret-pass-1"

func instanceConfig(storage int) string {
	return fmt.Sprintf(`resource "toygres_instance" "db" {
  name       = "tf-db"
  password   = %q
  storage_gb = %d
}

data "toygres_instances" "live" {
  depends_on = [toygres_instance.db]
}

data "toygres_instance" "byname" {
  name = toygres_instance.db.name
}

output "connection_string" { value = toygres_instance.db.connection_string }
output "data_internal"     { value = data.toygres_instance.byname.internal_name }
output "id"                { value = toygres_instance.db.id }
output "state"             { value = toygres_instance.db.state }
output "internal_name"     { value = toygres_instance.db.internal_name }
output "live_names"        { value = [for i in data.toygres_instances.live.instances : i.name] }
`, password, storage)
}

type outputs struct {
	ConnectionString struct{ Value string }   `json:"connection_string"`
	ID               struct{ Value string }   `json:"id"`
	State            struct{ Value string }   `json:"state"`
	InternalName     struct{ Value string }   `json:"internal_name"`
	LiveNames        struct{ Value []string } `json:"live_names"`
	DataInternal     struct{ Value string }   `json:"data_internal"`
}

func (w *world) outputs(dir string) outputs {
	w.t.Helper()
	var o outputs
	out := w.tofuOK(dir, "output", "-json")
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		w.t.Fatalf("tofu output -json: %v\n%s", err, out)
	}
	return o
}

// connect proves the instance answers queries with the configured password.
func connect(t *testing.T, cs string) {
	t.Helper()
	if strings.Contains(cs, password) {
		t.Fatalf("connection_string holds the password: %s", cs)
	}
	cfg, err := pgx.ParseConfig(cs)
	if err != nil {
		t.Fatalf("parse %s: %v", cs, err)
	}
	cfg.Password = password
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to %s: %v", cs, err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("SELECT 1: %d, %v", n, err)
	}
}

func TestAcceptance(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	dir := t.TempDir()

	// Apply creates an instance that pgx can reach; the provider logged the
	// create orchestration's progress.
	writeConfig(t, dir, instanceConfig(1))
	w.tofuOK(dir, "apply", "-auto-approve", "-input=false", "-no-color")
	o := w.outputs(dir)
	if o.State.Value != client.StateRunning || o.ID.Value == "" || o.InternalName.Value == "" {
		t.Fatalf("after apply: %+v", o)
	}
	if len(o.LiveNames.Value) != 1 || o.LiveNames.Value[0] != "tf-db" {
		t.Fatalf("data source toygres_instances: %v", o.LiveNames.Value)
	}
	if o.DataInternal.Value != o.InternalName.Value {
		t.Fatalf("data source toygres_instance: internal_name %q, want %q", o.DataInternal.Value, o.InternalName.Value)
	}
	connect(t, o.ConnectionString.Value)
	if _, err := os.Stat(filepath.Join(w.dataDir, "instances", o.InternalName.Value)); err != nil {
		t.Fatalf("the instance's directory: %v", err)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "tofu.log")); !strings.Contains(string(log), "toygres instance progress") {
		t.Errorf("the provider's log lacks the create's progress")
	}
	if out := w.tofuOK(dir, "plan", "-no-color", "-detailed-exitcode"); !strings.Contains(out, "No changes") {
		t.Fatalf("plan after apply is not empty:\n%s", out)
	}
	state, err := os.ReadFile(filepath.Join(dir, "terraform.tfstate"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(state), password) != 1 {
		t.Errorf("the state should hold the password once (the resource's sensitive attribute), not in the connection string")
	}

	// A changed attribute plans a replacement (the API cannot change an
	// instance in place).
	writeConfig(t, dir, instanceConfig(2))
	out, code := w.tofuRun(dir, "plan", "-no-color", "-detailed-exitcode")
	if code != 2 || !strings.Contains(out, "must be replaced") || !strings.Contains(out, "forces replacement") ||
		!strings.Contains(out, "1 to add, 0 to change, 1 to destroy") {
		t.Fatalf("plan for a changed storage_gb (exit %d) does not replace:\n%s", code, out)
	}
	writeConfig(t, dir, instanceConfig(1))

	// Import by name into a fresh state: the settings come from the server;
	// the password (never returned) is taken from the configuration without
	// a replacement.
	idir := t.TempDir()
	writeConfig(t, idir, instanceConfig(1))
	w.tofuOK(idir, "import", "-no-color", "-input=false", "toygres_instance.db", "tf-db")
	show := w.tofuOK(idir, "state", "show", "-no-color", "toygres_instance.db")
	for _, want := range []string{o.ID.Value, o.InternalName.Value, `storage_gb        = 1`} {
		if !strings.Contains(show, want) {
			t.Fatalf("imported state lacks %q:\n%s", want, show)
		}
	}
	out, _ = w.tofuRun(idir, "plan", "-no-color")
	if strings.Contains(out, "must be replaced") || strings.Contains(out, "to destroy") && !strings.Contains(out, "0 to destroy") {
		t.Fatalf("plan after import replaces the instance:\n%s", out)
	}
	w.tofuOK(idir, "apply", "-auto-approve", "-input=false", "-no-color")
	if out := w.tofuOK(idir, "plan", "-no-color", "-detailed-exitcode"); !strings.Contains(out, "No changes") {
		t.Fatalf("plan after import and apply is not empty:\n%s", out)
	}
	w.tofuOK(idir, "state", "rm", "-no-color", "toygres_instance.db")

	// Deleted behind its back: the next apply creates it again.
	if _, err := w.c.DeleteInstance(ctx, "tf-db"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if _, err := w.c.WaitForInstance(wctx, "tf-db", client.WaitOptions{State: client.StateDeleted}); err != nil {
		t.Fatal(err)
	}
	out, code = w.tofuRun(dir, "plan", "-no-color", "-detailed-exitcode")
	if code != 2 || !strings.Contains(out, "1 to add, 0 to change, 0 to destroy") {
		t.Fatalf("plan after an outside delete (exit %d) does not create it again:\n%s", code, out)
	}
	w.tofuOK(dir, "apply", "-auto-approve", "-input=false", "-no-color")
	o2 := w.outputs(dir)
	if o2.ID.Value == o.ID.Value || o2.State.Value != client.StateRunning {
		t.Fatalf("after the outside delete, apply did not create a new instance: before %+v, after %+v", o, o2)
	}
	connect(t, o2.ConnectionString.Value)

	// Destroy leaves nothing: every record deleted, no PostgreSQL process,
	// no instance directory.
	w.tofuOK(dir, "destroy", "-auto-approve", "-input=false", "-no-color")
	l, err := w.c.ListInstances(ctx, client.ListInstancesOptions{All: true, Name: "tf-db"})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range l.Instances {
		if in.State != client.StateDeleted {
			t.Errorf("after destroy, %s (%s) is %s", in.Name, in.InternalName, in.State)
		}
		if _, err := os.Stat(filepath.Join(w.dataDir, "instances", in.InternalName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after destroy, the directory of %s is still there (%v)", in.InternalName, err)
		}
	}
	if len(l.Instances) != 2 {
		t.Errorf("want the 2 deleted records of tf-db, got %d", len(l.Instances))
	}
	if ps := apptest.PostgresUnder(w.dataDir); len(ps) > 0 {
		t.Errorf("after destroy, PostgreSQL processes remain: %v", ps)
	}
}
