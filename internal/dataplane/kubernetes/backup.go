package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/toygres/toygres/internal/dataplane"
)

// Backups.
//
// Every instance archives its write-ahead log continuously into its backup
// storage, which its pod mounts at /backup: archive_command copies each
// finished segment into /backup/wal (under a temporary name, compared,
// synced and renamed, as the local driver does). The storage is reached
// through BackupStorage; the implementation here is one PersistentVolumeClaim
// per instance, <name>-backup:
//
//	/backup/wal/           the WAL archive (written by the server)
//	/backup/base/<id>/     a verified base backup (plain format,
//	                       backup_manifest, toygres-backup.json)
//	/backup/base/<id>.partial/  a backup being taken
//
// The backup storage and the Jobs below carry the labels
// app.kubernetes.io/managed-by=toygres and toygres.io/backup-of=<name>, not
// toygres.io/instance, so that Delete (which removes what carries the
// instance's labels) leaves them: only DeleteBackups removes them.
//
// Everything that reads or writes the storage other than the server runs
// as a Job in the namespace, with the instance's image and the pod's
// security settings (the driver itself never sees the files):
//
//   - Backup runs <name>-backup-<id>: pg_basebackup over the instance's
//     Service as the superuser (a replication connection, which the
//     driver's pg_hba.conf allows with the password), into
//     base/<id>.partial, pg_verifybackup, the description file, the rename.
//     The Job's success is the verified backup; the Job's container writes
//     the description to its termination message, which the driver copies
//     into the Job's annotation toygres.io/backup-info. The completed Jobs
//     are the index of the backups: ListBackups lists them, DeleteBackup
//     deletes the Job first (so the backup is no longer listed) and then
//     runs <name>-rm-<id> to remove the files.
//   - PruneWAL runs <name>-prune, which removes the segments before the one
//     given and reports how many in its termination message.
//   - FlushArchive runs <name>-flush: psql's pg_switch_wal() over the
//     Service, then it waits for the segment in /backup/wal.
//
// ArchiveStatus reports only whether archiving is on (reading
// pg_stat_archiver needs a connection into the pod, which this driver
// does not open); see its documentation.
//
// Access modes. The PVC is ReadWriteOnce by default: the Jobs must run on
// the node of the instance's pod, so they carry a pod affinity to it
// (required for the backup and flush Jobs, which need the server anyway;
// preferred for the others, whose instance may be gone). A storage class
// whose volumes are ReadWriteMany (Options.BackupAccessMode) lifts that.

// Labels and annotations of the backup resources.
const (
	// LabelBackupOf holds the name of the instance whose backups a
	// resource holds or makes.
	LabelBackupOf = "toygres.io/backup-of"
	// LabelBackupID holds the backup id of a backup Job.
	LabelBackupID = "toygres.io/backup-id"
	// LabelJob is the kind of a Job: backup, rm, prune or flush.
	LabelJob = "toygres.io/job"

	// AnnotationBackupInfo holds a backup Job's dataplane.BackupInfo (JSON).
	AnnotationBackupInfo = "toygres.io/backup-info"
	// AnnotationArchiving is "on" or "off" (SetArchiving) on a StatefulSet.
	AnnotationArchiving = "toygres.io/archiving"
	// AnnotationRestore is on the pod template of an instance being
	// restored (JSON of the restore).
	AnnotationRestore = "toygres.io/restore"
	// AnnotationRestoredFrom is "<instance>/<backup id>" on the StatefulSet
	// of a restored instance.
	AnnotationRestoredFrom = "toygres.io/restored-from"
)

// Job kinds (LabelJob).
const (
	jobBackup = "backup"
	jobRemove = "rm"
	jobPrune  = "prune"
	jobFlush  = "flush"
)

const (
	backupVolume    = "backup"
	backupMountPath = "/backup"
	sourceVolume    = "restore-source"
	sourceMountPath = "/restore-source"
	hbaFile         = dataMountPath + "/toygres-hba.conf"
	restoreWALDir   = dataMountPath + "/restore-wal"
	setPasswordFlag = dataMountPath + "/toygres-set-password"
	backupInfoFile  = "toygres-backup.json"
	// archiveTimeout bounds how long a finished transaction may wait in an
	// unfinished WAL segment before it is switched and archived.
	archiveTimeout = 60
	// DefaultBackupStorageGB is the size of a backup PVC.
	DefaultBackupStorageGB = 20
)

// BackupStorage is where the WAL archives and base backups of instances
// live. The driver never reads it itself: the instance's server, the backup
// and maintenance Jobs and a restore's init container mount it at /backup
// (or, for the source of a restore, read-only elsewhere) as a pod volume,
// so every implementation is a volume source. The PVC implementation is the
// default; object storage can follow as a volume too (a CSI driver that
// mounts a bucket prefix, such as mountpoint-s3 or gcsfuse, whose Ensure
// and Delete manage the prefix).
type BackupStorage interface {
	// Ensure creates the backup storage of an instance; it is idempotent.
	Ensure(ctx context.Context, instance string) error
	// Volume is the volume source through which pods reach the instance's
	// backup storage.
	Volume(instance string, readOnly bool) corev1.VolumeSource
	// Delete removes the instance's backup storage with everything in it;
	// deleting a missing one succeeds.
	Delete(ctx context.Context, instance string) error
}

func backupPVCName(name string) string     { return name + "-backup" }
func backupJobName(name, id string) string { return name + "-backup-" + id }
func removeJobName(name, id string) string { return name + "-rm-" + id }
func pruneJobName(name string) string      { return name + "-prune" }
func flushJobName(name string) string      { return name + "-flush" }
func backupLabels(name string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, LabelBackupOf: name, LabelName: NameValue}
}

// pvcStorage keeps each instance's backups on a PVC <name>-backup.
type pvcStorage struct {
	d     *Driver
	size  resource.Quantity
	class string
	mode  corev1.PersistentVolumeAccessMode
}

func (s *pvcStorage) Ensure(ctx context.Context, instance string) error {
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: backupPVCName(instance), Namespace: s.d.ns, Labels: backupLabels(instance)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{s.mode},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: s.size}},
		},
	}
	if s.class != "" {
		c.Spec.StorageClassName = &s.class
	}
	_, err := s.d.client.CoreV1().PersistentVolumeClaims(s.d.ns).Create(ctx, c, createOpts)
	if apierrors.IsAlreadyExists(err) {
		have, err := s.d.client.CoreV1().PersistentVolumeClaims(s.d.ns).Get(ctx, c.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get pvc %s: %w", c.Name, err)
		}
		if have.Labels[LabelManagedBy] != ManagedByValue || have.Labels[LabelBackupOf] != instance {
			return fmt.Errorf("pvc %s: %w", c.Name, ErrNotManaged)
		}
		if have.DeletionTimestamp != nil {
			return fmt.Errorf("pvc %s is being deleted (DeleteBackups); retry once it is gone", c.Name)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("create pvc %s: %w", c.Name, err)
	}
	s.d.log.Info("created backup pvc", "instance", instance, "name", c.Name)
	return nil
}

func (s *pvcStorage) Volume(instance string, readOnly bool) corev1.VolumeSource {
	return corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
		ClaimName: backupPVCName(instance), ReadOnly: readOnly}}
}

func (s *pvcStorage) Delete(ctx context.Context, instance string) error {
	c := s.d.client.CoreV1().PersistentVolumeClaims(s.d.ns)
	have, err := c.Get(ctx, backupPVCName(instance), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get pvc %s: %w", backupPVCName(instance), err)
	}
	if have.Labels[LabelManagedBy] != ManagedByValue || have.Labels[LabelBackupOf] != instance {
		return fmt.Errorf("pvc %s: %w", have.Name, ErrNotManaged)
	}
	return s.d.deleteOne(ctx, Resource{Kind: KindPersistentVolumeClaim, Name: have.Name, Instance: instance, UID: have.UID})
}

var _ dataplane.Backuper = (*Driver)(nil)

// BackupStorage returns the driver's backup storage.
func (d *Driver) BackupStorage() BackupStorage { return d.backups }

var backupIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// validBackupID also keeps the Job names (<name>-backup-<id>) within 63 bytes.
func validBackupID(name, id string) error {
	if !backupIDRE.MatchString(id) || len(backupJobName(name, id)) > 63 {
		return fmt.Errorf("kubernetes: invalid backup id %q: want lower-case letters, digits and hyphens, at most %d bytes for instance %s",
			id, max(0, 63-len(backupJobName(name, ""))), name)
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// startScript starts the server through the image's entrypoint with the
// driver's pg_hba.conf (written on every start, outside PGDATA), and, after
// a restore, sets the user's password and drops the recovery settings once
// the server has promoted. "$@" are the server's -c options.
const startScript = `set -e
cat >` + hbaFile + ` <<'EOF'
local all all trust
host all all all scram-sha-256
host replication ` + SuperUser + ` all scram-sha-256
EOF
if [ -f ` + setPasswordFlag + ` ]; then
  (
    until [ "$(psql -U ` + SuperUser + ` -d ` + Database + ` -Atqc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 1; done
    printf '%s\n' "ALTER ROLE ` + SuperUser + ` PASSWORD :'pw';" "ALTER SYSTEM RESET restore_command;" "ALTER SYSTEM RESET recovery_target_time;" "ALTER SYSTEM RESET recovery_target;" "ALTER SYSTEM RESET recovery_target_action;" |
      psql -U ` + SuperUser + ` -d ` + Database + ` -v ON_ERROR_STOP=1 -q -v pw="$POSTGRES_PASSWORD" &&
      rm -rf ` + setPasswordFlag + ` ` + restoreWALDir + `
  ) &
fi
exec docker-entrypoint.sh postgres "$@"
`

// archiveCommand copies a finished segment into the archive under a
// temporary name, compares, syncs and renames it; a segment archived
// already is accepted again only if identical.
const archiveCommand = `f=/backup/wal/%f; mkdir -p /backup/wal; if test -f "$f"; then cmp -s %p "$f"; else cp %p "$f.tmp" && cmp -s %p "$f.tmp" && sync "$f.tmp" && mv "$f.tmp" "$f" && sync /backup/wal; fi`

// serverArgs are the server's settings. archive_mode stays on when
// archiving is off, with a command that discards segments.
func serverArgs(archiving bool) []string {
	cmd := archiveCommand
	if !archiving {
		cmd = ":"
	}
	return []string{
		"-c", "hba_file=" + hbaFile,
		"-c", "wal_level=replica",
		"-c", "archive_mode=on",
		"-c", "archive_command=" + cmd,
		"-c", "archive_timeout=" + strconv.Itoa(archiveTimeout),
	}
}

// SetArchiving turns WAL archiving on or off: it changes the server's
// archive_command, which restarts the pod (the StatefulSet rolls).
func (d *Driver) SetArchiving(ctx context.Context, name string, on bool) error {
	if err := validName(name); err != nil {
		return err
	}
	sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes: set archiving of %s: %w", name, dataplane.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("kubernetes: set archiving of %s: %w", name, err)
	}
	if !ownedBy(sts, name) {
		return fmt.Errorf("kubernetes: set archiving of %s: %w", name, ErrNotManaged)
	}
	if sts.Annotations[AnnotationArchiving] == onOff(on) {
		return nil
	}
	p, err := d.plan(ctx, dataplane.Spec{Name: name, Internal: sts.Annotations[AnnotationInternal] == "true"})
	if err != nil {
		return fmt.Errorf("kubernetes: set archiving of %s: %w", name, err)
	}
	p.archiving = on
	if err := d.ensureStatefulSet(ctx, p); err != nil {
		return err
	}
	if p.repl != nil { // the standbys archive once promoted
		return d.ensureStandbySet(ctx, p, p.repl.Replicas)
	}
	return nil
}

// jobSpec describes one Job the driver runs against an instance's backups.
type jobSpec struct {
	instance string
	name     string
	kind     string
	id       string // backup id (backup and rm Jobs)
	version  string // PostgreSQL major version (image)
	script   string
	env      []corev1.EnvVar
	// needServer: the Job talks to the server (required pod affinity and
	// the password from the instance's Secret).
	needServer  bool
	annotations map[string]string
}

func (d *Driver) job(j jobSpec) *batchv1.Job {
	lbls := backupLabels(j.instance)
	lbls[LabelJob] = j.kind
	if j.id != "" {
		lbls[LabelBackupID] = j.id
	}
	f := false
	backoff := int32(2)
	env := slices.Clone(j.env)
	if j.needServer {
		env = append(env,
			corev1.EnvVar{Name: "PGHOST", Value: serviceName(j.instance) + "." + d.ns + ".svc." + d.clusterDomain},
			corev1.EnvVar{Name: "PGPORT", Value: strconv.Itoa(int(d.svcPort))},
			corev1.EnvVar{Name: "PGUSER", Value: SuperUser},
			corev1.EnvVar{Name: "PGDATABASE", Value: Database},
			corev1.EnvVar{Name: "PGPASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secretName(j.instance)}, Key: SecretKeyPassword}}},
		)
	}
	spec := corev1.PodSpec{
		RestartPolicy:                corev1.RestartPolicyNever,
		AutomountServiceAccountToken: &f,
		EnableServiceLinks:           &f,
		NodeSelector:                 maps.Clone(d.nodeSel),
		SecurityContext:              &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{
			Name:                     j.kind,
			Image:                    d.imageFor(j.version),
			ImagePullPolicy:          d.pull,
			Command:                  []string{"/bin/sh", "-c", j.script},
			Env:                      env,
			VolumeMounts:             []corev1.VolumeMount{{Name: backupVolume, MountPath: backupMountPath}},
			SecurityContext:          containerSecurity(),
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		}},
		Volumes:  []corev1.Volume{{Name: backupVolume, VolumeSource: d.backups.Volume(j.instance, false)}},
		Affinity: d.sameNode(j.instance, j.needServer),
	}
	d.podSecurity(spec.SecurityContext)
	for _, s := range d.pullSecs {
		spec.ImagePullSecrets = append(spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	annots := maps.Clone(j.annotations)
	if annots == nil {
		annots = map[string]string{}
	}
	annots[AnnotationVersion] = j.version
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: j.name, Namespace: d.ns, Labels: lbls, Annotations: annots},
		Spec: batchv1.JobSpec{
			BackoffLimit: &backoff,
			Template:     corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: maps.Clone(lbls)}, Spec: spec},
		},
	}
}

// sameNode is the affinity that puts a Job's pod on the node of the
// instance's pod, so that a ReadWriteOnce backup volume can be mounted.
func (d *Driver) sameNode(instance string, required bool) *corev1.Affinity {
	if d.backupMode != corev1.ReadWriteOnce {
		return nil
	}
	term := corev1.PodAffinityTerm{LabelSelector: &metav1.LabelSelector{MatchLabels: ownerLabels(instance)},
		TopologyKey: "kubernetes.io/hostname"}
	if required {
		return &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term}}}
	}
	return &corev1.Affinity{PodAffinity: &corev1.PodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: term}}}}
}

// jobOf reports whether job is the driver's Job of kind for instance.
func jobOf(job *batchv1.Job, instance, kind string) bool {
	l := job.Labels
	return l[LabelManagedBy] == ManagedByValue && l[LabelBackupOf] == instance && l[LabelJob] == kind
}

// jobState is complete, failed, or neither (running); reason says why it failed.
func jobState(job *batchv1.Job) (complete, failed bool, reason string) {
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			complete = true
		case batchv1.JobFailed:
			failed, reason = true, c.Reason+": "+c.Message
		}
	}
	return
}

// errJobFailed is returned (wrapped) when a Job failed.
var errJobFailed = errors.New("job failed")

// runJob creates want unless a Job of that name exists, and waits until
// it completes or fails or ctx ends. A Job that had failed before this call
// is replaced when replaceFailed (its script starts over); a failure seen
// after that is returned, wrapping errJobFailed.
func (d *Driver) runJob(ctx context.Context, want *batchv1.Job, replaceFailed bool) (*batchv1.Job, error) {
	jobs := d.client.BatchV1().Jobs(d.ns)
	kind, instance := want.Labels[LabelJob], want.Labels[LabelBackupOf]
	first := true
	for ; ; first = false {
		have, err := jobs.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if _, err := jobs.Create(ctx, want, createOpts); err != nil && !apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("create job %s: %w", want.Name, err)
			}
			d.log.Info("created job", "instance", instance, "name", want.Name)
			continue
		case err != nil:
			return nil, fmt.Errorf("get job %s: %w", want.Name, err)
		case !jobOf(have, instance, kind):
			return nil, fmt.Errorf("job %s: %w", have.Name, ErrNotManaged)
		}
		complete, failed, reason := jobState(have)
		switch {
		case have.DeletionTimestamp != nil:
			// Replaced: wait until it is gone, then create it again.
		case complete:
			return have, nil
		case failed && first && replaceFailed:
			d.log.Info("replacing failed job", "instance", instance, "name", have.Name, "reason", reason)
			if err := d.deleteJob(ctx, have); err != nil {
				return nil, err
			}
		case failed:
			return have, fmt.Errorf("job %s: %w: %s%s", have.Name, errJobFailed, reason, d.jobMessage(ctx, have))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for job %s: %w", want.Name, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// deleteJob deletes a Job and, in the background, its pods.
func (d *Driver) deleteJob(ctx context.Context, job *batchv1.Job) error {
	bg := metav1.DeletePropagationBackground
	uid := job.UID
	err := d.client.BatchV1().Jobs(d.ns).Delete(ctx, job.Name, metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete job %s: %w", job.Name, err)
	}
	return nil
}

// jobMessage is the termination message of a Job's latest finished pod
// ("" when there is none), prefixed for error messages.
func (d *Driver) jobMessage(ctx context.Context, job *batchv1.Job) string {
	if m := d.terminationMessage(ctx, job); m != "" {
		return "; output: " + m
	}
	return ""
}

// terminationMessage is what the Job's container wrote to
// /dev/termination-log, from its latest terminated pod.
func (d *Driver) terminationMessage(ctx context.Context, job *batchv1.Job) string {
	pods, err := d.client.CoreV1().Pods(d.ns).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{batchv1.JobNameLabel: job.Name}).String()})
	if err != nil {
		return ""
	}
	var msg string
	var at time.Time
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			if t := cs.State.Terminated; t != nil && t.Message != "" && !t.FinishedAt.Time.Before(at) {
				msg, at = strings.TrimSpace(t.Message), t.FinishedAt.Time
			}
		}
	}
	return msg
}

// backupScript takes the base backup $ID into /backup/base; its
// description goes to the termination message.
const backupScript = `set -eu
b=/backup/base
mkdir -p "$b" /backup/wal
if [ -f "$b/$ID/` + backupInfoFile + `" ]; then cat "$b/$ID/` + backupInfoFile + `" >/dev/termination-log; exit 0; fi
rm -rf "$b/$ID.partial" "$b/$ID"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
pg_basebackup --no-password -D "$b/$ID.partial" -F plain -X stream -c fast
pg_verifybackup -q "$b/$ID.partial"
finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)
wal=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]*\))$/\1/p' "$b/$ID.partial/backup_label")
tli=$(sed -n 's/^START TIMELINE: \([0-9]*\)$/\1/p' "$b/$ID.partial/backup_label")
size=$(du -sb "$b/$ID.partial" | cut -f1)
ver=$(cat "$b/$ID.partial/PG_VERSION")
printf '{"id":"%s","instance":"%s","started_at":"%s","finished_at":"%s","size_bytes":%s,"start_wal":"%s","timeline":%s,"postgres_version":"%s"}\n' \
  "$ID" "$INSTANCE" "$started" "$finished" "$size" "$wal" "$tli" "$ver" >"$b/$ID.partial/` + backupInfoFile + `"
sync "$b/$ID.partial/` + backupInfoFile + `"
mv "$b/$ID.partial" "$b/$ID"
sync "$b"
cat "$b/$ID/` + backupInfoFile + `" >/dev/termination-log
`

// Backup runs the backup Job <name>-backup-<id> and waits for it (bounded
// by ctx). A completed Job is the verified backup and is returned as is;
// a failed one is deleted and run again (its script discards what the
// failed run left). The Job runs pg_basebackup against the instance's
// Service, so the instance must be running.
func (d *Driver) Backup(ctx context.Context, name, id string) (dataplane.BackupInfo, error) {
	if err := validName(name); err != nil {
		return dataplane.BackupInfo{}, err
	}
	if err := validBackupID(name, id); err != nil {
		return dataplane.BackupInfo{}, err
	}
	jobName := backupJobName(name, id)
	existing, err := d.client.BatchV1().Jobs(d.ns).Get(ctx, jobName, metav1.GetOptions{})
	if err == nil && jobOf(existing, name, jobBackup) {
		if complete, _, _ := jobState(existing); complete && existing.DeletionTimestamp == nil {
			return d.backupInfo(ctx, existing, true), nil
		}
	}
	sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return dataplane.BackupInfo{}, fmt.Errorf("kubernetes: backup %s: %w", name, dataplane.ErrNotFound)
	}
	if err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("kubernetes: backup %s: %w", name, err)
	}
	if !ownedBy(sts, name) {
		return dataplane.BackupInfo{}, fmt.Errorf("kubernetes: backup %s: %w", name, ErrNotManaged)
	}
	if err := d.backups.Ensure(ctx, name); err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("kubernetes: backup %s: %w", name, err)
	}
	want := d.job(jobSpec{instance: name, name: jobName, kind: jobBackup, id: id, version: sts.Annotations[AnnotationVersion],
		script: backupScript, needServer: true,
		env: []corev1.EnvVar{{Name: "ID", Value: id}, {Name: "INSTANCE", Value: name}}})
	job, err := d.runJob(ctx, want, true)
	if err != nil {
		return dataplane.BackupInfo{}, fmt.Errorf("kubernetes: backup %s of %s: %w", id, name, err)
	}
	info := d.backupInfo(ctx, job, true)
	d.log.Info("backup taken", "instance", name, "backup", id, "start_wal", info.StartWAL)
	return info, nil
}

// backupInfo describes the backup of a completed backup Job: from its
// annotation, else from its pod's termination message (copied into the
// annotation when record), else from the Job alone (times and version; no
// size or start segment).
func (d *Driver) backupInfo(ctx context.Context, job *batchv1.Job, record bool) dataplane.BackupInfo {
	var info dataplane.BackupInfo
	if s, ok := job.Annotations[AnnotationBackupInfo]; ok && json.Unmarshal([]byte(s), &info) == nil {
		return info
	}
	if msg := d.terminationMessage(ctx, job); msg != "" && json.Unmarshal([]byte(msg), &info) == nil && info.ID == job.Labels[LabelBackupID] {
		if record {
			job.Annotations[AnnotationBackupInfo] = msg
			if _, err := d.client.BatchV1().Jobs(d.ns).Update(ctx, job, updateOpts); err != nil {
				d.log.Warn("could not record the backup's description on its job", "job", job.Name, "err", err)
			}
		}
		return info
	}
	info = dataplane.BackupInfo{ID: job.Labels[LabelBackupID], Instance: job.Labels[LabelBackupOf],
		PostgresVersion: job.Annotations[AnnotationVersion]}
	if t := job.Status.StartTime; t != nil {
		info.StartedAt = t.UTC()
	}
	if t := job.Status.CompletionTime; t != nil {
		info.FinishedAt = t.UTC()
	}
	return info
}

// ListBackups lists the completed backup Jobs of an instance, oldest first.
func (d *Driver) ListBackups(ctx context.Context, name string) ([]dataplane.BackupInfo, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	jobs, err := d.backupJobs(ctx, name, jobBackup)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: list backups of %s: %w", name, err)
	}
	var out []dataplane.BackupInfo
	for i := range jobs {
		j := &jobs[i]
		if complete, _, _ := jobState(j); complete && j.DeletionTimestamp == nil {
			out = append(out, d.backupInfo(ctx, j, false))
		}
	}
	slices.SortFunc(out, func(a, b dataplane.BackupInfo) int { return a.FinishedAt.Compare(b.FinishedAt) })
	return out, nil
}

func (d *Driver) backupJobs(ctx context.Context, name, kind string) ([]batchv1.Job, error) {
	set := labels.Set{LabelManagedBy: ManagedByValue, LabelBackupOf: name}
	if kind != "" {
		set[LabelJob] = kind
	}
	l, err := d.client.BatchV1().Jobs(d.ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(set).String()})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return l.Items, nil
}

// DeleteBackup deletes the backup's Job (so it is no longer listed), then
// runs <name>-rm-<id> to remove its files and deletes that Job.
func (d *Driver) DeleteBackup(ctx context.Context, name, id string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := validBackupID(name, id); err != nil {
		return err
	}
	jobs := d.client.BatchV1().Jobs(d.ns)
	version := ""
	have, err := jobs.Get(ctx, backupJobName(name, id), metav1.GetOptions{})
	switch {
	case err == nil && jobOf(have, name, jobBackup):
		version = have.Annotations[AnnotationVersion]
		if err := d.deleteJob(ctx, have); err != nil {
			return fmt.Errorf("kubernetes: delete backup %s of %s: %w", id, name, err)
		}
	case err == nil:
		return fmt.Errorf("kubernetes: delete backup %s of %s: job %s: %w", id, name, have.Name, ErrNotManaged)
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("kubernetes: delete backup %s of %s: %w", id, name, err)
	}
	if ok, err := d.hasBackupStorage(ctx, name); err != nil || !ok {
		return err
	}
	rm := d.job(jobSpec{instance: name, name: removeJobName(name, id), kind: jobRemove, id: id, version: d.anyVersion(ctx, name, version),
		script: `set -eu; rm -rf "/backup/base/$ID" "/backup/base/$ID.partial"; sync /backup/base 2>/dev/null || true`,
		env:    []corev1.EnvVar{{Name: "ID", Value: id}}})
	job, err := d.runJob(ctx, rm, true)
	if err != nil {
		return fmt.Errorf("kubernetes: delete backup %s of %s: %w", id, name, err)
	}
	return d.deleteJob(ctx, job)
}

// hasBackupStorage reports whether the instance's backup PVC exists (and
// is not being deleted): without it there is nothing to remove.
func (d *Driver) hasBackupStorage(ctx context.Context, name string) (bool, error) {
	if _, ok := d.backups.(*pvcStorage); !ok {
		return true, nil
	}
	pvc, err := d.client.CoreV1().PersistentVolumeClaims(d.ns).Get(ctx, backupPVCName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kubernetes: get pvc %s: %w", backupPVCName(name), err)
	}
	return pvc.DeletionTimestamp == nil, nil
}

// anyVersion is the image version for maintenance Jobs (they need a shell
// and coreutils only): known, else the instance's, else the newest offered.
func (d *Driver) anyVersion(ctx context.Context, name, known string) string {
	if known != "" {
		return known
	}
	if sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{}); err == nil && sts.Annotations[AnnotationVersion] != "" {
		return sts.Annotations[AnnotationVersion]
	}
	return d.versions[0]
}

var walNameRE = regexp.MustCompile(`^[0-9A-F]{24}$`)

// PruneWAL runs <name>-prune, which removes the archived segments (and
// partial or temporary copies) whose position is before keepFrom's; it
// returns the count the Job reports.
func (d *Driver) PruneWAL(ctx context.Context, name, keepFrom string) (int, error) {
	if err := validName(name); err != nil {
		return 0, err
	}
	if !walNameRE.MatchString(keepFrom) {
		return 0, fmt.Errorf("kubernetes: prune WAL of %s: bad segment name %q", name, keepFrom)
	}
	if ok, err := d.hasBackupStorage(ctx, name); err != nil || !ok {
		return 0, err
	}
	const script = `set -eu
n=0
cd /backup/wal 2>/dev/null || { echo 0 >/dev/termination-log; exit 0; }
for f in $(ls | awk -v k="$KEEP" 'length($0) >= 24 && $0 !~ /\.history$/ && substr($0, 1, 24) ~ /^[0-9A-F]+$/ && substr($0, 9, 16) < substr(k, 9, 16)'); do
  rm -f "$f"; n=$((n+1))
done
echo "$n" >/dev/termination-log
`
	want := d.job(jobSpec{instance: name, name: pruneJobName(name), kind: jobPrune, version: d.anyVersion(ctx, name, ""),
		script: script, env: []corev1.EnvVar{{Name: "KEEP", Value: keepFrom}}, annotations: map[string]string{"toygres.io/keep-from": keepFrom}})
	// A prune Job of an earlier call with another keepFrom is done with.
	if have, err := d.client.BatchV1().Jobs(d.ns).Get(ctx, want.Name, metav1.GetOptions{}); err == nil && jobOf(have, name, jobPrune) &&
		have.Annotations["toygres.io/keep-from"] != keepFrom {
		if err := d.deleteJob(ctx, have); err != nil {
			return 0, fmt.Errorf("kubernetes: prune WAL of %s: %w", name, err)
		}
		if err := d.awaitJobGone(ctx, have.Name); err != nil {
			return 0, fmt.Errorf("kubernetes: prune WAL of %s: %w", name, err)
		}
	}
	job, err := d.runJob(ctx, want, true)
	if err != nil {
		return 0, fmt.Errorf("kubernetes: prune WAL of %s: %w", name, err)
	}
	n, _ := strconv.Atoi(d.terminationMessage(ctx, job))
	if err := d.deleteJob(ctx, job); err != nil {
		return n, fmt.Errorf("kubernetes: prune WAL of %s: %w", name, err)
	}
	if n > 0 {
		d.log.Info("pruned archived WAL", "instance", name, "segments", n, "kept_from", keepFrom)
	}
	return n, nil
}

func (d *Driver) awaitJobGone(ctx context.Context, name string) error {
	for {
		_, err := d.client.BatchV1().Jobs(d.ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for job %s to go: %w", name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// DeleteBackups deletes every backup and maintenance Job of the instance
// and its backup storage (the PVC goes once no pod uses it).
func (d *Driver) DeleteBackups(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	jobs, err := d.backupJobs(ctx, name, "")
	if err != nil {
		return fmt.Errorf("kubernetes: delete backups of %s: %w", name, err)
	}
	for i := range jobs {
		if jobs[i].DeletionTimestamp == nil {
			if err := d.deleteJob(ctx, &jobs[i]); err != nil {
				return fmt.Errorf("kubernetes: delete backups of %s: %w", name, err)
			}
		}
	}
	if err := d.backups.Delete(ctx, name); err != nil {
		return fmt.Errorf("kubernetes: delete backups of %s: %w", name, err)
	}
	return nil
}

// FlushArchive runs <name>-flush, which switches the server to a new WAL
// segment and waits (up to a minute) until that segment is in the
// archive, and waits for the Job. An instance whose pod is not ready, or
// whose archiving is off, is left alone.
func (d *Driver) FlushArchive(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes: flush archive of %s: %w", name, dataplane.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("kubernetes: flush archive of %s: %w", name, err)
	}
	if !ownedBy(sts, name) || sts.Annotations[AnnotationArchiving] == "off" || sts.Status.ReadyReplicas == 0 {
		return nil
	}
	const script = `set -eu
seg=$(psql --no-password -Atqc 'SELECT pg_walfile_name(pg_switch_wal())')
i=0
until [ -f "/backup/wal/$seg" ]; do
  i=$((i+1)); if [ $i -gt 60 ]; then echo "segment $seg not archived after 60s" >/dev/termination-log; exit 1; fi
  sleep 1
done
`
	want := d.job(jobSpec{instance: name, name: flushJobName(name), kind: jobFlush, version: sts.Annotations[AnnotationVersion],
		script: script, needServer: true})
	// Each flush is a new run: a Job left by an earlier flush goes first.
	if have, err := d.client.BatchV1().Jobs(d.ns).Get(ctx, want.Name, metav1.GetOptions{}); err == nil && jobOf(have, name, jobFlush) {
		if err := d.deleteJob(ctx, have); err != nil {
			return fmt.Errorf("kubernetes: flush archive of %s: %w", name, err)
		}
		if err := d.awaitJobGone(ctx, have.Name); err != nil {
			return fmt.Errorf("kubernetes: flush archive of %s: %w", name, err)
		}
	}
	job, err := d.runJob(ctx, want, false)
	if job != nil {
		if derr := d.deleteJob(ctx, job); derr != nil && err == nil {
			err = derr
		}
	}
	if err != nil {
		return fmt.Errorf("kubernetes: flush archive of %s: %w", name, err)
	}
	return nil
}

// ArchiveStatus reports whether archiving is on. The archiver's counters
// (pg_stat_archiver) are not read: that needs a connection into the pod,
// which this driver does not open (no exec, and the Service may not be
// reachable from the control plane); a failing archive_command shows in
// the server's log (Logs) and, since segments pile up, in the data
// volume's usage. Counters and Pending are zero.
func (d *Driver) ArchiveStatus(ctx context.Context, name string) (dataplane.ArchiveStatus, error) {
	if err := validName(name); err != nil {
		return dataplane.ArchiveStatus{}, err
	}
	sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return dataplane.ArchiveStatus{}, fmt.Errorf("kubernetes: archive status of %s: %w", name, dataplane.ErrNotFound)
	}
	if err != nil {
		return dataplane.ArchiveStatus{}, fmt.Errorf("kubernetes: archive status of %s: %w", name, err)
	}
	return dataplane.ArchiveStatus{Enabled: sts.Annotations[AnnotationArchiving] != "off"}, nil
}
