package kubernetes

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/toygres/toygres/internal/dataplane"
)

// failServiceCreates answers every Service create with 403 Forbidden, as an
// API server would for a missing permission.
type failServiceCreates struct{ next http.RoundTripper }

func (f failServiceCreates) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/services") {
		body := `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",` +
			`"message":"services is forbidden: injected by the test","reason":"Forbidden","code":403}`
		return &http.Response{StatusCode: http.StatusForbidden, Status: "403 Forbidden", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	}
	return f.next.RoundTrip(r)
}

// TestPermanentFailureThenDelete: a Deploy whose step fails for good, then
// the Delete a failed create's cleanup runs, leaves nothing behind.
func TestPermanentFailureThenDelete(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)

	t.Run("invalid storage class", func(t *testing.T) {
		ctx := testCtx(t)
		d := newTestDriver(t, cfg, ns, func(o *Options) { o.StorageClass = "no-such-class" })
		name := instanceName("nosc")
		cleanupInstance(t, d, name)
		// The API server accepts the claim; it just never binds, so the pod
		// never schedules and Status explains why.
		if err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword); err != nil {
			t.Fatalf("Deploy: %v", err)
		}
		eventually(t, 30*time.Second, "pending status naming the claim", func() (bool, string) {
			st, err := d.Status(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if st.Ready {
				t.Fatalf("ready without a volume: %+v", st)
			}
			return st.Phase == PhasePending && strings.Contains(st.Message, "pvc "+pvcName(name)+" is Pending"), st.Message
		})
		pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, pvcName(name), metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != corev1.ClaimPending {
			t.Fatalf("pvc: %v %v", pvc.Status.Phase, err)
		}
		if err := d.Delete(ctx, name); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		requireGone(t, c, d, name)
	})

	t.Run("forced API error", func(t *testing.T) {
		ctx := testCtx(t)
		bad := rest.CopyConfig(cfg)
		bad.Wrap(func(rt http.RoundTripper) http.RoundTripper { return failServiceCreates{rt} })
		d := newTestDriver(t, bad, ns, nil)
		name := instanceName("e403")
		cleanupInstance(t, d, name)
		err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword)
		if !apierrors.IsForbidden(err) {
			t.Fatalf("Deploy: %v, want the injected 403", err)
		}
		if rs := managedOf(t, d, name); len(rs) < 3 {
			t.Fatalf("expected the secret, pvc and statefulset before the failure, have %v", rs)
		}
		if err := d.Delete(ctx, name); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		requireGone(t, c, d, name)
	})

	t.Run("rejected by the API server", func(t *testing.T) {
		ctx := testCtx(t)
		// Requests above limits: the StatefulSet is invalid (422).
		d := newTestDriver(t, cfg, ns, func(o *Options) { o.Resources = Resources{CPURequest: "2", CPULimit: "1"} })
		name := instanceName("e422")
		cleanupInstance(t, d, name)
		err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "statefulset") {
			t.Fatalf("Deploy: %v, want 422 Invalid on the statefulset", err)
		}
		if err := d.Delete(ctx, name); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		requireGone(t, c, d, name)
	})

	// Nothing of any instance is left in the namespace.
	d := newTestDriver(t, cfg, ns, nil)
	eventually(t, 30*time.Second, "namespace swept", func() (bool, string) {
		rs, err := d.ListManaged(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		return len(rs) == 0, resourceNames(rs)
	})
}
