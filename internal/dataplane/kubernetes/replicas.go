package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/toygres/toygres/internal/dataplane"
)

// Standbys (dataplane.Replicator). See the package documentation, section
// "Standbys", for the model; this file implements it.

// Labels and annotations of replicated instances.
const (
	// LabelRole is a pod's role (primary, standby or fenced), set by the
	// driver from AnnotationServers; the Services select on it and the
	// container reads it through the downward API.
	LabelRole = "toygres.io/role"
	// LabelServer is a pod's server id ("0", "1", "2").
	LabelServer = "toygres.io/server"
	// LabelSet tells the standby StatefulSet's pods apart (its selector).
	LabelSet = "toygres.io/set"
	// AnnotationServers, on the instance's StatefulSet <name>, is the
	// durable record of the servers' roles (JSON of serverRoles): the
	// source of truth the pod labels follow.
	AnnotationServers = "toygres.io/servers"
)

const (
	standbySetValue = "standby"
	podInfoVolume_  = "podinfo"
	podInfoPath     = "/etc/toygres"
	roleStateFile   = dataMountPath + "/toygres-role"
	// maxReplicatedNameLen keeps the standby StatefulSet <name>-r within
	// the label limit of its controller-revision-hash (see maxNameLen).
	maxReplicatedNameLen = maxNameLen - 2
	// promoteWait bounds how long Promote waits for the promoted pod to
	// be ready.
	promoteWait = 2 * time.Minute
	// rolloutWait bounds how long SetReplicas waits for the primary's pod
	// to be recreated after a template change (its old pod stops first,
	// within its termination grace period).
	rolloutWait = 90 * time.Second
)

func standbySetName(name string) string      { return name + "-r" }
func readOnlyServiceName(name string) string { return name + "-ro" }

// serverPodName is the pod of server id: <name>-0 for server 0 (the
// instance's StatefulSet), <name>-r-<id> for the standby StatefulSet's.
func serverPodName(name, id string) string {
	if id == "0" {
		return podName(name)
	}
	return standbySetName(name) + "-" + id
}

// serverID is the server id of a pod of instance name, "" for another pod.
func serverID(name, pod string) string {
	if pod == podName(name) {
		return "0"
	}
	id, ok := strings.CutPrefix(pod, standbySetName(name)+"-")
	if n, err := strconv.Atoi(id); !ok || err != nil || n < 1 || strconv.Itoa(n) != id {
		return ""
	}
	return id
}

// serverRoles is the value of AnnotationServers.
type serverRoles struct {
	// Primary is the id of the primary, "" while there is none (fenced,
	// not promoted yet).
	Primary string `json:"primary"`
	// Roles of every server id, 0..Replicas.
	Roles map[string]dataplane.Role `json:"roles"`
	// Replicas is the number of standby servers asked for.
	Replicas int `json:"replicas"`
	// Sync: the primary waits for one standby at commit.
	Sync bool `json:"sync"`
}

func initialRoles() *serverRoles {
	return &serverRoles{Primary: "0", Roles: map[string]dataplane.Role{"0": dataplane.RolePrimary}}
}

// decodeRoles reads AnnotationServers (nil when the instance never had
// standbys).
func decodeRoles(sts *appsv1.StatefulSet) (*serverRoles, error) {
	v, ok := sts.Annotations[AnnotationServers]
	if !ok {
		return nil, nil
	}
	r := &serverRoles{}
	if err := json.Unmarshal([]byte(v), r); err != nil || r.Roles == nil {
		return nil, fmt.Errorf("statefulset %s: unreadable annotation %s: %q", sts.Name, AnnotationServers, v)
	}
	return r, nil
}

// ids are the server ids in order.
func (r *serverRoles) ids() []string {
	ids := slices.Collect(maps.Keys(r.Roles))
	slices.SortFunc(ids, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	return ids
}

// primaryPod is the pod Status, Logs and Restarts follow: the primary's,
// else (none, or never replicated) <name>-0.
func primaryPod(sts *appsv1.StatefulSet, name string) string {
	if r, err := decodeRoles(sts); err == nil && r != nil && r.Primary != "" {
		return serverPodName(name, r.Primary)
	}
	return podName(name)
}

// primarySelector selects the pods the instance's Service reaches: with
// standbys, the one labelled primary.
func primarySelector(p plan) map[string]string {
	s := ownerLabels(p.name)
	if p.repl != nil {
		s[LabelRole] = string(dataplane.RolePrimary)
	}
	return s
}

func podInfoVolume() corev1.Volume {
	return corev1.Volume{Name: podInfoVolume_, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
		Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}},
	}}}
}

// syncStandbyNames is synchronous_standby_names of a synchronous instance:
// any one standby (pg_basebackup -R names them after their pod).
const syncStandbyNames = "ANY 1 (*)"

// replicatedContainer turns the PostgreSQL container into one that takes
// its role from its pod's labels (replStartScript).
func (d *Driver) replicatedContainer(c *corev1.Container, p plan) {
	c.Command = []string{"/bin/sh", "-c", replStartScript, "toygres-start"}
	if p.repl.Sync {
		c.Args = append(c.Args, "-c", "synchronous_standby_names="+syncStandbyNames)
	}
	c.Env = append(c.Env,
		corev1.EnvVar{Name: "REPLICATE_FROM_HOST", Value: fmt.Sprintf("%s.%s.svc.%s", serviceName(p.name), d.ns, d.clusterDomain)},
		corev1.EnvVar{Name: "REPLICATE_FROM_PORT", Value: strconv.Itoa(int(d.svcPort))})
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: podInfoVolume_, MountPath: podInfoPath, ReadOnly: true})
	if c.ReadinessProbe != nil && c.ReadinessProbe.Exec != nil {
		c.ReadinessProbe.Exec.Command = []string{"/bin/sh", "-c", replReadyScript}
	}
}

// roleShell reads the pod's role label from the downward API file.
const roleShell = `role() { sed -n 's|^` + LabelRole + `="\(.*\)"$|\1|p' ` + podInfoPath + `/labels 2>/dev/null; }
`

// replReadyScript is the readiness check of a replicated server: a primary
// accepts writes, a standby streams from the primary. Pods are thus ready
// in the Services only when they do what their label says.
const replReadyScript = roleShell + `q() { psql -U ` + SuperUser + ` -d ` + Database + ` -Atqc "$1"; }
case "$(role)" in
primary) test "$(q 'SELECT pg_is_in_recovery()')" = f ;;
standby) test "$(q "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")" = 1 ;;
*) exit 1 ;;
esac
`

// replStartScript starts a server of a replicated instance in the role its
// pod's label gives (the downward API file follows label changes):
//
//   - no label yet, or fenced: postgres is not started; the script waits
//     for primary or standby (a fenced server stays down whatever restarts
//     its container or pod).
//   - standby: a data directory that was not a standby's when last seen
//     (a former primary, a fenced server, a half-taken copy) is removed,
//     and an empty one is cloned from the primary's Service with
//     pg_basebackup -R (streaming replication as the superuser, whose
//     password the pod has); standby.signal makes it a standby.
//   - primary: standby.signal is removed (a standby promoted while its pod
//     was down ends recovery at start).
//
// A watcher in the background acts on label changes of a running server:
// primary while in recovery → pg_ctl promote; fenced, or standby while not
// in recovery → a fast shutdown (the container then restarts into the wait
// or a fresh clone). The role last acted on is kept on the volume
// (toygres-role) so that a restarted container knows what its data is.
const replStartScript = roleShell + `state=` + roleStateFile + `
while :; do
  r=$(role)
  case "$r" in primary|standby) break ;; esac
  if [ "$r" = fenced ]; then echo fenced >"$state"; fi
  echo "toygres: role '${r:-none}': not starting postgres"
  sleep 2
done
if [ "$r" = standby ]; then
  if [ -s "$PGDATA/PG_VERSION" ] && [ "$(cat "$state" 2>/dev/null)" != standby ]; then
    echo "toygres: data was not a standby's ($(cat "$state" 2>/dev/null)): cloning again"
    rm -rf "$PGDATA"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    rm -rf "$PGDATA.clone"
    PGPASSWORD="$POSTGRES_PASSWORD" pg_basebackup -h "$REPLICATE_FROM_HOST" -p "$REPLICATE_FROM_PORT" -U ` + SuperUser + ` \
      -D "$PGDATA.clone" -R -X stream -c fast -d "application_name=$HOSTNAME" || exit 1
    mv "$PGDATA.clone" "$PGDATA"
  fi
  touch "$PGDATA/standby.signal"
else
  rm -f "$PGDATA/standby.signal"
fi
echo "$r" >"$state"
(
  while sleep 2; do
    r=$(role)
    rec=$(psql -U ` + SuperUser + ` -d ` + Database + ` -Atqc 'SELECT pg_is_in_recovery()' 2>/dev/null) || continue
    case "$r:$rec" in
    primary:t) echo "toygres: promoting"; pg_ctl -D "$PGDATA" promote && echo primary >"$state" ;;
    fenced:*) echo "toygres: fenced: stopping"; echo fenced >"$state"; pg_ctl -D "$PGDATA" stop -m fast ;;
    standby:f) echo "toygres: demoted: stopping"; echo demoted >"$state"; pg_ctl -D "$PGDATA" stop -m fast ;;
    esac
  done
) &
` + startScript

// replicaPlan is the plan of an existing instance for SetReplicas: its
// version, storage size and exposure are read from its resources.
func (d *Driver) replicaPlan(ctx context.Context, name string) (plan, error) {
	spec := dataplane.Spec{Name: name}
	svc, err := d.client.CoreV1().Services(d.ns).Get(ctx, serviceName(name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return plan{}, fmt.Errorf("service %s: %w", serviceName(name), dataplane.ErrNotFound)
	case err != nil:
		return plan{}, fmt.Errorf("get service: %w", err)
	}
	spec.Internal = svc.Spec.Type != corev1.ServiceTypeLoadBalancer
	spec.DNSLabel = svc.Annotations[AnnotationDNSLabel]
	pvc, err := d.client.CoreV1().PersistentVolumeClaims(d.ns).Get(ctx, pvcName(name), metav1.GetOptions{})
	if err != nil {
		return plan{}, fmt.Errorf("get pvc: %w", err)
	}
	q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	spec.StorageGB = int(max(q.Value()>>30, 1))
	return d.plan(ctx, spec)
}

// updateRoles applies fn to the instance's roles and records them on its
// StatefulSet (retrying on conflicts); it returns the recorded roles.
func (d *Driver) updateRoles(ctx context.Context, name string, fn func(r *serverRoles) error) (*serverRoles, error) {
	var out *serverRoles
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("statefulset %s: %w", stsName(name), dataplane.ErrNotFound)
		case err != nil:
			return fmt.Errorf("get statefulset: %w", err)
		case !ownedBy(sts, name):
			return fmt.Errorf("statefulset %s: %w", sts.Name, ErrNotManaged)
		}
		r, err := decodeRoles(sts)
		if err != nil {
			return err
		}
		if r == nil {
			r = initialRoles()
		}
		before, _ := json.Marshal(r)
		if err := fn(r); err != nil {
			return err
		}
		out = r
		after, _ := json.Marshal(r)
		if _, ok := sts.Annotations[AnnotationServers]; ok && string(before) == string(after) {
			return nil
		}
		sts.Annotations = mergeMaps(sts.Annotations, map[string]string{AnnotationServers: string(after)})
		if _, err := d.client.AppsV1().StatefulSets(d.ns).Update(ctx, sts, updateOpts); err != nil {
			if apierrors.IsConflict(err) {
				return err
			}
			return fmt.Errorf("update statefulset: %w", err)
		}
		d.log.Info("recorded server roles", "instance", name, "roles", string(after))
		return nil
	})
	return out, err
}

// relabel makes the pods' role labels follow r: the Services' endpoints
// and the containers' roles change at once.
func (d *Driver) relabel(ctx context.Context, name string, r *serverRoles) error {
	pods, err := d.client.CoreV1().Pods(d.ns).List(ctx, metav1.ListOptions{LabelSelector: instanceSelector(name)})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	for _, pod := range pods.Items {
		id := serverID(name, pod.Name)
		if id == "" || pod.DeletionTimestamp != nil {
			continue
		}
		role, ok := r.Roles[id]
		if !ok {
			role = dataplane.RoleFenced // a server being removed never serves
		}
		if pod.Labels[LabelRole] == string(role) && pod.Labels[LabelServer] == id {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"labels": map[string]string{LabelRole: string(role), LabelServer: id}}})
		_, err := d.client.CoreV1().Pods(d.ns).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("label pod %s: %w", pod.Name, err)
		}
		d.log.Info("labelled pod", "instance", name, "pod", pod.Name, "role", role)
	}
	return nil
}

func (d *Driver) standbySet(p plan, n int) *appsv1.StatefulSet {
	sts := d.statefulSet(plan{name: p.name, version: p.version, storage: p.storage, internal: p.internal,
		archiving: p.archiving, repl: p.repl})
	sts.Name = standbySetName(p.name)
	delete(sts.Annotations, AnnotationConfigHash)
	replicas := int32(n)
	sts.Spec.Replicas = &replicas
	sts.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 1}
	sel := ownerLabels(p.name)
	sel[LabelSet] = standbySetValue
	sts.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	sts.Spec.Template.Labels[LabelSet] = standbySetValue
	sts.Spec.Template.Spec.Volumes = slices.DeleteFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "data" })
	claim := d.pvc(p)
	claim.ObjectMeta = metav1.ObjectMeta{Name: "data", Labels: resourceLabels(p.name)}
	sts.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{*claim}
	sts.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
		WhenScaled:  appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
	}
	sts.Spec.Template.Spec.Affinity = d.standbyPlacement(p.name)
	sts.Annotations[AnnotationConfigHash] = hashOf(sts.Spec.Template)
	return sts
}

// standbyPlacement is where standby pods go. They mount the instance's
// backup storage (a promoted standby archives into it): with a
// ReadWriteOnce volume they must share the node of the instance's other
// pods; with shared storage they spread over nodes where they can.
func (d *Driver) standbyPlacement(name string) *corev1.Affinity {
	if a := d.sameNode(name, true); a != nil {
		return a
	}
	term := corev1.PodAffinityTerm{LabelSelector: &metav1.LabelSelector{MatchLabels: ownerLabels(name)},
		TopologyKey: "kubernetes.io/hostname"}
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: term}}}}
}

func (d *Driver) ensureStandbySet(ctx context.Context, p plan, n int) error {
	want := d.standbySet(p, n)
	return ensure(ctx, d, "statefulset", d.client.AppsV1().StatefulSets(d.ns), want, p.name, func(have *appsv1.StatefulSet) (*appsv1.StatefulSet, bool) {
		if have.Annotations[AnnotationConfigHash] == want.Annotations[AnnotationConfigHash] && *have.Spec.Replicas == *want.Spec.Replicas {
			return have, false
		}
		have.Labels = mergeMaps(have.Labels, want.Labels)
		have.Annotations = mergeMaps(have.Annotations, want.Annotations)
		have.Spec.Replicas = want.Spec.Replicas
		have.Spec.Template = want.Spec.Template
		return have, true
	})
}

// readOnlyService is <name>-ro: the standbys, exposed like the primary's
// Service (without its DNS label, which names the primary's).
func (d *Driver) readOnlyService(p plan) *corev1.Service {
	svc := d.service(plan{name: p.name, internal: p.internal})
	svc.Name = readOnlyServiceName(p.name)
	svc.Spec.Selector = ownerLabels(p.name)
	svc.Spec.Selector[LabelRole] = string(dataplane.RoleStandby)
	delete(svc.Annotations, AnnotationConfigHash)
	svc.Annotations[AnnotationConfigHash] = hashOf(struct {
		Spec   corev1.ServiceSpec
		Annots map[string]string
	}{svc.Spec, svc.Annotations})
	return svc
}

// SetReplicas converges the instance to n standbys (see
// dataplane.Replicator): it records the roles (new servers are standbys),
// makes the instance's StatefulSet run the replicated container (once:
// the first call restarts the primary's pod), scales the standby
// StatefulSet <name>-r to n (its pods clone the primary when they start;
// scaling down deletes the removed servers' claims), makes the Service
// select the primary only, creates the read-only Service <name>-ro (or
// deletes it at 0) and labels the pods. Servers are removed from the
// highest id down; removing the primary fails (promote another server
// first). With sync, synchronous_standby_names is set on every server
// (a change of it restarts the pods).
func (d *Driver) SetReplicas(ctx context.Context, name string, n int, sync bool) error {
	if err := validName(name); err != nil {
		return err
	}
	if n < 0 || n > dataplane.MaxReplicas {
		return fmt.Errorf("kubernetes: set replicas of %s: %d standbys: want 0..%d", name, n, dataplane.MaxReplicas)
	}
	if n > 0 && len(name) > maxReplicatedNameLen {
		return fmt.Errorf("kubernetes: set replicas of %s: standbys need a name of at most %d bytes", name, maxReplicatedNameLen)
	}
	sync = sync && n > 0
	if n == 0 {
		// An instance that never had standbys stays as it is (its pod is
		// not recreated for nothing).
		_, sts, err := d.roles(ctx, name)
		if err != nil {
			return fmt.Errorf("kubernetes: set replicas of %s: %w", name, err)
		}
		if _, ok := sts.Annotations[AnnotationServers]; !ok {
			return nil
		}
	}
	r, err := d.updateRoles(ctx, name, func(r *serverRoles) error {
		if id, _ := strconv.Atoi(r.Primary); r.Primary != "" && id > n {
			return fmt.Errorf("the primary is server %s: promote a server of 0..%d first", r.Primary, n)
		}
		r.Replicas, r.Sync = n, sync
		for _, id := range r.ids() {
			if i, _ := strconv.Atoi(id); i > n {
				delete(r.Roles, id)
			}
		}
		for i := 0; i <= n; i++ {
			if _, ok := r.Roles[strconv.Itoa(i)]; !ok {
				r.Roles[strconv.Itoa(i)] = dataplane.RoleStandby
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kubernetes: set replicas of %s: %w", name, err)
	}
	p, err := d.replicaPlan(ctx, name)
	if err != nil {
		return fmt.Errorf("kubernetes: set replicas of %s: %w", name, err)
	}
	p.repl = r
	// Label first, so that the Service's new selector finds the primary.
	if err := d.relabel(ctx, name, r); err != nil {
		return fmt.Errorf("kubernetes: set replicas of %s: %w", name, err)
	}
	steps := []struct {
		what string
		run  func() error
	}{
		{"statefulset", func() error { return d.ensureStatefulSet(ctx, p) }},
		{"standby statefulset", func() error { return d.ensureStandbySet(ctx, p, n) }},
		{"service", func() error { return d.ensureService(ctx, p) }},
		{"read-only service", func() error {
			if n > 0 {
				return d.ensureServiceObject(ctx, p, d.readOnlyService(p))
			}
			err := d.client.CoreV1().Services(d.ns).Delete(ctx, readOnlyServiceName(name), metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		}},
		{"labels", func() error { return d.awaitPrimaryPod(ctx, name, r) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return fmt.Errorf("kubernetes: set replicas of %s: %s: %w", name, s.what, err)
		}
	}
	d.log.Info("replicas set", "instance", name, "replicas", n, "sync", sync)
	return nil
}

// awaitPrimaryPod relabels the pods until the primary's pod runs its
// StatefulSet's current template: a template change (the first
// SetReplicas, a sync change) recreates the pods without labels, and the
// primary's pod does not start postgres, nor is it in the Service, until
// it has its label. Standbys recreated later get theirs from the next
// Servers (or any Replicator call). It gives up, leaving that to them,
// after rolloutWait.
func (d *Driver) awaitPrimaryPod(ctx context.Context, name string, r *serverRoles) error {
	if r.Primary == "" {
		return d.relabel(ctx, name, r)
	}
	set := stsName(name)
	if r.Primary != "0" {
		set = standbySetName(name)
	}
	pod := serverPodName(name, r.Primary)
	deadline := time.Now().Add(rolloutWait)
	for {
		if err := d.relabel(ctx, name, r); err != nil {
			return err
		}
		sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, set, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get statefulset %s: %w", set, err)
		}
		p, err := d.client.CoreV1().Pods(d.ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("get pod %s: %w", pod, err)
		}
		if err == nil && sts.Status.ObservedGeneration >= sts.Generation && p.DeletionTimestamp == nil &&
			p.Labels[appsv1.ControllerRevisionHashLabelKey] == sts.Status.UpdateRevision &&
			p.Labels[LabelRole] == string(dataplane.RolePrimary) {
			return nil
		}
		if time.Now().After(deadline) {
			d.log.Warn("primary pod not relabelled after its template changed; Servers will", "instance", name, "pod", pod)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// roles returns the instance's recorded roles (those of a single server
// when it never had standbys) and its StatefulSet.
func (d *Driver) roles(ctx context.Context, name string) (*serverRoles, *appsv1.StatefulSet, error) {
	sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil, fmt.Errorf("statefulset %s: %w", stsName(name), dataplane.ErrNotFound)
	case err != nil:
		return nil, nil, fmt.Errorf("get statefulset: %w", err)
	case !ownedBy(sts, name):
		return nil, nil, fmt.Errorf("statefulset %s: %w", sts.Name, ErrNotManaged)
	}
	r, err := decodeRoles(sts)
	if err != nil {
		return nil, nil, err
	}
	if r == nil {
		r = initialRoles()
	}
	return r, sts, nil
}

// Servers reports the instance's servers, the primary first, from the
// recorded roles and the pods: Host is the pod's IP, Ready its Ready
// condition. A standby whose pod is not ready is RoleBuilding (cloning,
// or not streaming: its readiness check asks for a streaming WAL
// receiver), and a ready one is Streaming. LagBytes and Timeline stay 0
// (unknown): reading them needs a connection into the pods, which the
// driver does not open. Servers also relabels pods whose labels drifted
// (a recreated pod has none).
func (d *Driver) Servers(ctx context.Context, name string) ([]dataplane.ServerState, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	r, sts, err := d.roles(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: servers of %s: %w", name, err)
	}
	if _, ok := sts.Annotations[AnnotationServers]; ok {
		if err := d.relabel(ctx, name, r); err != nil {
			d.log.Warn("relabelling pods failed", "instance", name, "err", err)
		}
	}
	pods, err := d.client.CoreV1().Pods(d.ns).List(ctx, metav1.ListOptions{LabelSelector: instanceSelector(name)})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: servers of %s: list pods: %w", name, err)
	}
	byID := map[string]*corev1.Pod{}
	for i := range pods.Items {
		if id := serverID(name, pods.Items[i].Name); id != "" {
			byID[id] = &pods.Items[i]
		}
	}
	var out []dataplane.ServerState
	for _, id := range r.ids() {
		s := dataplane.ServerState{ID: id, Role: r.Roles[id], Port: Port}
		pod := byID[id]
		switch {
		case pod == nil:
			s.Message = fmt.Sprintf("pod %s does not exist yet", serverPodName(name, id))
		case pod.DeletionTimestamp != nil:
			s.Message = fmt.Sprintf("pod %s is terminating", pod.Name)
		default:
			s.Host = pod.Status.PodIP
			s.Ready = pod.Status.Phase == corev1.PodRunning && podReady(pod)
			if !s.Ready {
				s.Message = joinNonEmpty(fmt.Sprintf("pod %s is %s", pod.Name, pod.Status.Phase), containerMessage(pod))
			}
		}
		if s.Role == dataplane.RoleStandby {
			s.Sync = r.Sync
			s.Streaming = s.Ready
			if !s.Ready {
				s.Role = dataplane.RoleBuilding
			}
		}
		if id == r.Primary {
			out = slices.Insert(out, 0, s)
		} else {
			out = append(out, s)
		}
	}
	return out, nil
}

// Fence records server id as fenced and relabels its pod: it leaves the
// primary Service's endpoints at once, and its container's watcher stops
// postgres with a fast shutdown (which sends committed WAL to connected
// standbys) within a couple of seconds; however its container or pod
// restarts, it then waits without starting postgres until Rebuild. Fence
// does not wait for the shutdown (it cannot observe it without a
// connection into the pod); connections opened through the Service before
// the relabel last until it. Fencing a fenced or absent server succeeds.
func (d *Driver) Fence(ctx context.Context, name, id string) error {
	if err := validName(name); err != nil {
		return err
	}
	r, err := d.updateRoles(ctx, name, func(r *serverRoles) error {
		if _, ok := r.Roles[id]; !ok {
			return nil
		}
		r.Roles[id] = dataplane.RoleFenced
		if r.Primary == id {
			r.Primary = ""
		}
		return nil
	})
	if errors.Is(err, dataplane.ErrNotFound) {
		return nil
	}
	if err == nil {
		err = d.relabel(ctx, name, r)
	}
	if err != nil {
		return fmt.Errorf("kubernetes: fence server %s of %s: %w", id, name, err)
	}
	return nil
}

// Promote records standby id as the primary (fencing any other primary
// first), relabels the pods, so that the Service selects it at once and
// its container's watcher runs pg_ctl promote, and waits (up to 2 minutes,
// bounded by ctx) until its pod is ready, which its readiness check makes
// mean "not in recovery" where the probes run (not under a simulated
// node). The other standbys follow: their primary_conninfo names the
// Service, and they follow the new timeline when they reconnect.
func (d *Driver) Promote(ctx context.Context, name, id string) error {
	if err := validName(name); err != nil {
		return err
	}
	r, err := d.updateRoles(ctx, name, func(r *serverRoles) error {
		switch role := r.Roles[id]; {
		case role == dataplane.RolePrimary && r.Primary == id:
			return nil
		case role != dataplane.RoleStandby:
			return fmt.Errorf("server %s is %q: %w", id, role, dataplane.ErrNotStandby)
		}
		for other, role := range r.Roles {
			if role == dataplane.RolePrimary {
				r.Roles[other] = dataplane.RoleFenced
			}
		}
		r.Roles[id], r.Primary = dataplane.RolePrimary, id
		return nil
	})
	if err == nil {
		err = d.relabel(ctx, name, r)
	}
	if err != nil {
		return fmt.Errorf("kubernetes: promote server %s of %s: %w", id, name, err)
	}
	d.log.Info("promoting", "instance", name, "server", id)
	ctx, cancel := context.WithTimeout(ctx, promoteWait)
	defer cancel()
	for {
		// Relabel each time: a pod recreated meanwhile (a rolling update)
		// comes without labels.
		if err := d.relabel(ctx, name, r); err != nil {
			return fmt.Errorf("kubernetes: promote server %s of %s: %w", id, name, err)
		}
		pod, err := d.client.CoreV1().Pods(d.ns).Get(ctx, serverPodName(name, id), metav1.GetOptions{})
		if err == nil && pod.Labels[LabelRole] == string(dataplane.RolePrimary) && podReady(pod) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubernetes: promote server %s of %s: waiting for pod %s to be ready: %w", id, name, serverPodName(name, id), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Rebuild turns fenced server id back into a standby: it records and
// labels it standby, and its container (waiting since the fence) removes
// its data directory and clones the current primary afresh. There is no
// pg_rewind: the driver cannot run it inside the pod. Rebuilding a
// standby succeeds at once; rebuilding the primary fails.
func (d *Driver) Rebuild(ctx context.Context, name, id string) error {
	if err := validName(name); err != nil {
		return err
	}
	r, err := d.updateRoles(ctx, name, func(r *serverRoles) error {
		switch role, ok := r.Roles[id]; {
		case !ok:
			return fmt.Errorf("no server %s: %w", id, dataplane.ErrNotFound)
		case role == dataplane.RolePrimary:
			return fmt.Errorf("server %s is the primary", id)
		}
		r.Roles[id] = dataplane.RoleStandby
		return nil
	})
	if err == nil {
		err = d.relabel(ctx, name, r)
	}
	if err != nil {
		return fmt.Errorf("kubernetes: rebuild server %s of %s: %w", id, name, err)
	}
	return nil
}

var _ dataplane.Replicator = (*Driver)(nil)
