package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/toygres/toygres/internal/dataplane"
)

// DriverName is the name the Kubernetes driver reports (Driver.Name).
const DriverName = "kubernetes"

// Defaults of Options.
const (
	DefaultNamespace          = "toygres"
	DefaultImage              = "postgres:{version}"
	DefaultDNSLabelAnnotation = "service.beta.kubernetes.io/azure-dns-label-name"
	DefaultClusterDomain      = "cluster.local"
	DefaultStorageGB          = 10
	DefaultDeleteWait         = 30 * time.Second
	DefaultLogsTimeout        = 15 * time.Second
	DefaultLoadBalancerWait   = 60 * time.Second
	// DefaultRunAsUser is the uid (and gid, fsGroup) PostgreSQL runs as:
	// the postgres account of the official Debian-based images.
	DefaultRunAsUser int64 = 999
)

// DefaultVersions are the PostgreSQL major versions offered by default,
// newest first.
var DefaultVersions = []string{"18", "17", "16", "15"}

// Superuser, maintenance database and port of every instance.
const (
	SuperUser = "postgres"
	Database  = "postgres"
	Port      = 5432
)

// Labels and annotations the driver puts on every resource it creates.
const (
	// LabelManagedBy is app.kubernetes.io/managed-by=toygres on every resource.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "toygres"
	// LabelName is app.kubernetes.io/name=postgres.
	LabelName = "app.kubernetes.io/name"
	NameValue = "postgres"
	// LabelInstance holds the instance name (Spec.Name).
	LabelInstance = "toygres.io/instance"

	AnnotationVersion    = "toygres.io/postgres-version"
	AnnotationInternal   = "toygres.io/internal"
	AnnotationDNSLabel   = "toygres.io/dns-label"
	AnnotationConfigHash = "toygres.io/config-hash"
)

// Secret keys of an instance's credentials Secret.
const (
	SecretKeyUsername = "username"
	SecretKeyPassword = "password"
)

// ContainerName is the name of the PostgreSQL container (Logs reads it).
const ContainerName = "postgres"

// Phases reported by Status.
const (
	// PhasePending: resources exist but the pod is not running yet (being
	// created, unschedulable, pulling its image, waiting for its volume),
	// or Deploy has not finished creating them.
	PhasePending = "Pending"
	// PhaseRunning: the container runs but is not ready (starting,
	// recovering, failing its readiness probe).
	PhaseRunning = "Running"
	// PhaseReady: the pod is Ready (its readiness probe passes).
	PhaseReady = "Ready"
	// PhaseFailed: the pod has terminated.
	PhaseFailed = "Failed"
	// PhaseDeleting: the StatefulSet or pod is being deleted.
	PhaseDeleting = "Deleting"
)

var (
	// ErrNotReady is returned (wrapped) by Endpoint while a public
	// instance's load balancer has no address yet; retry later.
	ErrNotReady = errors.New("kubernetes: not ready yet")
	// ErrLogsUnavailable is returned (wrapped) by Logs when the API server
	// cannot serve the pod's logs (no pod, pod not started, kubelet
	// unreachable).
	ErrLogsUnavailable = errors.New("kubernetes: logs unavailable")
	// ErrNotManaged is returned (wrapped) by Deploy when a resource with an
	// instance's name exists but does not carry the instance's owner labels.
	ErrNotManaged = errors.New("kubernetes: resource exists but is not managed by toygres for this instance")
)

// Resources are the container's resource requests and limits, as
// Kubernetes quantities ("250m", "1Gi"). When every field is empty the
// defaults apply: requests 250m CPU and 256Mi memory, a 1Gi memory limit
// and no CPU limit. Otherwise exactly the fields set are used; "none" also
// means unset.
type Resources struct {
	CPURequest    string
	MemoryRequest string
	CPULimit      string
	MemoryLimit   string
}

// DefaultResources are the Resources used when Options.Resources is empty.
var DefaultResources = Resources{CPURequest: "250m", MemoryRequest: "256Mi", MemoryLimit: "1Gi"}

// ProbeKind selects how the kubelet checks the server.
type ProbeKind string

const (
	// ProbeExec runs pg_isready in the container (default).
	ProbeExec ProbeKind = "exec"
	// ProbeTCP opens a TCP connection to port 5432.
	ProbeTCP ProbeKind = "tcp"
	// ProbeNone sets no probes (readiness then means "container running").
	ProbeNone ProbeKind = "none"
)

// ProbeTiming tunes one probe; zero fields take the probe's defaults.
type ProbeTiming struct {
	InitialDelay     time.Duration
	Period           time.Duration
	Timeout          time.Duration
	FailureThreshold int32
}

// Probes configures the container's startup, readiness and liveness
// probes. Defaults: startup every 5s for up to 10 minutes (initdb, crash
// recovery), readiness every 5s (3 failures), liveness every 10s (6
// failures), each with a 5s timeout.
type Probes struct {
	Kind      ProbeKind
	Startup   ProbeTiming
	Readiness ProbeTiming
	Liveness  ProbeTiming
}

// Options configures a Driver. The zero value is usable: it reaches the
// cluster through the usual loading rules and deploys into "toygres".
type Options struct {
	// Kubeconfig is the kubeconfig file. Empty: the usual loading rules
	// ($KUBECONFIG, ~/.kube/config), then the in-cluster service account.
	Kubeconfig string
	// Context is the kubeconfig context (default: its current context).
	Context string
	// RESTConfig, when set, is used instead of Kubeconfig and Context.
	RESTConfig *rest.Config
	// Namespace holds the instances (default "toygres"); Check creates it
	// when missing if the identity may.
	Namespace string
	// Image is the PostgreSQL image; "{version}" is replaced by the major
	// version (default "postgres:{version}"). An image without the
	// placeholder is used for every version.
	Image string
	// ImagePullPolicy of the container (default: Kubernetes' default).
	ImagePullPolicy corev1.PullPolicy
	// ImagePullSecrets are names of Secrets in Namespace used to pull Image.
	ImagePullSecrets []string
	// Versions are the major versions offered, newest first (default 18,
	// 17, 16, 15).
	Versions []string
	// StorageClass of the data volumes (default: the cluster's default class).
	StorageClass string
	// DNSZone, when set, makes public instances with a DNS label reachable
	// as <label>.<DNSZone> (for AKS: "<region>.cloudapp.azure.com"); the
	// endpoint reports that name and connection strings use it.
	DNSZone string
	// DNSLabelAnnotation is the Service annotation that carries a public
	// instance's DNS label for the cloud's load balancer (default
	// service.beta.kubernetes.io/azure-dns-label-name; "-" for none).
	DNSLabelAnnotation string
	// ServiceAnnotations are added to the Services of public instances
	// (load balancer settings of the cloud).
	ServiceAnnotations map[string]string
	// LoadBalancerSourceRanges restricts which client CIDRs may reach public
	// instances: it becomes their Services' loadBalancerSourceRanges. Each
	// entry is an IPv4 or IPv6 prefix such as 203.0.113.0/24 (no host bits
	// set; see ParseSourceRanges). Empty: any source (the cloud's default).
	LoadBalancerSourceRanges []string
	// ClusterDomain is the cluster's DNS domain, for internal endpoints
	// (default "cluster.local").
	ClusterDomain string
	// Resources of the PostgreSQL container.
	Resources Resources
	// Probes of the PostgreSQL container.
	Probes Probes
	// RunAsUser is the uid, gid and fsGroup of the pod (default 999, the
	// postgres account of the official images; -1 leaves them to the image).
	RunAsUser int64
	// NodeSelector constrains where instances run.
	NodeSelector map[string]string
	// DeleteWait is how long Delete waits for the resources to disappear
	// before returning with their deletion under way (default 30s;
	// negative: do not wait).
	DeleteWait time.Duration
	// LogsTimeout bounds a Logs call (default 15s).
	LogsTimeout time.Duration
	// LoadBalancerWait is how long Endpoint waits for a new public
	// instance's load balancer to get an address before it fails with
	// ErrNotReady (default 60s, within the get-connection-strings
	// activity's 120s attempt timeout; negative: do not wait). Cloud load
	// balancers take one to three minutes; the activity's retries cover
	// the rest.
	LoadBalancerWait time.Duration
	// ServicePort is the port instances' Services expose and endpoints
	// report (default 5432, the container's port).
	ServicePort int32
	// Logger receives the driver's logs (default slog.Default()).
	Logger *slog.Logger

	// BackupStorage holds the instances' WAL archives and base backups
	// (default: a PVC <name>-backup per instance, sized BackupStorageGB,
	// of BackupStorageClass, with BackupAccessMode).
	BackupStorage BackupStorage
	// BackupStorageGB is the size of a backup PVC (default 20).
	BackupStorageGB int
	// BackupStorageClass is the storage class of backup PVCs (default:
	// StorageClass).
	BackupStorageClass string
	// BackupAccessMode of backup PVCs (default ReadWriteOnce: the backup
	// Jobs then carry a pod affinity to the instance's pod, and a restore
	// must land on the node of the source's pod, if it runs). With
	// ReadWriteMany (or a custom BackupStorage), pods mount the storage
	// from any node.
	BackupAccessMode corev1.PersistentVolumeAccessMode
}

// Driver runs PostgreSQL instances as StatefulSets in one namespace. It
// implements dataplane.Driver; its methods are safe for concurrent use.
type Driver struct {
	client   k8s.Interface
	ns       string
	image    string
	pull     corev1.PullPolicy
	pullSecs []string
	versions []string

	storageClass  string
	dnsZone       string
	dnsAnnotation string
	svcAnnots     map[string]string
	lbRanges      []string
	clusterDomain string

	resources corev1.ResourceRequirements
	probes    Probes
	runAsUser int64
	nodeSel   map[string]string

	deleteWait  time.Duration
	logsTimeout time.Duration
	lbWait      time.Duration
	svcPort     int32

	backups    BackupStorage
	backupMode corev1.PersistentVolumeAccessMode
	log        *slog.Logger

	apiHost string // the API server's address, for messages

	// internalErr, set by Check, is why internal endpoints cannot be
	// reached from this process (nil: they can).
	internalMu  sync.Mutex
	internalErr error
	// lookupHost resolves names for the internal-endpoint check (tests
	// replace it); inCluster reports whether this process runs in a pod.
	lookupHost func(ctx context.Context, host string) ([]string, error)
	inCluster  func() bool

	// afterStep, when set (tests), is called after each Deploy step
	// ("secret", "pvc", "statefulset", "service"); an error stops Deploy.
	afterStep func(step string) error
}

var _ dataplane.Driver = (*Driver)(nil)

// Client-side request limits of the driver's API client (when the
// configuration sets none).
const (
	clientQPS   = 50
	clientBurst = 100
)

// New returns a driver for the cluster that opts designates. It does not
// contact the API server; Check does.
func New(opts Options) (*Driver, error) {
	cfg := opts.RESTConfig
	if cfg == nil {
		var err error
		if cfg, err = loadConfig(opts.Kubeconfig, opts.Context); err != nil {
			return nil, err
		}
	} else {
		cfg = rest.CopyConfig(cfg)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "toygres"
	}
	// client-go's default client-side limit (5 requests/s, bursts of 10)
	// is meant for kubectl; a control plane that deploys, checks and backs
	// up many instances at once queued its calls for seconds behind it (a
	// takeover of six creates waited 5 s between two calls). The API
	// server's priority and fairness protects it; this only bounds a
	// runaway loop.
	if cfg.QPS == 0 {
		cfg.QPS = clientQPS
	}
	if cfg.Burst == 0 {
		cfg.Burst = clientBurst
	}
	client, err := k8s.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client: %w", err)
	}
	d, err := newDriver(client, opts)
	if err != nil {
		return nil, err
	}
	d.apiHost = cfg.Host
	return d, nil
}

// loadConfig follows client-go's loading rules: an explicit file, else
// $KUBECONFIG and ~/.kube/config, else the in-cluster service account.
func loadConfig(path, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: load cluster configuration (kubeconfig %q, $KUBECONFIG, ~/.kube/config or in-cluster): %w", path, err)
	}
	return cfg, nil
}

func newDriver(client k8s.Interface, opts Options) (*Driver, error) {
	d := &Driver{
		client:        client,
		ns:            opts.Namespace,
		image:         opts.Image,
		pull:          opts.ImagePullPolicy,
		pullSecs:      slices.Clone(opts.ImagePullSecrets),
		versions:      slices.Clone(opts.Versions),
		storageClass:  opts.StorageClass,
		dnsZone:       strings.Trim(opts.DNSZone, "."),
		dnsAnnotation: opts.DNSLabelAnnotation,
		svcAnnots:     map[string]string{},
		lbRanges:      slices.Clone(opts.LoadBalancerSourceRanges),
		clusterDomain: strings.Trim(opts.ClusterDomain, "."),
		probes:        opts.Probes,
		runAsUser:     opts.RunAsUser,
		nodeSel:       opts.NodeSelector,
		deleteWait:    opts.DeleteWait,
		logsTimeout:   opts.LogsTimeout,
		lbWait:        opts.LoadBalancerWait,
		svcPort:       opts.ServicePort,
		log:           opts.Logger,
		lookupHost:    net.DefaultResolver.LookupHost,
		inCluster:     func() bool { return os.Getenv("KUBERNETES_SERVICE_HOST") != "" },
	}
	if d.ns == "" {
		d.ns = DefaultNamespace
	}
	if errs := validation.IsDNS1123Label(d.ns); len(errs) > 0 {
		return nil, fmt.Errorf("kubernetes: invalid namespace %q: %s", d.ns, strings.Join(errs, "; "))
	}
	if d.image == "" {
		d.image = DefaultImage
	}
	if len(d.versions) == 0 {
		d.versions = slices.Clone(DefaultVersions)
	}
	for _, v := range d.versions {
		if !versionRE.MatchString(v) {
			return nil, fmt.Errorf("kubernetes: invalid PostgreSQL version %q: want a major version such as 17", v)
		}
	}
	if d.storageClass != "" {
		if errs := validation.IsDNS1123Subdomain(d.storageClass); len(errs) > 0 {
			return nil, fmt.Errorf("kubernetes: invalid storage class %q: %s", d.storageClass, strings.Join(errs, "; "))
		}
	}
	if d.dnsZone != "" {
		if errs := validation.IsDNS1123Subdomain(d.dnsZone); len(errs) > 0 {
			return nil, fmt.Errorf("kubernetes: invalid DNS zone %q: %s", d.dnsZone, strings.Join(errs, "; "))
		}
	}
	switch d.dnsAnnotation {
	case "":
		d.dnsAnnotation = DefaultDNSLabelAnnotation
	case "-":
		d.dnsAnnotation = ""
	default:
		if errs := validation.IsQualifiedName(d.dnsAnnotation); len(errs) > 0 {
			return nil, fmt.Errorf("kubernetes: invalid DNS label annotation %q: %s", d.dnsAnnotation, strings.Join(errs, "; "))
		}
	}
	for k, v := range opts.ServiceAnnotations {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("kubernetes: invalid service annotation %q: %s", k, strings.Join(errs, "; "))
		}
		d.svcAnnots[k] = v
	}
	if err := validateSourceRanges(d.lbRanges); err != nil {
		return nil, err
	}
	if d.clusterDomain == "" {
		d.clusterDomain = DefaultClusterDomain
	}
	var err error
	if d.resources, err = opts.Resources.requirements(); err != nil {
		return nil, err
	}
	switch d.probes.Kind {
	case "":
		d.probes.Kind = ProbeExec
	case ProbeExec, ProbeTCP, ProbeNone:
	default:
		return nil, fmt.Errorf("kubernetes: unknown probe kind %q (want exec, tcp or none)", d.probes.Kind)
	}
	if d.runAsUser == 0 {
		d.runAsUser = DefaultRunAsUser
	}
	if d.deleteWait == 0 {
		d.deleteWait = DefaultDeleteWait
	}
	if d.lbWait == 0 {
		d.lbWait = DefaultLoadBalancerWait
	}
	if d.logsTimeout <= 0 {
		d.logsTimeout = DefaultLogsTimeout
	}
	switch {
	case d.svcPort == 0:
		d.svcPort = Port
	case d.svcPort < 1 || d.svcPort > 65535:
		return nil, fmt.Errorf("kubernetes: invalid service port %d", d.svcPort)
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.backupMode = opts.BackupAccessMode
	if opts.BackupStorage != nil {
		d.backups = opts.BackupStorage
		if d.backupMode == "" {
			d.backupMode = corev1.ReadWriteMany
		}
	} else {
		switch d.backupMode {
		case "":
			d.backupMode = corev1.ReadWriteOnce
		case corev1.ReadWriteOnce, corev1.ReadWriteMany:
		default:
			return nil, fmt.Errorf("kubernetes: invalid backup access mode %q (want ReadWriteOnce or ReadWriteMany)", d.backupMode)
		}
		gb := opts.BackupStorageGB
		if gb == 0 {
			gb = DefaultBackupStorageGB
		}
		if gb < 0 {
			return nil, fmt.Errorf("kubernetes: invalid backup storage size %d GB", gb)
		}
		class := opts.BackupStorageClass
		if class == "" {
			class = d.storageClass
		}
		d.backups = &pvcStorage{d: d, size: *resource.NewQuantity(int64(gb)<<30, resource.BinarySI), class: class, mode: d.backupMode}
	}
	d.log = d.log.With("driver", DriverName, "namespace", d.ns)
	return d, nil
}

var versionRE = regexp.MustCompile(`^[1-9][0-9]*$`)

func (r Resources) requirements() (corev1.ResourceRequirements, error) {
	if r == (Resources{}) {
		r = DefaultResources
	}
	var req corev1.ResourceRequirements
	for _, f := range []struct {
		value string
		what  string
		list  *corev1.ResourceList
		name  corev1.ResourceName
	}{
		{r.CPURequest, "CPU request", &req.Requests, corev1.ResourceCPU},
		{r.MemoryRequest, "memory request", &req.Requests, corev1.ResourceMemory},
		{r.CPULimit, "CPU limit", &req.Limits, corev1.ResourceCPU},
		{r.MemoryLimit, "memory limit", &req.Limits, corev1.ResourceMemory},
	} {
		if f.value == "" || f.value == "none" {
			continue
		}
		q, err := resource.ParseQuantity(f.value)
		if err != nil {
			return req, fmt.Errorf("kubernetes: invalid %s %q: %w", f.what, f.value, err)
		}
		if *f.list == nil {
			*f.list = corev1.ResourceList{}
		}
		(*f.list)[f.name] = q
	}
	return req, nil
}

// Name returns "kubernetes".
func (d *Driver) Name() string { return DriverName }

// Namespace returns the namespace holding the instances.
func (d *Driver) Namespace() string { return d.ns }

// Client returns the driver's Kubernetes client.
func (d *Driver) Client() k8s.Interface { return d.client }

// Versions returns the configured major versions, newest first.
func (d *Driver) Versions(ctx context.Context) ([]string, error) {
	return slices.Clone(d.versions), nil
}

// Permission is one API permission the driver needs in its namespace.
type Permission struct {
	Group    string // "" is the core group
	Resource string // may carry a subresource: "pods/log"
	Verbs    []string
}

// RequiredPermissions lists exactly what the driver does with the API, all
// in its namespace: the rules of the Role in deploy/kubernetes.
func RequiredPermissions() []Permission {
	return []Permission{
		{"", "secrets", []string{"get", "list", "create", "update", "delete"}},
		{"", "persistentvolumeclaims", []string{"get", "list", "create", "delete"}},
		{"", "services", []string{"get", "list", "create", "update", "delete"}},
		{"", "pods", []string{"get", "list", "patch", "delete"}},
		{"", "pods/log", []string{"get"}},
		{"apps", "statefulsets", []string{"get", "list", "create", "update", "delete"}},
		{"batch", "jobs", []string{"get", "list", "create", "update", "delete"}},
	}
}

// Resource names of an instance.
func secretName(name string) string  { return name + "-credentials" }
func pvcName(name string) string     { return name + "-pvc" }
func stsName(name string) string     { return name }
func serviceName(name string) string { return name + "-svc" }
func podName(name string) string     { return name + "-0" }

// maxNameLen keeps the StatefulSet's pods within label limits: the
// controller-revision-hash label is "<name>-<hash of up to 10 chars>".
const maxNameLen = 52

func validName(name string) error {
	if len(name) > maxNameLen || len(validation.IsDNS1035Label(name)) > 0 {
		return fmt.Errorf("kubernetes: invalid instance name %q: want lower-case letters, digits and hyphens, starting with a letter, at most %d bytes", name, maxNameLen)
	}
	return nil
}
