// Package kubernetes is Toygres' Kubernetes data plane: every instance is a
// one-replica StatefulSet running the official PostgreSQL image, with its
// own Secret, PersistentVolumeClaim and Service, in one namespace, and,
// with standbys, a second StatefulSet and a read-only Service (see
// Standbys).
//
// # Cluster access
//
// New builds a client-go client from Options.RESTConfig, else from
// Options.Kubeconfig, else from the usual loading rules ($KUBECONFIG,
// ~/.kube/config) and, inside a pod, the in-cluster service account. The
// driver needs exactly the namespaced permissions RequiredPermissions lists
// (the Role in deploy/kubernetes/rbac.yaml) and nothing cluster-wide. Check,
// run at start, makes sure the API server answers, that the namespace
// (default "toygres") exists (creating it where the identity may), and that
// every permission is held (SelfSubjectAccessReviews); its errors name what
// is missing and the command that fixes it. It also learns whether internal
// (ClusterIP) endpoints are reachable from this process
// (InternalEndpointsReachable).
//
// # Resources of an instance
//
// For an instance <name> (Spec.Name, at most 52 bytes):
//
//	Secret                <name>-credentials  keys username, password
//	PersistentVolumeClaim <name>-pvc          ReadWriteOnce, Spec.StorageGB Gi, Options.StorageClass
//	StatefulSet           <name>              1 replica, pod <name>-0, container "postgres"
//	Service               <name>-svc          LoadBalancer (public) or ClusterIP (internal), port 5432
//
// Each carries the labels app.kubernetes.io/managed-by=toygres,
// app.kubernetes.io/name=postgres and toygres.io/instance=<name>; the
// StatefulSet and Service select pods by the first and the last. The pod
// gets the password through POSTGRES_PASSWORD from a secretKeyRef: it never
// appears as a literal in any object, nor in the driver's logs. The
// container runs as uid/gid 999 (Options.RunAsUser) with fsGroup 999, no
// privilege escalation, all capabilities dropped and the RuntimeDefault
// seccomp profile; PGDATA is /var/lib/postgresql/data/pgdata on the claim.
// It has startup, readiness and liveness probes (pg_isready, or a TCP
// check: Options.Probes) and resource requests and limits
// (Options.Resources). Public Services carry the DNS label in
// toygres.io/dns-label and in the cloud's annotation
// (Options.DNSLabelAnnotation, by default Azure's
// service.beta.kubernetes.io/azure-dns-label-name); with Options.DNSZone the
// endpoint's DNSName is <label>.<zone>.
//
// # Idempotency
//
// Deploy creates the four resources in order, and for each one that exists
// already (AlreadyExists) it fetches it, checks that it carries the
// instance's owner labels (else ErrNotManaged: the driver never adopts
// foreign objects) and converges it: the Secret's data, the StatefulSet's
// pod template (compared through a hash annotation) and the Service's type,
// ports and annotations are updated when they differ; a PVC is kept as it
// is. A Deploy retried after a partial create, or after the process was
// killed half way through, therefore completes the instance. Delete removes
// every resource carrying the instance's labels, whichever exist, ignoring
// NotFound, and is idempotent. ListManaged and Instances find resources of
// any instance for sweeps.
//
// # Readiness and endpoints
//
// Status follows the primary's pod's Ready condition (<name>-0 unless a
// standby was promoted): Pending, Running, Ready
// (plus Failed and Deleting). Endpoint reports the load balancer's address
// for public instances (ErrNotReady until it has one) and
// <name>-svc.<namespace>.svc.cluster.local for internal ones. Connection
// probes with the password happen in Toygres' test-connection activity, not
// here. Logs reads the container's log through the API server
// (ErrLogsUnavailable when the node cannot serve it).
//
// # Standbys
//
// The driver implements dataplane.Replicator. Server ids are pod ordinals:
// server 0 is pod <name>-0 of the instance's StatefulSet (on its claim
// <name>-pvc, as before), servers 1..n are pods <name>-r-1.. of a second
// StatefulSet <name>-r (spec.ordinals.start 1, selector plus
// toygres.io/set=standby) whose claims come from a volumeClaimTemplate
// (data-<name>-r-<id>, deleted when the set scales down or is deleted). Two
// sets because the existing instance's claim is not a template's and a
// StatefulSet's templates are immutable; the pods of both run the same
// container, whose role is not fixed by the set it belongs to.
//
// The source of truth is the annotation toygres.io/servers on the
// StatefulSet <name>: JSON of the primary's id, every server's role
// (primary, standby, fenced), the standby count and sync. The driver makes
// the pods' labels toygres.io/role and toygres.io/server follow it on every
// Replicator call (a recreated pod comes without them; Servers, which the
// health actor polls, puts them back). The Service <name>-svc selects
// toygres.io/role=primary, so it follows the primary, and Endpoint's
// MultiHost stays false; the read-only Service <name>-ro (same type as the
// primary's, without its DNS label) selects toygres.io/role=standby and is
// Endpoint.ReadOnly.
//
// Inside a pod, the replicated start script reads the pod's labels through
// a downward API volume (/etc/toygres/labels, which the kubelet keeps up to
// date): without a role, or fenced, it does not start postgres and waits;
// as a standby it clones the primary through the Service (pg_basebackup
// -R as the superuser, over the replication line of the driver's
// pg_hba.conf) when its data directory is empty or was not a standby's
// (a former primary or fenced server: there is no pg_rewind), then starts
// with standby.signal; as primary it starts without. A watcher loop in
// the container acts on label changes: primary while in recovery runs
// pg_ctl promote; fenced, or standby while not in recovery, stops postgres
// (fast shutdown), after which the container restarts into the wait or a
// fresh clone. The role last acted on is kept on the volume, so that a
// restarted container knows what its data directory is. With exec probes,
// readiness means "not in recovery" for the primary and "WAL receiver
// streaming" for a standby, so the Services list only pods that do what
// their label says, and Servers reports a ready standby as streaming.
//
// SetReplicas records the roles, switches the StatefulSet <name> to the
// replicated container (the first call recreates the primary's pod once;
// it waits until the new pod is labelled), scales <name>-r to n, sets the
// Services' selectors and labels the pods; sync adds
// synchronous_standby_names='ANY 1 (*)' to the servers' arguments (a
// change recreates the pods). Servers are removed from the highest id
// down; a scale that would remove the primary fails. Fence relabels at
// once (the pod leaves the Service's endpoints; the container stops postgres
// within about two seconds; open connections last until then). Promote
// fences any other primary, relabels and waits for the pod to be ready.
// Rebuild relabels a fenced server as a standby, which re-clones.
//
// Standby pods mount the instance's backup storage (a promoted standby
// archives into it): with the default ReadWriteOnce claim they carry a
// required pod affinity to the node of the instance's pods; with shared
// storage (ReadWriteMany, a custom BackupStorage) a preferred anti-affinity
// spreads them over nodes.
//
// Not known without a connection into the pods, which the driver does not
// open: replication lag and timelines (Servers reports 0), and the moment
// a fast shutdown or a promotion completes (Fence does not wait for it;
// Promote waits for the pod's readiness, which a probe reports only at its
// next period). The driver needs the patch verb on pods for the labels.
package kubernetes
