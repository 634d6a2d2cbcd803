package kubernetes

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"

	"github.com/toygres/toygres/internal/dataplane"
)

// Deploy creates the instance's Secret, PVC, StatefulSet and Service, in
// that order, or converges to them: each step creates its resource and, if
// it exists already (an earlier attempt created it), fetches it, checks
// that it belongs to the instance and updates it when it differs from the
// desired state. A retry after a partial create or a crash thus completes
// the instance instead of failing with 409 Conflict.
//
// The password goes into the Secret only; the pod reads it through a
// secretKeyRef. A Deploy of an existing instance keeps its PostgreSQL
// version: asking for another one fails. Deploy returns once every resource
// exists; Status tells when the server is ready.
func (d *Driver) Deploy(ctx context.Context, spec dataplane.Spec, password string) error {
	if err := validName(spec.Name); err != nil {
		return err
	}
	if password == "" {
		return fmt.Errorf("kubernetes: deploy %s: empty superuser password", spec.Name)
	}
	p, err := d.plan(ctx, spec)
	if err != nil {
		return fmt.Errorf("kubernetes: deploy %s: %w", spec.Name, err)
	}
	d.log.Info("deploying instance", "instance", p.name, "version", p.version, "storage", p.storage.String(),
		"internal", p.internal, "dns_label", p.dnsLabel)
	steps := []struct {
		name string
		run  func() error
	}{
		{"secret", func() error { return d.ensureSecret(ctx, p, password) }},
		{"pvc", func() error { return d.ensurePVC(ctx, p) }},
		{"backup-storage", func() error { return d.backups.Ensure(ctx, p.name) }},
		{"statefulset", func() error { return d.ensureStatefulSet(ctx, p) }},
		{"service", func() error { return d.ensureService(ctx, p) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return fmt.Errorf("kubernetes: deploy %s: %s: %w", p.name, s.name, err)
		}
		if d.afterStep != nil {
			if err := d.afterStep(s.name); err != nil {
				return fmt.Errorf("kubernetes: deploy %s: after %s: %w", p.name, s.name, err)
			}
		}
	}
	return nil
}

// plan validates spec and resolves the version: the requested one, else the
// one an existing StatefulSet runs, else the newest.
func (d *Driver) plan(ctx context.Context, spec dataplane.Spec) (plan, error) {
	p := plan{name: spec.Name, internal: spec.Internal, dnsLabel: spec.DNSLabel, archiving: true}
	if p.internal {
		p.dnsLabel = "" // DNS labels name public load balancers only
	}
	if p.dnsLabel != "" {
		if errs := validation.IsDNS1123Label(p.dnsLabel); len(errs) > 0 {
			return p, fmt.Errorf("invalid DNS label %q: %s", p.dnsLabel, strings.Join(errs, "; "))
		}
	}
	gb := spec.StorageGB
	if gb == 0 {
		gb = DefaultStorageGB
	}
	if gb < 0 {
		return p, fmt.Errorf("invalid storage size %d GB", spec.StorageGB)
	}
	p.storage = *resource.NewQuantity(int64(gb)<<30, resource.BinarySI)
	if spec.PostgresVersion != "" && !slices.Contains(d.versions, spec.PostgresVersion) {
		return p, fmt.Errorf("PostgreSQL version %q is not offered (available: %s)", spec.PostgresVersion, strings.Join(d.versions, ", "))
	}
	p.version = spec.PostgresVersion
	have, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(p.name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return p, fmt.Errorf("get statefulset: %w", err)
	case !ownedBy(have, p.name):
		return p, fmt.Errorf("statefulset %s: %w", have.Name, ErrNotManaged)
	default:
		p.archiving = have.Annotations[AnnotationArchiving] != "off"
		if r, ok := have.Spec.Template.Annotations[AnnotationRestore]; ok {
			p.restore = decodeRestore(r)
		}
		p.restoredFrom = have.Annotations[AnnotationRestoredFrom]
		if p.repl, err = decodeRoles(have); err != nil {
			return p, err
		}
		running := have.Annotations[AnnotationVersion]
		if p.version == "" {
			p.version = running
		} else if running != "" && running != p.version {
			return p, fmt.Errorf("instance exists with PostgreSQL %s, not %s (major upgrades are not supported)", running, p.version)
		}
	}
	if p.version == "" {
		p.version = d.versions[0]
	}
	return p, nil
}

// object is a typed API object (a pointer such as *corev1.Secret).
type object interface {
	metav1.Object
	runtime.Object
}

// api is the part of a typed client the create-or-converge step uses.
type api[T object] interface {
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// ensure creates want or, when it exists, converges the existing object:
// converge returns the object to write and whether it differs (it may
// modify and return have). Conflicting writes are retried on a fresh read.
func ensure[T object](ctx context.Context, d *Driver, kind string, c api[T], want T, name string,
	converge func(have T) (T, bool)) error {
	for attempt := 0; ; attempt++ {
		_, err := c.Create(ctx, want, createOpts)
		if err == nil {
			d.log.Info("created "+kind, "instance", name, "name", want.GetName())
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s %s: %w", kind, want.GetName(), err)
		}
		gone := false
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			have, err := c.Get(ctx, want.GetName(), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				gone = true // deleted since: create it again
				return nil
			}
			if err != nil {
				return fmt.Errorf("get %s %s: %w", kind, want.GetName(), err)
			}
			if !ownedBy(have, name) {
				return fmt.Errorf("%s %s: %w", kind, want.GetName(), ErrNotManaged)
			}
			if have.GetDeletionTimestamp() != nil {
				return fmt.Errorf("%s %s is being deleted; retry once it is gone", kind, want.GetName())
			}
			upd, changed := converge(have)
			if !changed {
				d.log.Debug(kind+" exists", "instance", name, "name", want.GetName())
				return nil
			}
			if _, err := c.Update(ctx, upd, updateOpts); err != nil {
				if apierrors.IsConflict(err) {
					return err
				}
				return fmt.Errorf("update %s %s: %w", kind, want.GetName(), err)
			}
			d.log.Info("updated "+kind, "instance", name, "name", want.GetName())
			return nil
		})
		if err != nil || !gone {
			return err
		}
		if attempt >= 2 {
			return fmt.Errorf("%s %s keeps disappearing", kind, want.GetName())
		}
	}
}

func (d *Driver) ensureSecret(ctx context.Context, p plan, password string) error {
	want := d.secret(p, password)
	return ensure(ctx, d, "secret", d.client.CoreV1().Secrets(d.ns), want, p.name, func(have *corev1.Secret) (*corev1.Secret, bool) {
		changed := false
		if have.Data == nil {
			have.Data = map[string][]byte{}
		}
		for k, v := range want.Data {
			if !bytes.Equal(have.Data[k], v) {
				have.Data[k] = v
				changed = true
			}
		}
		return have, changed
	})
}

func (d *Driver) ensurePVC(ctx context.Context, p plan) error {
	want := d.pvc(p)
	return ensure(ctx, d, "pvc", d.client.CoreV1().PersistentVolumeClaims(d.ns), want, p.name, func(have *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, bool) {
		// A claim's class is immutable and its size can only grow where the
		// class allows it: keep the existing claim, which holds the data.
		got := have.Spec.Resources.Requests[corev1.ResourceStorage]
		if got.Cmp(p.storage) != 0 {
			d.log.Warn("pvc exists with another size; keeping it", "instance", p.name, "name", have.Name,
				"size", got.String(), "requested", p.storage.String())
		}
		if d.storageClass != "" && (have.Spec.StorageClassName == nil || *have.Spec.StorageClassName != d.storageClass) {
			d.log.Warn("pvc exists with another storage class; keeping it", "instance", p.name, "name", have.Name)
		}
		return have, false
	})
}

func (d *Driver) ensureStatefulSet(ctx context.Context, p plan) error {
	want := d.statefulSet(p)
	return ensure(ctx, d, "statefulset", d.client.AppsV1().StatefulSets(d.ns), want, p.name, func(have *appsv1.StatefulSet) (*appsv1.StatefulSet, bool) {
		if have.Annotations[AnnotationConfigHash] == want.Annotations[AnnotationConfigHash] {
			return have, false
		}
		// Selector, service name and claim templates are immutable and
		// fixed by the instance name; the rest is replaced.
		have.Labels = mergeMaps(have.Labels, want.Labels)
		have.Annotations = mergeMaps(have.Annotations, want.Annotations)
		have.Spec.Replicas = want.Spec.Replicas
		have.Spec.Template = want.Spec.Template
		return have, true
	})
}

func (d *Driver) ensureService(ctx context.Context, p plan) error {
	return d.ensureServiceObject(ctx, p, d.service(p))
}

// ensureServiceObject creates or converges the Service want of instance p.
func (d *Driver) ensureServiceObject(ctx context.Context, p plan, want *corev1.Service) error {
	return ensure(ctx, d, "service", d.client.CoreV1().Services(d.ns), want, p.name, func(have *corev1.Service) (*corev1.Service, bool) {
		if have.Annotations[AnnotationConfigHash] == want.Annotations[AnnotationConfigHash] {
			return have, false
		}
		// Drop the keys this driver may have set, then set the wanted ones;
		// annotations of others (cloud controllers) stay.
		for _, k := range slices.Concat([]string{AnnotationDNSLabel, d.dnsAnnotation}, slices.Collect(maps.Keys(d.svcAnnots))) {
			delete(have.Annotations, k)
		}
		have.Labels = mergeMaps(have.Labels, want.Labels)
		have.Annotations = mergeMaps(have.Annotations, want.Annotations)
		wasLB := have.Spec.Type == corev1.ServiceTypeLoadBalancer
		have.Spec.Type = want.Spec.Type
		have.Spec.Selector = want.Spec.Selector
		have.Spec.LoadBalancerSourceRanges = want.Spec.LoadBalancerSourceRanges
		ports := slices.Clone(want.Spec.Ports)
		for i := range ports {
			for _, old := range have.Spec.Ports {
				if old.Port == ports[i].Port && wasLB && want.Spec.Type == corev1.ServiceTypeLoadBalancer {
					ports[i].NodePort = old.NodePort // keep the allocated node port
				}
			}
		}
		have.Spec.Ports = ports
		if want.Spec.Type != corev1.ServiceTypeLoadBalancer {
			have.Spec.ExternalTrafficPolicy = ""
			have.Spec.HealthCheckNodePort = 0
			have.Spec.AllocateLoadBalancerNodePorts = nil
			have.Spec.LoadBalancerClass = nil
		}
		return have, true
	})
}

func mergeMaps(dst, src map[string]string) map[string]string {
	if dst == nil {
		dst = map[string]string{}
	}
	maps.Copy(dst, src)
	return dst
}
