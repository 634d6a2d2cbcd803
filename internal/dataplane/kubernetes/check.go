package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Timeouts of Check's steps.
const (
	checkReachTimeout = 10 * time.Second
	checkDNSTimeout   = 2 * time.Second
)

// Errors of Check, matched with errors.Is; their messages say what to run.
var (
	// ErrUnreachable: the API server does not answer.
	ErrUnreachable = errors.New("kubernetes: the API server does not answer")
	// ErrNoNamespace: the namespace does not exist and may not be created.
	ErrNoNamespace = errors.New("kubernetes: namespace does not exist")
	// ErrForbidden: the identity lacks permissions the driver needs.
	ErrForbidden = errors.New("kubernetes: missing permissions")
)

// Check makes sure the driver can work before the server takes requests,
// and says what to run when it cannot:
//
//   - the API server answers (ErrUnreachable);
//   - the namespace exists: a missing one is created when the identity may
//     create namespaces, otherwise Check fails with ErrNoNamespace and the
//     kubectl command that creates it. Existence is learned from the
//     namespace itself or, without the right to read namespaces (the
//     least-privilege Role), from a dry-run create of a Secret in it;
//   - the identity holds every permission of RequiredPermissions in the
//     namespace (SelfSubjectAccessReviews), else ErrForbidden naming the
//     identity and each missing verb and resource;
//   - whether internal (ClusterIP) endpoints are reachable from this
//     process, which InternalEndpointsReachable reports afterwards;
//   - and it applies LoadBalancerSourceRanges to existing public instances'
//     Services (see syncSourceRanges).
func (d *Driver) Check(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, checkReachTimeout)
	_, err := d.client.Discovery().RESTClient().Get().AbsPath("/version").Do(rctx).Raw()
	cancel()
	if err != nil {
		return fmt.Errorf("%w at %s: %v; check the kubeconfig (--kubeconfig, $KUBECONFIG) and that the cluster is up: kubectl cluster-info", ErrUnreachable, d.apiHostOr("(in-cluster)"), err)
	}
	who := d.identity(ctx)
	known, err := d.ensureNamespace(ctx, who)
	if err != nil {
		return err
	}
	if err := d.checkPermissions(ctx, who, known); err != nil {
		return err
	}
	d.checkInternal(ctx)
	d.syncSourceRanges(ctx)
	return nil
}

func (d *Driver) apiHostOr(def string) string {
	if d.apiHost != "" {
		return d.apiHost
	}
	return def
}

// identity names the user the API server sees (SelfSubjectReview), or
// "this identity" when it cannot tell.
func (d *Driver) identity(ctx context.Context) string {
	r, err := d.client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil || r.Status.UserInfo.Username == "" {
		return "this identity"
	}
	return r.Status.UserInfo.Username
}

// ensureNamespace makes sure d.ns exists, creating it when allowed. known
// is false when the identity may neither read the namespace nor create
// Secrets in it, so its existence could not be learned.
func (d *Driver) ensureNamespace(ctx context.Context, who string) (known bool, err error) {
	exists, known, err := d.namespaceExists(ctx)
	if err != nil || exists || !known {
		return known, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: d.ns, Labels: map[string]string{LabelManagedBy: ManagedByValue}}}
	_, err = d.client.CoreV1().Namespaces().Create(ctx, ns, createOpts)
	switch {
	case err == nil:
		d.log.Info("created the instance namespace", "namespace", d.ns)
		return true, nil
	case apierrors.IsAlreadyExists(err):
		return true, nil
	case apierrors.IsForbidden(err):
		return true, fmt.Errorf("%w: namespace %q does not exist and %s may not create it; create it with: kubectl create namespace %s", ErrNoNamespace, d.ns, who, d.ns)
	default:
		return true, fmt.Errorf("kubernetes: create namespace %s: %w", d.ns, err)
	}
}

// namespaceExists reads the namespace, or, when that is forbidden, asks
// for a dry-run create of a Secret in it, which the API server refuses
// with NotFound when the namespace does not exist. When neither tells,
// known is false.
func (d *Driver) namespaceExists(ctx context.Context) (exists, known bool, err error) {
	_, err = d.client.CoreV1().Namespaces().Get(ctx, d.ns, metav1.GetOptions{})
	switch {
	case err == nil:
		return true, true, nil
	case apierrors.IsNotFound(err):
		return false, true, nil
	case !apierrors.IsForbidden(err):
		return false, false, fmt.Errorf("kubernetes: read namespace %s: %w", d.ns, err)
	}
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "toygres-check-", Namespace: d.ns,
		Labels: map[string]string{LabelManagedBy: ManagedByValue}}}
	_, err = d.client.CoreV1().Secrets(d.ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: FieldManager})
	switch {
	case err == nil:
		return true, true, nil
	case apierrors.IsForbidden(err):
		return false, false, nil
	case apierrors.IsNotFound(err):
		return false, true, nil
	default:
		return false, false, fmt.Errorf("kubernetes: check namespace %s: %w", d.ns, err)
	}
}

// checkPermissions asks the API server (SelfSubjectAccessReview) whether
// the identity holds every permission the driver needs in its namespace.
// nsKnown false means the namespace's existence could not be learned.
func (d *Driver) checkPermissions(ctx context.Context, who string, nsKnown bool) error {
	var missing []string
	total := 0
	for _, p := range RequiredPermissions() {
		total += len(p.Verbs)
		res, sub, _ := strings.Cut(p.Resource, "/")
		for _, verb := range p.Verbs {
			r, err := d.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: d.ns, Group: p.Group, Resource: res, Subresource: sub, Verb: verb,
				}},
			}, createOpts)
			if err != nil {
				return fmt.Errorf("kubernetes: check permissions in namespace %s: %w", d.ns, err)
			}
			if !r.Status.Allowed {
				g := p.Group
				if g == "" {
					g = "core"
				}
				missing = append(missing, fmt.Sprintf("%s %s/%s", verb, g, p.Resource))
			}
		}
	}
	if len(missing) > 0 {
		if len(missing) == total && !nsKnown {
			return fmt.Errorf("%w: %s may do nothing in namespace %s; if it does not exist, create it (kubectl create namespace %s), then grant the Role and RoleBinding of deploy/kubernetes/rbac.yaml (kubectl apply -k deploy/kubernetes, with the RoleBinding's subject set to %s)",
				ErrForbidden, who, d.ns, d.ns, who)
		}
		return fmt.Errorf("%w: %s may not %s in namespace %s; grant them with the Role and RoleBinding of deploy/kubernetes/rbac.yaml (kubectl apply -k deploy/kubernetes, with the RoleBinding's subject set to %s)",
			ErrForbidden, who, strings.Join(missing, ", "), d.ns, who)
	}
	return nil
}

// checkInternal records whether internal (ClusterIP) endpoints, named
// <service>.<namespace>.svc.<cluster domain>, are reachable from this
// process: they are inside the cluster, or where the cluster's DNS answers.
func (d *Driver) checkInternal(ctx context.Context) {
	var err error
	if !d.inCluster() {
		name := "kubernetes.default.svc." + d.clusterDomain
		lctx, cancel := context.WithTimeout(ctx, checkDNSTimeout)
		_, lerr := d.lookupHost(lctx, name+".")
		cancel()
		if lerr != nil {
			err = fmt.Errorf("internal instances are not reachable from this server: it runs outside the cluster and cannot resolve %s, "+
				"so an internal (ClusterIP) instance could never pass its connection test; create a public instance, or run the server in the cluster (deploy/kubernetes)", name)
		}
	}
	d.internalMu.Lock()
	d.internalErr = err
	d.internalMu.Unlock()
	if err != nil {
		d.log.Warn("internal instances will be refused", "reason", err.Error())
	}
}

// InternalEndpointsReachable reports why internal (ClusterIP) instances
// cannot be reached from this process, as determined by Check; nil when
// they can (or before Check ran). Toygres refuses internal creates then.
func (d *Driver) InternalEndpointsReachable() error {
	d.internalMu.Lock()
	defer d.internalMu.Unlock()
	return d.internalErr
}
