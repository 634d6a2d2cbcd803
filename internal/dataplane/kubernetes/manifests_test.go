package kubernetes

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/tlscert"
)

const manifestDir = "../../../deploy/kubernetes"

// loadManifests decodes every object of the files kustomization.yaml lists.
func loadManifests(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(manifestDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kust struct {
		Resources []string `json:"resources"`
	}
	if err := utilyaml.Unmarshal(b, &kust); err != nil || len(kust.Resources) == 0 {
		t.Fatalf("kustomization.yaml: %v (%d resources)", err, len(kust.Resources))
	}
	var objs []*unstructured.Unstructured
	for _, f := range kust.Resources {
		b, err := os.ReadFile(filepath.Join(manifestDir, f))
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(m) == 0 {
				continue
			}
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}

// roleRules returns the rules of the Role in the manifests.
func roleRules(t *testing.T, objs []*unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "Role" {
			var r rbacv1.Role
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
				t.Fatal(err)
			}
			return r.Rules
		}
	}
	t.Fatal("no Role in the manifests")
	return nil
}

// TestRoleMatchesRequiredPermissions: the Role grants exactly what the
// driver uses, and the manifests hold nothing cluster-wide.
func TestRoleMatchesRequiredPermissions(t *testing.T) {
	objs := loadManifests(t)
	var granted, needed []string
	for _, r := range roleRules(t, objs) {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					granted = append(granted, g+"|"+res+"|"+v)
				}
			}
		}
	}
	for _, p := range RequiredPermissions() {
		for _, v := range p.Verbs {
			needed = append(needed, p.Group+"|"+p.Resource+"|"+v)
		}
	}
	slices.Sort(granted)
	slices.Sort(needed)
	if !slices.Equal(granted, needed) {
		t.Errorf("Role grants\n  %v\nthe driver needs\n  %v", granted, needed)
	}
	for _, o := range objs {
		if k := o.GetKind(); k == "ClusterRole" || k == "ClusterRoleBinding" {
			t.Errorf("unexpected %s %s: the driver needs no cluster-wide permission", k, o.GetName())
		}
	}
}

// TestManifestsAndLeastPrivilege applies the deploy manifests to a real API
// server (namespaces by server-side dry run, everything else for real in
// two test namespaces standing for toygres-system and toygres), then runs
// the driver with a token of the manifests' ServiceAccount: a full create,
// update and delete must work with only that RBAC, and nothing outside the
// instance namespace.
func TestManifestsAndLeastPrivilege(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ctx := testCtx(t)
	sysNS := testNamespace(t, c)
	instNS := testNamespace(t, c)
	rename := map[string]string{"toygres-system": sysNS, "toygres": instNS}

	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))

	// The Secret the server Deployment requires (the administrator makes it).
	if _, err := c.CoreV1().Secrets(sysNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "toygres-secrets"},
		StringData: map[string]string{"database-url": "postgres://toygres@db.example/toygres", "secret-key": strings.Repeat("ab", 32), "admin-password": "test-admin-pw"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// And the TLS Secret (the API listens beyond loopback: HTTPS only).
	cert, err := tlscert.LoadOrGenerate(t.TempDir(), []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(cert.CertFile)
	keyPEM, _ := os.ReadFile(cert.KeyFile)
	if _, err := c.CoreV1().Secrets(sysNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "toygres-tls"},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	objs := loadManifests(t)
	allowed := checkServerSecurity(t, objs)
	var saName string
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk, o.GetName(), err)
		}
		if o.GetKind() == "Namespace" {
			if _, ok := rename[o.GetName()]; !ok {
				t.Errorf("unexpected namespace %s", o.GetName())
			}
			_, err := dyn.Resource(m.Resource).Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Errorf("dry-run create namespace %s: %v", o.GetName(), err)
			}
			continue
		}
		ns, ok := rename[o.GetNamespace()]
		if !ok {
			t.Fatalf("%s %s: namespace %q is neither toygres-system nor toygres", o.GetKind(), o.GetName(), o.GetNamespace())
		}
		o.SetNamespace(ns)
		if o.GetKind() == "RoleBinding" {
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			for _, s := range subjects {
				sm := s.(map[string]any)
				sm["namespace"] = rename[sm["namespace"].(string)]
			}
			_ = unstructured.SetNestedSlice(o.Object, subjects, "subjects")
		}
		if o.GetKind() == "ServiceAccount" {
			saName = o.GetName()
		}
		res := dyn.Resource(m.Resource).Namespace(ns)
		if _, err := res.Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("dry-run create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if _, err := res.Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	if saName == "" {
		t.Fatal("no ServiceAccount in the manifests")
	}

	// Both server replicas become available (kwok runs no container, but
	// scheduling and the pod spec are real), and the disruption budget
	// allows one of them to go.
	eventually(t, 90*time.Second, "toygres-server available", func() (bool, string) {
		dep, err := c.AppsV1().Deployments(sysNS).Get(ctx, "toygres-server", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return dep.Status.AvailableReplicas == 2, dep.Status.String()
	})
	eventually(t, 30*time.Second, "disruption budget", func() (bool, string) {
		pdb, err := c.PolicyV1().PodDisruptionBudgets(sysNS).Get(ctx, "toygres-server", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return pdb.Status.CurrentHealthy == 2 && pdb.Status.DisruptionsAllowed == 1, pdb.Status.String()
	})

	// The ServiceAccount's own token: only its RBAC applies.
	exp := int64(3600)
	tok, err := c.CoreV1().ServiceAccounts(sysNS).CreateToken(ctx, saName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	sa := rest.AnonymousClientConfig(cfg)
	sa.BearerToken = tok.Status.Token
	sa.QPS, sa.Burst = 100, 200
	saClient, err := k8s.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}

	d := newTestDriver(t, sa, instNS, func(o *Options) { o.DNSZone = "example.test"; o.LoadBalancerSourceRanges = allowed })
	if err := d.Check(ctx); err != nil {
		t.Fatalf("Check with the ServiceAccount: %v", err)
	}
	pub := dataplane.Spec{Name: instanceName("lp"), StorageGB: 1, DNSLabel: "lp"}
	in := dataplane.Spec{Name: instanceName("li"), StorageGB: 1, Internal: true}
	for _, s := range []dataplane.Spec{pub, in} {
		cleanupInstance(t, d, s.Name)
		if err := d.Deploy(ctx, s, testPassword); err != nil {
			t.Fatalf("Deploy %s as the ServiceAccount: %v", s.Name, err)
		}
	}
	for _, s := range []dataplane.Spec{pub, in} {
		waitReady(t, d, s.Name)
	}
	if ep := waitEndpoint(t, d, pub.Name); ep.DNSName != "lp.example.test" || ep.Host != "127.0.0.1" {
		t.Errorf("public endpoint %+v", ep)
	}
	if svc, err := c.CoreV1().Services(instNS).Get(ctx, serviceName(pub.Name), metav1.GetOptions{}); err != nil ||
		!slices.Equal(svc.Spec.LoadBalancerSourceRanges, allowed) {
		t.Errorf("public service with the manifests' --k8s-allowed-sources: %v, %v; want %v", svc.Spec.LoadBalancerSourceRanges, err, allowed)
	}
	if ep, err := d.Endpoint(ctx, in.Name); err != nil || !strings.HasSuffix(ep.Host, ".svc.cluster.local") {
		t.Errorf("internal endpoint %+v, %v", ep, err)
	}
	if _, err := d.Logs(ctx, pub.Name, 10); err != nil && (apierrors.IsForbidden(err) || !errors.Is(err, ErrLogsUnavailable)) {
		t.Errorf("Logs as the ServiceAccount: %v", err)
	}
	// Converging (get + update) works too: change the configuration.
	d2 := newTestDriver(t, sa, instNS, func(o *Options) { o.Probes.Kind = ProbeTCP })
	if err := d2.Deploy(ctx, dataplane.Spec{Name: pub.Name, StorageGB: 1, Internal: true}, testPassword+"x"); err != nil {
		t.Fatalf("converging Deploy as the ServiceAccount: %v", err)
	}
	// Standbys: the second StatefulSet, the read-only Service and the
	// pods' role labels (patch), then a failover.
	if err := d.SetReplicas(ctx, in.Name, 1, false); err != nil {
		t.Fatalf("SetReplicas as the ServiceAccount: %v", err)
	}
	waitServers(t, d, in.Name, map[string]dataplane.Role{"0": dataplane.RolePrimary, "1": dataplane.RoleStandby})
	if err := d.Fence(ctx, in.Name, "0"); err != nil {
		t.Fatalf("Fence as the ServiceAccount: %v", err)
	}
	if err := d.Promote(ctx, in.Name, "1"); err != nil {
		t.Fatalf("Promote as the ServiceAccount: %v", err)
	}
	if err := d.Rebuild(ctx, in.Name, "0"); err != nil {
		t.Fatalf("Rebuild as the ServiceAccount: %v", err)
	}
	waitServers(t, d, in.Name, map[string]dataplane.Role{"0": dataplane.RoleStandby, "1": dataplane.RolePrimary})
	if names, err := d.Instances(ctx); err != nil || len(names) != 2 {
		t.Errorf("Instances as the ServiceAccount: %v, %v", names, err)
	}
	for _, s := range []dataplane.Spec{pub, in} {
		if err := d.Delete(ctx, s.Name); err != nil {
			t.Fatalf("Delete %s as the ServiceAccount: %v", s.Name, err)
		}
		requireGone(t, c, d, s.Name)
	}

	// Nothing beyond the instance namespace.
	other := newTestDriver(t, sa, sysNS, nil)
	if err := other.Check(ctx); err == nil || !strings.Contains(err.Error(), "missing permissions") {
		t.Errorf("Check in the control-plane namespace: %v, want missing permissions", err)
	}
	if err := other.Deploy(ctx, dataplane.Spec{Name: instanceName("no"), StorageGB: 1}, testPassword); !apierrors.IsForbidden(err) {
		t.Errorf("Deploy outside the instance namespace: %v, want Forbidden", err)
	}
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Verb: "list", Resource: "nodes"},
		{Verb: "create", Resource: "namespaces"},
		{Verb: "get", Resource: "secrets", Namespace: "default"},
		{Verb: "list", Resource: "secrets", Namespace: sysNS},
		{Verb: "create", Resource: "deployments", Group: "apps", Namespace: instNS},
		{Verb: "patch", Resource: "statefulsets", Group: "apps", Namespace: instNS},
		{Verb: "watch", Resource: "pods", Namespace: instNS},
		{Verb: "create", Resource: "pods/exec", Namespace: instNS},
	} {
		r, err := saClient.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed {
			t.Errorf("the ServiceAccount may %s %s in %q", ra.Verb, ra.Resource, ra.Namespace)
		}
	}
}

// checkServerSecurity checks the server Deployment's network exposure: it
// serves HTTPS with a certificate from a Secret (probes use HTTPS), and it
// restricts public instances' load balancers to a valid, non-empty list of
// source ranges, which it returns.
func checkServerSecurity(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "Deployment" || o.GetName() != "toygres-server" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		if len(containers) != 1 {
			t.Fatalf("toygres-server: %d containers", len(containers))
		}
		ct := containers[0].(map[string]any)
		var ranges []string
		args, _, _ := unstructured.NestedStringSlice(ct, "args")
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--k8s-allowed-sources="); ok {
				var err error
				if ranges, err = ParseSourceRanges(v); err != nil || len(ranges) == 0 {
					t.Fatalf("--k8s-allowed-sources %q: %v (want a non-empty list)", v, err)
				}
			}
		}
		if ranges == nil {
			t.Fatal("the server Deployment does not set --k8s-allowed-sources: public instances would be open to any address")
		}
		env := map[string]string{}
		envs, _, _ := unstructured.NestedSlice(ct, "env")
		for _, e := range envs {
			m := e.(map[string]any)
			v, _ := m["value"].(string)
			env[m["name"].(string)] = v
		}
		if env["TOYGRES_TLS_CERT"] == "" || env["TOYGRES_TLS_KEY"] == "" {
			t.Error("the server Deployment sets no TOYGRES_TLS_CERT/TOYGRES_TLS_KEY: replicas would each present their own self-signed certificate")
		}
		for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
			if scheme, _, _ := unstructured.NestedString(ct, probe, "httpGet", "scheme"); scheme != "HTTPS" {
				t.Errorf("%s uses scheme %q, want HTTPS (the server speaks HTTPS beyond loopback)", probe, scheme)
			}
		}
		return ranges
	}
	t.Fatal("no Deployment toygres-server in the manifests")
	return nil
}
