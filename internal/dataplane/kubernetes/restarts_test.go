package kubernetes

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/toygres/toygres/internal/dataplane"
)

// TestRestartsCountsContainerRestarts: the restart count the health actor
// reports is the sum of the pod's container restarts, as kubelet records
// them in the pod status (written here the way kubelet would).
func TestRestartsCountsContainerRestarts(t *testing.T) {
	t.Parallel()
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	ctx := testCtx(t)
	d := newTestDriver(t, cfg, ns, nil)
	var _ dataplane.RestartCounter = d

	name := instanceName("rst")
	if n, err := d.Restarts(ctx, name); err != nil || n != 0 {
		t.Fatalf("Restarts of an instance without a pod = %d, %v; want 0, nil", n, err)
	}
	cleanupInstance(t, d, name)
	if err := d.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword); err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	waitReady(t, d, name)
	if n, err := d.Restarts(ctx, name); err != nil || n != 0 {
		t.Fatalf("Restarts of a fresh pod = %d, %v; want 0, nil", n, err)
	}

	eventually(t, readyTimeout, "restart count 3", func() (bool, string) {
		pod, err := c.CoreV1().Pods(ns).Get(ctx, podName(name), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get pod: %v", err)
		}
		if len(pod.Status.ContainerStatuses) == 0 {
			return false, "no container statuses yet"
		}
		if pod.Status.ContainerStatuses[0].RestartCount != 3 {
			pod.Status.ContainerStatuses[0].RestartCount = 3
			if _, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
				return false, fmt.Sprintf("update status: %v", err)
			}
		}
		n, err := d.Restarts(ctx, name)
		if err != nil {
			t.Fatalf("Restarts: %v", err)
		}
		return n == 3, fmt.Sprintf("Restarts = %d", n)
	})
}
