package kubernetes

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/toygres/toygres/internal/dataplane"
)

// Status reports the readiness of the instance's primary pod (<name>-0
// unless another server was promoted; see Servers): Ready when
// its Ready condition is true (the readiness probe passes), Running while
// the container runs but is not ready, Pending before that. It returns
// dataplane.ErrNotFound (wrapped) when the instance has no resources, and
// Pending when some exist but its StatefulSet does not (Deploy has not
// finished). The message says why a pod is not ready (scheduling, image
// pull, volume binding, probe failures).
func (d *Driver) Status(ctx context.Context, name string) (dataplane.Status, error) {
	if err := validName(name); err != nil {
		return dataplane.Status{}, err
	}
	sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		rs, err := d.list(ctx, instanceSelector(name), true)
		if err != nil {
			return dataplane.Status{}, fmt.Errorf("kubernetes: status of %s: %w", name, err)
		}
		if len(rs) == 0 {
			return dataplane.Status{Phase: "NotFound"}, fmt.Errorf("kubernetes: instance %s: %w", name, dataplane.ErrNotFound)
		}
		return dataplane.Status{Phase: PhasePending, Message: fmt.Sprintf("deploy incomplete: statefulset %s does not exist (found %s %s)",
			stsName(name), rs[0].Kind, rs[0].Name)}, nil
	case err != nil:
		return dataplane.Status{}, fmt.Errorf("kubernetes: status of %s: %w", name, err)
	case !ownedBy(sts, name):
		return dataplane.Status{}, fmt.Errorf("kubernetes: status of %s: statefulset %s: %w", name, sts.Name, ErrNotManaged)
	case sts.DeletionTimestamp != nil:
		return dataplane.Status{Phase: PhaseDeleting, Message: "statefulset is being deleted"}, nil
	}

	pod, err := d.client.CoreV1().Pods(d.ns).Get(ctx, primaryPod(sts, name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return dataplane.Status{Phase: PhasePending, Message: fmt.Sprintf("pod %s not created yet", primaryPod(sts, name))}, nil
	case err != nil:
		return dataplane.Status{}, fmt.Errorf("kubernetes: status of %s: %w", name, err)
	case !ownedBy(pod, name):
		return dataplane.Status{}, fmt.Errorf("kubernetes: status of %s: pod %s: %w", name, pod.Name, ErrNotManaged)
	case pod.DeletionTimestamp != nil:
		return dataplane.Status{Phase: PhasePending, Message: fmt.Sprintf("pod %s is terminating (it will be recreated)", pod.Name)}, nil
	}
	switch pod.Status.Phase {
	case corev1.PodRunning:
		if podReady(pod) {
			return dataplane.Status{Phase: PhaseReady, Ready: true, Message: fmt.Sprintf("pod %s is ready", pod.Name)}, nil
		}
		return dataplane.Status{Phase: PhaseRunning, Message: joinNonEmpty(fmt.Sprintf("pod %s is running but not ready", pod.Name),
			conditionMessage(pod, corev1.PodReady), containerMessage(pod))}, nil
	case corev1.PodSucceeded, corev1.PodFailed:
		return dataplane.Status{Phase: PhaseFailed, Message: joinNonEmpty(fmt.Sprintf("pod %s has terminated (%s)", pod.Name, pod.Status.Phase),
			pod.Status.Reason, pod.Status.Message, containerMessage(pod))}, nil
	default: // Pending, Unknown
		msg := joinNonEmpty(fmt.Sprintf("pod %s is %s", pod.Name, pod.Status.Phase),
			conditionMessage(pod, corev1.PodScheduled), containerMessage(pod))
		if pvc, err := d.client.CoreV1().PersistentVolumeClaims(d.ns).Get(ctx, pvcName(name), metav1.GetOptions{}); err == nil && pvc.Status.Phase != corev1.ClaimBound {
			msg = joinNonEmpty(msg, fmt.Sprintf("pvc %s is %s", pvc.Name, pvc.Status.Phase))
		} else if apierrors.IsNotFound(err) {
			msg = joinNonEmpty(msg, fmt.Sprintf("pvc %s does not exist", pvcName(name)))
		}
		return dataplane.Status{Phase: PhasePending, Message: msg}, nil
	}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func conditionMessage(pod *corev1.Pod, t corev1.PodConditionType) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == t && c.Status != corev1.ConditionTrue {
			return joinNonEmpty(c.Reason, c.Message)
		}
	}
	return ""
}

func containerMessage(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != ContainerName {
			continue
		}
		var parts []string
		if w := cs.State.Waiting; w != nil {
			parts = append(parts, joinNonEmpty("waiting: "+w.Reason, w.Message))
		}
		if t := cs.State.Terminated; t != nil {
			parts = append(parts, joinNonEmpty(fmt.Sprintf("terminated: %s (exit code %d)", t.Reason, t.ExitCode), t.Message))
		}
		if cs.RestartCount > 0 {
			parts = append(parts, fmt.Sprintf("%d restarts", cs.RestartCount))
		}
		return strings.Join(parts, "; ")
	}
	return ""
}

func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ": ")
}

// Endpoint returns how clients reach the instance through its Service:
// for a public instance the load balancer's IP (or host name) and, when
// the instance has a DNS label and Options.DNSZone is set, the DNS name
// <label>.<zone>; for an internal one the cluster DNS name
// <name>-svc.<namespace>.svc.<cluster domain>. While a load balancer has no
// address it polls for up to Options.LoadBalancerWait, then returns an
// error wrapping ErrNotReady (retry later); without a Service, one wrapping
// dataplane.ErrNotFound. With standbys, ReadOnly is the address of the
// read-only Service <name>-ro, found the same way; MultiHost stays false
// (the Service follows the primary).
func (d *Driver) Endpoint(ctx context.Context, name string) (dataplane.Endpoint, error) {
	if err := validName(name); err != nil {
		return dataplane.Endpoint{}, err
	}
	var deadline time.Time
	if d.lbWait > 0 {
		deadline = time.Now().Add(d.lbWait)
	}
	for {
		ep, err := d.endpoint(ctx, name)
		if !errors.Is(err, ErrNotReady) || deadline.IsZero() || time.Now().After(deadline) {
			return ep, err
		}
		select {
		case <-ctx.Done():
			return ep, err
		case <-time.After(time.Second):
		}
	}
}

func (d *Driver) endpoint(ctx context.Context, name string) (dataplane.Endpoint, error) {
	svc, err := d.client.CoreV1().Services(d.ns).Get(ctx, serviceName(name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return dataplane.Endpoint{}, fmt.Errorf("kubernetes: endpoint of %s: service %s: %w", name, serviceName(name), dataplane.ErrNotFound)
	case err != nil:
		return dataplane.Endpoint{}, fmt.Errorf("kubernetes: endpoint of %s: %w", name, err)
	case !ownedBy(svc, name):
		return dataplane.Endpoint{}, fmt.Errorf("kubernetes: endpoint of %s: service %s: %w", name, svc.Name, ErrNotManaged)
	}
	ep := dataplane.Endpoint{Port: int(d.svcPort), User: SuperUser, Database: Database}
	for _, p := range svc.Spec.Ports {
		if p.Name == "postgres" {
			ep.Port = int(p.Port)
		}
	}
	ep.Host, ep.ExternalIP = d.serviceAddress(svc)
	if ep.Host == "" {
		return dataplane.Endpoint{}, fmt.Errorf("kubernetes: endpoint of %s: %w: load balancer of service %s has no address", name, ErrNotReady, svc.Name)
	}
	ro, err := d.client.CoreV1().Services(d.ns).Get(ctx, readOnlyServiceName(name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return dataplane.Endpoint{}, fmt.Errorf("kubernetes: endpoint of %s: %w", name, err)
	case ownedBy(ro, name) && ro.DeletionTimestamp == nil:
		host, _ := d.serviceAddress(ro)
		if host == "" {
			return dataplane.Endpoint{}, fmt.Errorf("kubernetes: endpoint of %s: %w: load balancer of service %s has no address", name, ErrNotReady, ro.Name)
		}
		ep.ReadOnly = &dataplane.HostPort{Host: host, Port: ep.Port}
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return ep, nil
	}
	if label := svc.Annotations[AnnotationDNSLabel]; label != "" && d.dnsZone != "" {
		ep.DNSName = label + "." + d.dnsZone
	}
	return ep, nil
}

// serviceAddress is where clients reach svc: the load balancer's IP (also
// returned as external) or host name, "" while it has none; the cluster
// DNS name of a ClusterIP Service.
func (d *Driver) serviceAddress(svc *corev1.Service) (host, externalIP string) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return fmt.Sprintf("%s.%s.svc.%s", svc.Name, d.ns, d.clusterDomain), ""
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			return in.IP, in.IP
		}
		if in.Hostname != "" && host == "" {
			host = in.Hostname
		}
	}
	return host, ""
}

// primaryPodName is the pod of the instance's primary (see primaryPod),
// <name>-0 when its StatefulSet cannot be read.
func (d *Driver) primaryPodName(ctx context.Context, name string) string {
	sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
	if err != nil {
		return podName(name)
	}
	return primaryPod(sts, name)
}

// maxLogBytes bounds what Logs reads.
const maxLogBytes = 4 << 20

// Logs returns up to tail of the last lines the PostgreSQL container of the
// primary's pod (<name>-0 unless another server was promoted) wrote (all when tail <= 0). It fails with an error wrapping
// ErrLogsUnavailable when the API server cannot serve them: the pod does
// not exist or has not started, or its node's kubelet does not answer.
func (d *Driver) Logs(ctx context.Context, name string, tail int) ([]string, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.logsTimeout)
	defer cancel()
	pod, err := d.client.CoreV1().Pods(d.ns).Get(ctx, d.primaryPodName(ctx, name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("kubernetes: logs of %s: %w", name, dataplane.ErrNotFound)
		}
		return nil, fmt.Errorf("kubernetes: logs of %s: %w: pod %s does not exist yet", name, ErrLogsUnavailable, podName(name))
	case err != nil:
		return nil, fmt.Errorf("kubernetes: logs of %s: %w", name, err)
	case !ownedBy(pod, name):
		return nil, fmt.Errorf("kubernetes: logs of %s: pod %s: %w", name, pod.Name, ErrNotManaged)
	}
	if pod.Status.Phase == corev1.PodPending && !containerStarted(pod) {
		return nil, fmt.Errorf("kubernetes: logs of %s: %w: pod %s is Pending and its container has not started", name, ErrLogsUnavailable, pod.Name)
	}
	opts := &corev1.PodLogOptions{Container: ContainerName}
	if tail > 0 {
		t := int64(tail)
		opts.TailLines = &t
	}
	limit := int64(maxLogBytes)
	opts.LimitBytes = &limit
	rc, err := d.client.CoreV1().Pods(d.ns).GetLogs(pod.Name, opts).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: logs of %s: %w: the API server could not fetch them from the node: %w", name, ErrLogsUnavailable, err)
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(rc, maxLogBytes))
	sc.Buffer(make([]byte, 64<<10), maxLogBytes)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return lines, fmt.Errorf("kubernetes: logs of %s: %w: %v", name, ErrLogsUnavailable, err)
	}
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	return lines, nil
}

func containerStarted(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == ContainerName && (cs.State.Running != nil || cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil) {
			return true
		}
	}
	return false
}

// Restarts implements dataplane.RestartCounter: the restart count of the
// containers of the instance's primary pod (<name>-0 unless another server
// was promoted) (kubelet restarts a container
// whose process died or whose liveness probe failed). A recreated pod
// starts counting from zero again.
func (d *Driver) Restarts(ctx context.Context, name string) (int, error) {
	if err := validName(name); err != nil {
		return 0, err
	}
	pod, err := d.client.CoreV1().Pods(d.ns).Get(ctx, d.primaryPodName(ctx, name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("kubernetes: restarts of %s: %w", name, err)
	case !ownedBy(pod, name):
		return 0, fmt.Errorf("kubernetes: restarts of %s: pod %s: %w", name, pod.Name, ErrNotManaged)
	}
	n := 0
	for _, c := range pod.Status.ContainerStatuses {
		n += int(c.RestartCount)
	}
	return n, nil
}
