package kubernetes

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/toygres/toygres/internal/dataplane"
)

// finishJob sets a Job's status as the Job controller does when its pod
// succeeded or failed (kwok runs no containers).
func finishJob(t *testing.T, c k8s.Interface, ns, name string, ok bool) {
	t.Helper()
	ctx := testCtx(t)
	job, err := c.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get job %s: %v", name, err)
	}
	markFinished(job, ok)
	if _, err := c.BatchV1().Jobs(ns).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("finish job %s: %v", name, err)
	}
}

// markFinished sets the status the Job controller would give job once its
// pod succeeded (ok) or it ran out of retries. A start time the controller
// already set is kept: the API server refuses to change it.
func markFinished(job *batchv1.Job, ok bool) {
	now := metav1.Now()
	if job.Status.StartTime == nil {
		job.Status.StartTime = &now
	}
	job.Status.Active = 0
	job.Status.Ready = nil
	job.Status.Terminating = nil
	cond := func(tp batchv1.JobConditionType, reason string) batchv1.JobCondition {
		return batchv1.JobCondition{Type: tp, Status: corev1.ConditionTrue, Reason: reason, LastProbeTime: now, LastTransitionTime: now}
	}
	if ok {
		job.Status.Succeeded = 1
		job.Status.CompletionTime = &now
		job.Status.Conditions = append(job.Status.Conditions, cond(batchv1.JobSuccessCriteriaMet, "CompletionsReached"), cond(batchv1.JobComplete, "CompletionsReached"))
	} else {
		job.Status.Failed = 3
		job.Status.Conditions = append(job.Status.Conditions, cond(batchv1.JobFailureTarget, "BackoffLimitExceeded"), cond(batchv1.JobFailed, "BackoffLimitExceeded"))
	}
}

// awaitJob waits for the Job to exist (and not be deleting) and returns it.
func awaitJob(t *testing.T, c k8s.Interface, ns, name string, notUID string) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	eventually(t, 30*time.Second, "job "+name, func() (bool, string) {
		j, err := c.BatchV1().Jobs(ns).Get(testCtx(t), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if j.DeletionTimestamp != nil || string(j.UID) == notUID {
			return false, "old job"
		}
		job = j
		return true, ""
	})
	return job
}

// autoComplete completes every Job of the given kinds of instance as soon
// as it appears, until the test ends (a stand-in for running containers).
func autoComplete(t *testing.T, c k8s.Interface, ns, instance string, kinds ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		reported := map[string]bool{}
		for ctx.Err() == nil {
			l, err := c.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelBackupOf + "=" + instance})
			if err == nil {
				for i := range l.Items {
					j := &l.Items[i]
					if complete, failed, _ := jobState(j); complete || failed || !slices.Contains(kinds, j.Labels[LabelJob]) {
						continue
					}
					markFinished(j, true)
					// A conflict with the Job controller is tried again on
					// the next round, with the Job as it is then; any other
					// refusal is reported (once per Job) so a stuck wait says why.
					_, err := c.BatchV1().Jobs(ns).UpdateStatus(ctx, j, metav1.UpdateOptions{})
					if err != nil && !apierrors.IsConflict(err) && ctx.Err() == nil && !reported[j.Name] {
						reported[j.Name] = true
						t.Logf("autoComplete: job %s: %v", j.Name, err)
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
}

type backupResult struct {
	info dataplane.BackupInfo
	err  error
}

func startBackup(ctx context.Context, d *Driver, name, id string) chan backupResult {
	ch := make(chan backupResult, 1)
	go func() {
		info, err := d.Backup(ctx, name, id)
		ch <- backupResult{info, err}
	}()
	return ch
}

// parked returns a driver whose Job pods are never scheduled (kwok would
// otherwise complete them), so that the test alone decides how Jobs end.
// It must not deploy: its StatefulSets would not be scheduled either.
func parked(t *testing.T, cfg *rest.Config, ns string) *Driver {
	return newTestDriver(t, cfg, ns, func(o *Options) { o.NodeSelector = map[string]string{"toygres.io/test-no-such-node": "x"} })
}

func TestBackups(t *testing.T) {
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	deployer := newTestDriver(t, cfg, ns, nil)
	d := parked(t, cfg, ns)
	ctx := testCtx(t)
	name := instanceName("bk")
	if err := deployer.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword); err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	waitReady(t, deployer, name)

	// Archiving: the server's settings and the backup volume.
	sts, err := c.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ct := sts.Spec.Template.Spec.Containers[0]
	args := strings.Join(ct.Args, " ")
	for _, want := range []string{"wal_level=replica", "archive_mode=on", "archive_command=" + archiveCommand, "hba_file=" + hbaFile} {
		if !strings.Contains(args, want) {
			t.Errorf("server args %q lack %q", args, want)
		}
	}
	if !slices.ContainsFunc(ct.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == backupVolume && m.MountPath == "/backup" }) {
		t.Errorf("no /backup mount: %+v", ct.VolumeMounts)
	}
	if !slices.ContainsFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == name+"-backup"
	}) {
		t.Errorf("no backup PVC volume: %+v", sts.Spec.Template.Spec.Volumes)
	}
	pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name+"-backup", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("backup pvc: %v", err)
	}
	if pvc.Labels[LabelBackupOf] != name || pvc.Labels[LabelInstance] != "" || pvc.Labels[LabelManagedBy] != ManagedByValue {
		t.Errorf("backup pvc labels %v", pvc.Labels)
	}
	if st, err := d.ArchiveStatus(ctx, name); err != nil || !st.Enabled {
		t.Errorf("ArchiveStatus = %+v, %v", st, err)
	}

	// A backup: the Job's shape, then its success.
	ch := startBackup(ctx, d, name, "b1")
	job := awaitJob(t, c, ns, name+"-backup-b1", "")
	if job.Labels[LabelBackupOf] != name || job.Labels[LabelBackupID] != "b1" || job.Labels[LabelJob] != "backup" || job.Labels[LabelInstance] != "" {
		t.Errorf("job labels %v", job.Labels)
	}
	pod := job.Spec.Template.Spec
	jc := pod.Containers[0]
	script := strings.Join(jc.Command, " ")
	for _, want := range []string{"pg_basebackup", "-X stream", "pg_verifybackup", `"$b/$ID.partial"`, `mv "$b/$ID.partial" "$b/$ID"`} {
		if !strings.Contains(script, want) {
			t.Errorf("backup command lacks %q", want)
		}
	}
	if jc.Image != "postgres:18" {
		t.Errorf("image %s", jc.Image)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range jc.Env {
		env[e.Name] = e
	}
	if env["ID"].Value != "b1" || env["PGHOST"].Value != serviceName(name)+"."+ns+".svc.cluster.local" || env["PGUSER"].Value != SuperUser {
		t.Errorf("env %+v", jc.Env)
	}
	if r := env["PGPASSWORD"].ValueFrom; r == nil || r.SecretKeyRef == nil || r.SecretKeyRef.Name != secretName(name) || env["PGPASSWORD"].Value != "" {
		t.Errorf("PGPASSWORD not from the secret: %+v", env["PGPASSWORD"])
	}
	if len(jc.VolumeMounts) != 1 || jc.VolumeMounts[0].MountPath != "/backup" || pod.Volumes[0].PersistentVolumeClaim.ClaimName != name+"-backup" {
		t.Errorf("volumes %+v %+v", jc.VolumeMounts, pod.Volumes)
	}
	if sc := pod.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || *sc.RunAsUser != DefaultRunAsUser {
		t.Errorf("pod security %+v", sc)
	}
	if sc := jc.SecurityContext; *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 {
		t.Errorf("container security %+v", sc)
	}
	if a := pod.Affinity; a == nil || a.PodAffinity == nil || len(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("no required affinity to the instance's node: %+v", a)
	}
	if pod.RestartPolicy != corev1.RestartPolicyNever || *pod.AutomountServiceAccountToken {
		t.Errorf("pod spec %+v", pod)
	}
	if got, _ := d.ListBackups(ctx, name); len(got) != 0 {
		t.Errorf("a running backup is listed: %+v", got)
	}
	finishJob(t, c, ns, job.Name, true)
	r := <-ch
	if r.err != nil || r.info.ID != "b1" || r.info.Instance != name || r.info.PostgresVersion != "18" || r.info.FinishedAt.IsZero() {
		t.Fatalf("Backup = %+v, %v", r.info, r.err)
	}
	// Idempotent: the completed Job is the backup.
	again, err := d.Backup(ctx, name, "b1")
	if err != nil || again.ID != "b1" || !again.FinishedAt.Equal(r.info.FinishedAt) {
		t.Fatalf("Backup again = %+v, %v", again, err)
	}

	// A failed Job: Backup fails, nothing is listed; a retry replaces the Job.
	ch = startBackup(ctx, d, name, "b2")
	job2 := awaitJob(t, c, ns, name+"-backup-b2", "")
	finishJob(t, c, ns, job2.Name, false)
	if r := <-ch; !errors.Is(r.err, errJobFailed) {
		t.Fatalf("Backup of a failed job = %+v, %v", r.info, r.err)
	}
	got, err := d.ListBackups(ctx, name)
	if err != nil || len(got) != 1 || got[0].ID != "b1" {
		t.Fatalf("ListBackups = %+v, %v", got, err)
	}
	retryCtx, cancel := context.WithCancel(ctx)
	ch = startBackup(retryCtx, d, name, "b2")
	awaitJob(t, c, ns, name+"-backup-b2", string(job2.UID))
	cancel()
	if r := <-ch; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Backup = %v", r.err)
	}

	// DeleteBackup: the Job goes first, then a removal Job runs.
	autoComplete(t, c, ns, name, jobRemove, jobPrune, jobFlush)
	for range 2 {
		if err := d.DeleteBackup(ctx, name, "b1"); err != nil {
			t.Fatalf("DeleteBackup: %v", err)
		}
	}
	if got, _ := d.ListBackups(ctx, name); len(got) != 0 {
		t.Errorf("ListBackups after DeleteBackup = %+v", got)
	}
	if _, err := d.PruneWAL(ctx, name, "000000010000000000000003"); err != nil {
		t.Fatalf("PruneWAL: %v", err)
	}
	if err := d.FlushArchive(ctx, name); err != nil {
		t.Fatalf("FlushArchive: %v", err)
	}

	// SetArchiving off changes the archive command (the pod rolls).
	if err := deployer.SetArchiving(ctx, name, false); err != nil {
		t.Fatal(err)
	}
	if st, err := d.ArchiveStatus(ctx, name); err != nil || st.Enabled {
		t.Errorf("ArchiveStatus after SetArchiving(false) = %+v, %v", st, err)
	}
	sts, _ = c.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if !slices.Contains(sts.Spec.Template.Spec.Containers[0].Args, "archive_command=:") {
		t.Errorf("args %v", sts.Spec.Template.Spec.Containers[0].Args)
	}
	if err := deployer.Deploy(ctx, dataplane.Spec{Name: name, StorageGB: 1}, testPassword); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.ArchiveStatus(ctx, name); st.Enabled {
		t.Errorf("Deploy turned archiving back on")
	}
	if err := deployer.SetArchiving(ctx, name, true); err != nil {
		t.Fatal(err)
	}

	// Delete keeps the backups; DeleteBackups removes Jobs and PVC.
	ch = startBackup(ctx, d, name, "b3")
	finishJob(t, c, ns, awaitJob(t, c, ns, name+"-backup-b3", "").Name, true)
	if r := <-ch; r.err != nil {
		t.Fatal(r.err)
	}
	if err := d.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if got, err := d.ListBackups(ctx, name); err != nil || len(got) != 1 || got[0].ID != "b3" {
		t.Fatalf("ListBackups after Delete = %+v, %v", got, err)
	}
	for range 2 {
		if err := d.DeleteBackups(ctx, name); err != nil {
			t.Fatalf("DeleteBackups: %v", err)
		}
	}
	eventually(t, 30*time.Second, "backups gone", func() (bool, string) {
		jobs, err := d.backupJobs(ctx, name, "")
		if err != nil {
			return false, err.Error()
		}
		for _, j := range jobs {
			if j.DeletionTimestamp == nil {
				return false, "job " + j.Name
			}
		}
		p, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name+"-backup", metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err == nil && p.DeletionTimestamp != nil {
			return true, ""
		}
		return false, "pvc remains"
	})
}

func TestRestore(t *testing.T) {
	cfg := restConfig(t)
	c := adminClient(t)
	ns := testNamespace(t, c)
	d := newTestDriver(t, cfg, ns, nil)
	dp := parked(t, cfg, ns)
	ctx := testCtx(t)
	src := instanceName("src")
	if err := d.Deploy(ctx, dataplane.Spec{Name: src, StorageGB: 1, PostgresVersion: "17"}, testPassword); err != nil {
		t.Fatal(err)
	}
	waitReady(t, d, src)
	ch := startBackup(ctx, dp, src, "b1")
	finishJob(t, c, ns, awaitJob(t, c, ns, src+"-backup-b1", "").Name, true)
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	autoComplete(t, c, ns, src, jobFlush)

	// Errors: unknown backup, a target before the backup.
	dst := instanceName("dst")
	if err := d.Restore(ctx, dataplane.Spec{Name: dst}, testPassword, dataplane.RestoreSource{Instance: src, BackupID: "nope"}); !errors.Is(err, dataplane.ErrBackupNotFound) {
		t.Errorf("Restore of a missing backup: %v", err)
	}
	early := r.info.FinishedAt.Add(-time.Hour)
	if err := d.Restore(ctx, dataplane.Spec{Name: dst}, testPassword, dataplane.RestoreSource{Instance: src, BackupID: "b1", Target: early}); !errors.Is(err, dataplane.ErrRestoreTarget) {
		t.Errorf("Restore to before the backup: %v", err)
	}

	// The init container's shape (the pod is ready too soon under kwok to
	// catch it in the API).
	target := r.info.FinishedAt.Add(time.Minute)
	p, err := d.plan(ctx, dataplane.Spec{Name: dst, StorageGB: 1})
	if err != nil {
		t.Fatal(err)
	}
	p.version = "17"
	p.restore = &restorePlan{From: src, BackupID: "b1", Target: target, StartWAL: "000000010000000000000002"}
	spec := d.statefulSet(p).Spec.Template.Spec
	if len(spec.InitContainers) != 1 {
		t.Fatalf("init containers %+v", spec.InitContainers)
	}
	ic := spec.InitContainers[0]
	script := strings.Join(ic.Command, " ")
	for _, want := range []string{"pg_verifybackup", "recovery.signal", "restore_command = 'cp " + restoreWALDir + "/%f %p'", "recovery_target_action = 'promote'", `mv "$d/pgdata.restore" "$d/pgdata"`} {
		if !strings.Contains(script, want) {
			t.Errorf("restore script lacks %q", want)
		}
	}
	env := map[string]string{}
	for _, e := range ic.Env {
		env[e.Name] = e.Value
	}
	if env["ID"] != "b1" || env["START_WAL"] != "000000010000000000000002" ||
		env["TARGET"] != "recovery_target_time = '"+target.UTC().Format("2006-01-02 15:04:05.999999+00")+"'" {
		t.Errorf("init env %v", env)
	}
	var srcVol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == sourceVolume {
			srcVol = &spec.Volumes[i]
		}
	}
	if srcVol == nil || srcVol.PersistentVolumeClaim.ClaimName != src+"-backup" || !srcVol.PersistentVolumeClaim.ReadOnly {
		t.Errorf("source volume %+v", srcVol)
	}
	if !slices.ContainsFunc(ic.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == sourceVolume && m.ReadOnly }) {
		t.Errorf("source not mounted read-only: %+v", ic.VolumeMounts)
	}
	if ic.Image != "postgres:17" || *ic.SecurityContext.AllowPrivilegeEscalation {
		t.Errorf("init container %+v", ic)
	}
	p.restore.Immediate, p.restore.Target = true, time.Time{}
	if got := d.statefulSet(p).Spec.Template.Spec.InitContainers[0].Env[2].Value; got != "recovery_target = 'immediate'" {
		t.Errorf("immediate target %q", got)
	}

	// The restore itself: created with the init container, which is
	// dropped once the pod is ready; a second call converges.
	for i := range 2 {
		if err := d.Restore(ctx, dataplane.Spec{Name: dst, StorageGB: 1, Internal: true}, "new-password", dataplane.RestoreSource{Instance: src, BackupID: "b1", Target: target}); err != nil {
			t.Fatalf("Restore %d: %v", i, err)
		}
	}
	sts, err := c.AppsV1().StatefulSets(ns).Get(ctx, dst, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sts.Spec.Template.Spec.InitContainers) != 0 || sts.Annotations[AnnotationRestoredFrom] != src+"/b1" || sts.Annotations[AnnotationVersion] != "17" {
		t.Errorf("restored statefulset: init %d, annotations %v", len(sts.Spec.Template.Spec.InitContainers), sts.Annotations)
	}
	sec, err := c.CoreV1().Secrets(ns).Get(ctx, secretName(dst), metav1.GetOptions{})
	if err != nil || string(sec.Data[SecretKeyPassword]) != "new-password" {
		t.Errorf("secret %v", err)
	}
	// The flush Job ran against the source before the restore.
	revs, err := c.AppsV1().ControllerRevisions(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelInstance + "=" + dst})
	if err != nil || len(revs.Items) < 2 {
		t.Errorf("want the restore revision and the one after it, got %d (%v)", len(revs.Items), err)
	}
	if err := d.Restore(ctx, dataplane.Spec{Name: dst}, testPassword, dataplane.RestoreSource{Instance: src, BackupID: "other"}); err == nil {
		t.Errorf("Restore over an instance restored from another backup succeeded")
	}
}
