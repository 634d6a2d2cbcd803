package kubernetes

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/toygres/toygres/internal/dataplane"
)

// TestPublicAndInternalInstances deploys a public and an internal instance
// and checks every resource, readiness, endpoints, idempotency, secret
// hygiene and deletion.
func TestPublicAndInternalInstances(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	d := newTestDriver(t, cfg, ns, func(o *Options) { o.DNSZone = "db.example.test" })
	ctx := testCtx(t)

	pub := dataplane.Spec{Name: instanceName("pub"), PostgresVersion: "17", StorageGB: 2, DNSLabel: "orders"}
	in := dataplane.Spec{Name: instanceName("int"), StorageGB: 1, Internal: true, DNSLabel: "ignored"}
	for _, s := range []dataplane.Spec{pub, in} {
		cleanupInstance(t, d, s.Name)
		if err := d.Deploy(ctx, s, testPassword); err != nil {
			t.Fatalf("Deploy %s: %v", s.Name, err)
		}
	}
	for _, s := range []dataplane.Spec{pub, in} {
		waitReady(t, d, s.Name)
	}

	// A second Deploy is a no-op: no object is written again.
	before := resourceVersions(t, c, ns, pub.Name, in.Name)
	for _, s := range []dataplane.Spec{pub, in} {
		if err := d.Deploy(ctx, s, testPassword); err != nil {
			t.Fatalf("second Deploy %s: %v", s.Name, err)
		}
	}
	if after := resourceVersions(t, c, ns, pub.Name, in.Name); !mapsEqual(before, after) {
		t.Errorf("a repeated Deploy rewrote objects:\nbefore %v\nafter  %v", before, after)
	}
	// Another version for an existing instance is refused.
	if err := d.Deploy(ctx, dataplane.Spec{Name: in.Name, PostgresVersion: "16", Internal: true}, testPassword); err == nil ||
		!strings.Contains(err.Error(), "PostgreSQL 18") {
		t.Errorf("Deploy with another version: %v, want a refusal naming PostgreSQL 18", err)
	}
	if err := d.Deploy(ctx, dataplane.Spec{Name: instanceName("bad"), PostgresVersion: "9"}, testPassword); err == nil {
		t.Error("Deploy with an unoffered version succeeded")
	}

	// PVCs bound, with the requested sizes.
	for _, s := range []dataplane.Spec{pub, in} {
		eventually(t, 30*time.Second, "pvc bound", func() (bool, string) {
			pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, pvcName(s.Name), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return pvc.Status.Phase == corev1.ClaimBound, string(pvc.Status.Phase)
		})
		pvc, _ := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, pvcName(s.Name), metav1.GetOptions{})
		if got, want := pvc.Spec.Resources.Requests[corev1.ResourceStorage], resource.MustParse(fmt.Sprintf("%dGi", s.StorageGB)); got.Cmp(want) != 0 {
			t.Errorf("pvc %s requests %s, want %s", pvc.Name, got.String(), want.String())
		}
	}

	// StatefulSets: image, probes, resources, password by reference only.
	stsPub := getSTS(t, c, ns, pub.Name)
	stsIn := getSTS(t, c, ns, in.Name)
	if img := stsPub.Spec.Template.Spec.Containers[0].Image; img != "postgres:17" {
		t.Errorf("public image %q, want postgres:17", img)
	}
	if img := stsIn.Spec.Template.Spec.Containers[0].Image; img != "postgres:18" {
		t.Errorf("internal image %q, want the newest, postgres:18", img)
	}
	for _, sts := range []*appsv1.StatefulSet{stsPub, stsIn} {
		checkStatefulSet(t, sts)
	}

	// Services and endpoints.
	svcPub, err := c.CoreV1().Services(ns).Get(ctx, serviceName(pub.Name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svcPub.Spec.Type != corev1.ServiceTypeLoadBalancer || svcPub.Annotations[DefaultDNSLabelAnnotation] != "orders" {
		t.Errorf("public service: type %s, annotations %v", svcPub.Spec.Type, svcPub.Annotations)
	}
	svcIn, err := c.CoreV1().Services(ns).Get(ctx, serviceName(in.Name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svcIn.Spec.Type != corev1.ServiceTypeClusterIP || svcIn.Annotations[DefaultDNSLabelAnnotation] != "" {
		t.Errorf("internal service: type %s, annotations %v", svcIn.Spec.Type, svcIn.Annotations)
	}
	epPub := waitEndpoint(t, d, pub.Name)
	want := dataplane.Endpoint{Host: "127.0.0.1", Port: 5432, User: "postgres", Database: "postgres",
		DNSName: "orders.db.example.test", ExternalIP: "127.0.0.1"}
	if !reflect.DeepEqual(epPub, want) {
		t.Errorf("public endpoint %+v, want %+v", epPub, want)
	}
	if u := epPub.URL(""); u != "postgresql://postgres@orders.db.example.test:5432/postgres" {
		t.Errorf("public connection string %q", u)
	}
	svcAfter, _ := c.CoreV1().Services(ns).Get(ctx, serviceName(pub.Name), metav1.GetOptions{})
	if ing := svcAfter.Status.LoadBalancer.Ingress; len(ing) == 0 || ing[0].IP != "127.0.0.1" {
		t.Errorf("load balancer ingress %v", ing)
	}
	epIn, err := d.Endpoint(ctx, in.Name)
	if err != nil {
		t.Fatalf("internal Endpoint: %v", err)
	}
	wantIn := dataplane.Endpoint{Host: serviceName(in.Name) + "." + ns + ".svc.cluster.local", Port: 5432, User: "postgres", Database: "postgres"}
	if !reflect.DeepEqual(epIn, wantIn) {
		t.Errorf("internal endpoint %+v, want %+v", epIn, wantIn)
	}
	if u := epIn.URL(""); u != "postgresql://postgres@"+wantIn.Host+":5432/postgres" {
		t.Errorf("internal connection string %q", u)
	}

	// The password: in the Secret, nowhere else.
	for _, s := range []dataplane.Spec{pub, in} {
		sec, err := c.CoreV1().Secrets(ns).Get(ctx, secretName(s.Name), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(sec.Data[SecretKeyPassword]) != testPassword || string(sec.Data[SecretKeyUsername]) != "postgres" {
			t.Errorf("secret %s holds the wrong credentials", sec.Name)
		}
		checkNoPassword(t, c, ns, s.Name)
	}

	// Owner labels: ListManaged and Instances find everything.
	for _, s := range []dataplane.Spec{pub, in} {
		var kinds []string
		for _, r := range managedOf(t, d, s.Name) {
			kinds = append(kinds, r.Kind)
		}
		slices.Sort(kinds)
		if w := []string{KindPersistentVolumeClaim, KindPod, KindSecret, KindService, KindStatefulSet}; !slices.Equal(kinds, w) {
			t.Errorf("managed resources of %s: %v, want %v", s.Name, kinds, w)
		}
	}
	names, err := d.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w := []string{in.Name, pub.Name}; !slices.Equal(names, w) {
		slices.Sort(w)
		if !slices.Equal(names, w) {
			t.Errorf("Instances = %v, want %v", names, w)
		}
	}

	// Logs: kwok runs no kubelet, so the API server cannot serve them; the
	// driver says so clearly and promptly.
	start := time.Now()
	lines, err := d.Logs(ctx, pub.Name, 20)
	switch {
	case err == nil:
		t.Logf("logs served (%d lines)", len(lines))
	case !errors.Is(err, ErrLogsUnavailable):
		t.Errorf("Logs: %v, want ErrLogsUnavailable", err)
	default:
		t.Logf("Logs (%v): %v", time.Since(start).Round(time.Millisecond), err)
	}
	if _, err := d.Logs(ctx, instanceName("none"), 20); !errors.Is(err, dataplane.ErrNotFound) {
		t.Errorf("Logs of a missing instance: %v, want ErrNotFound", err)
	}

	// Delete: everything goes; Delete again succeeds.
	for _, s := range []dataplane.Spec{pub, in} {
		if err := d.Delete(ctx, s.Name); err != nil {
			t.Fatalf("Delete %s: %v", s.Name, err)
		}
		requireGone(t, c, d, s.Name)
		if err := d.Delete(ctx, s.Name); err != nil {
			t.Fatalf("second Delete %s: %v", s.Name, err)
		}
		if _, err := d.Status(ctx, s.Name); !errors.Is(err, dataplane.ErrNotFound) {
			t.Errorf("Status after Delete: %v, want ErrNotFound", err)
		}
		if _, err := d.Endpoint(ctx, s.Name); !errors.Is(err, dataplane.ErrNotFound) {
			t.Errorf("Endpoint after Delete: %v, want ErrNotFound", err)
		}
	}
}

func getSTS(t *testing.T, c k8s.Interface, ns, name string) *appsv1.StatefulSet {
	t.Helper()
	sts, err := c.AppsV1().StatefulSets(ns).Get(testCtx(t), stsName(name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sts
}

func checkStatefulSet(t *testing.T, sts *appsv1.StatefulSet) {
	t.Helper()
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("%s: replicas %v", sts.Name, sts.Spec.Replicas)
	}
	pod := sts.Spec.Template.Spec
	if len(pod.Containers) != 1 || pod.Containers[0].Name != ContainerName {
		t.Fatalf("%s: containers %v", sts.Name, pod.Containers)
	}
	ct := pod.Containers[0]
	if ct.ReadinessProbe == nil || ct.LivenessProbe == nil || ct.StartupProbe == nil ||
		ct.ReadinessProbe.Exec == nil || ct.ReadinessProbe.Exec.Command[0] != "pg_isready" {
		t.Errorf("%s: probes readiness=%v liveness=%v startup=%v", sts.Name, ct.ReadinessProbe, ct.LivenessProbe, ct.StartupProbe)
	}
	if q := ct.Resources.Requests[corev1.ResourceMemory]; q.String() != "256Mi" {
		t.Errorf("%s: memory request %s", sts.Name, q.String())
	}
	if q := ct.Resources.Limits[corev1.ResourceMemory]; q.String() != "1Gi" {
		t.Errorf("%s: memory limit %s", sts.Name, q.String())
	}
	found := false
	for _, e := range ct.Env {
		if e.Value == testPassword {
			t.Errorf("%s: env %s holds the password as a literal", sts.Name, e.Name)
		}
		if e.Name == "POSTGRES_PASSWORD" {
			found = e.Value == "" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
				e.ValueFrom.SecretKeyRef.Name == secretName(sts.Name) && e.ValueFrom.SecretKeyRef.Key == SecretKeyPassword
		}
	}
	if !found {
		t.Errorf("%s: POSTGRES_PASSWORD is not a secretKeyRef to %s/%s: %v", sts.Name, secretName(sts.Name), SecretKeyPassword, ct.Env)
	}
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.FSGroup == nil {
		t.Errorf("%s: pod security context %+v", sts.Name, sc)
	}
	for k, v := range map[string]string{LabelManagedBy: ManagedByValue, LabelInstance: sts.Name} {
		if sts.Labels[k] != v || sts.Spec.Template.Labels[k] != v {
			t.Errorf("%s: label %s missing", sts.Name, k)
		}
	}
}

// checkNoPassword fails if the password (or its base64) appears in any
// object of the instance other than the Secret's data.
func checkNoPassword(t *testing.T, c k8s.Interface, ns, name string) {
	t.Helper()
	ctx := testCtx(t)
	var objs []any
	sts, err := c.AppsV1().StatefulSets(ns).Get(ctx, stsName(name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	objs = append(objs, sts)
	if svc, err := c.CoreV1().Services(ns).Get(ctx, serviceName(name), metav1.GetOptions{}); err == nil {
		objs = append(objs, svc)
	}
	if pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, pvcName(name), metav1.GetOptions{}); err == nil {
		objs = append(objs, pvc)
	}
	if pod, err := c.CoreV1().Pods(ns).Get(ctx, podName(name), metav1.GetOptions{}); err == nil {
		objs = append(objs, pod)
	}
	sec, err := c.CoreV1().Secrets(ns).Get(ctx, secretName(name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data = nil // the one place it belongs
	objs = append(objs, sec)
	evs, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		objs = append(objs, evs)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte(testPassword))
	for _, o := range objs {
		j, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if s := string(j); strings.Contains(s, testPassword) || strings.Contains(s, b64) {
			name := ""
			if m, ok := o.(metav1.Object); ok {
				name = m.GetName()
			}
			t.Errorf("the password appears in %T %s", o, name)
		}
	}
}

func resourceVersions(t *testing.T, c k8s.Interface, ns string, names ...string) map[string]string {
	t.Helper()
	ctx := testCtx(t)
	out := map[string]string{}
	for _, n := range names {
		if o, err := c.CoreV1().Secrets(ns).Get(ctx, secretName(n), metav1.GetOptions{}); err == nil {
			out["secret/"+o.Name] = o.ResourceVersion
		}
		if o, err := c.AppsV1().StatefulSets(ns).Get(ctx, stsName(n), metav1.GetOptions{}); err == nil {
			out["sts/"+o.Name] = fmt.Sprint(o.Generation) // status updates bump the resource version
		}
		if o, err := c.CoreV1().Services(ns).Get(ctx, serviceName(n), metav1.GetOptions{}); err == nil {
			out["svc/"+o.Name] = fmt.Sprint(o.Annotations[AnnotationConfigHash], o.Spec.Type)
		}
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
