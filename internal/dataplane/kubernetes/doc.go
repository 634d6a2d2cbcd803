// Package kubernetes is Toygres' Kubernetes data plane: every instance is a
// one-replica StatefulSet running the official PostgreSQL image, with its
// own Secret, PersistentVolumeClaim and Service, in one namespace.
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
// Status follows pod <name>-0's Ready condition: Pending, Running, Ready
// (plus Failed and Deleting). Endpoint reports the load balancer's address
// for public instances (ErrNotReady until it has one) and
// <name>-svc.<namespace>.svc.cluster.local for internal ones. Connection
// probes with the password happen in Toygres' test-connection activity, not
// here. Logs reads the container's log through the API server
// (ErrLogsUnavailable when the node cannot serve it).
package kubernetes
