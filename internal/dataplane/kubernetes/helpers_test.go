package kubernetes

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/toygres/toygres/internal/dataplane"
)

const (
	// testPassword must appear in the instance's Secret and nowhere else.
	testPassword = "Sup3r-s3cret 'pw' Zq7xK"
	readyTimeout = 60 * time.Second
)

// restConfig is the cluster-admin configuration of the test cluster.
func restConfig(t *testing.T) *rest.Config {
	t.Helper()
	path := os.Getenv("KUBECONFIG")
	if path == "" {
		t.Fatal("KUBECONFIG is not set: run the tests via ../shared/k8s/with-k8s.sh go test ./...")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	return cfg
}

func adminClient(t *testing.T) k8s.Interface {
	t.Helper()
	c, err := k8s.NewForConfig(restConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testNamespace creates a fresh namespace, deleted (without waiting) when
// the test ends.
func testNamespace(t *testing.T, c k8s.Interface) string {
	t.Helper()
	ns, err := c.CoreV1().Namespaces().Create(testCtx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "t-", Labels: map[string]string{"toygres.io/test": strings.ToLower(sanitize(t.Name()))},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return strings.Trim(string(b), "-._")
}

// syncBuffer collects the driver's logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestDriver returns a driver for namespace ns. Its logs are checked for
// the password and shown when the test fails.
func newTestDriver(t *testing.T, cfg *rest.Config, ns string, mod func(*Options)) *Driver {
	t.Helper()
	logs := &syncBuffer{}
	opts := Options{RESTConfig: cfg, Namespace: ns, DeleteWait: 30 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&opts)
	}
	d, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		out := logs.String()
		if strings.Contains(out, testPassword) {
			t.Errorf("the driver logged the password:\n%s", out)
		}
		if t.Failed() {
			t.Logf("driver log:\n%s", out)
		}
	})
	return d
}

func instanceName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// eventually polls cond every 100ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %s", what, timeout, detail)
		}
		<-tick.C
	}
}

func waitReady(t *testing.T, d *Driver, name string) {
	t.Helper()
	ctx := testCtx(t)
	eventually(t, readyTimeout, name+" ready", func() (bool, string) {
		st, err := d.Status(ctx, name)
		if err != nil {
			t.Fatalf("Status %s: %v", name, err)
		}
		if st.Ready && st.Phase != PhaseReady {
			t.Fatalf("Status %s: ready in phase %q", name, st.Phase)
		}
		return st.Ready, fmt.Sprintf("%+v", st)
	})
}

// waitEndpoint polls Endpoint through ErrNotReady (the load balancer's
// address comes about a second after the Service).
func waitEndpoint(t *testing.T, d *Driver, name string) dataplane.Endpoint {
	t.Helper()
	ctx := testCtx(t)
	var ep dataplane.Endpoint
	eventually(t, readyTimeout, name+" endpoint", func() (bool, string) {
		var err error
		ep, err = d.Endpoint(ctx, name)
		if errors.Is(err, ErrNotReady) {
			return false, err.Error()
		}
		if err != nil {
			t.Fatalf("Endpoint %s: %v", name, err)
		}
		return true, ""
	})
	return ep
}

// cleanupInstance deletes the instance when the test ends, in case it
// failed half way (the namespace goes too, but slowly).
func cleanupInstance(t *testing.T, d *Driver, name string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Delete(ctx, name); err != nil {
			t.Errorf("cleanup: Delete %s: %v", name, err)
		}
	})
}

// managedOf lists the resources of one instance (by owner labels).
func managedOf(t *testing.T, d *Driver, name string) []Resource {
	t.Helper()
	rs, err := d.ListManaged(testCtx(t))
	if err != nil {
		t.Fatalf("ListManaged: %v", err)
	}
	var out []Resource
	for _, r := range rs {
		if r.Instance == name {
			out = append(out, r)
		}
	}
	return out
}

// requireGone checks that nothing of the instance is left: nothing carries
// its labels, and none of its resource names exists.
func requireGone(t *testing.T, c k8s.Interface, d *Driver, name string) {
	t.Helper()
	ctx := testCtx(t)
	eventually(t, 30*time.Second, name+" gone", func() (bool, string) {
		if rs := managedOf(t, d, name); len(rs) > 0 {
			return false, "left: " + resourceNames(rs)
		}
		for _, get := range []struct {
			what string
			get  func() error
		}{
			{"secret " + secretName(name), func() error {
				_, err := c.CoreV1().Secrets(d.ns).Get(ctx, secretName(name), metav1.GetOptions{})
				return err
			}},
			{"pvc " + pvcName(name), func() error {
				_, err := c.CoreV1().PersistentVolumeClaims(d.ns).Get(ctx, pvcName(name), metav1.GetOptions{})
				return err
			}},
			{"statefulset " + stsName(name), func() error {
				_, err := c.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
				return err
			}},
			{"service " + serviceName(name), func() error {
				_, err := c.CoreV1().Services(d.ns).Get(ctx, serviceName(name), metav1.GetOptions{})
				return err
			}},
			{"pod " + podName(name), func() error {
				_, err := c.CoreV1().Pods(d.ns).Get(ctx, podName(name), metav1.GetOptions{})
				return err
			}},
		} {
			if err := get.get(); !apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("%s still there (err=%v)", get.what, err)
			}
		}
		return true, ""
	})
}
