package faulty_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/toygres/toygres/duroxide/postgres/pgtest"
	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/dataplane/faulty"
)

// fixed is a driver whose one instance is an existing PostgreSQL server.
type fixed struct {
	ep      dataplane.Endpoint
	deploys int
}

func (f *fixed) Name() string { return "fixed" }
func (f *fixed) Deploy(context.Context, dataplane.Spec, string) error {
	f.deploys++
	return nil
}
func (f *fixed) Status(context.Context, string) (dataplane.Status, error) {
	return dataplane.Status{Phase: "Running", Ready: true}, nil
}
func (f *fixed) Endpoint(context.Context, string) (dataplane.Endpoint, error) { return f.ep, nil }
func (f *fixed) Delete(context.Context, string) error                         { return nil }
func (f *fixed) Logs(context.Context, string, int) ([]string, error)          { return nil, nil }
func (f *fixed) Versions(context.Context) ([]string, error)                   { return []string{"15"}, nil }
func (f *fixed) Readopt(context.Context, string) (bool, error)                { return false, nil }

func TestParseFaults(t *testing.T) {
	f, err := faulty.ParseFaults("deploy=-1, connection=2")
	if err != nil || f != (faulty.Faults{DeployFailures: -1, ConnectionFailures: 2}) {
		t.Fatalf("%+v %v", f, err)
	}
	for _, bad := range []string{"deploy", "deploy=x", "disk=1"} {
		if _, err := faulty.ParseFaults(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestDeployFailures(t *testing.T) {
	inner := &fixed{}
	d, fd := faulty.Wrap(inner, faulty.Faults{DeployFailures: 2})
	defer fd.Close()
	if _, ok := d.(dataplane.Repairer); !ok {
		t.Fatal("the wrapper hides the inner driver's Repairer")
	}
	if _, ok := d.(dataplane.RestartCounter); ok {
		t.Fatal("the wrapper claims a RestartCounter the inner driver lacks")
	}
	for i := 1; i <= 3; i++ {
		err := d.Deploy(context.Background(), dataplane.Spec{Name: "a"}, "pw")
		if (i <= 2) != (err != nil) {
			t.Fatalf("deploy %d: %v", i, err)
		}
		if err != nil && !strings.Contains(err.Error(), "injected deploy failure for a") {
			t.Fatalf("deploy %d: %v", i, err)
		}
	}
	// Counted per instance.
	if err := d.Deploy(context.Background(), dataplane.Spec{Name: "b"}, "pw"); err == nil {
		t.Fatal("first deploy of another instance succeeded")
	}
	if inner.deploys != 1 {
		t.Fatalf("inner deploys %d", inner.deploys)
	}
}

// TestConnectionFailures: through the endpoint the wrapper hands out, the
// first two connections of a real PostgreSQL server are refused with an
// injected error, the third reaches the server.
func TestConnectionFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatalf("start PostgreSQL (%s): %v", pgtest.InstallHint, err)
	}
	defer c.Stop()
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	pw, _ := u.User.Password()
	inner := &fixed{ep: dataplane.Endpoint{Host: u.Hostname(), Port: port, User: u.User.Username(), Database: strings.TrimPrefix(u.Path, "/")}}
	d, fd := faulty.Wrap(inner, faulty.Faults{ConnectionFailures: 2})
	defer fd.Close()
	ep, err := d.Endpoint(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if ep.Port == port {
		t.Fatal("the endpoint is not the proxy's")
	}
	connect := func() error {
		cfg, err := pgx.ParseConfig(ep.URL(pw)) // sslmode=prefer: TLS asked first, as by test-connection
		if err != nil {
			return err
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var one int
		return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
	for i := 1; i <= 2; i++ {
		err := connect()
		if err == nil || !strings.Contains(err.Error(), "injected connection failure for db") {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	if err := connect(); err != nil {
		t.Fatalf("connection 3: %v", err)
	}
	if err := connect(); err != nil {
		t.Fatalf("connection 4: %v", err)
	}
	fd.Close()
	if err := connect(); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connection after Close: %v", err)
	}
}

// full has every optional interface (like the local driver); its Backuper
// records the calls passed through.
type full struct {
	*fixed
	dataplane.Backuper
}

func (full) Restarts(context.Context, string) (int, error) { return 0, nil }
func (full) InternalEndpointsReachable() error             { return nil }

type archiving struct {
	dataplane.Backuper // nil: only SetArchiving is called
	calls              []string
}

func (a *archiving) SetArchiving(_ context.Context, name string, on bool) error {
	a.calls = append(a.calls, fmt.Sprintf("%s=%t", name, on))
	return nil
}

// TestWrapKeepsBackuper: backups pass through the wrapper, which claims
// Backuper only when the inner driver has it.
func TestWrapKeepsBackuper(t *testing.T) {
	for _, withAll := range []bool{true, false} {
		bk := &archiving{}
		var inner dataplane.Driver = full{&fixed{}, bk}
		if !withAll {
			inner = struct {
				dataplane.Driver
				dataplane.Backuper
			}{&fixed{}, bk}
		}
		d, fd := faulty.Wrap(inner, faulty.Faults{})
		b, ok := d.(dataplane.Backuper)
		if !ok {
			t.Fatalf("all=%v: the wrapper hides the inner driver's Backuper", withAll)
		}
		if _, ok := d.(dataplane.RestartCounter); ok != withAll {
			t.Fatalf("all=%v: RestartCounter %v", withAll, ok)
		}
		if err := b.SetArchiving(context.Background(), "a", false); err != nil || len(bk.calls) != 1 || bk.calls[0] != "a=false" {
			t.Fatalf("all=%v: SetArchiving passed through as %v (%v)", withAll, bk.calls, err)
		}
		fd.Close()
	}
	d, fd := faulty.Wrap(&fixed{}, faulty.Faults{})
	defer fd.Close()
	if _, ok := d.(dataplane.Backuper); ok {
		t.Fatal("the wrapper claims a Backuper the inner driver lacks")
	}
}

// standbys is a Replicator that records its calls.
type standbys struct{ calls []string }

func (s *standbys) SetReplicas(_ context.Context, name string, n int, sync bool) error {
	s.calls = append(s.calls, fmt.Sprintf("set %s %d %v", name, n, sync))
	return nil
}
func (s *standbys) Servers(context.Context, string) ([]dataplane.ServerState, error) { return nil, nil }
func (s *standbys) Fence(_ context.Context, name, id string) error {
	s.calls = append(s.calls, "fence "+name+" "+id)
	return nil
}
func (s *standbys) Promote(_ context.Context, name, id string) error {
	s.calls = append(s.calls, "promote "+name+" "+id)
	return nil
}
func (s *standbys) Rebuild(_ context.Context, name, id string) error {
	s.calls = append(s.calls, "rebuild "+name+" "+id)
	return nil
}

func TestWrapKeepsReplicator(t *testing.T) {
	rp := &standbys{}
	inner := struct {
		dataplane.Driver
		dataplane.Backuper
		dataplane.Replicator
	}{&fixed{}, &archiving{}, rp}
	d, fd := faulty.Wrap(inner, faulty.Faults{})
	defer fd.Close()
	r, ok := d.(dataplane.Replicator)
	if !ok {
		t.Fatal("the wrapper hides the inner driver's Replicator")
	}
	ctx := context.Background()
	_ = r.SetReplicas(ctx, "a", 1, true)
	_ = r.Fence(ctx, "a", "0")
	_ = r.Promote(ctx, "a", "1")
	_ = r.Rebuild(ctx, "a", "0")
	if got := strings.Join(rp.calls, ","); got != "set a 1 true,fence a 0,promote a 1,rebuild a 0" {
		t.Fatalf("calls passed through: %s", got)
	}
	if _, ok := d.(dataplane.Backuper); !ok {
		t.Fatal("the Backuper got lost next to the Replicator")
	}
}
