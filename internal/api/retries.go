package api

import (
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/activities"
	"github.com/toygres/toygres/internal/config"
)

// effectiveConfig is the retry configuration the app runs with: the one
// it was loaded from, else the built-in defaults with the app's own
// overrides marked as configured.
func (s *Server) effectiveConfig() *config.Config {
	if s.opts.RetryConfig != nil {
		return s.opts.RetryConfig
	}
	cfg, err := config.Load("", nil, config.Defaults{Retry: activities.DefaultPolicies(), Breaker: activities.DefaultDataPlaneBreaker})
	if err != nil { // the built-in defaults are valid
		return &config.Config{}
	}
	for i, p := range cfg.Retry {
		if o, ok := s.app.Config().RetryPolicies[p.Activity]; ok {
			cfg.Retry[i].Policy, cfg.Retry[i].Source = o, "options"
		}
	}
	for _, name := range activities.DataPlaneActivities {
		if b, ok := s.app.Config().CircuitBreakers[name]; ok {
			cfg.Breaker.Config, cfg.Breaker.Source = b, "options"
			break
		}
	}
	return cfg
}

// retryConfig is the retry section of /api/server/config.
func (s *Server) retryConfig() ([]RetryPolicyInfo, *BreakerInfo) {
	cfg := s.effectiveConfig()
	out := make([]RetryPolicyInfo, 0, len(cfg.Retry))
	for _, p := range cfg.Retry {
		out = append(out, policyInfo(p.Activity, p.Policy, string(p.Source), p.Fields))
	}
	b := cfg.Breaker
	c := b.Config
	probes := c.Probes
	if probes <= 0 {
		probes = 1
	}
	bi := &BreakerInfo{FailureRatio: c.FailureRatio, Window: c.Window.String(), MinCalls: c.MinCalls, CoolDown: c.CoolDown.String(),
		Probes: probes, Activities: slices.Sorted(slices.Values(activities.DataPlaneActivities)), Source: string(b.Source), Fields: sources(b.Fields)}
	return out, bi
}

func sources(m map[string]config.Source) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func policyInfo(activity string, p duroxide.RetryPolicy, source string, fields map[string]config.Source) RetryPolicyInfo {
	r := p.Record()
	d := func(v time.Duration) string {
		if v == 0 {
			return ""
		}
		return v.String()
	}
	return RetryPolicyInfo{Activity: activity, Summary: p.Summary(), MaxAttempts: p.MaxAttempts, Backoff: r.Backoff,
		Base: d(r.Base), Max: d(r.Max), Multiplier: r.Multiplier, Timeout: d(p.Timeout), TotalTimeout: d(p.TotalTimeout),
		Jitter: p.Jitter, Source: source, Fields: sources(fields)}
}

// handleServerRetries is GET /api/server/retries: the tuning report.
func (s *Server) handleServerRetries(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.serverRetries())
}

// serverRetries is the tuning report (the API and the console's System
// page): per activity what this server's runtime observed of its retry
// sequences, its circuit breakers and duroxide.Suggest's advice.
func (s *Server) serverRetries() ServerRetries {
	cfg := s.effectiveConfig()
	circuits := map[string][]CircuitInfo{}
	for _, c := range s.app.Runtime().CircuitBreakers() {
		ci := CircuitInfo{Key: c.Key, State: c.State.String()}
		if !c.HalfOpenAt.IsZero() {
			t := c.HalfOpenAt.UTC()
			ci.HalfOpenAt = &t
		}
		circuits[c.Activity] = append(circuits[c.Activity], ci)
	}
	out := ServerRetries{GeneratedAt: s.now().UTC(), Activities: []ActivityRetries{}}
	seen := map[string]bool{}
	for _, st := range s.app.Runtime().RetryStats() {
		a := ActivityRetries{Activity: st.Activity, Policies: st.Policies, Sequences: st.Sequences, Succeeded: st.Succeeded,
			Exhausted: st.Exhausted, FailedEarly: st.FailedEarly, Attempts: st.Attempts, Failures: st.Failures, Timeouts: st.Timeouts,
			SuccessByAttempt: []AttemptCount{}, Circuits: circuits[st.Activity], Advice: duroxide.Suggest(st)}
		for k := 1; k < len(st.SuccessByAttempt); k++ {
			if n := st.SuccessByAttempt[k]; n > 0 {
				a.SuccessByAttempt = append(a.SuccessByAttempt, AttemptCount{Attempt: k, Sequences: n})
			}
		}
		t := st.TimeToSuccess
		a.TimeToSuccess = DurationSummary{Count: t.Count, Mean: t.Mean.String(), P50: t.P50.String(), P95: t.P95.String(), Max: t.Max.String()}
		if st.DefaultPolicy != nil {
			source := string(config.SourceDefault)
			var fields map[string]config.Source
			if p, ok := cfg.Policy(st.Activity); ok {
				source, fields = string(p.Source), p.Fields
			}
			info := policyInfo(st.Activity, *st.DefaultPolicy, source, fields)
			a.Policy = &info
		}
		out.Activities = append(out.Activities, a)
		seen[st.Activity] = true
	}
	// Breakers of activities without retry statistics.
	for _, name := range slices.Sorted(maps.Keys(circuits)) {
		if !seen[name] {
			out.Activities = append(out.Activities, ActivityRetries{Activity: name, SuccessByAttempt: []AttemptCount{},
				TimeToSuccess: DurationSummary{Mean: "0s", P50: "0s", P95: "0s", Max: "0s"}, Circuits: circuits[name]})
		}
	}
	return out
}
