package kubernetes

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/toygres/toygres/internal/dataplane"
)

// TestReplicaLifecycle runs an internal instance through the standby
// model against the real API server (kwok makes the pods Running and
// Ready; nothing runs in them): SetReplicas 0→1→2, the shapes of both
// StatefulSets and both Services and the pods the Services' EndpointSlices
// list, a fence and promotion that moves the primary Service to another
// pod, a control-plane restart that reads the same roles, a rebuild, and
// scaling back to 0.
func TestReplicaLifecycle(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	d := newTestDriver(t, cfg, ns, nil)
	ctx := testCtx(t)
	name := instanceName("rep")
	cleanupInstance(t, d, name)
	if err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1, Internal: true}, testPassword); err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	waitReady(t, d, name)

	// Without standbys: one primary, no read-only address, and the
	// StatefulSet is the single-server one.
	waitServers(t, d, name, map[string]dataplane.Role{"0": dataplane.RolePrimary})
	if ep := waitEndpoint(t, d, name); ep.ReadOnly != nil || ep.ReadOnlyURL("") != "" || ep.MultiHost {
		t.Errorf("endpoint without standbys: %+v, read-only URL %q", ep, ep.ReadOnlyURL(""))
	}
	if cmd := getSTS(t, c, ns, name).Spec.Template.Spec.Containers[0].Command; slices.Contains(cmd, replStartScript) {
		t.Error("a single-server instance runs the replicated start script")
	}
	// SetReplicas 0 leaves a single-server instance as it is.
	before := objectVersions(t, c, ns, name)
	if err := d.SetReplicas(ctx, name, 0, false); err != nil {
		t.Fatalf("SetReplicas 0 of a single server: %v", err)
	}
	if after := objectVersions(t, c, ns, name); !mapsEqual(before, after) {
		t.Errorf("SetReplicas 0 of a single server rewrote objects:\nbefore %v\nafter  %v", before, after)
	}
	if err := d.SetReplicas(ctx, instanceName("none"), 1, false); !errors.Is(err, dataplane.ErrNotFound) {
		t.Errorf("SetReplicas of a missing instance: %v, want ErrNotFound", err)
	}

	// 0 → 1.
	if err := d.SetReplicas(ctx, name, 1, false); err != nil {
		t.Fatalf("SetReplicas 1: %v", err)
	}
	// The first SetReplicas recreates the primary's pod (its template
	// changed); SetReplicas returns once the new pod is labelled, so the
	// Service reaches it without a Servers call.
	if pod := getPod(t, c, ns, podName(name)); pod.Labels[LabelRole] != "primary" || pod.Labels[LabelServer] != "0" {
		t.Errorf("pod %s labels after SetReplicas: %v", pod.Name, pod.Labels)
	}
	eventually(t, readyTimeout, "pod 0 has an IP", func() (bool, string) { return podIPs(t, c, ns, name)["0"] != "", "" })
	waitSlices(t, c, ns, serviceName(name), podIPs(t, c, ns, name)["0"])
	checkReplicatedSets(t, c, ns, name, 1, false)
	checkServices(t, c, ns, name, true)
	waitServers(t, d, name, map[string]dataplane.Role{"0": dataplane.RolePrimary, "1": dataplane.RoleStandby})
	waitRolledOut(t, c, ns, name)
	ip := podIPs(t, c, ns, name)
	waitSlices(t, c, ns, serviceName(name), ip["0"])
	waitSlices(t, c, ns, readOnlyServiceName(name), ip["1"])
	ep := waitEndpoint(t, d, name)
	wantRO := fmt.Sprintf("%s.%s.svc.%s", readOnlyServiceName(name), ns, DefaultClusterDomain)
	if ep.ReadOnly == nil || ep.ReadOnly.Host != wantRO || ep.ReadOnly.Port != Port || ep.MultiHost {
		t.Errorf("endpoint with a standby: %+v (read-only %v), want read-only %s:%d, not multi-host", ep, ep.ReadOnly, wantRO, Port)
	}
	if got, want := ep.ReadOnlyURL(""), "postgresql://postgres@"+wantRO+":5432/postgres"; got != want {
		t.Errorf("ReadOnlyURL = %q, want %q", got, want)
	}
	if got, want := ep.URL(""), fmt.Sprintf("postgresql://postgres@%s.%s.svc.%s:5432/postgres", serviceName(name), ns, DefaultClusterDomain); got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
	// Idempotent: again writes nothing.
	before = objectVersions(t, c, ns, name)
	if err := d.SetReplicas(ctx, name, 1, false); err != nil {
		t.Fatalf("SetReplicas 1 again: %v", err)
	}
	if after := objectVersions(t, c, ns, name); !mapsEqual(before, after) {
		t.Errorf("a repeated SetReplicas rewrote objects:\nbefore %v\nafter  %v", before, after)
	}

	// 1 → 2, synchronous.
	if err := d.SetReplicas(ctx, name, 2, true); err != nil {
		t.Fatalf("SetReplicas 2: %v", err)
	}
	checkReplicatedSets(t, c, ns, name, 2, true)
	servers := waitServers(t, d, name, map[string]dataplane.Role{"0": dataplane.RolePrimary, "1": dataplane.RoleStandby, "2": dataplane.RoleStandby})
	for _, s := range servers[1:] {
		if !s.Sync || !s.Streaming || s.Host == "" || s.Port != Port {
			t.Errorf("standby %+v: want sync, streaming (ready), with an address", s)
		}
	}
	waitRolledOut(t, c, ns, name) // the sync setting changed the templates
	waitServers(t, d, name, map[string]dataplane.Role{"0": dataplane.RolePrimary, "1": dataplane.RoleStandby, "2": dataplane.RoleStandby})
	ip = podIPs(t, c, ns, name)
	waitSlices(t, c, ns, serviceName(name), ip["0"])
	waitSlices(t, c, ns, readOnlyServiceName(name), ip["1"], ip["2"])

	// Failover: fence the primary (it leaves the Service at once), then
	// promote server 1 (the Service selects it).
	if err := d.Fence(ctx, name, "0"); err != nil {
		t.Fatalf("Fence 0: %v", err)
	}
	if err := d.Fence(ctx, name, "0"); err != nil {
		t.Fatalf("Fence 0 again: %v", err)
	}
	if err := d.Fence(ctx, name, "7"); err != nil {
		t.Fatalf("Fence of an absent server: %v", err)
	}
	waitSlices(t, c, ns, serviceName(name))
	if err := d.Promote(ctx, name, "0"); !errors.Is(err, dataplane.ErrNotStandby) {
		t.Errorf("Promote of a fenced server: %v, want ErrNotStandby", err)
	}
	if err := d.Promote(ctx, name, "1"); err != nil {
		t.Fatalf("Promote 1: %v", err)
	}
	if err := d.Promote(ctx, name, "1"); err != nil {
		t.Fatalf("Promote 1 again: %v", err)
	}
	waitSlices(t, c, ns, serviceName(name), ip["1"])
	waitSlices(t, c, ns, readOnlyServiceName(name), ip["2"])
	servers = waitServers(t, d, name, map[string]dataplane.Role{"0": dataplane.RoleFenced, "1": dataplane.RolePrimary, "2": dataplane.RoleStandby})
	if servers[0].ID != "1" {
		t.Errorf("Servers lists %s first, want the primary 1", servers[0].ID)
	}
	if pod := getPod(t, c, ns, serverPodName(name, "0")); pod.Labels[LabelRole] != "fenced" {
		t.Errorf("pod %s is labelled %q, want fenced", pod.Name, pod.Labels[LabelRole])
	}
	if st, err := d.Status(ctx, name); err != nil || !st.Ready || !strings.Contains(st.Message, serverPodName(name, "1")) {
		t.Errorf("Status after the promotion = %+v, %v; want ready, about pod %s", st, err, serverPodName(name, "1"))
	}

	// A new driver (a control-plane restart) reads the same roles, and
	// puts back the label of a pod that lost it (a recreated pod).
	d2 := newTestDriver(t, cfg, ns, nil)
	patchLabels(t, c, ns, serverPodName(name, "1"), map[string]any{LabelRole: nil})
	waitSlices(t, c, ns, serviceName(name))
	waitServers(t, d2, name, map[string]dataplane.Role{"0": dataplane.RoleFenced, "1": dataplane.RolePrimary, "2": dataplane.RoleStandby})
	waitSlices(t, c, ns, serviceName(name), ip["1"])

	// Rebuild the fenced server as a standby; the primary cannot be
	// rebuilt; a standby's rebuild is a no-op.
	if err := d2.Rebuild(ctx, name, "1"); err == nil {
		t.Error("Rebuild of the primary succeeded")
	}
	if err := d2.Rebuild(ctx, name, "0"); err != nil {
		t.Fatalf("Rebuild 0: %v", err)
	}
	before = objectVersions(t, c, ns, name)
	if err := d2.Rebuild(ctx, name, "2"); err != nil {
		t.Fatalf("Rebuild of a standby: %v", err)
	}
	if after := objectVersions(t, c, ns, name); !mapsEqual(before, after) {
		t.Errorf("Rebuild of a standby rewrote objects:\nbefore %v\nafter  %v", before, after)
	}
	waitServers(t, d2, name, map[string]dataplane.Role{"0": dataplane.RoleStandby, "1": dataplane.RolePrimary, "2": dataplane.RoleStandby})
	waitSlices(t, c, ns, readOnlyServiceName(name), ip["0"], ip["2"])

	// Scaling down cannot remove the primary; 2 → 1 removes server 2 and
	// its claim.
	if err := d2.SetReplicas(ctx, name, 0, false); err == nil || !strings.Contains(err.Error(), "primary is server 1") {
		t.Errorf("SetReplicas 0 with primary 1: %v, want a refusal", err)
	}
	if err := d2.SetReplicas(ctx, name, 1, false); err != nil {
		t.Fatalf("SetReplicas 1: %v", err)
	}
	checkReplicatedSets(t, c, ns, name, 1, false)
	waitServers(t, d2, name, map[string]dataplane.Role{"0": dataplane.RoleStandby, "1": dataplane.RolePrimary})
	eventually(t, 30*time.Second, "claim of server 2 deleted", func() (bool, string) {
		_, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-"+serverPodName(name, "2"), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		return false, fmt.Sprintf("err=%v", err)
	})

	// Switch back to server 0, then 1 → 0.
	if err := d2.Fence(ctx, name, "1"); err != nil {
		t.Fatal(err)
	}
	if err := d2.Promote(ctx, name, "0"); err != nil {
		t.Fatal(err)
	}
	if err := d2.Rebuild(ctx, name, "1"); err != nil {
		t.Fatal(err)
	}
	if err := d2.SetReplicas(ctx, name, 0, false); err != nil {
		t.Fatalf("SetReplicas 0: %v", err)
	}
	checkReplicatedSets(t, c, ns, name, 0, false)
	checkServices(t, c, ns, name, false)
	waitServers(t, d2, name, map[string]dataplane.Role{"0": dataplane.RolePrimary})
	waitRolledOut(t, c, ns, name) // sync went off at the scale to 1: the pods were recreated
	waitServers(t, d2, name, map[string]dataplane.Role{"0": dataplane.RolePrimary})
	waitSlices(t, c, ns, serviceName(name), podIPs(t, c, ns, name)["0"])
	if ep := waitEndpoint(t, d2, name); ep.ReadOnly != nil || ep.ReadOnlyURL("") != "" {
		t.Errorf("endpoint after scaling to 0: %+v", ep)
	}

	// Delete removes everything, the standby StatefulSet and claims too.
	if err := d2.SetReplicas(ctx, name, 2, false); err != nil {
		t.Fatal(err)
	}
	waitServers(t, d2, name, map[string]dataplane.Role{"0": dataplane.RolePrimary, "1": dataplane.RoleStandby, "2": dataplane.RoleStandby})
	if err := d2.Delete(ctx, name); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	requireGone(t, c, d2, name)
	for _, get := range []func() error{
		func() error {
			_, err := c.AppsV1().StatefulSets(ns).Get(ctx, standbySetName(name), metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := c.CoreV1().Services(ns).Get(ctx, readOnlyServiceName(name), metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); !apierrors.IsNotFound(err) {
			t.Errorf("left after Delete: %v", err)
		}
	}
	if _, err := d2.Servers(ctx, name); !errors.Is(err, dataplane.ErrNotFound) {
		t.Errorf("Servers after Delete: %v, want ErrNotFound", err)
	}
}

// TestReplicaPublicServices: a public instance's read-only Service is a
// load balancer too, without the primary's DNS label, and Endpoint reports
// its address.
func TestReplicaPublicServices(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	d := newTestDriver(t, cfg, ns, func(o *Options) { o.DNSZone = "db.example.test" })
	ctx := testCtx(t)
	name := instanceName("pubrep")
	cleanupInstance(t, d, name)
	if err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1, DNSLabel: "orders"}, testPassword); err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	if err := d.SetReplicas(ctx, name, 1, true); err != nil {
		t.Fatalf("SetReplicas: %v", err)
	}
	ro, err := c.CoreV1().Services(ns).Get(ctx, readOnlyServiceName(name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ro.Spec.Type != corev1.ServiceTypeLoadBalancer || ro.Annotations[AnnotationDNSLabel] != "" || ro.Annotations[DefaultDNSLabelAnnotation] != "" {
		t.Errorf("read-only service: type %s, annotations %v; want a load balancer without DNS label", ro.Spec.Type, ro.Annotations)
	}
	ep := waitEndpoint(t, d, name)
	if ep.DNSName != "orders.db.example.test" || ep.ReadOnly == nil || ep.ReadOnly.Host != "127.0.0.1" {
		t.Errorf("endpoint %+v (read-only %v): want DNS name orders.db.example.test and the read-only load balancer's IP", ep, ep.ReadOnly)
	}
	if got := ep.ReadOnlyURL(""); got != "postgresql://postgres@127.0.0.1:5432/postgres" {
		t.Errorf("ReadOnlyURL = %q", got)
	}
}

// TestReplicaScripts checks the replicated start and readiness scripts
// with the shell's parser (no pod runs them under kwok), and that they
// hold the steps the design relies on.
func TestReplicaScripts(t *testing.T) {
	for what, script := range map[string]string{"start": replStartScript, "ready": replReadyScript} {
		out, err := exec.Command("/bin/sh", "-n", "-c", script).CombinedOutput()
		if err != nil {
			t.Errorf("%s script does not parse: %v\n%s", what, err, out)
		}
	}
	for _, want := range []string{"pg_basebackup -h \"$REPLICATE_FROM_HOST\"", " -R ", "standby.signal", "pg_ctl -D \"$PGDATA\" promote",
		"stop -m fast", podInfoPath + "/labels", "exec docker-entrypoint.sh postgres"} {
		if !strings.Contains(replStartScript, want) {
			t.Errorf("start script lacks %q", want)
		}
	}
}

// checkReplicatedSets checks both StatefulSets of a replicated instance
// with n standbys.
func checkReplicatedSets(t *testing.T, c k8s.Interface, ns, name string, n int, sync bool) {
	t.Helper()
	a := getSTS(t, c, ns, name)
	b := getSTS(t, c, ns, standbySetName(name))
	if *a.Spec.Replicas != 1 || *b.Spec.Replicas != int32(n) {
		t.Errorf("replicas: %s %d, %s %d; want 1 and %d", a.Name, *a.Spec.Replicas, b.Name, *b.Spec.Replicas, n)
	}
	if b.Spec.Ordinals == nil || b.Spec.Ordinals.Start != 1 {
		t.Errorf("%s ordinals %+v, want start 1", b.Name, b.Spec.Ordinals)
	}
	if b.Spec.Selector.MatchLabels[LabelSet] != standbySetValue {
		t.Errorf("%s selector %v lacks %s", b.Name, b.Spec.Selector.MatchLabels, LabelSet)
	}
	if len(b.Spec.VolumeClaimTemplates) != 1 || b.Spec.VolumeClaimTemplates[0].Name != "data" ||
		!ownedBy(&b.Spec.VolumeClaimTemplates[0], name) {
		t.Errorf("%s claim templates %+v", b.Name, b.Spec.VolumeClaimTemplates)
	}
	if p := b.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenScaled != appsv1.DeletePersistentVolumeClaimRetentionPolicyType ||
		p.WhenDeleted != appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
		t.Errorf("%s claim retention %+v, want delete when scaled and deleted", b.Name, p)
	}
	r, err := decodeRoles(a)
	if err != nil || r == nil || r.Replicas != n || r.Sync != sync {
		t.Errorf("%s roles %+v (%v), want %d replicas, sync %v", a.Name, r, err, n, sync)
	}
	for _, s := range []*appsv1.StatefulSet{a, b} {
		pod := s.Spec.Template.Spec
		ctr := pod.Containers[0]
		if !slices.Contains(ctr.Command, replStartScript) {
			t.Errorf("%s does not run the replicated start script: %v", s.Name, ctr.Command)
		}
		if got := slices.Contains(ctr.Args, "synchronous_standby_names="+syncStandbyNames); got != sync {
			t.Errorf("%s args %v: synchronous_standby_names set %v, want %v", s.Name, ctr.Args, got, sync)
		}
		if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.DownwardAPI != nil }) ||
			!slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == podInfoPath }) {
			t.Errorf("%s lacks the downward API labels volume", s.Name)
		}
		host := ""
		for _, e := range ctr.Env {
			if e.Name == "REPLICATE_FROM_HOST" {
				host = e.Value
			}
			if e.Name == "REPLICATE_FROM_PORT" && e.Value != "5432" {
				t.Errorf("%s clones from port %s, want the Service's 5432", s.Name, e.Value)
			}
			if e.Value == testPassword {
				t.Errorf("%s carries the password as a literal", s.Name)
			}
		}
		if want := fmt.Sprintf("%s.%s.svc.%s", serviceName(name), ns, DefaultClusterDomain); host != want {
			t.Errorf("%s clones from %q, want %q", s.Name, host, want)
		}
		if ctr.ReadinessProbe == nil || !slices.Contains(ctr.ReadinessProbe.Exec.Command, replReadyScript) {
			t.Errorf("%s readiness probe %+v, want the role-aware check", s.Name, ctr.ReadinessProbe)
		}
	}
	if a := b.Spec.Template.Spec.Affinity; a == nil || a.PodAffinity == nil || len(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("%s affinity %+v: want the node of the instance's pods (ReadWriteOnce backup storage)", b.Name, a)
	}
	if slices.ContainsFunc(b.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == pvcName(name)
	}) {
		t.Errorf("%s mounts the primary's claim %s", b.Name, pvcName(name))
	}
}

// checkServices checks the Services' selectors: the primary's selects
// role=primary; the read-only one (when ro) role=standby.
func checkServices(t *testing.T, c k8s.Interface, ns, name string, ro bool) {
	t.Helper()
	ctx := testCtx(t)
	svc, err := c.CoreV1().Services(ns).Get(ctx, serviceName(name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector[LabelRole] != "primary" || svc.Spec.Selector[LabelInstance] != name {
		t.Errorf("service %s selector %v, want the instance's primary", svc.Name, svc.Spec.Selector)
	}
	r, err := c.CoreV1().Services(ns).Get(ctx, readOnlyServiceName(name), metav1.GetOptions{})
	switch {
	case !ro:
		if !apierrors.IsNotFound(err) {
			t.Errorf("read-only service without standbys: %v", err)
		}
	case err != nil:
		t.Errorf("read-only service: %v", err)
	case r.Spec.Selector[LabelRole] != "standby" || r.Spec.Selector[LabelInstance] != name || r.Spec.Type != svc.Spec.Type:
		t.Errorf("read-only service %s: selector %v, type %s", r.Name, r.Spec.Selector, r.Spec.Type)
	}
}

// waitServers polls Servers until the roles are want and every primary
// and standby is ready (the last result).
func waitServers(t *testing.T, d *Driver, name string, want map[string]dataplane.Role) []dataplane.ServerState {
	t.Helper()
	ctx := testCtx(t)
	var got []dataplane.ServerState
	eventually(t, readyTimeout, name+" servers", func() (bool, string) {
		var err error
		got, err = d.Servers(ctx, name)
		if err != nil {
			t.Fatalf("Servers: %v", err)
		}
		if len(got) != len(want) {
			return false, fmt.Sprintf("%+v", got)
		}
		for _, s := range got {
			if s.Role != want[s.ID] || (s.Role != dataplane.RoleFenced && (!s.Ready || s.Host == "")) {
				return false, fmt.Sprintf("%+v", got)
			}
		}
		return true, ""
	})
	if got[0].Role != dataplane.RolePrimary && slices.Contains(slicesOfRoles(want), dataplane.RolePrimary) {
		t.Errorf("Servers does not list the primary first: %+v", got)
	}
	return got
}

func slicesOfRoles(m map[string]dataplane.Role) []dataplane.Role {
	var out []dataplane.Role
	for _, r := range m {
		out = append(out, r)
	}
	return out
}

// waitRolledOut waits until both StatefulSets of the instance run their
// current template in every pod, all ready.
func waitRolledOut(t *testing.T, c k8s.Interface, ns, name string) {
	t.Helper()
	ctx := testCtx(t)
	for _, set := range []string{stsName(name), standbySetName(name)} {
		eventually(t, readyTimeout, set+" rolled out", func() (bool, string) {
			s, err := c.AppsV1().StatefulSets(ns).Get(ctx, set, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			st := s.Status
			return st.ObservedGeneration >= s.Generation && st.UpdateRevision == st.CurrentRevision &&
					st.UpdatedReplicas == *s.Spec.Replicas && st.ReadyReplicas == *s.Spec.Replicas && st.Replicas == *s.Spec.Replicas,
				fmt.Sprintf("%+v", st)
		})
	}
}

// podIPs maps server ids to pod IPs (of the pods that have one).
func podIPs(t *testing.T, c k8s.Interface, ns, name string) map[string]string {
	t.Helper()
	pods, err := c.CoreV1().Pods(ns).List(testCtx(t), metav1.ListOptions{LabelSelector: instanceSelector(name)})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		if id := serverID(name, p.Name); id != "" && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			out[id] = p.Status.PodIP
		}
	}
	return out
}

// waitSlices waits until the Service's EndpointSlices list exactly the
// ready addresses ips.
func waitSlices(t *testing.T, c k8s.Interface, ns, svc string, ips ...string) {
	t.Helper()
	ctx := testCtx(t)
	slices.Sort(ips)
	eventually(t, 30*time.Second, "endpoints of "+svc, func() (bool, string) {
		l, err := c.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range l.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready == nil || *e.Conditions.Ready {
					got = append(got, e.Addresses...)
				}
			}
		}
		slices.Sort(got)
		return slices.Equal(got, ips), fmt.Sprintf("got %v, want %v", got, ips)
	})
}

func getPod(t *testing.T, c k8s.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := c.CoreV1().Pods(ns).Get(testCtx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func patchLabels(t *testing.T, c k8s.Interface, ns, pod string, labels map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if _, err := c.CoreV1().Pods(ns).Patch(testCtx(t), pod, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// objectVersions are the generations and roles of the instance's
// StatefulSets, the resource versions of its Services and its pods' roles.
func objectVersions(t *testing.T, c k8s.Interface, ns, name string) map[string]string {
	t.Helper()
	ctx := testCtx(t)
	out := map[string]string{}
	opts := metav1.ListOptions{LabelSelector: instanceSelector(name)}
	sts, err := c.AppsV1().StatefulSets(ns).List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts.Items {
		out["sts/"+s.Name] = fmt.Sprint(s.Generation, " ", s.Annotations[AnnotationServers])
	}
	svcs, err := c.CoreV1().Services(ns).List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs.Items {
		out["svc/"+s.Name] = s.ResourceVersion
	}
	for id, ip := range podIPs(t, c, ns, name) {
		out["pod/"+id] = ip + "/" + getPod(t, c, ns, serverPodName(name, id)).Labels[LabelRole]
	}
	return out
}
