// Package config reads Toygres' per-environment server configuration: the
// retry policy of each activity and the circuit breaker in front of the
// data plane, from built-in defaults, a configuration file (YAML or TOML,
// --config) and environment variables, in that order of precedence (the
// environment wins). It uses koanf (github.com/knadh/koanf/v2) with its file
// and env providers.
//
// The file:
//
//	retry:
//	  deploy-postgres:        # an activity name
//	    max_attempts: 5
//	    backoff: exponential  # none, fixed, linear or exponential
//	    base: 2s              # the fixed delay, or the linear/exponential base
//	    max: 30s
//	    multiplier: 2
//	    timeout: 5m           # per attempt (0: none)
//	    total_timeout: 20m    # whole sequence, waits included (0: none)
//	    jitter: 0.1
//	breaker:                  # each data-plane activity's circuit breaker
//	  failure_ratio: 0.5
//	  window: 1m
//	  min_calls: 10
//	  cool_down: 30s
//	  probes: 1
//
// The environment: TOYGRES_RETRY__<ACTIVITY>__<FIELD> and
// TOYGRES_BREAKER__<FIELD>, upper case, levels separated by a double
// underscore; within the activity a single underscore stands for its '-'
// (TOYGRES_RETRY__DEPLOY_POSTGRES__MAX_ATTEMPTS=5). A field left out keeps
// its default (a changed backoff kind keeps the default's base, max and
// multiplier where they apply). A value that cannot be used is an error
// naming its key, where it came from and why.
package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"

	"github.com/toygres/toygres/duroxide"
)

// EnvPrefix starts every environment variable this package reads.
const EnvPrefix = "TOYGRES_"

// Source says where a setting came from.
type Source string

// Sources, in increasing precedence.
const (
	SourceDefault Source = "default"
	SourceFile    Source = "file"
	SourceEnv     Source = "env"
)

// Retry fields (file keys; in the environment, upper case).
const (
	FieldMaxAttempts  = "max_attempts"
	FieldBackoff      = "backoff"
	FieldBase         = "base"
	FieldMax          = "max"
	FieldMultiplier   = "multiplier"
	FieldTimeout      = "timeout"
	FieldTotalTimeout = "total_timeout"
	FieldJitter       = "jitter"
)

var retryFields = []string{FieldMaxAttempts, FieldBackoff, FieldBase, FieldMax, FieldMultiplier, FieldTimeout, FieldTotalTimeout, FieldJitter}

// Breaker fields.
const (
	FieldFailureRatio = "failure_ratio"
	FieldWindow       = "window"
	FieldMinCalls     = "min_calls"
	FieldCoolDown     = "cool_down"
	FieldProbes       = "probes"
)

var breakerFields = []string{FieldFailureRatio, FieldWindow, FieldMinCalls, FieldCoolDown, FieldProbes}

// Defaults are the built-in settings configuration starts from.
type Defaults struct {
	// Retry is the default policy of each activity, by name; only these
	// activities may be configured.
	Retry map[string]duroxide.RetryPolicy
	// Breaker is the data-plane circuit breaker.
	Breaker duroxide.CircuitBreakerConfig
}

// Policy is an activity's effective retry policy.
type Policy struct {
	Activity string
	Policy   duroxide.RetryPolicy
	// Source is the highest-precedence source of any of its fields.
	Source Source
	// Fields are the configured fields and their sources (none: default).
	Fields map[string]Source
}

// Breaker is the effective data-plane circuit breaker.
type Breaker struct {
	Config duroxide.CircuitBreakerConfig
	Source Source
	Fields map[string]Source
}

// Config is the effective configuration.
type Config struct {
	// File is the configuration file read ("" for none).
	File string
	// Retry lists every activity's policy, sorted by activity name.
	Retry   []Policy
	Breaker Breaker
}

// Error is a configuration value that cannot be used.
type Error struct {
	Key    string // e.g. retry.deploy-postgres.max_attempts
	Origin string // the environment variable, or the file
	Reason string
}

func (e *Error) Error() string {
	if e.Origin != "" {
		return fmt.Sprintf("config: %s (%s): %s", e.Key, e.Origin, e.Reason)
	}
	return fmt.Sprintf("config: %s: %s", e.Key, e.Reason)
}

// EnvName is the environment variable of a key ("retry.deploy-postgres.max_attempts").
func EnvName(key string) string {
	parts := strings.Split(key, ".")
	for i, p := range parts {
		parts[i] = strings.ToUpper(strings.ReplaceAll(p, "-", "_"))
	}
	return EnvPrefix + strings.Join(parts, "__")
}

// Load reads path (none when "") and the environment (environ, as
// os.Environ returns it) over defaults.
func Load(path string, environ []string, defaults Defaults) (*Config, error) {
	fileK := koanf.New(".")
	if path != "" {
		var parser koanf.Parser
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml":
			parser = yaml.Parser()
		case ".toml":
			parser = toml.Parser()
		default:
			return nil, &Error{Key: "--config", Origin: path, Reason: "want a .yaml, .yml or .toml file"}
		}
		if _, err := os.Stat(path); err != nil {
			return nil, &Error{Key: "--config", Origin: path, Reason: err.Error()}
		}
		if err := fileK.Load(file.Provider(path), parser); err != nil {
			return nil, &Error{Key: "--config", Origin: path, Reason: oneLine(err.Error())}
		}
	}
	envK := koanf.New(".")
	// The activity names need their '-' back: map the activity level of
	// retry keys, leave field names as they are.
	envKeys := map[string]string{}
	if err := envK.Load(env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(k, v string) (string, any) {
			parts := strings.Split(strings.ToLower(strings.TrimPrefix(k, EnvPrefix)), "__")
			switch {
			case parts[0] == "retry" && len(parts) == 3:
				parts[1] = strings.ReplaceAll(parts[1], "_", "-")
			case parts[0] == "retry" || parts[0] == "breaker":
			default:
				return "", nil // another setting's variable
			}
			key := strings.Join(parts, ".")
			envKeys[key] = k
			return key, v
		},
	}), nil); err != nil {
		return nil, fmt.Errorf("config: read environment: %w", err)
	}
	for key, name := range envKeys {
		if !known(key, defaults) {
			return nil, &Error{Key: key, Origin: name, Reason: unknownReason(key, defaults)}
		}
	}
	for _, key := range fileK.Keys() {
		if !known(key, defaults) {
			return nil, &Error{Key: key, Origin: path, Reason: unknownReason(key, defaults)}
		}
	}

	lookup := func(key string) (string, Source, string, bool) {
		if envK.Exists(key) {
			return envK.String(key), SourceEnv, envKeys[key], true
		}
		if fileK.Exists(key) {
			return fileK.String(key), SourceFile, path, true
		}
		return "", SourceDefault, "", false
	}

	cfg := &Config{File: path}
	for _, name := range slices.Sorted(maps.Keys(defaults.Retry)) {
		p, err := retryPolicy(name, defaults.Retry[name], lookup)
		if err != nil {
			return nil, err
		}
		cfg.Retry = append(cfg.Retry, p)
	}
	b, err := breaker(defaults.Breaker, lookup)
	if err != nil {
		return nil, err
	}
	cfg.Breaker = b
	return cfg, nil
}

type lookupFunc func(key string) (value string, src Source, origin string, ok bool)

func retryPolicy(name string, def duroxide.RetryPolicy, lookup lookupFunc) (Policy, error) {
	out := Policy{Activity: name, Policy: def, Source: SourceDefault, Fields: map[string]Source{}}
	p := &out.Policy
	kind, base, maxD, mult := backoffParts(def.Backoff)
	var firstErr error
	get := func(field string, parse func(string) error) {
		key := "retry." + name + "." + field
		v, src, origin, ok := lookup(key)
		if !ok || firstErr != nil {
			return
		}
		if err := parse(strings.TrimSpace(v)); err != nil {
			firstErr = &Error{Key: key, Origin: origin, Reason: err.Error()}
			return
		}
		out.Fields[field] = src
		if src == SourceEnv || (src == SourceFile && out.Source == SourceDefault) {
			out.Source = src
		}
	}
	get(FieldMaxAttempts, func(s string) error { return parseInt(s, &p.MaxAttempts, 1) })
	get(FieldBackoff, func(s string) error {
		switch s {
		case "none", "fixed", "linear", "exponential":
			kind = s
			return nil
		}
		return fmt.Errorf("unknown backoff %q (want none, fixed, linear or exponential)", s)
	})
	get(FieldBase, func(s string) error { return parseDuration(s, &base) })
	get(FieldMax, func(s string) error { return parseDuration(s, &maxD) })
	get(FieldMultiplier, func(s string) error {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || f < 1 {
			return fmt.Errorf("multiplier %q must be a number of at least 1", s)
		}
		mult = f
		return nil
	})
	get(FieldTimeout, func(s string) error { return parseDuration(s, &p.Timeout) })
	get(FieldTotalTimeout, func(s string) error { return parseDuration(s, &p.TotalTimeout) })
	get(FieldJitter, func(s string) error {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
			return fmt.Errorf("jitter %q must be a number from 0 to 1", s)
		}
		p.Jitter = f
		return nil
	})
	if firstErr != nil {
		return Policy{}, firstErr
	}
	if len(out.Fields) == 0 {
		return out, nil
	}
	if (kind == "linear" || kind == "exponential") && maxD > 0 && maxD < base {
		return Policy{}, &Error{Key: "retry." + name + "." + FieldMax, Origin: origins(out.Fields), Reason: fmt.Sprintf("max %v is below base %v", maxD, base)}
	}
	switch kind {
	case "none":
		p.Backoff = duroxide.NoBackoff{}
	case "fixed":
		p.Backoff = duroxide.Fixed{Delay: base}
	case "linear":
		p.Backoff = duroxide.Linear{Base: base, Max: maxD}
	case "exponential":
		if mult == 0 {
			mult = 2
		}
		p.Backoff = duroxide.Exponential{Base: base, Multiplier: mult, Max: maxD}
	}
	if err := p.Validate(); err != nil {
		// The policy as a whole: name the field set last that can explain it.
		return Policy{}, &Error{Key: "retry." + name, Origin: origins(out.Fields), Reason: strings.TrimPrefix(err.Error(), duroxide.ErrInvalidPolicy.Error()+": ")}
	}
	return out, nil
}

func backoffParts(b duroxide.Backoff) (kind string, base, maxD time.Duration, mult float64) {
	switch b := b.(type) {
	case duroxide.Fixed:
		return "fixed", b.Delay, 0, 0
	case duroxide.Linear:
		return "linear", b.Base, b.Max, 0
	case duroxide.Exponential:
		return "exponential", b.Base, b.Max, b.Multiplier
	}
	return "none", 0, 0, 0
}

func breaker(def duroxide.CircuitBreakerConfig, lookup lookupFunc) (Breaker, error) {
	out := Breaker{Config: def, Source: SourceDefault, Fields: map[string]Source{}}
	c := &out.Config
	var firstErr error
	get := func(field string, parse func(string) error) {
		key := "breaker." + field
		v, src, origin, ok := lookup(key)
		if !ok || firstErr != nil {
			return
		}
		if err := parse(strings.TrimSpace(v)); err != nil {
			firstErr = &Error{Key: key, Origin: origin, Reason: err.Error()}
			return
		}
		out.Fields[field] = src
		if src == SourceEnv || (src == SourceFile && out.Source == SourceDefault) {
			out.Source = src
		}
	}
	get(FieldFailureRatio, func(s string) error {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || f <= 0 || f > 1 {
			return fmt.Errorf("failure ratio %q must be a number in (0, 1]", s)
		}
		c.FailureRatio = f
		return nil
	})
	get(FieldWindow, func(s string) error { return parsePositiveDuration(s, &c.Window) })
	get(FieldMinCalls, func(s string) error { return parseInt(s, &c.MinCalls, 1) })
	get(FieldCoolDown, func(s string) error { return parsePositiveDuration(s, &c.CoolDown) })
	get(FieldProbes, func(s string) error { return parseInt(s, &c.Probes, 1) })
	if firstErr != nil {
		return Breaker{}, firstErr
	}
	return out, nil
}

// RetryPolicies are the policies that configuration changed, for
// duroxide.Options.RetryPolicies (the others stay as registered).
func (c *Config) RetryPolicies() map[string]duroxide.RetryPolicy {
	m := map[string]duroxide.RetryPolicy{}
	for _, p := range c.Retry {
		if p.Source != SourceDefault {
			m[p.Activity] = p.Policy
		}
	}
	return m
}

// Policy returns an activity's effective policy.
func (c *Config) Policy(activity string) (Policy, bool) {
	for _, p := range c.Retry {
		if p.Activity == activity {
			return p, true
		}
	}
	return Policy{}, false
}

func known(key string, d Defaults) bool {
	parts := strings.Split(key, ".")
	switch {
	case len(parts) == 3 && parts[0] == "retry":
		_, ok := d.Retry[parts[1]]
		return ok && slices.Contains(retryFields, parts[2])
	case len(parts) == 2 && parts[0] == "breaker":
		return slices.Contains(breakerFields, parts[1])
	}
	return false
}

func unknownReason(key string, d Defaults) string {
	parts := strings.Split(key, ".")
	switch {
	case parts[0] == "retry" && len(parts) == 3:
		if _, ok := d.Retry[parts[1]]; !ok {
			return fmt.Sprintf("unknown activity %q", parts[1])
		}
		return fmt.Sprintf("unknown retry field %q (want one of %s)", parts[2], strings.Join(retryFields, ", "))
	case parts[0] == "breaker" && len(parts) == 2:
		return fmt.Sprintf("unknown breaker field %q (want one of %s)", parts[1], strings.Join(breakerFields, ", "))
	case parts[0] == "retry":
		return "want retry.<activity>.<field>"
	case parts[0] == "breaker":
		return "want breaker.<field>"
	}
	return "unknown setting (want retry.<activity>.<field> or breaker.<field>)"
}

func origins(fields map[string]Source) string {
	var s []string
	for f, src := range fields {
		s = append(s, f+" from "+string(src))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func parseInt(s string, out *int, min int) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	if n < min {
		return fmt.Errorf("must be at least %d, got %d", min, n)
	}
	*out = n
	return nil
}

// parseDuration reads a Go duration ("2s", "1m30s"); "0" is none.
func parseDuration(s string, out *time.Duration) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 500ms, 2s, 1m)", s)
	}
	if d < 0 {
		return fmt.Errorf("duration %s must not be negative", s)
	}
	*out = d
	return nil
}

func parsePositiveDuration(s string, out *time.Duration) error {
	if err := parseDuration(s, out); err != nil {
		return err
	}
	if *out == 0 {
		return errors.New("must be positive")
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
