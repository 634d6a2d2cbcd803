package kubernetes

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/toygres/toygres/internal/dataplane"
)

// TestAllowedSources deploys a public and an internal instance with
// LoadBalancerSourceRanges (the --k8s-allowed-sources flag) against the
// test control plane: the API server accepts the ranges on the public
// Service, the internal one has none, and a server restarted with other
// ranges applies them to the existing Service.
func TestAllowedSources(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	ctx := testCtx(t)
	ranges, err := ParseSourceRanges("10.0.0.0/8,192.168.0.0/16,2001:db8::/32")
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, cfg, ns, func(o *Options) { o.LoadBalancerSourceRanges = ranges })
	pub := dataplane.Spec{Name: instanceName("pub"), StorageGB: 1}
	in := dataplane.Spec{Name: instanceName("int"), StorageGB: 1, Internal: true}
	for _, s := range []dataplane.Spec{pub, in} {
		cleanupInstance(t, d, s.Name)
		if err := d.Deploy(ctx, s, testPassword); err != nil {
			t.Fatalf("Deploy %s: %v", s.Name, err)
		}
	}
	service := func(name string) *corev1.Service {
		t.Helper()
		svc, err := c.CoreV1().Services(ns).Get(ctx, serviceName(name), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get service of %s: %v", name, err)
		}
		return svc
	}
	if svc := service(pub.Name); svc.Spec.Type != corev1.ServiceTypeLoadBalancer || !slices.Equal(svc.Spec.LoadBalancerSourceRanges, ranges) {
		t.Errorf("public service: type %s, source ranges %v; want LoadBalancer with %v", svc.Spec.Type, svc.Spec.LoadBalancerSourceRanges, ranges)
	}
	if svc := service(in.Name); svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.LoadBalancerSourceRanges) != 0 {
		t.Errorf("internal service: type %s, source ranges %v; want ClusterIP without ranges", svc.Spec.Type, svc.Spec.LoadBalancerSourceRanges)
	}
	waitEndpoint(t, d, pub.Name)

	// A server restarted with another list applies it to the existing
	// public Service at start (Check), without a Deploy; the internal one
	// stays without ranges.
	d2 := newTestDriver(t, cfg, ns, func(o *Options) { o.LoadBalancerSourceRanges = []string{"172.16.0.0/12"} })
	if err := d2.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if svc := service(pub.Name); !slices.Equal(svc.Spec.LoadBalancerSourceRanges, []string{"172.16.0.0/12"}) {
		t.Errorf("after a restart with other ranges: source ranges %v, want [172.16.0.0/12]", svc.Spec.LoadBalancerSourceRanges)
	}
	if svc := service(in.Name); len(svc.Spec.LoadBalancerSourceRanges) != 0 {
		t.Errorf("internal service got ranges %v", svc.Spec.LoadBalancerSourceRanges)
	}
	// And a Deploy keeps them (the Service converges to the same list).
	if err := d2.Deploy(ctx, pub, testPassword); err != nil {
		t.Fatalf("Deploy with other ranges: %v", err)
	}
	if svc := service(pub.Name); !slices.Equal(svc.Spec.LoadBalancerSourceRanges, []string{"172.16.0.0/12"}) {
		t.Errorf("after a Deploy: source ranges %v, want [172.16.0.0/12]", svc.Spec.LoadBalancerSourceRanges)
	}
}
