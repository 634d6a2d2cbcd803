package kubernetes

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/toygres/toygres/internal/dataplane"
)

// Environment of the child process TestDeployKilledMidway starts (the test
// binary again, which TestMain turns into a Deploy that stops half way).
const (
	childEnv          = "TOYGRES_K8S_TEST_CHILD"
	childNamespaceEnv = "TOYGRES_K8S_TEST_NAMESPACE"
	childNameEnv      = "TOYGRES_K8S_TEST_INSTANCE"
	childStopEnv      = "TOYGRES_K8S_TEST_STOP_AFTER"
	childStopped      = "STOPPED"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// runChild deploys an instance and, once the step named by childStopEnv is
// done, announces it on stdout and hangs until it is killed.
func runChild() int {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	d, err := New(Options{RESTConfig: cfg, Namespace: os.Getenv(childNamespaceEnv),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	stop := os.Getenv(childStopEnv)
	d.afterStep = func(step string) error {
		fmt.Printf("step %s done\n", step)
		if step == stop {
			fmt.Println(childStopped)
			select {} // wait for SIGKILL
		}
		return nil
	}
	err = d.Deploy(context.Background(), dataplane.Spec{Name: os.Getenv(childNameEnv), StorageGB: 1}, testPassword)
	fmt.Printf("deploy returned: %v\n", err)
	return 3
}

// TestDeployKilledMidway kills (SIGKILL) a process half way through a
// Deploy, as when the control plane dies, then retries the Deploy in
// another process (this one), which must converge.
func TestDeployKilledMidway(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	d := newTestDriver(t, cfg, ns, nil)
	steps := []string{"secret", "pvc", "statefulset", "service"}
	for i, stop := range []string{"pvc", "statefulset"} {
		t.Run("after "+stop, func(t *testing.T) {
			ctx := testCtx(t)
			name := instanceName(fmt.Sprintf("kill%d", i))
			cleanupInstance(t, d, name)

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=1", childNamespaceEnv+"="+ns, childNameEnv+"="+name, childStopEnv+"="+stop)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			stopped := make(chan error, 1)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					if sc.Text() == childStopped {
						stopped <- nil
						_, _ = io.Copy(io.Discard, out)
						return
					}
				}
				stopped <- fmt.Errorf("child ended its output without stopping (%v)", sc.Err())
			}()
			select {
			case err = <-stopped:
			case <-time.After(time.Minute):
				err = errors.New("child did not reach the stop point in 1m")
			}
			if kerr := cmd.Process.Kill(); kerr != nil { // SIGKILL
				t.Fatalf("kill child: %v", kerr)
			}
			werr := cmd.Wait()
			if err != nil {
				t.Fatalf("%v\nchild stderr:\n%s", err, stderr.String())
			}
			t.Logf("child killed after %s: %v", stop, werr)

			// What the dead process left: the steps up to stop, nothing after.
			exists := map[string]bool{}
			for _, r := range managedOf(t, d, name) {
				exists[strings.ToLower(r.Kind)] = true
			}
			done := true
			for _, s := range steps {
				kind := map[string]string{"secret": "secret", "pvc": "persistentvolumeclaim", "statefulset": "statefulset", "service": "service"}[s]
				if exists[kind] != done {
					t.Errorf("after a kill after %s: %s exists=%v", stop, s, exists[kind])
				}
				if s == stop {
					done = false
				}
			}
			if exists["service"] {
				t.Fatal("the service exists although the child was killed before creating it")
			}

			// The retried Deploy converges.
			if err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword); err != nil {
				t.Fatalf("retried Deploy: %v", err)
			}
			waitReady(t, d, name)
			if ep := waitEndpoint(t, d, name); ep.Host != "127.0.0.1" {
				t.Errorf("endpoint %+v", ep)
			}
			checkNoPassword(t, c, ns, name)
			if err := d.Delete(ctx, name); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			requireGone(t, c, d, name)
		})
	}
}

// TestDeployConverges covers retries after partial creates (resources made
// by an earlier attempt, an attempt that failed half way), changed
// configuration, and resources of the same name that toygres does not own.
func TestDeployConverges(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	d := newTestDriver(t, cfg, ns, func(o *Options) { o.DNSZone = "example.test" })

	t.Run("only secret and pvc exist", func(t *testing.T) {
		ctx := testCtx(t)
		name := instanceName("part")
		cleanupInstance(t, d, name)
		spec := dataplane.Spec{Name: name, StorageGB: 1, DNSLabel: "part"}
		p, err := d.plan(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		// As an earlier attempt left them, with a stale password.
		if _, err := c.CoreV1().Secrets(ns).Create(ctx, d.secret(p, "stale-password"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().PersistentVolumeClaims(ns).Create(ctx, d.pvc(p), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if st, err := d.Status(ctx, name); err != nil || st.Phase != PhasePending {
			t.Errorf("Status of a partial instance: %+v, %v; want Pending", st, err)
		}
		if err := d.Deploy(ctx, spec, testPassword); err != nil {
			t.Fatalf("Deploy after a partial create: %v", err)
		}
		waitReady(t, d, name)
		ep := waitEndpoint(t, d, name)
		if ep.DNSName != "part.example.test" || ep.ExternalIP != "127.0.0.1" {
			t.Errorf("endpoint %+v", ep)
		}
		sec, err := c.CoreV1().Secrets(ns).Get(ctx, secretName(name), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(sec.Data[SecretKeyPassword]) != testPassword {
			t.Error("the stale password in the secret was not replaced")
		}
		checkNoPassword(t, c, ns, name)

		// Changed configuration: another driver with other resources and
		// probes, and the instance made internal.
		d2 := newTestDriver(t, cfg, ns, func(o *Options) {
			o.Resources = Resources{CPURequest: "500m", MemoryRequest: "512Mi", MemoryLimit: "2Gi"}
			o.Probes = Probes{Kind: ProbeTCP}
		})
		gen := getSTS(t, c, ns, name).Generation
		if err := d2.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1, Internal: true}, testPassword); err != nil {
			t.Fatalf("Deploy with changed configuration: %v", err)
		}
		sts := getSTS(t, c, ns, name)
		ct := sts.Spec.Template.Spec.Containers[0]
		if sts.Generation == gen || ct.ReadinessProbe.TCPSocket == nil || ct.Resources.Requests.Memory().String() != "512Mi" {
			t.Errorf("statefulset not updated: generation %d→%d, probe %+v, resources %+v", gen, sts.Generation, ct.ReadinessProbe, ct.Resources)
		}
		svc, err := c.CoreV1().Services(ns).Get(ctx, serviceName(name), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Annotations[DefaultDNSLabelAnnotation] != "" || svc.Annotations[AnnotationDNSLabel] != "" {
			t.Errorf("service not made internal: %s %v", svc.Spec.Type, svc.Annotations)
		}
		if ep, err := d2.Endpoint(ctx, name); err != nil || ep.Host != serviceName(name)+"."+ns+".svc.cluster.local" {
			t.Errorf("internal endpoint %+v, %v", ep, err)
		}
		// And public again.
		if err := d.Deploy(ctx, spec, testPassword); err != nil {
			t.Fatalf("Deploy public again: %v", err)
		}
		if ep := waitEndpoint(t, d, name); ep.DNSName != "part.example.test" {
			t.Errorf("endpoint after making it public again: %+v", ep)
		}
		waitReady(t, d, name)
		if err := d.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
		requireGone(t, c, d, name)
	})

	t.Run("attempt failed after the statefulset", func(t *testing.T) {
		ctx := testCtx(t)
		name := instanceName("half")
		d := newTestDriver(t, cfg, ns, nil)
		cleanupInstance(t, d, name)
		d.afterStep = func(step string) error {
			if step == "statefulset" {
				return errors.New("injected failure")
			}
			return nil
		}
		spec := dataplane.Spec{Name: name, StorageGB: 1}
		if err := d.Deploy(ctx, spec, testPassword); err == nil || !strings.Contains(err.Error(), "injected failure") {
			t.Fatalf("Deploy: %v, want the injected failure", err)
		}
		if _, err := c.CoreV1().Services(ns).Get(ctx, serviceName(name), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("service after the failed attempt: %v", err)
		}
		d.afterStep = nil
		if err := d.Deploy(ctx, spec, testPassword); err != nil {
			t.Fatalf("retried Deploy: %v", err)
		}
		waitReady(t, d, name)
		waitEndpoint(t, d, name)
		if err := d.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
		requireGone(t, c, d, name)
	})

	t.Run("foreign resources are not touched", func(t *testing.T) {
		ctx := testCtx(t)
		name := instanceName("frn")
		foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName(name), Namespace: ns},
			StringData: map[string]string{"password": "someone else's"}}
		if _, err := c.CoreV1().Secrets(ns).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword); !errors.Is(err, ErrNotManaged) {
			t.Fatalf("Deploy over a foreign secret: %v, want ErrNotManaged", err)
		}
		if err := d.Delete(ctx, name); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		got, err := c.CoreV1().Secrets(ns).Get(ctx, secretName(name), metav1.GetOptions{})
		if err != nil || string(got.Data["password"]) != "someone else's" {
			t.Fatalf("the foreign secret was touched: %v", err)
		}
		if rs := managedOf(t, d, name); len(rs) > 0 {
			t.Fatalf("left: %v", rs)
		}
	})
}
