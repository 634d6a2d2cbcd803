package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/toygres/toygres/internal/dataplane"
)

// restorePlan is a restore in progress: the pod template of the new
// instance carries it (AnnotationRestore) until Restore has seen the pod
// ready, and while it does the pod has the init container that makes the
// data directory from the backup.
type restorePlan struct {
	From      string    `json:"from"`
	BackupID  string    `json:"backup_id"`
	Target    time.Time `json:"target,omitempty"`
	Immediate bool      `json:"immediate,omitempty"`
	// StartWAL is the backup's first segment: the init container copies
	// the archived segments from it on.
	StartWAL string `json:"start_wal,omitempty"`
}

func (r *restorePlan) encode() string {
	b, _ := json.Marshal(r)
	return string(b)
}

func decodeRestore(s string) *restorePlan {
	var r restorePlan
	if json.Unmarshal([]byte(s), &r) != nil {
		return nil
	}
	return &r
}

// restoreScript makes PGDATA from the backup under /restore-source unless
// PGDATA exists (an earlier run finished): it verifies the backup, copies
// it and the archived WAL from its start segment on (and every timeline
// history file) into the data volume, appends the recovery settings
// ($TARGET: a recovery_target line or nothing) to postgresql.auto.conf,
// writes recovery.signal and renames the copy into place. The new server
// recovers from the copied segments only; it never reads the source's
// archive, and the source volume is needed only while this runs.
const restoreScript = `set -eu
d=` + dataMountPath + `
if [ -d "$d/pgdata" ]; then exit 0; fi
src=` + sourceMountPath + `/base/$ID
if [ ! -f "$src/` + backupInfoFile + `" ]; then echo "backup $ID not found" >/dev/termination-log; exit 1; fi
pg_verifybackup -q -n -i ` + backupInfoFile + ` "$src"
rm -rf "$d/pgdata.restore" ` + restoreWALDir + `
cp -a "$src" "$d/pgdata.restore"
rm -f "$d/pgdata.restore/` + backupInfoFile + `" "$d/pgdata.restore/backup_manifest" "$d/pgdata.restore/standby.signal"
mkdir ` + restoreWALDir + `
if [ -d ` + sourceMountPath + `/wal ]; then
  for f in $(ls ` + sourceMountPath + `/wal | awk -v s="$START_WAL" '/^[0-9A-F]{8}\.history$/ || (/^[0-9A-F]{24}$/ && substr($0, 9, 16) >= substr(s, 9, 16))'); do
    cp ` + sourceMountPath + `/wal/"$f" ` + restoreWALDir + `/
  done
fi
{
  echo "restore_command = 'cp ` + restoreWALDir + `/%f %p'"
  if [ -n "$TARGET" ]; then echo "$TARGET"; fi
  echo "recovery_target_action = 'promote'"
} >>"$d/pgdata.restore/postgresql.auto.conf"
touch "$d/pgdata.restore/recovery.signal" ` + setPasswordFlag + `
chmod 700 "$d/pgdata.restore"
sync
mv "$d/pgdata.restore" "$d/pgdata"
sync
`

// targetSetting is the recovery target line of r ("" for the end of the
// archive).
func (r *restorePlan) targetSetting() string {
	switch {
	case r.Immediate:
		return "recovery_target = 'immediate'"
	case !r.Target.IsZero():
		return "recovery_target_time = '" + r.Target.UTC().Format("2006-01-02 15:04:05.999999+00") + "'"
	}
	return ""
}

// addRestore adds the restore's init container and the source's backup
// volume, read-only, to the pod spec.
func (d *Driver) addRestore(spec *corev1.PodSpec, p plan) {
	r := p.restore
	start := r.StartWAL
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: sourceVolume, VolumeSource: d.backups.Volume(r.From, true)})
	spec.InitContainers = append(spec.InitContainers, corev1.Container{
		Name:            "restore",
		Image:           d.imageFor(p.version),
		ImagePullPolicy: d.pull,
		Command:         []string{"/bin/sh", "-c", restoreScript},
		Env: []corev1.EnvVar{
			{Name: "ID", Value: r.BackupID},
			{Name: "START_WAL", Value: start},
			{Name: "TARGET", Value: r.targetSetting()},
		},
		Resources: d.resources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: "data", MountPath: dataMountPath},
			{Name: sourceVolume, MountPath: sourceMountPath, ReadOnly: true},
		},
		SecurityContext:          containerSecurity(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	})
	if d.backupMode == corev1.ReadWriteOnce {
		// The source's ReadWriteOnce volume can be mounted only on the node
		// that mounts it already, if any: its instance's pod.
		term := corev1.PodAffinityTerm{LabelSelector: &metav1.LabelSelector{MatchLabels: ownerLabels(r.From)},
			TopologyKey: "kubernetes.io/hostname"}
		spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: term}}}}
	}
}

// Restore creates the instance spec as Deploy does, with an init container
// that makes its data directory from the backup from.BackupID of
// from.Instance and that instance's WAL archive (the source's backup
// volume, mounted read-only) and the recovery settings; the server then
// recovers to the target and promotes, and the start script sets the
// password and drops the recovery settings. Restore waits (bounded by ctx)
// until the pod is ready, then removes the init container and the source
// volume from the StatefulSet (the pod restarts once; a recovery not
// finished by then continues from the copied WAL). Calling it again
// converges.
//
// Not detected here, unlike the local driver: a target the archive does
// not reach (ErrRestoreTarget: the server stops with "recovery ended
// before configured recovery target was reached" and the pod restarts
// until the instance is deleted), and the moment of promotion (a pod is
// ready once the server accepts connections, which a hot standby does
// while it recovers).
func (d *Driver) Restore(ctx context.Context, spec dataplane.Spec, password string, from dataplane.RestoreSource) error {
	if err := validName(spec.Name); err != nil {
		return err
	}
	if err := validName(from.Instance); err != nil {
		return err
	}
	if err := validBackupID(from.Instance, from.BackupID); err != nil {
		return err
	}
	if password == "" {
		return fmt.Errorf("kubernetes: restore %s: empty superuser password", spec.Name)
	}
	job, err := d.client.BatchV1().Jobs(d.ns).Get(ctx, backupJobName(from.Instance, from.BackupID), metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes: restore %s: %w", spec.Name, err)
	}
	if err != nil || !jobOf(job, from.Instance, jobBackup) || job.DeletionTimestamp != nil {
		return fmt.Errorf("kubernetes: restore %s: backup %s of %s: %w", spec.Name, from.BackupID, from.Instance, dataplane.ErrBackupNotFound)
	}
	if complete, _, _ := jobState(job); !complete {
		return fmt.Errorf("kubernetes: restore %s: backup %s of %s is not complete: %w", spec.Name, from.BackupID, from.Instance, dataplane.ErrBackupNotFound)
	}
	info := d.backupInfo(ctx, job, true)
	if !from.Target.IsZero() && from.Target.Before(info.FinishedAt) {
		return fmt.Errorf("kubernetes: restore %s: target %s is before backup %s finished (%s): %w", spec.Name,
			from.Target.UTC().Format(time.RFC3339Nano), from.BackupID, info.FinishedAt.Format(time.RFC3339Nano), dataplane.ErrRestoreTarget)
	}
	if err := d.FlushArchive(ctx, from.Instance); err != nil && !errors.Is(err, dataplane.ErrNotFound) {
		d.log.Warn("could not flush the source's WAL archive; restoring from what is archived", "instance", spec.Name, "from", from.Instance, "err", err)
	}

	spec.PostgresVersion = ""
	p, err := d.plan(ctx, spec)
	if err != nil {
		return fmt.Errorf("kubernetes: restore %s: %w", spec.Name, err)
	}
	sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(spec.Name), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		p.version = info.PostgresVersion
		if p.version == "" {
			p.version = job.Annotations[AnnotationVersion]
		}
		r := &restorePlan{From: from.Instance, BackupID: from.BackupID, Target: from.Target.UTC(), Immediate: from.Immediate}
		if from.Target.IsZero() {
			r.Target = time.Time{}
		}
		r.StartWAL = info.StartWAL
		p.restore = r
	case err != nil:
		return fmt.Errorf("kubernetes: restore %s: %w", spec.Name, err)
	case p.restore == nil && sts.Annotations[AnnotationRestoredFrom] == from.Instance+"/"+from.BackupID:
		// Restored already: converge as Deploy would.
	case p.restore == nil || p.restore.From != from.Instance || p.restore.BackupID != from.BackupID:
		return fmt.Errorf("kubernetes: restore %s: an instance of that name exists and is not this restore", spec.Name)
	}
	p.restoredFrom = from.Instance + "/" + from.BackupID
	d.log.Info("restoring instance", "instance", p.name, "from", from.Instance, "backup", from.BackupID, "target", from.Target)
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
			return fmt.Errorf("kubernetes: restore %s: %s: %w", p.name, s.name, err)
		}
	}
	if p.restore == nil {
		return nil
	}
	if err := d.awaitReady(ctx, p.name); err != nil {
		return fmt.Errorf("kubernetes: restore %s: %w", p.name, err)
	}
	p.restore = nil
	if err := d.ensureStatefulSet(ctx, p); err != nil {
		return fmt.Errorf("kubernetes: restore %s: drop the restore init container: %w", p.name, err)
	}
	d.log.Info("instance restored", "instance", p.name, "from", from.Instance, "backup", from.BackupID)
	return nil
}

// awaitReady waits until the instance's StatefulSet has a ready replica.
func (d *Driver) awaitReady(ctx context.Context, name string) error {
	for {
		sts, err := d.client.AppsV1().StatefulSets(d.ns).Get(ctx, stsName(name), metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get statefulset: %w", err)
		}
		if sts.Status.ReadyReplicas > 0 && sts.Status.ObservedGeneration >= sts.Generation {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the pod to be ready: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
