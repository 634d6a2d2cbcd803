package kubernetes

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// These tests build objects without a cluster.

func offlineDriver(t *testing.T, opts Options) *Driver {
	t.Helper()
	opts.RESTConfig = &rest.Config{Host: "https://127.0.0.1:1"}
	d, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func TestNewDefaults(t *testing.T) {
	d := offlineDriver(t, Options{})
	if d.Name() != "kubernetes" || d.Namespace() != "toygres" {
		t.Errorf("name %q namespace %q", d.Name(), d.Namespace())
	}
	vs, _ := d.Versions(context.Background())
	if !slices.Equal(vs, []string{"18", "17", "16", "15"}) {
		t.Errorf("versions %v", vs)
	}
	if d.imageFor("16") != "postgres:16" || d.dnsAnnotation != DefaultDNSLabelAnnotation {
		t.Errorf("image %q annotation %q", d.imageFor("16"), d.dnsAnnotation)
	}
	d = offlineDriver(t, Options{Image: "registry.example/pg:{version}-alpine", Versions: []string{"17"}, DNSLabelAnnotation: "-",
		Resources: Resources{MemoryLimit: "none", CPURequest: "1"}})
	if d.imageFor("17") != "registry.example/pg:17-alpine" || d.dnsAnnotation != "" {
		t.Errorf("image %q annotation %q", d.imageFor("17"), d.dnsAnnotation)
	}
	if len(d.resources.Limits) != 0 || d.resources.Requests.Cpu().String() != "1" {
		t.Errorf("resources %+v", d.resources)
	}
}

// TestClientRateLimit: the API client is not held to client-go's kubectl
// default of 5 requests/s (a takeover of six creates queued its calls for
// seconds behind it), unless the configuration sets its own limit.
func TestClientRateLimit(t *testing.T) {
	qps := func(cfg *rest.Config) float32 {
		t.Helper()
		d, err := New(Options{RESTConfig: cfg})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		cs, ok := d.client.(*k8s.Clientset)
		if !ok {
			t.Fatalf("client is a %T", d.client)
		}
		return cs.CoreV1().RESTClient().GetRateLimiter().QPS()
	}
	if got := qps(&rest.Config{Host: "https://127.0.0.1:1"}); got != clientQPS {
		t.Errorf("default client QPS %v, want %v", got, float32(clientQPS))
	}
	if got := qps(&rest.Config{Host: "https://127.0.0.1:1", QPS: 7, Burst: 9}); got != 7 {
		t.Errorf("configured client QPS %v, want 7", got)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Namespace: "Bad_NS"},
		{Versions: []string{"latest"}},
		{Resources: Resources{CPURequest: "lots"}},
		{Probes: Probes{Kind: "http"}},
		{StorageClass: "Not A Class"},
		{DNSZone: "bad zone"},
		{ServiceAnnotations: map[string]string{"bad key!": "x"}},
	} {
		o.RESTConfig = &rest.Config{Host: "https://127.0.0.1:1"}
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestObjectShapes(t *testing.T) {
	d := offlineDriver(t, Options{Namespace: "dbs", StorageClass: "fast", ServiceAnnotations: map[string]string{"lb/x": "y"},
		Probes: Probes{Kind: ProbeTCP}})
	p := plan{name: "inst-1", version: "16", storage: resource.MustParse("5Gi"), dnsLabel: "shop"}
	sts := d.statefulSet(p)
	svc := d.service(p)
	pvc := d.pvc(p)
	sec := d.secret(p, testPassword)
	for _, o := range []any{sts, svc, pvc} {
		b, _ := json.Marshal(o)
		if strings.Contains(string(b), testPassword) {
			t.Errorf("%T holds the password", o)
		}
	}
	if string(sec.Data[SecretKeyPassword]) != testPassword || sec.Name != "inst-1-credentials" {
		t.Errorf("secret %s", sec.Name)
	}
	if *pvc.Spec.StorageClassName != "fast" || pvc.Name != "inst-1-pvc" {
		t.Errorf("pvc %s class %v", pvc.Name, pvc.Spec.StorageClassName)
	}
	ct := sts.Spec.Template.Spec.Containers[0]
	if ct.ReadinessProbe.TCPSocket == nil || ct.LivenessProbe.TCPSocket == nil || ct.Image != "postgres:16" {
		t.Errorf("container %+v", ct)
	}
	if svc.Spec.Type != "LoadBalancer" || svc.Annotations["lb/x"] != "y" || svc.Annotations[DefaultDNSLabelAnnotation] != "shop" {
		t.Errorf("service %+v", svc)
	}
	// The config hash is stable and follows the configuration.
	if d.statefulSet(p).Annotations[AnnotationConfigHash] != sts.Annotations[AnnotationConfigHash] {
		t.Error("config hash is not stable")
	}
	p.internal = true
	if d.service(p).Annotations[AnnotationConfigHash] == svc.Annotations[AnnotationConfigHash] {
		t.Error("service hash ignores the type")
	}
	d2 := offlineDriver(t, Options{Probes: Probes{Kind: ProbeNone}})
	if c := d2.statefulSet(p).Spec.Template.Spec.Containers[0]; c.ReadinessProbe != nil || c.LivenessProbe != nil || c.StartupProbe != nil {
		t.Error("probes with kind none")
	}
	if err := validName(strings.Repeat("a", 53)); err == nil {
		t.Error("53-byte name accepted")
	}
}

func TestParseSourceRanges(t *testing.T) {
	got, err := ParseSourceRanges(" 10.0.0.0/8, 192.168.1.0/24 ,,2001:db8::/32")
	if err != nil || !slices.Equal(got, []string{"10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"}) {
		t.Fatalf("ParseSourceRanges = %v, %v", got, err)
	}
	if got, err := ParseSourceRanges(""); err != nil || len(got) != 0 {
		t.Fatalf("empty list = %v, %v", got, err)
	}
	for in, want := range map[string]string{
		"10.0.0.0":         "want a CIDR prefix",
		"10.0.0.0/33":      "want a CIDR prefix",
		"example.com/24":   "want a CIDR prefix",
		"10.1.2.3/8":       "did you mean 10.0.0.0/8",
		"10.0.0.0/8;1.2.3": "want a CIDR prefix",
	} {
		_, err := ParseSourceRanges(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "allowed source") {
			t.Errorf("ParseSourceRanges(%q) = %v, want an error with %q", in, err, want)
		}
	}
	// New refuses them too (the driver is also built without the flag).
	if _, err := New(Options{RESTConfig: &rest.Config{Host: "https://127.0.0.1:1"}, LoadBalancerSourceRanges: []string{"nope"}}); err == nil {
		t.Error("New accepted an invalid source range")
	}
	// Public Services carry the ranges, internal ones none, and the config
	// hash follows them (an existing Service converges to a changed list).
	d := offlineDriver(t, Options{LoadBalancerSourceRanges: []string{"10.0.0.0/8"}})
	pub := d.service(plan{name: "pub"})
	if !slices.Equal(pub.Spec.LoadBalancerSourceRanges, []string{"10.0.0.0/8"}) {
		t.Errorf("public service ranges %v", pub.Spec.LoadBalancerSourceRanges)
	}
	if in := d.service(plan{name: "pub", internal: true}); len(in.Spec.LoadBalancerSourceRanges) != 0 {
		t.Errorf("internal service ranges %v", in.Spec.LoadBalancerSourceRanges)
	}
	d2 := offlineDriver(t, Options{LoadBalancerSourceRanges: []string{"192.168.0.0/16"}})
	if d2.service(plan{name: "pub"}).Annotations[AnnotationConfigHash] == pub.Annotations[AnnotationConfigHash] {
		t.Error("service hash ignores the source ranges")
	}
}
