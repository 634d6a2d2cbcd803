package duroxide

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// ActivityRetryStats is what a runtime observed of an activity's retry
// sequences (calls under a retry policy, explicit or default) since it
// started: which attempt succeeded, how long sequences took, how many gave
// up, how attempts ended. It is the input of Suggest.
type ActivityRetryStats struct {
	Activity string
	// DefaultPolicy is the activity's default retry policy in force now
	// (Options.RetryPolicies or WithDefaultRetry); nil without one.
	DefaultPolicy *RetryPolicy
	// MaxAttempts is the largest MaxAttempts among the observed sequences;
	// Policies lists their policies (RetryPolicy.Summary), sorted.
	MaxAttempts int
	Policies    []string

	// Sequences that ended: succeeded, exhausted (attempts or total time
	// used up) or failed early (a non-retryable error, RetryIf).
	Sequences, Succeeded, Exhausted, FailedEarly int
	// SuccessByAttempt[k] is the number of sequences that succeeded on
	// attempt k (1-based; index 0 unused).
	SuccessByAttempt []int
	// Attempts is the number of attempts that ended; Failures and
	// Timeouts those that failed (Timeouts: by the per-attempt timeout).
	Attempts, Failures, Timeouts int
	// TimeToSuccess summarizes, over the most recent successful sequences,
	// the time from their first attempt to their success, waits included.
	TimeToSuccess DurationSummary
}

// DurationSummary summarizes observed durations.
type DurationSummary struct {
	Count          int
	Mean, P50, P95 time.Duration
	Max            time.Duration
}

// SucceededBy is the fraction of successful sequences that succeeded by
// attempt k (0 when none succeeded).
func (s ActivityRetryStats) SucceededBy(k int) float64 {
	if s.Succeeded == 0 {
		return 0
	}
	n := 0
	for i := 1; i <= k && i < len(s.SuccessByAttempt); i++ {
		n += s.SuccessByAttempt[i]
	}
	return float64(n) / float64(s.Succeeded)
}

// retryStats accumulates ActivityRetryStats.
type retryStats struct {
	mu sync.Mutex
	m  map[string]*activityStats
}

type activityStats struct {
	s         ActivityRetryStats
	policies  map[string]bool
	durations []time.Duration // ring of the latest successes' durations
	next      int
}

const statsDurations = 1024

func (r *retryStats) get(name string) *activityStats {
	if r.m == nil {
		r.m = map[string]*activityStats{}
	}
	a := r.m[name]
	if a == nil {
		a = &activityStats{s: ActivityRetryStats{Activity: name}, policies: map[string]bool{}}
		r.m[name] = a
	}
	return a
}

// observeAttempt records the end of an attempt of an activity's retry
// sequence (status success, failure or timeout). It runs after the turn's
// commit, never for replayed history.
func (rt *Runtime) observeAttempt(name string, attempt int, status string) {
	if attempt >= 2 {
		rt.metrics.retry(name, status)
	}
	rt.stats.mu.Lock()
	defer rt.stats.mu.Unlock()
	a := rt.stats.get(name)
	a.s.Attempts++
	switch status {
	case "failure":
		a.s.Failures++
	case "timeout":
		a.s.Failures++
		a.s.Timeouts++
	}
}

// observeSequence records the end of a retry sequence: outcome success,
// exhausted or failed, on attempt attempt, after d.
func (rt *Runtime) observeSequence(name string, p RetryPolicy, outcome string, attempt int, d time.Duration) {
	if outcome == "exhausted" {
		rt.metrics.exhausted(name)
	}
	rt.metrics.sequence(name, outcome, attempt, d)
	rt.stats.mu.Lock()
	defer rt.stats.mu.Unlock()
	a := rt.stats.get(name)
	a.s.Sequences++
	a.s.MaxAttempts = max(a.s.MaxAttempts, p.MaxAttempts)
	a.policies[p.Summary()] = true
	switch outcome {
	case "success":
		a.s.Succeeded++
		for len(a.s.SuccessByAttempt) <= attempt {
			a.s.SuccessByAttempt = append(a.s.SuccessByAttempt, 0)
		}
		a.s.SuccessByAttempt[attempt]++
		if len(a.durations) < statsDurations {
			a.durations = append(a.durations, d)
		} else {
			a.durations[a.next] = d
			a.next = (a.next + 1) % statsDurations
		}
	case "exhausted":
		a.s.Exhausted++
	default:
		a.s.FailedEarly++
	}
}

// RetryStats returns, per activity, what this runtime observed of its
// retry sequences since it started (replayed history is not counted), with
// the default policy in force, sorted by activity name. Activities with a
// default policy but no sequence yet are included. Pass an entry to Suggest
// for advice.
func (rt *Runtime) RetryStats() []ActivityRetryStats {
	rt.stats.mu.Lock()
	out := make([]ActivityRetryStats, 0, len(rt.stats.m))
	seen := map[string]bool{}
	for name, a := range rt.stats.m {
		s := a.s
		s.SuccessByAttempt = slices.Clone(a.s.SuccessByAttempt)
		for p := range a.policies {
			s.Policies = append(s.Policies, p)
		}
		sort.Strings(s.Policies)
		s.TimeToSuccess = summarize(a.durations)
		out = append(out, s)
		seen[name] = true
	}
	rt.stats.mu.Unlock()
	for _, name := range rt.reg.ActivityNames() {
		if _, ok := rt.defaultRetry(name); ok && !seen[name] {
			out = append(out, ActivityRetryStats{Activity: name})
		}
	}
	for i := range out {
		if p, ok := rt.defaultRetry(out[i].Activity); ok {
			out[i].DefaultPolicy = &p
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Activity < out[j].Activity })
	return out
}

func summarize(ds []time.Duration) DurationSummary {
	if len(ds) == 0 {
		return DurationSummary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	pct := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return DurationSummary{Count: len(s), Mean: sum / time.Duration(len(s)), P50: pct(0.5), P95: pct(0.95), Max: s[len(s)-1]}
}

// Advice thresholds of Suggest.
const (
	// SuggestMinSequences is how many sequences Suggest wants to see
	// before it advises anything.
	SuggestMinSequences = 20
	suggestCoverage     = 0.95
	suggestExhausted    = 0.05
	suggestTimeouts     = 0.10
)

// Suggest turns an activity's observed retries into advice on its retry
// policy, one sentence per finding (nil when there is nothing to say). It
// looks at how many attempts successes needed against MaxAttempts, at the
// share of exhausted sequences and at the share of attempts that timed
// out. With fewer than SuggestMinSequences sequences it only says so.
func Suggest(s ActivityRetryStats) []string {
	if s.Sequences == 0 {
		return nil
	}
	if s.Sequences < SuggestMinSequences {
		return []string{fmt.Sprintf("%s: only %d retry sequence(s) observed; too few to advise (want %d)", s.Activity, s.Sequences, SuggestMinSequences)}
	}
	maxAttempts := s.MaxAttempts
	if s.DefaultPolicy != nil {
		maxAttempts = s.DefaultPolicy.MaxAttempts
	}
	var out []string
	pct := func(f float64) string { return strings.TrimSuffix(fmt.Sprintf("%.0f", f*100), ".0") + " %" }
	if s.Succeeded > 0 {
		by := 1
		for by < len(s.SuccessByAttempt)-1 && s.SucceededBy(by) < suggestCoverage {
			by++
		}
		highest := len(s.SuccessByAttempt) - 1
		line := fmt.Sprintf("%s: %s of successful sequences succeed by attempt %d", s.Activity, pct(s.SucceededBy(by)), by)
		if s.Exhausted == 0 && highest+1 < maxAttempts {
			line += fmt.Sprintf("; attempts %d–%d never needed: consider MaxAttempts %d", highest+1, maxAttempts, highest+1)
		}
		if s.TimeToSuccess.Count > 0 {
			line += fmt.Sprintf(" (time to success p50 %v, p95 %v)", s.TimeToSuccess.P50.Round(time.Millisecond), s.TimeToSuccess.P95.Round(time.Millisecond))
		}
		out = append(out, line)
	}
	if f := float64(s.Exhausted) / float64(s.Sequences); f >= suggestExhausted {
		out = append(out, fmt.Sprintf("%s: %s of sequences exhausted their %d attempts: consider more attempts or a longer backoff (or a circuit breaker, if the callee is down)", s.Activity, pct(f), maxAttempts))
	}
	if s.Attempts > 0 {
		if f := float64(s.Timeouts) / float64(s.Attempts); f >= suggestTimeouts {
			out = append(out, fmt.Sprintf("%s: timeouts on %s of attempts: the per-attempt timeout may be too short", s.Activity, pct(f)))
		}
	}
	return out
}
