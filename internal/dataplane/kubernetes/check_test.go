package kubernetes

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// serviceAccountConfig creates a ServiceAccount in ns, binds it to the
// given rules (a Role in roleNS, or a ClusterRole when roleNS is ""; no
// binding when rules is empty) and returns a client configuration that
// authenticates with a token of its own (TokenRequest): only its RBAC applies.
func serviceAccountConfig(t *testing.T, c k8s.Interface, cfg *rest.Config, ns, roleNS string, rules []rbacv1.PolicyRule) (*rest.Config, string) {
	t.Helper()
	ctx := testCtx(t)
	sa, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{GenerateName: "sa-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service account: %v", err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns}}
	switch {
	case len(rules) == 0:
	case roleNS != "":
		if _, err := c.RbacV1().Roles(roleNS).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa.Name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RbacV1().RoleBindings(roleNS).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa.Name},
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: sa.Name}, Subjects: subject}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	default:
		name := ns + "-" + sa.Name
		if _, err := c.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name}, Subjects: subject}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = c.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{})
			_ = c.RbacV1().ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{})
		})
	}
	exp := int64(3600)
	tok, err := c.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	out := rest.AnonymousClientConfig(cfg)
	out.BearerToken = tok.Status.Token
	return out, "system:serviceaccount:" + ns + ":" + sa.Name
}

// missingNamespace returns a namespace name that does not exist, deleted at
// cleanup should the test create it.
func missingNamespace(t *testing.T, c k8s.Interface) string {
	t.Helper()
	ns := instanceName("t-missing")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("delete namespace %s: %v", ns, err)
		}
	})
	return ns
}

// TestCheckCreatesMissingNamespace: an identity that may create namespaces
// gets its missing namespace created by Check.
func TestCheckCreatesMissingNamespace(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := missingNamespace(t, c)
	d := newTestDriver(t, cfg, ns, nil)
	if err := d.Check(testCtx(t)); err != nil {
		t.Fatalf("Check: %v", err)
	}
	got, err := c.CoreV1().Namespaces().Get(testCtx(t), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("namespace not created: %v", err)
	}
	if got.Labels[LabelManagedBy] != ManagedByValue {
		t.Errorf("namespace labels %v", got.Labels)
	}
	// Once it exists, Check passes again without creating anything.
	if err := d.Check(testCtx(t)); err != nil {
		t.Fatalf("second Check: %v", err)
	}
}

// TestCheckRefusesMissingNamespace: an identity that may read but not create
// namespaces is refused with the command that creates it; one that may do
// nothing at all learns both what to create and what to grant.
func TestCheckRefusesMissingNamespace(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	home := testNamespace(t, c)
	ns := missingNamespace(t, c)

	reader, who := serviceAccountConfig(t, c, cfg, home, "", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}})
	err := newTestDriver(t, reader, ns, nil).Check(testCtx(t))
	if !errors.Is(err, ErrNoNamespace) || !strings.Contains(err.Error(), "kubectl create namespace "+ns) || !strings.Contains(err.Error(), who) {
		t.Fatalf("Check as a namespace reader: %v", err)
	}

	nobody, who := serviceAccountConfig(t, c, cfg, home, "", nil)
	err = newTestDriver(t, nobody, ns, nil).Check(testCtx(t))
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "kubectl create namespace "+ns) ||
		!strings.Contains(err.Error(), "deploy/kubernetes/rbac.yaml") || !strings.Contains(err.Error(), who) {
		t.Fatalf("Check with no rights: %v", err)
	}
	if _, err := c.CoreV1().Namespaces().Get(testCtx(t), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the namespace was created: %v", err)
	}
}

// TestCheckNamesMissingPermission: a least-privilege token whose Role lacks
// one permission of RequiredPermissions is refused naming exactly it; with
// the full Role Check passes, learning that the namespace exists from a
// dry-run create although it may not read namespaces.
func TestCheckNamesMissingPermission(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	full := func(skipVerb, skipResource string) []rbacv1.PolicyRule {
		var rules []rbacv1.PolicyRule
		for _, p := range RequiredPermissions() {
			var verbs []string
			for _, v := range p.Verbs {
				if !(p.Resource == skipResource && v == skipVerb) {
					verbs = append(verbs, v)
				}
			}
			if len(verbs) > 0 {
				rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{p.Group}, Resources: []string{p.Resource}, Verbs: verbs})
			}
		}
		return rules
	}

	lacking, who := serviceAccountConfig(t, c, cfg, ns, ns, full("update", "services"))
	err := newTestDriver(t, lacking, ns, nil).Check(testCtx(t))
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "may not update core/services in namespace "+ns+";") ||
		!strings.Contains(err.Error(), who) || strings.Contains(err.Error(), "secrets") {
		t.Fatalf("Check without update services: %v", err)
	}

	enough, _ := serviceAccountConfig(t, c, cfg, ns, ns, full("", ""))
	if err := newTestDriver(t, enough, ns, nil).Check(testCtx(t)); err != nil {
		t.Fatalf("Check with the full Role: %v", err)
	}
}

// TestCheckUnreachable: an API server that does not answer is reported with
// its address and what to check, within the reachability timeout.
func TestCheckUnreachable(t *testing.T) {
	t.Parallel()
	d, err := New(Options{RESTConfig: &rest.Config{Host: "https://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Check(testCtx(t))
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "https://127.0.0.1:1") || !strings.Contains(err.Error(), "kubectl cluster-info") {
		t.Fatalf("Check: %v", err)
	}
}

// TestCheckInternalEndpoints: outside the cluster, internal instances are
// reachable only where the cluster's DNS answers.
func TestCheckInternalEndpoints(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	for _, tc := range []struct {
		name      string
		inCluster bool
		resolves  bool
		reachable bool
	}{
		{"in the cluster", true, false, true},
		{"outside, cluster DNS answers", false, true, true},
		{"outside, no cluster DNS", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDriver(t, cfg, ns, func(o *Options) { o.ClusterDomain = "corp.example" })
			var asked []string
			d.inCluster = func() bool { return tc.inCluster }
			d.lookupHost = func(ctx context.Context, host string) ([]string, error) {
				asked = append(asked, host)
				if tc.resolves {
					return []string{"10.0.0.1"}, nil
				}
				return nil, errors.New("no such host")
			}
			if d.InternalEndpointsReachable() != nil {
				t.Fatal("refused before Check")
			}
			if err := d.Check(testCtx(t)); err != nil {
				t.Fatalf("Check: %v", err)
			}
			err := d.InternalEndpointsReachable()
			if tc.reachable != (err == nil) {
				t.Fatalf("InternalEndpointsReachable: %v, want reachable=%v", err, tc.reachable)
			}
			if err != nil && !strings.Contains(err.Error(), "cannot resolve kubernetes.default.svc.corp.example") {
				t.Fatalf("unclear reason: %v", err)
			}
			if !tc.inCluster && (len(asked) != 1 || asked[0] != "kubernetes.default.svc.corp.example.") {
				t.Fatalf("looked up %v", asked)
			}
		})
	}
}
