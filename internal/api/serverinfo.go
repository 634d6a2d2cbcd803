package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/toygres/toygres/internal/app"
	"github.com/toygres/toygres/internal/cms"
	"github.com/toygres/toygres/internal/redact"
)

// maxLogScan bounds how much of the log file one request reads (from the end).
const maxLogScan = 64 << 20

// handleServerLogs is GET /api/server/logs?limit=200&grep=text&orchestration=ID:
// the last limit lines of the log file containing grep and the
// orchestration id (plain substring matches), oldest first.
func (s *Server) handleServerLogs(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r, "limit", 200, 1, 10_000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	grep, orch := r.URL.Query().Get("grep"), r.URL.Query().Get("orchestration")
	out := ServerLogs{File: s.opts.LogFile, Lines: []string{}}
	if s.opts.LogFile != "" {
		lines, err := tailMatching(s.opts.LogFile, limit, maxLogScan, func(l string) bool {
			return (grep == "" || strings.Contains(l, grep)) && (orch == "" || strings.Contains(l, orch))
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.fail(w, r, err)
			return
		}
		if lines != nil {
			out.Lines = lines
		}
	}
	out.Count = len(out.Lines)
	writeJSON(w, http.StatusOK, out)
}

// tailMatching returns the last limit lines of path that match, oldest
// first, reading backwards at most maxScan bytes.
func tailMatching(path string, limit int, maxScan int64, match func(string) bool) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const chunk = 64 << 10
	var (
		pos     = fi.Size()
		stop    = max(pos-maxScan, 0)
		carry   []byte // the partial line at the start of the previous chunk
		matches []string
		buf     = make([]byte, chunk)
	)
	for pos > stop && len(matches) < limit {
		n := int64(chunk)
		if pos-stop < n {
			n = pos - stop
		}
		pos -= n
		if _, err := f.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		data := append(append([]byte(nil), buf[:n]...), carry...)
		lines := bytes.Split(data, []byte{'\n'})
		if pos > stop {
			carry, lines = lines[0], lines[1:]
		} else {
			carry = nil
		}
		for i := len(lines) - 1; i >= 0 && len(matches) < limit; i-- {
			l := strings.TrimRight(string(lines[i]), "\r")
			if l != "" && match(l) {
				matches = append(matches, l)
			}
		}
	}
	for i, j := 0, len(matches)-1; i < j; i, j = i+1, j-1 {
		matches[i], matches[j] = matches[j], matches[i]
	}
	return matches, nil
}

// handleServerStats is GET /api/server/stats.
func (s *Server) handleServerStats(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, err := s.app.InstanceCounts(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.app.Orchestrations().Stats(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := ServerStats{
		Instances:      InstanceStats{ByState: map[string]int{}, ByHealth: map[string]int{}},
		Orchestrations: OrchestrationStats{ByStatus: map[string]int{}, OrchestratorQueue: st.OrchestratorQueue, WorkerQueue: st.WorkerQueue},
		GeneratedAt:    time.Now().UTC(),
	}
	for _, state := range states {
		n := c.ByState[state]
		out.Instances.ByState[string(state)] = n
		out.Instances.Total += n
	}
	for _, h := range []cms.Health{cms.HealthHealthy, cms.HealthUnhealthy, cms.HealthUnknown} {
		out.Instances.ByHealth[string(h)] = c.ByHealth[h]
	}
	for _, status := range orchestrationStatuses {
		out.Orchestrations.ByStatus[string(status)] = 0
	}
	for status, n := range st.Instances {
		out.Orchestrations.ByStatus[string(status)] = n
		out.Orchestrations.Total += n
	}
	writeJSON(w, http.StatusOK, out)
}

// handleServerConfig is GET /api/server/config: the effective
// configuration, with secrets masked.
func (s *Server) handleServerConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.serverConfig(r.Context()))
}

// serverConfig is the effective configuration, with secrets masked (the
// API's config endpoint and the console's System page).
func (s *Server) serverConfig(ctx context.Context) ServerConfig {
	cfg := s.app.Config()
	db := "sqlite:" + filepath.Join(cfg.DataDir, "toygres.db")
	if cfg.DatabaseURL != "" {
		db = redact.URL(cfg.DatabaseURL)
	}
	metrics := "loopback clients and logged-in sessions"
	switch {
	case s.opts.PublicMetrics:
		metrics = "public"
	case s.opts.MetricsToken != "":
		metrics = "loopback clients, logged-in sessions and the metrics bearer token"
	}
	out := ServerConfig{
		Version: s.opts.Version, GoVersion: runtime.Version(), StartedAt: s.startedAt.UTC(),
		DataDir: cfg.DataDir, Database: db, Dataplane: s.app.DataplaneName(),
		ActorInterval:            cfg.ActorInterval.String(),
		OrchestrationConcurrency: cfg.OrchestrationConcurrency, ActivityConcurrency: cfg.ActivityConcurrency,
		AdminUser: s.adminUser, AdminPassword: redact.Mark, StateDir: s.opts.StateDir, LogFile: s.opts.LogFile,
		SessionTTL: s.opts.SessionTTL.String(), TokenTTL: s.opts.TokenTTL.String(), Metrics: metrics,
		LoginRateLimit: fmt.Sprintf("%d failures per %s per client address", loginMaxFailures, loginWindow),
	}
	if v, err := s.app.Versions(ctx); err == nil {
		out.PostgresVersions = v
	}
	out.Retention = retentionConfig(cfg.Retention)
	out.Retry, out.CircuitBreaker = s.retryConfig()
	return out
}

func retentionConfig(r app.Retention) RetentionConfig {
	r = r.WithDefaults()
	n := func(v int) string {
		if v < 0 {
			return "all"
		}
		return strconv.Itoa(v)
	}
	d := func(v time.Duration) string {
		if v < 0 {
			return "forever"
		}
		return v.String()
	}
	return RetentionConfig{ExecutionsPerChain: n(r.KeepExecutions), JanitorInterval: r.JanitorInterval.String(),
		Orchestrations: d(r.Orchestrations), HealthChecks: d(r.HealthChecks), HealthChecksPerInstance: n(r.HealthChecksPerInstance)}
}
