package kubernetes

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ParseSourceRanges parses a comma-separated list of CIDR prefixes (the
// --k8s-allowed-sources flag) into LoadBalancerSourceRanges. Blank entries
// are ignored; an empty list means any source. Each prefix must be in
// canonical form (no host bits set), so that what the Service shows is
// what was typed.
func ParseSourceRanges(list string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	if err := validateSourceRanges(out); err != nil {
		return nil, err
	}
	return out, nil
}

// validateSourceRanges checks LoadBalancerSourceRanges entries.
func validateSourceRanges(ranges []string) error {
	for _, r := range ranges {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return fmt.Errorf("kubernetes: invalid allowed source %q: want a CIDR prefix such as 203.0.113.0/24 or 2001:db8::/32", r)
		}
		if m := p.Masked(); m != p {
			return fmt.Errorf("kubernetes: invalid allowed source %q: host bits are set (did you mean %s?)", r, m)
		}
	}
	return nil
}

// syncSourceRanges gives every public instance's Service in the namespace
// the configured LoadBalancerSourceRanges, so that a server restarted with
// a tighter --k8s-allowed-sources closes existing load balancers too, not
// only new ones. Failures are logged: they do not stop the server, and the
// next Deploy of an instance converges its Service anyway.
func (d *Driver) syncSourceRanges(ctx context.Context) {
	list, err := d.client.CoreV1().Services(d.ns).List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue})
	if err != nil {
		d.log.Warn("listing instance services to apply the allowed sources failed", "error", err.Error())
		return
	}
	for i := range list.Items {
		svc := &list.Items[i]
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Annotations[AnnotationInternal] == "true" ||
			slices.Equal(svc.Spec.LoadBalancerSourceRanges, d.lbRanges) {
			continue
		}
		before := svc.Spec.LoadBalancerSourceRanges
		svc.Spec.LoadBalancerSourceRanges = slices.Clone(d.lbRanges)
		if _, err := d.client.CoreV1().Services(d.ns).Update(ctx, svc, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			d.log.Warn("applying the allowed sources to a service failed", "service", svc.Name, "error", err.Error())
			continue
		}
		d.log.Info("applied the allowed sources to a public instance", "service", svc.Name,
			"before", strings.Join(before, ","), "after", strings.Join(d.lbRanges, ","))
	}
}
