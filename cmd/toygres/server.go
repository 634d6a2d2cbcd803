package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cli"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/config"
	"github.com/toygres/toygres/internal/dataplane/kubernetes"
	"github.com/toygres/toygres/internal/logging"
	"github.com/toygres/toygres/internal/telemetry"
	"github.com/toygres/toygres/internal/tlscert"
	"github.com/toygres/toygres/internal/web"
)

// Server timing.
const (
	startTimeout         = 2 * time.Minute  // background start: until /health answers
	stopTimeout          = 30 * time.Second // server stop: SIGTERM, then SIGKILL
	httpShutdownTimeout  = 5 * time.Second
	appShutdownTimeout   = 15 * time.Second
	telemetryFlushTime   = 5 * time.Second
	credentialTokenTTL   = 30 * 24 * time.Hour
	credentialRefreshGap = 24 * time.Hour
)

// serverOptions are `server start`'s flags.
type serverOptions struct {
	foreground      bool
	daemon          bool // started by a background `server start` (hidden)
	port            int
	listen          string
	databaseURL     string
	actorInterval   time.Duration
	failover        failoverFlags
	logLevel        string
	adminUser       string
	orchConcurrency int
	actConcurrency  int
	otlpEndpoint    string
	dataplane       string
	namespace       string
	kubeconfig      string
	k8sStorageClass string
	k8sDNSZone      string
	k8sImage        string
	retention       app.Retention
	k8sServicePort  int
	secretKeyFile   string
	secretKey       []byte // parsed from --secret-key-file or TOYGRES_SECRET_KEY
	orchLockTimeout time.Duration
	actLockTimeout  time.Duration

	// TLS and HTTP (see serverTLS).
	tlsMode      string // auto, on, off
	tlsCert      string
	tlsKey       string
	readTimeout  time.Duration
	writeTimeout time.Duration
	idleTimeout  time.Duration

	k8sAllowedSources string   // --k8s-allowed-sources as given
	k8sSources        []string // parsed

	configFile string         // --config
	config     *config.Config // loaded from --config and the environment
}

func newServerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run and manage the Toygres server (start, stop, status, logs)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown server command %q (want start, stop, status, logs or retries)", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newServerStartCmd(g), newServerStopCmd(g), newServerStatusCmd(g), newServerLogsCmd(g),
		newServerRetriesCmd(g))
	return cmd
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func newServerStartCmd(g *globals) *cobra.Command {
	o := &serverOptions{}
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start the server (in the background unless -f)",
		Long: `Start the Toygres server: the REST API and the durable orchestrations.

By default the server runs in the background: this command starts it
detached, waits until its /health answers and prints its PID, URL and log
file. With -f it runs in the foreground and stops on Ctrl-C or SIGTERM
(PostgreSQL instances keep running either way).

Once up, the server writes <data dir>/credentials.json (mode 0600) with its
URL and a bearer token, which the CLI on this machine uses without a login.
The admin password (for 'toygres login' and the API) is
$TOYGRES_ADMIN_PASSWORD, or generated on first start and printed once.

HTTPS. On loopback (the default, 127.0.0.1) the server speaks plain HTTP.
Listening beyond loopback it speaks HTTPS: with --tls-cert/--tls-key, or
else with a self-signed certificate (ECDSA P-256) generated on the first
start and kept in <data dir>/tls (mode 0600). The certificate's SHA-256
fingerprint is printed at start and written to credentials.json, so the
CLI on this machine pins it; elsewhere run 'toygres login --url https://…
--fingerprint SHA256:…'. --tls=on uses HTTPS on loopback too; --tls=off
serves plain HTTP everywhere (only behind a proxy that terminates TLS).

Environment: TOYGRES_HOME (data dir), TOYGRES_PORT, TOYGRES_DATABASE_URL,
TOYGRES_DATAPLANE, TOYGRES_NAMESPACE, TOYGRES_SECRET_KEY, TOYGRES_SECRET_KEY_FILE,
TOYGRES_ADMIN_PASSWORD, TOYGRES_ADMIN_USERNAME, TOYGRES_LOG_LEVEL,
TOYGRES_TLS, TOYGRES_TLS_CERT, TOYGRES_TLS_KEY, TOYGRES_K8S_ALLOWED_SOURCES,
OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP export of metrics and logs; see
deploy/observability/README.md).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.port < 0 || o.port > 65535 {
				return usagef("invalid --port %d", o.port)
			}
			if o.actorInterval <= 0 {
				return usagef("--actor-interval must be positive")
			}
			if err := o.failover.validate(); err != nil {
				return err
			}
			if o.retention.JanitorInterval <= 0 {
				return usagef("--retention-janitor-interval must be positive")
			}
			if o.retention.KeepExecutions == 0 || o.retention.HealthChecksPerInstance == 0 || o.retention.Orchestrations == 0 || o.retention.HealthChecks == 0 {
				return usagef("--retention-* values must be positive, or negative to keep everything")
			}
			if o.k8sServicePort < 1 || o.k8sServicePort > 65535 {
				return usagef("invalid --k8s-service-port %d", o.k8sServicePort)
			}
			if o.orchLockTimeout <= 0 || o.actLockTimeout <= 0 {
				return usagef("--orchestration-lock-timeout and --activity-lock-timeout must be positive")
			}
			if o.dataplane != "local" && o.dataplane != "kubernetes" {
				return usagef("invalid --dataplane %q (want local or kubernetes)", o.dataplane)
			}
			if o.databaseURL == "" {
				o.databaseURL = os.Getenv("TOYGRES_DATABASE_URL")
			}
			if _, err := logging.ParseLevel(o.logLevel); err != nil {
				return usagef("%v", err)
			}
			if err := loadSecretKey(o); err != nil {
				return err
			}
			if err := checkTLSOptions(o); err != nil {
				return err
			}
			if o.readTimeout <= 0 || o.writeTimeout <= 0 || o.idleTimeout <= 0 {
				return usagef("--http-read-timeout, --http-write-timeout and --http-idle-timeout must be positive")
			}
			var err error
			if o.k8sSources, err = kubernetes.ParseSourceRanges(o.k8sAllowedSources); err != nil {
				return usagef("--k8s-allowed-sources: %v", strings.TrimPrefix(err.Error(), "kubernetes: "))
			}
			if err := loadServerConfig(o); err != nil {
				return err
			}
			dir, err := filepath.Abs(g.dataDir)
			if err != nil {
				return err
			}
			g.dataDir = dir
			if o.foreground {
				return runServer(cmd.Context(), g, o)
			}
			return startBackground(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.foreground, "foreground", "f", false, "run in the foreground (Ctrl-C stops the server)")
	f.IntVarP(&o.port, "port", "p", envInt("TOYGRES_PORT", 8080), "HTTP port (env TOYGRES_PORT; 0 picks a free one)")
	f.StringVar(&o.listen, "listen", "127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
	f.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL URL for the durable store and the catalogue (env TOYGRES_DATABASE_URL; default: SQLite in the data dir)")
	f.DurationVar(&o.actorInterval, "actor-interval", 30*time.Second, "health check period of every instance")
	o.failover.register(f)
	f.StringVar(&o.logLevel, "log-level", "", "log level: debug, info, warn, error (env TOYGRES_LOG_LEVEL; default info)")
	f.StringVar(&o.adminUser, "admin-user", firstNonEmpty(os.Getenv("TOYGRES_ADMIN_USERNAME"), "admin"), "admin user name (env TOYGRES_ADMIN_USERNAME)")
	f.IntVar(&o.orchConcurrency, "orchestration-concurrency", 10, "orchestration dispatchers")
	f.IntVar(&o.actConcurrency, "activity-concurrency", app.DefaultActivityConcurrency, "activity workers")
	f.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "also export metrics, logs and traces over OTLP/HTTP to this receiver, e.g. http://127.0.0.1:4318 (env OTEL_EXPORTER_OTLP_ENDPOINT; default: no export)")
	f.StringVar(&o.dataplane, "dataplane", firstNonEmpty(os.Getenv("TOYGRES_DATAPLANE"), "local"), "where instances run: local (server processes on this machine) or kubernetes (env TOYGRES_DATAPLANE)")
	f.StringVar(&o.namespace, "namespace", firstNonEmpty(os.Getenv("TOYGRES_NAMESPACE"), "toygres"), "Kubernetes namespace for instances (env TOYGRES_NAMESPACE)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account)")
	f.StringVar(&o.k8sStorageClass, "k8s-storage-class", "", "storage class of instance volumes (default: the cluster's default)")
	f.StringVar(&o.k8sDNSZone, "k8s-dns-zone", "", "DNS zone for public instances' DNS names (<label>.<zone>)")
	f.StringVar(&o.k8sImage, "k8s-image", "", "PostgreSQL image, {version} is replaced (default postgres:{version})")
	r := app.Retention{}.WithDefaults()
	f.IntVar(&o.retention.KeepExecutions, "retention-executions", r.KeepExecutions, "executions kept per continue-as-new chain (health actors, janitor); -1 keeps all")
	f.DurationVar(&o.retention.JanitorInterval, "retention-janitor-interval", r.JanitorInterval, "how often the janitor prunes the stores")
	f.DurationVar(&o.retention.Orchestrations, "retention-orchestrations", r.Orchestrations, "how long finished create/delete/health-actor orchestrations are kept; -1s keeps them")
	f.DurationVar(&o.retention.HealthChecks, "retention-health-checks", r.HealthChecks, "how long health check rows are kept; -1s keeps them")
	f.IntVar(&o.retention.HealthChecksPerInstance, "retention-health-checks-per-instance", r.HealthChecksPerInstance, "newest health check rows kept per instance; -1 for no cap")
	f.IntVar(&o.k8sServicePort, "k8s-service-port", 5432, "port instance Services expose (and connection strings use)")
	f.StringVar(&o.secretKeyFile, "secret-key-file", os.Getenv("TOYGRES_SECRET_KEY_FILE"), "file with the secret key that encrypts instance passwords (64 hex digits or base64), e.g. from a Kubernetes Secret; required with --database-url unless TOYGRES_SECRET_KEY is set (env TOYGRES_SECRET_KEY_FILE; default: <data dir>/secret.key, generated, SQLite only)")
	f.DurationVar(&o.orchLockTimeout, "orchestration-lock-timeout", 5*time.Second, "lease of a running orchestration turn, renewed while the turn runs")
	f.DurationVar(&o.actLockTimeout, "activity-lock-timeout", 30*time.Second, "lease of a running activity, renewed every third of it while the activity runs (a dead server's leases are taken over within seconds whatever this is)")
	f.StringVar(&o.tlsMode, "tls", firstNonEmpty(os.Getenv("TOYGRES_TLS"), "auto"), "HTTPS: auto (beyond loopback only), on (also on loopback) or off (plain HTTP everywhere; only behind a TLS-terminating proxy) (env TOYGRES_TLS)")
	f.StringVar(&o.tlsCert, "tls-cert", os.Getenv("TOYGRES_TLS_CERT"), "PEM certificate (chain) for HTTPS, with --tls-key (env TOYGRES_TLS_CERT; default: a self-signed one in <data dir>/tls when HTTPS is on)")
	f.StringVar(&o.tlsKey, "tls-key", os.Getenv("TOYGRES_TLS_KEY"), "PEM private key of --tls-cert (env TOYGRES_TLS_KEY)")
	f.DurationVar(&o.readTimeout, "http-read-timeout", api.DefaultReadTimeout, "longest time to read a request, headers and body (slower clients get 408)")
	f.DurationVar(&o.writeTimeout, "http-write-timeout", api.DefaultWriteTimeout, "longest time to answer a request")
	f.DurationVar(&o.idleTimeout, "http-idle-timeout", api.DefaultIdleTimeout, "how long an idle keep-alive connection stays open")
	f.StringVar(&o.k8sAllowedSources, "k8s-allowed-sources", os.Getenv("TOYGRES_K8S_ALLOWED_SOURCES"), "comma-separated CIDRs allowed to reach public instances' load balancers, e.g. 203.0.113.0/24,10.0.0.0/8 (env TOYGRES_K8S_ALLOWED_SOURCES; default: any address)")
	f.StringVar(&o.configFile, "config", os.Getenv("TOYGRES_CONFIG"), "YAML or TOML file of retry policies and the data-plane circuit breaker, overridden by TOYGRES_RETRY__<ACTIVITY>__<FIELD> and TOYGRES_BREAKER__<FIELD> (env TOYGRES_CONFIG; see 'toygres server config')")
	f.BoolVar(&o.daemon, "daemon", false, "internal: started by a background 'server start'")
	for _, h := range []string{"daemon", "orchestration-concurrency", "activity-concurrency"} {
		_ = f.MarkHidden(h)
	}
	return cmd
}

// loadSecretKey reads the secret key from --secret-key-file or
// TOYGRES_SECRET_KEY (not both) into o.secretKey, and makes the file's path
// absolute for a background server.
func loadSecretKey(o *serverOptions) error {
	env := os.Getenv("TOYGRES_SECRET_KEY")
	switch {
	case o.secretKeyFile != "" && env != "":
		return usagef("set --secret-key-file (or TOYGRES_SECRET_KEY_FILE) or TOYGRES_SECRET_KEY, not both")
	case o.secretKeyFile != "":
		abs, err := filepath.Abs(o.secretKeyFile)
		if err != nil {
			return err
		}
		o.secretKeyFile = abs
		key, err := cms.ReadKeyFile(abs, nil)
		if err != nil {
			return fmt.Errorf("--secret-key-file: %w", err)
		}
		o.secretKey = key
	case env != "":
		key, err := cms.ParseKey(env)
		if err != nil {
			return fmt.Errorf("TOYGRES_SECRET_KEY: %w", err)
		}
		o.secretKey = key
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// serverURL is the URL clients on this machine use for a listen address.
func serverURL(listen string, port int, https bool) string {
	host := listen
	switch host {
	case "", "0.0.0.0", "::", "[::]":
		host = "127.0.0.1"
	}
	scheme := "http://"
	if https {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}

// isLoopback reports whether a listen address is reachable from this
// machine only.
func isLoopback(listen string) bool {
	h := strings.Trim(listen, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// checkTLSOptions validates the TLS flags and, for a given certificate,
// loads it now (a bad file is a start error, also for a background start)
// and makes the paths absolute for the background server.
func checkTLSOptions(o *serverOptions) error {
	switch o.tlsMode {
	case "auto", "on", "off":
	default:
		return usagef("invalid --tls %q (want auto, on or off)", o.tlsMode)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together (env TOYGRES_TLS_CERT and TOYGRES_TLS_KEY)")
	}
	if o.tlsCert == "" {
		return nil
	}
	if o.tlsMode == "off" {
		return usagef("--tls=off with --tls-cert: choose one")
	}
	var err error
	if o.tlsCert, err = filepath.Abs(o.tlsCert); err != nil {
		return err
	}
	if o.tlsKey, err = filepath.Abs(o.tlsKey); err != nil {
		return err
	}
	_, err = tlscert.Load(o.tlsCert, o.tlsKey)
	return err
}

// serverTLS is the server's certificate, or nil for plain HTTP: the given
// one, else (HTTPS on: --tls=on, or auto beyond loopback) the self-signed
// one in <data dir>/tls.
func serverTLS(o *serverOptions, dataDir string, log *slog.Logger) (*tlscert.Cert, error) {
	switch {
	case o.tlsCert != "":
		return tlscert.Load(o.tlsCert, o.tlsKey)
	case o.tlsMode == "off":
		if !isLoopback(o.listen) {
			log.Warn("serving plain HTTP beyond loopback (--tls=off): passwords and tokens travel in clear unless a proxy terminates TLS", "listen", o.listen)
		}
		return nil, nil
	case o.tlsMode == "auto" && isLoopback(o.listen):
		return nil, nil
	}
	c, err := tlscert.LoadOrGenerate(filepath.Join(dataDir, "tls"), tlscert.Hosts(o.listen), time.Now())
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	return c, nil
}

// runServer runs the server in this process until ctx ends (SIGINT/SIGTERM).
func runServer(ctx context.Context, g *globals, o *serverOptions) (err error) {
	dataDir := g.dataDir
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	lock, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	defer lock.Close()

	var stdout io.Writer = g.stdout
	if o.daemon {
		stdout = nil // stdout is the log file already
	}
	lg, err := logging.Setup(logging.Options{File: logPath(dataDir), Stdout: stdout, Level: o.logLevel})
	if err != nil {
		return err
	}
	defer lg.Close()
	// One registry for /metrics and the optional OTLP export.
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log, stopTelemetry, err := telemetry.Setup(ctx, telemetry.Config{Endpoint: o.otlpEndpoint, ServiceVersion: version,
		Gatherer: metrics, Logger: lg.Logger})
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.Background(), telemetryFlushTime)
		defer cancel()
		_ = stopTelemetry(fctx)
	}()
	slog.SetDefault(log)
	pid := os.Getpid()
	store := "sqlite"
	if o.databaseURL != "" {
		store = "postgres"
	}
	log.Info("toygres server starting", "version", version, "pid", pid, "data_dir", dataDir,
		"listen", net.JoinHostPort(o.listen, strconv.Itoa(o.port)), "store", store,
		"database_url", logging.Redact(o.databaseURL), "actor_interval", o.actorInterval.String(), "log_level", lg.Level.String())
	defer func() {
		if err != nil {
			log.Error("toygres server failed", "error", err.Error())
		}
	}()

	wrapDriver, err := testFaults(log)
	if err != nil {
		return err
	}

	a, err := app.Open(ctx, app.Config{
		DataDir: dataDir, DatabaseURL: o.databaseURL, ActorInterval: o.actorInterval,
		FailoverCheckInterval: o.failover.interval, FailoverThreshold: o.failover.threshold, Logger: log, WrapDriver: wrapDriver, Metrics: metrics,
		OrchestrationConcurrency: o.orchConcurrency, ActivityConcurrency: o.actConcurrency,
		SecretKey: o.secretKey, OrchestrationLockTimeout: o.orchLockTimeout, ActivityLockTimeout: o.actLockTimeout,
		Dataplane: o.dataplane, Retention: o.retention, TracerProvider: telemetry.TracerProvider(),
		RetryPolicies: o.config.RetryPolicies(), CircuitBreakers: dataPlaneBreakers(o.config),
		Kubernetes: kubernetes.Options{Kubeconfig: o.kubeconfig, Namespace: o.namespace, StorageClass: o.k8sStorageClass,
			DNSZone: o.k8sDNSZone, Image: o.k8sImage, ServicePort: int32(o.k8sServicePort), LoadBalancerSourceRanges: o.k8sSources},
	})
	if err != nil {
		return err
	}
	appClosed := false
	closeApp := func() {
		if appClosed {
			return
		}
		appClosed = true
		cctx, cancel := context.WithTimeout(context.Background(), appShutdownTimeout)
		defer cancel()
		if err := a.Close(cctx); err != nil {
			log.Warn("runtime shutdown timed out; in-flight activities were cancelled", "error", err.Error())
		}
	}
	defer closeApp()

	srv, err := api.New(a, api.Options{
		AdminUser: o.adminUser, AdminPassword: os.Getenv("TOYGRES_ADMIN_PASSWORD"), // StateDir: <data dir>/auth (0700)
		LogFile: logPath(dataDir), Version: version,
		SharedSessions: sharedSessions(o, a), RetryConfig: o.config,
	})
	if err != nil {
		return fmt.Errorf("start API: %w", err)
	}
	// The API and the web console are siblings over the app: the API serves
	// /api and guards every path with its login; the console's pages fill
	// the rest and submit their forms to the API in-process.
	console, err := web.New(web.Options{App: a, User: srv.AdminUser(), Version: version, Logger: log,
		Config: srv.ServerConfig, Retries: srv.ServerRetries})
	if err != nil {
		return fmt.Errorf("start web console: %w", err)
	}
	console.Register(srv.Pages())
	cert, err := serverTLS(o, dataDir, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(o.listen, strconv.Itoa(o.port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	url := serverURL(o.listen, port, cert != nil)
	hopts := api.HTTPOptions{ReadTimeout: o.readTimeout, WriteTimeout: o.writeTimeout, IdleTimeout: o.idleTimeout,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	fingerprint := ""
	if cert != nil {
		hopts.TLS = tlscert.ServerConfig(cert)
		fingerprint = cert.Fingerprint
		log.Info("HTTPS", "certificate", cert.CertFile, "fingerprint", fingerprint, "self_signed", cert.SelfSigned,
			"generated", cert.Generated, "expires", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		if !o.daemon {
			fmt.Fprintf(g.stdout, "HTTPS certificate %s\n  fingerprint: %s\n  (clients elsewhere: toygres login --url https://<host>:%d --fingerprint %s)\n",
				cert.CertFile, fingerprint, port, fingerprint)
		}
	}
	hs := srv.NewHTTPServer(hopts)
	hs.Handler = telemetry.HTTPMiddleware(hs.Handler) // the API request span is the root of its trace
	serveErr := make(chan error, 1)
	go func() {
		if hopts.TLS != nil {
			serveErr <- hs.ServeTLS(ln, "", "")
		} else {
			serveErr <- hs.Serve(ln)
		}
	}()

	if err := writePID(dataDir, pid); err != nil {
		log.Warn("writing the PID file failed", "error", err.Error())
	}
	defer removePIDIfOwn(dataDir, pid)
	credPath := cli.ServerCredentialsPath(dataDir)
	if err := writeServerCredentials(srv, credPath, url, fingerprint, o.adminUser, pid); err != nil {
		_ = hs.Close()
		return fmt.Errorf("write %s: %w", credPath, err)
	}
	defer removeServerCredentials(credPath, pid)

	if pw := srv.GeneratedPassword(); pw != "" {
		announcePassword(g, o, dataDir, o.adminUser, pw, log)
	}
	log.Info("toygres server ready", "url", url, "pid", pid, "credentials", credPath, "log_file", logPath(dataDir))

	refresh := time.NewTicker(credentialRefreshGap)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("toygres server stopping", "reason", "signal")
			sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
			if err := hs.Shutdown(sctx); err != nil {
				_ = hs.Close()
			}
			cancel()
			closeApp()
			log.Info("toygres server stopped; PostgreSQL instances keep running")
			return nil
		case err := <-serveErr:
			closeApp()
			return fmt.Errorf("HTTP server: %w", err)
		case <-refresh.C:
			if err := writeServerCredentials(srv, credPath, url, fingerprint, o.adminUser, pid); err != nil {
				log.Warn("refreshing the credential file failed", "error", err.Error())
			}
		}
	}
}

// writeServerCredentials issues a token and writes credentials.json (0600)
// with the server's URL and certificate fingerprint ("" for plain HTTP).
func writeServerCredentials(srv *api.Server, path, url, fingerprint, user string, pid int) error {
	token, err := srv.IssueToken(credentialTokenTTL)
	if err != nil {
		return fmt.Errorf("issue token: %w", err)
	}
	return cli.WriteCredentials(path, &cli.Credentials{URL: url, Token: token, Fingerprint: fingerprint,
		ExpiresAt: time.Now().Add(credentialTokenTTL).UTC().Truncate(time.Second), Username: user, PID: pid})
}

func removeServerCredentials(path string, pid int) {
	if c, err := cli.ReadCredentials(path); err == nil && c.PID == pid {
		_ = os.Remove(path)
	}
}

// announcePassword shows a generated admin password once. In the
// foreground it goes to stdout (never to the log file). A background
// server cannot show it, so it writes it to a one-time file (0600) in the
// data dir, which `server start` prints and deletes.
func announcePassword(g *globals, o *serverOptions, dataDir, user, pw string, log *slog.Logger) {
	if o.daemon {
		if err := os.WriteFile(initialPasswordPath(dataDir), []byte(user+"\n"+pw+"\n"), 0o600); err != nil {
			log.Warn("writing the one-time admin password file failed", "error", err.Error())
			return
		}
		log.Info("admin password generated; 'toygres server start' shows it once")
		return
	}
	fmt.Fprint(g.stdout, passwordBanner(user, pw))
	log.Info("admin password generated and shown on the terminal")
}

func passwordBanner(user, pw string) string {
	return fmt.Sprintf("\nGenerated admin credentials (shown once; set TOYGRES_ADMIN_PASSWORD to choose your own):\n  user:     %s\n  password: %s\n\n", user, pw)
}

// showInitialPassword prints and deletes the one-time password file.
func showInitialPassword(g *globals) {
	path := initialPasswordPath(g.dataDir)
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.SplitN(strings.TrimRight(string(b), "\n"), "\n", 2)
	if len(lines) == 2 {
		fmt.Fprint(g.stdout, passwordBanner(lines[0], lines[1]))
	}
	_ = os.Remove(path)
}

// startBackground starts `server start -f --daemon` detached, waits for it
// to answer and prints where it is.
func startBackground(ctx context.Context, g *globals, o *serverOptions) error {
	dataDir := g.dataDir
	if pid, err := runningServer(dataDir); err != nil {
		return err
	} else if pid != 0 {
		u, fp := "", ""
		if c, err := cli.ReadCredentials(cli.ServerCredentialsPath(dataDir)); err == nil {
			u, fp = c.URL, c.Fingerprint
		}
		fmt.Fprintf(g.stdout, "Toygres server is already running (PID %d)\n", pid)
		if u != "" {
			fmt.Fprintf(g.stdout, "  URL:  %s\n", u)
		}
		if fp != "" {
			fmt.Fprintf(g.stdout, "  Certificate:  %s\n", fp)
		}
		fmt.Fprintf(g.stdout, "  Log:  %s\n", logPath(dataDir))
		showInitialPassword(g)
		return nil
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the toygres binary: %w", err)
	}
	logFile, err := os.OpenFile(logPath(dataDir), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	defer logFile.Close()
	offset, _ := logFile.Seek(0, io.SeekEnd)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()

	args := []string{"server", "start", "--foreground", "--daemon",
		"--data-dir", dataDir, "--port", strconv.Itoa(o.port), "--listen", o.listen,
		"--actor-interval", o.actorInterval.String(), "--admin-user", o.adminUser,
		"--orchestration-concurrency", strconv.Itoa(o.orchConcurrency), "--activity-concurrency", strconv.Itoa(o.actConcurrency),
		"--orchestration-lock-timeout", o.orchLockTimeout.String(), "--activity-lock-timeout", o.actLockTimeout.String(),
		"--tls", o.tlsMode, "--http-read-timeout", o.readTimeout.String(), "--http-write-timeout", o.writeTimeout.String(),
		"--http-idle-timeout", o.idleTimeout.String()}
	if o.logLevel != "" {
		args = append(args, "--log-level", o.logLevel)
	}
	args = append(args, "--retention-executions", strconv.Itoa(o.retention.KeepExecutions),
		"--retention-janitor-interval", o.retention.JanitorInterval.String(),
		"--retention-orchestrations", o.retention.Orchestrations.String(),
		"--retention-health-checks", o.retention.HealthChecks.String(),
		"--retention-health-checks-per-instance", strconv.Itoa(o.retention.HealthChecksPerInstance))
	if o.otlpEndpoint != "" {
		args = append(args, "--otlp-endpoint", o.otlpEndpoint)
	}
	args = append(args, "--dataplane", o.dataplane, "--namespace", o.namespace, "--k8s-service-port", strconv.Itoa(o.k8sServicePort))
	args = append(args, o.failover.args()...)
	for flag, v := range map[string]string{"--secret-key-file": o.secretKeyFile, "--kubeconfig": o.kubeconfig, "--k8s-storage-class": o.k8sStorageClass, "--k8s-dns-zone": o.k8sDNSZone, "--k8s-image": o.k8sImage,
		"--tls-cert": o.tlsCert, "--tls-key": o.tlsKey, "--config": o.configFile, "--k8s-allowed-sources": strings.Join(o.k8sSources, ",")} {
		if v != "" {
			args = append(args, flag, v)
		}
	}
	child := exec.Command(exe, args...)
	// The database URL may hold a password: pass it in the environment, not
	// on the command line where ps shows it.
	child.Env = append(os.Environ(), "TOYGRES_DATABASE_URL="+o.databaseURL)
	child.Stdin, child.Stdout, child.Stderr = devnull, logFile, logFile
	child.Dir = dataDir
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	closeInheritedFDs()
	if err := child.Start(); err != nil {
		return fmt.Errorf("start server process: %w", err)
	}
	pid := child.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()

	url := ""
	fingerprint := ""
	credPath := cli.ServerCredentialsPath(dataDir)
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			msg := startupFailure(logPath(dataDir), offset)
			if msg == "" {
				msg = fmt.Sprintf("server process exited during start-up (%v)", err)
			}
			return fmt.Errorf("%s (log: %s)", msg, logPath(dataDir))
		case <-ctx.Done():
			_ = child.Process.Signal(syscall.SIGTERM)
			return ctx.Err()
		case <-deadline.C:
			_ = child.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("server (PID %d) did not answer within %v; stopped it (log: %s)", pid, startTimeout, logPath(dataDir))
		case <-tick.C:
		}
		// Ready once this child has written its credentials (after its
		// listener is up) and its /health answers.
		c, err := cli.ReadCredentials(credPath)
		if err != nil || c.PID != pid {
			continue
		}
		// Over HTTPS, /health answers through the certificate the server
		// pinned in its credentials: the same check the CLI makes.
		hc := cli.NewClient(c.URL, "")
		if err := hc.Pin(c.Fingerprint, credPath); err != nil {
			return fmt.Errorf("server (PID %d) wrote a bad fingerprint in %s: %w", pid, credPath, err)
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = hc.Health(hctx)
		cancel()
		var certErr *cli.CertificateError
		if errors.As(err, &certErr) {
			return fmt.Errorf("server (PID %d) started, but: %w", pid, err)
		}
		if err != nil {
			continue
		}
		url, fingerprint = c.URL, c.Fingerprint
		break
	}
	_ = child.Process.Release()
	fmt.Fprintf(g.stdout, "Toygres server started (PID %d)\n", pid)
	fmt.Fprintf(g.stdout, "  URL:          %s\n", url)
	if fingerprint != "" {
		fmt.Fprintf(g.stdout, "  Certificate:  %s (elsewhere: toygres login --url %s --fingerprint %s)\n", fingerprint, url, fingerprint)
	}
	fmt.Fprintf(g.stdout, "  Log:          %s\n", logPath(dataDir))
	fmt.Fprintf(g.stdout, "  Data:         %s\n", dataDir)
	fmt.Fprintf(g.stdout, "  Credentials:  %s\n", credPath)
	showInitialPassword(g)
	return nil
}

// closeInheritedFDs marks every descriptor above stderr close-on-exec.
// Go opens its own files that way, but descriptors this process inherited
// (a shell's or a test runner's pipes) would otherwise leak into the
// long-lived server and keep those pipes open.
func closeInheritedFDs() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// startupFailure finds why a background server died: its last error
// record, or the plain "toygres: …" line the process printed on stderr.
func startupFailure(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	msg := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "toygres: ") {
			msg = strings.TrimPrefix(line, "toygres: ")
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["level"] == "ERROR" {
			if e, ok := rec["error"].(string); ok && e != "" {
				msg = e
			} else if m, ok := rec["msg"].(string); ok {
				msg = m
			}
		}
	}
	return msg
}

func newServerStopCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the server (SIGTERM, then SIGKILL after 30s); instances keep running",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := runningServer(g.dataDir)
			if err != nil {
				return err
			}
			if pid == 0 {
				fmt.Fprintln(g.stdout, "Toygres server is not running")
				return nil
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("signal server (PID %d): %w", pid, err)
			}
			fmt.Fprintf(g.stdout, "Stopping Toygres server (PID %d)...\n", pid)
			if !waitExit(pid, stopTimeout) {
				fmt.Fprintf(g.stdout, "Server did not stop within %v; killing it\n", stopTimeout)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				waitExit(pid, 5*time.Second)
			}
			removePIDIfOwn(g.dataDir, pid)
			removeServerCredentials(cli.ServerCredentialsPath(g.dataDir), pid)
			fmt.Fprintln(g.stdout, "Toygres server stopped")
			return nil
		},
	}
}

func newServerStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the server runs (PID and /health); exit status 3 when it does not",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := runningServer(g.dataDir)
			if err != nil {
				return err
			}
			if pid == 0 {
				fmt.Fprintf(g.stdout, "Toygres server is not running (data dir %s)\n", g.dataDir)
				return &exitCodeError{code: exitNotRunning}
			}
			url := cli.NormalizeURL(g.url)
			if url == "" {
				if c, err := cli.ReadCredentials(cli.ServerCredentialsPath(g.dataDir)); err == nil {
					url = cli.NormalizeURL(c.URL)
				}
			}
			fmt.Fprintf(g.stdout, "Toygres server is running (PID %d)\n", pid)
			fmt.Fprintf(g.stdout, "  Data:    %s\n", g.dataDir)
			fmt.Fprintf(g.stdout, "  Log:     %s\n", logPath(g.dataDir))
			if url == "" {
				return fmt.Errorf("the server (PID %d) has not written its credentials yet; it may still be starting", pid)
			}
			fmt.Fprintf(g.stdout, "  URL:     %s\n", url)
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			fp, src := g.localServerPin(url)
			hc, err := g.newClient(url, "", fp, src)
			if err != nil {
				return err
			}
			if fp := hc.Fingerprint; fp != "" {
				fmt.Fprintf(g.stdout, "  TLS:     %s\n", fp)
			}
			h, err := hc.Health(ctx)
			var certErr *cli.CertificateError
			if errors.As(err, &certErr) {
				return err
			}
			if err != nil {
				return fmt.Errorf("the server (PID %d) does not answer at %s: %v", pid, url, err)
			}
			fmt.Fprintf(g.stdout, "  Health:  %s\n", h.Status)
			if h.Version != "" {
				fmt.Fprintf(g.stdout, "  Version: %s\n", h.Version)
			}
			return nil
		},
	}
}

// signalContext is the context a long-running command stops on.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// sharedSessions is where the API keeps login sessions: in the shared store
// when servers share one (--database-url), so every replica honours a token
// any of them issued; nil (a file in the data dir) otherwise.
func sharedSessions(o *serverOptions, a *app.App) cms.SessionStore {
	if o.databaseURL == "" {
		return nil
	}
	return a.Sessions()
}
