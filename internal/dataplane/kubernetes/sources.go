package kubernetes

import (
	"fmt"
	"net/netip"
	"strings"
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
