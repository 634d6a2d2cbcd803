package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Kinds of the resources an instance has, in the order Delete removes
// them: the Service first (it releases the load balancer), the Secret last.
const (
	KindService               = "Service"
	KindStatefulSet           = "StatefulSet"
	KindPod                   = "Pod"
	KindPersistentVolumeClaim = "PersistentVolumeClaim"
	KindSecret                = "Secret"
)

var deleteOrder = []string{KindService, KindStatefulSet, KindPod, KindPersistentVolumeClaim, KindSecret}

// Resource is one API object the driver created.
type Resource struct {
	Kind     string
	Name     string
	Instance string // value of the toygres.io/instance label
	UID      types.UID
	// Terminating: its deletion is under way (finalizers, graceful stop).
	Terminating bool
}

func (r Resource) String() string { return r.Kind + "/" + r.Name }

// ListManaged lists every resource in the namespace that carries the
// label app.kubernetes.io/managed-by=toygres, for sweeps that look for
// resources of instances the catalogue no longer knows. Pods (made by the
// StatefulSets) are included; the backup storage of instances
// (LabelBackupOf), which outlives them until DeleteBackups, is not.
func (d *Driver) ListManaged(ctx context.Context) ([]Resource, error) {
	rs, err := d.list(ctx, managedSelector(), false)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: list managed resources: %w", err)
	}
	return rs, nil
}

// Instances lists the names of the instances that have resources in the
// namespace (see ListManaged), sorted.
func (d *Driver) Instances(ctx context.Context) ([]string, error) {
	rs, err := d.ListManaged(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, r := range rs {
		if r.Instance != "" && !slices.Contains(names, r.Instance) {
			names = append(names, r.Instance)
		}
	}
	slices.Sort(names)
	return names, nil
}

// list lists the resources matching selector in delete order; with first it
// stops at the first one found.
func (d *Driver) list(ctx context.Context, selector string, first bool) ([]Resource, error) {
	opts := metav1.ListOptions{LabelSelector: selector}
	if first {
		opts.Limit = 1
	}
	var out []Resource
	add := func(kind string, items []metav1.Object) {
		for _, o := range items {
			if _, backup := o.GetLabels()[LabelBackupOf]; backup {
				continue // backup storage outlives its instance (DeleteBackups)
			}
			out = append(out, Resource{Kind: kind, Name: o.GetName(), Instance: o.GetLabels()[LabelInstance],
				UID: o.GetUID(), Terminating: o.GetDeletionTimestamp() != nil})
		}
	}
	for _, kind := range deleteOrder {
		var items []metav1.Object
		switch kind {
		case KindService:
			l, err := d.client.CoreV1().Services(d.ns).List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("list services: %w", err)
			}
			for i := range l.Items {
				items = append(items, &l.Items[i])
			}
		case KindStatefulSet:
			l, err := d.client.AppsV1().StatefulSets(d.ns).List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("list statefulsets: %w", err)
			}
			for i := range l.Items {
				items = append(items, &l.Items[i])
			}
		case KindPod:
			l, err := d.client.CoreV1().Pods(d.ns).List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("list pods: %w", err)
			}
			for i := range l.Items {
				items = append(items, &l.Items[i])
			}
		case KindPersistentVolumeClaim:
			l, err := d.client.CoreV1().PersistentVolumeClaims(d.ns).List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("list persistentvolumeclaims: %w", err)
			}
			for i := range l.Items {
				items = append(items, &l.Items[i])
			}
		case KindSecret:
			l, err := d.client.CoreV1().Secrets(d.ns).List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("list secrets: %w", err)
			}
			for i := range l.Items {
				items = append(items, &l.Items[i])
			}
		}
		add(kind, items)
		if first && len(out) > 0 {
			return out, nil
		}
	}
	return out, nil
}

// Delete removes every resource of the instance: it lists the Service,
// StatefulSet, pods, PVCs and Secret carrying the instance's owner labels
// (whatever their names, so claims of volumeClaimTemplates or strays of an
// interrupted Deploy go too) and deletes each one that is not already being
// deleted, ignoring NotFound. Resources without the labels are never
// touched. It then waits up to Options.DeleteWait for them to disappear,
// deleting again anything that reappears (a pod recreated by a racing
// controller), and returns nil once they are gone or all of them are being
// deleted (the PVC waits for its pod to stop, for instance). Deleting an
// instance that has no resources succeeds.
func (d *Driver) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	sel := instanceSelector(name)
	var deadline time.Time
	if d.deleteWait > 0 {
		deadline = time.Now().Add(d.deleteWait)
	}
	logged := false
	for {
		rs, err := d.list(ctx, sel, false)
		if err != nil {
			return fmt.Errorf("kubernetes: delete %s: %w", name, err)
		}
		if len(rs) == 0 {
			if logged {
				d.log.Info("instance deleted", "instance", name)
			}
			return nil
		}
		var errs []error
		pending := false
		for _, r := range rs {
			if r.Terminating {
				continue
			}
			pending = true
			if err := d.deleteOne(ctx, r); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("kubernetes: delete %s: %w", name, errors.Join(errs...))
		}
		if pending && !logged {
			d.log.Info("deleting instance", "instance", name, "resources", resourceNames(rs))
			logged = true
		}
		if deadline.IsZero() || time.Now().After(deadline) {
			d.log.Info("instance deletion under way", "instance", name, "remaining", resourceNames(rs))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubernetes: delete %s: waiting for %s to go: %w", name, resourceNames(rs), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func resourceNames(rs []Resource) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// deleteOne deletes r if it is still the object listed (UID precondition),
// letting the garbage collector remove dependents in the background.
func (d *Driver) deleteOne(ctx context.Context, r Resource) error {
	bg := metav1.DeletePropagationBackground
	uid := r.UID
	opts := metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}}
	var err error
	switch r.Kind {
	case KindService:
		err = d.client.CoreV1().Services(d.ns).Delete(ctx, r.Name, opts)
	case KindStatefulSet:
		err = d.client.AppsV1().StatefulSets(d.ns).Delete(ctx, r.Name, opts)
	case KindPod:
		err = d.client.CoreV1().Pods(d.ns).Delete(ctx, r.Name, opts)
	case KindPersistentVolumeClaim:
		err = d.client.CoreV1().PersistentVolumeClaims(d.ns).Delete(ctx, r.Name, opts)
	case KindSecret:
		err = d.client.CoreV1().Secrets(d.ns).Delete(ctx, r.Name, opts)
	}
	switch {
	case err == nil:
		d.log.Debug("deleted", "instance", r.Instance, "resource", r.String())
		return nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// Gone already, or replaced by a new object the next listing sees.
		return nil
	default:
		return fmt.Errorf("delete %s: %w", r, err)
	}
}
