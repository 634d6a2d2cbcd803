package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// FieldManager names the driver in managedFields.
const FieldManager = "toygres"

var (
	createOpts = metav1.CreateOptions{FieldManager: FieldManager}
	updateOpts = metav1.UpdateOptions{FieldManager: FieldManager}
)

// Mount points and paths inside the PostgreSQL container. PGDATA is a
// subdirectory of the volume (a fresh file system may hold lost+found),
// set explicitly so that every image version, 18+ included, uses it.
const (
	dataMountPath = "/var/lib/postgresql/data"
	pgdata        = dataMountPath + "/pgdata"
)

// ownerLabels are the labels of every resource of an instance; they are
// also the selector of its StatefulSet and Service.
func ownerLabels(name string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, LabelInstance: name}
}

func resourceLabels(name string) map[string]string {
	l := ownerLabels(name)
	l[LabelName] = NameValue
	return l
}

// instanceSelector selects the resources of one instance.
func instanceSelector(name string) string {
	return labels.SelectorFromSet(ownerLabels(name)).String()
}

// managedSelector selects every resource the driver created.
func managedSelector() string {
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue}).String()
}

// ownedBy reports whether meta carries the instance's owner labels.
func ownedBy(meta metav1.Object, name string) bool {
	l := meta.GetLabels()
	return l[LabelManagedBy] == ManagedByValue && l[LabelInstance] == name
}

// plan is the resolved desired state of one instance.
type plan struct {
	name     string
	version  string
	storage  resource.Quantity
	internal bool
	dnsLabel string
	// archiving is false when WAL archiving was turned off (SetArchiving).
	archiving bool
	// restore, while set, adds the init container that makes the data
	// directory from a backup of another instance (Restore).
	restore *restorePlan
	// restoredFrom is "<instance>/<backup id>" of a restored instance.
	restoredFrom string
	// repl, once the instance has had standbys (SetReplicas), is its
	// servers' roles: the pods then run replStartScript and the Service
	// selects the primary only (see replicas.go).
	repl *serverRoles
}

func (d *Driver) imageFor(version string) string {
	return strings.ReplaceAll(d.image, "{version}", version)
}

func (d *Driver) secret(p plan, password string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName(p.name), Namespace: d.ns, Labels: resourceLabels(p.name)},
		Type:       corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			SecretKeyUsername: []byte(SuperUser),
			SecretKeyPassword: []byte(password),
		},
	}
}

func (d *Driver) pvc(p plan) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: pvcName(p.name), Namespace: d.ns, Labels: resourceLabels(p.name)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: p.storage}},
		},
	}
	if d.storageClass != "" {
		c.Spec.StorageClassName = &d.storageClass
	}
	return c
}

func seconds(d, def time.Duration) int32 {
	if d <= 0 {
		d = def
	}
	s := int32((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

func (d *Driver) probe(t ProbeTiming, period, timeout time.Duration, failures int32) *corev1.Probe {
	var h corev1.ProbeHandler
	switch d.probes.Kind {
	case ProbeNone:
		return nil
	case ProbeTCP:
		h.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromInt32(Port)}
	default:
		h.Exec = &corev1.ExecAction{Command: []string{"pg_isready", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(Port), "-U", SuperUser, "-d", Database}}
	}
	if t.FailureThreshold <= 0 {
		t.FailureThreshold = failures
	}
	pr := &corev1.Probe{
		ProbeHandler:     h,
		PeriodSeconds:    seconds(t.Period, period),
		TimeoutSeconds:   seconds(t.Timeout, timeout),
		FailureThreshold: t.FailureThreshold,
		SuccessThreshold: 1,
	}
	if t.InitialDelay > 0 {
		pr.InitialDelaySeconds = seconds(t.InitialDelay, 0)
	}
	return pr
}

func (d *Driver) statefulSet(p plan) *appsv1.StatefulSet {
	lbls := resourceLabels(p.name)
	one := int32(1)
	f := false
	grace := int64(30)
	podAnnots := map[string]string{AnnotationVersion: p.version}
	c := corev1.Container{
		Name:            ContainerName,
		Image:           d.imageFor(p.version),
		ImagePullPolicy: d.pull,
		Command:         []string{"/bin/sh", "-c", startScript, "toygres-start"},
		Args:            serverArgs(p.archiving),
		Ports:           []corev1.ContainerPort{{Name: "postgres", ContainerPort: Port, Protocol: corev1.ProtocolTCP}},
		Env: []corev1.EnvVar{
			{Name: "POSTGRES_USER", Value: SuperUser},
			{Name: "POSTGRES_DB", Value: Database},
			{Name: "PGDATA", Value: pgdata},
			{Name: "POSTGRES_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secretName(p.name)}, Key: SecretKeyPassword,
			}}},
		},
		Resources:      d.resources,
		StartupProbe:   d.probe(d.probes.Startup, 5*time.Second, 5*time.Second, 120),
		ReadinessProbe: d.probe(d.probes.Readiness, 5*time.Second, 5*time.Second, 3),
		LivenessProbe:  d.probe(d.probes.Liveness, 10*time.Second, 5*time.Second, 6),
		VolumeMounts: []corev1.VolumeMount{
			{Name: "data", MountPath: dataMountPath},
			{Name: "dshm", MountPath: "/dev/shm"},
			{Name: backupVolume, MountPath: backupMountPath},
		},
		SecurityContext: containerSecurity(),
	}
	if p.repl != nil {
		d.replicatedContainer(&c, p)
	}
	spec := corev1.PodSpec{
		Containers:                    []corev1.Container{c},
		TerminationGracePeriodSeconds: &grace,
		AutomountServiceAccountToken:  &f,
		EnableServiceLinks:            &f,
		NodeSelector:                  maps.Clone(d.nodeSel),
		SecurityContext:               &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Volumes: []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: pvcName(p.name)}}},
			{Name: "dshm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
			{Name: backupVolume, VolumeSource: d.backups.Volume(p.name, false)},
		},
	}
	if p.repl != nil {
		spec.Volumes = append(spec.Volumes, podInfoVolume())
	}
	if p.restore != nil {
		d.addRestore(&spec, p)
		podAnnots[AnnotationRestore] = p.restore.encode()
	}
	d.podSecurity(spec.SecurityContext)
	for _, s := range d.pullSecs {
		spec.ImagePullSecrets = append(spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: stsName(p.name), Namespace: d.ns, Labels: lbls,
			Annotations: map[string]string{AnnotationVersion: p.version, AnnotationArchiving: onOff(p.archiving)}},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    &one,
			ServiceName: serviceName(p.name),
			Selector:    &metav1.LabelSelector{MatchLabels: ownerLabels(p.name)},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: maps.Clone(lbls), Annotations: podAnnots},
				Spec:       spec,
			},
		},
	}
	if p.restoredFrom != "" {
		sts.Annotations[AnnotationRestoredFrom] = p.restoredFrom
	}
	sts.Annotations[AnnotationConfigHash] = hashOf(sts.Spec)
	return sts
}

// containerSecurity is the security context of every container the driver
// runs: no privilege escalation, no capabilities.
func containerSecurity() *corev1.SecurityContext {
	f := false
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: &f,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// podSecurity sets the pod's uid, gid and fsGroup (Options.RunAsUser).
func (d *Driver) podSecurity(sc *corev1.PodSecurityContext) {
	if d.runAsUser > 0 {
		t := true
		u := d.runAsUser
		sc.RunAsUser = &u
		sc.RunAsGroup = &u
		sc.FSGroup = &u
		sc.RunAsNonRoot = &t
	}
}

func (d *Driver) service(p plan) *corev1.Service {
	annots := map[string]string{AnnotationInternal: strconv.FormatBool(p.internal)}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: serviceName(p.name), Namespace: d.ns, Labels: resourceLabels(p.name), Annotations: annots},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: primarySelector(p),
			Ports: []corev1.ServicePort{{Name: "postgres", Port: d.svcPort, TargetPort: intstr.FromString("postgres"),
				Protocol: corev1.ProtocolTCP}},
		},
	}
	if !p.internal {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc.Spec.LoadBalancerSourceRanges = append([]string(nil), d.lbRanges...)
		maps.Copy(annots, d.svcAnnots)
		if p.dnsLabel != "" {
			annots[AnnotationDNSLabel] = p.dnsLabel
			if d.dnsAnnotation != "" {
				annots[d.dnsAnnotation] = p.dnsLabel
			}
		}
	}
	annots[AnnotationConfigHash] = hashOf(struct {
		Spec   corev1.ServiceSpec
		Annots map[string]string
	}{svc.Spec, annots})
	return svc
}

// hashOf is a short digest of v's JSON (maps marshal in key order).
func hashOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // API types always marshal
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}
