package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/config"
)

var defaults = config.Defaults{
	Retry: map[string]duroxide.RetryPolicy{
		"deploy-postgres": duroxide.NewRetryPolicy(3).WithName("deploy").
			WithBackoff(duroxide.Exponential{Base: 2 * time.Second, Multiplier: 2, Max: 10 * time.Second}).WithTimeout(5 * time.Minute),
		"cms-get-instance": duroxide.NewRetryPolicy(3).WithBackoff(duroxide.Fixed{Delay: 2 * time.Second}),
	},
	Breaker: duroxide.CircuitBreakerConfig{Window: time.Minute, MinCalls: 10, FailureRatio: 0.5, CoolDown: 30 * time.Second},
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsFileAndEnv(t *testing.T) {
	path := writeFile(t, "toygres.yaml", `
retry:
  deploy-postgres:
    max_attempts: 6
    backoff: linear
    base: 1s
    max: 4s
breaker:
  min_calls: 20
`)
	cfg, err := config.Load(path, []string{"TOYGRES_RETRY__DEPLOY_POSTGRES__TIMEOUT=90s", "TOYGRES_BREAKER__COOL_DOWN=1m", "TOYGRES_HOME=/x"}, defaults)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Policy("deploy-postgres")
	want := duroxide.NewRetryPolicy(6).WithName("deploy").WithBackoff(duroxide.Linear{Base: time.Second, Max: 4 * time.Second}).WithTimeout(90 * time.Second)
	if p.Policy.Summary() != want.Summary() || p.Source != config.SourceEnv {
		t.Fatalf("deploy-postgres: %s from %s, want %s from env", p.Policy.Summary(), p.Source, want.Summary())
	}
	if p.Fields[config.FieldMaxAttempts] != config.SourceFile || p.Fields[config.FieldTimeout] != config.SourceEnv {
		t.Fatalf("field sources: %v", p.Fields)
	}
	if q, _ := cfg.Policy("cms-get-instance"); q.Source != config.SourceDefault || q.Policy.Summary() != defaults.Retry["cms-get-instance"].Summary() {
		t.Fatalf("cms-get-instance: %s from %s", q.Policy.Summary(), q.Source)
	}
	if got := cfg.RetryPolicies(); len(got) != 1 || got["deploy-postgres"].MaxAttempts != 6 {
		t.Fatalf("RetryPolicies: %v", got)
	}
	b := cfg.Breaker
	if b.Config.MinCalls != 20 || b.Config.CoolDown != time.Minute || b.Config.FailureRatio != 0.5 || b.Source != config.SourceEnv {
		t.Fatalf("breaker: %+v", b)
	}
}

func TestTOML(t *testing.T) {
	path := writeFile(t, "toygres.toml", "[retry.cms-get-instance]\nmax_attempts = 7\n")
	cfg, err := config.Load(path, nil, defaults)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := cfg.Policy("cms-get-instance"); p.Policy.MaxAttempts != 7 || p.Source != config.SourceFile {
		t.Fatalf("%+v", p)
	}
}

func TestBadValues(t *testing.T) {
	cases := []struct {
		file string
		env  []string
		want string
	}{
		{env: []string{"TOYGRES_RETRY__DEPLOY_POSTGRES__MAX_ATTEMPTS=0"}, want: "retry.deploy-postgres.max_attempts (TOYGRES_RETRY__DEPLOY_POSTGRES__MAX_ATTEMPTS): must be at least 1, got 0"},
		{env: []string{"TOYGRES_RETRY__DEPLOY_POSTGRES__TIMEOUT=soon"}, want: `retry.deploy-postgres.timeout (TOYGRES_RETRY__DEPLOY_POSTGRES__TIMEOUT): "soon" is not a duration`},
		{env: []string{"TOYGRES_RETRY__NO_SUCH__MAX_ATTEMPTS=3"}, want: `retry.no-such.max_attempts (TOYGRES_RETRY__NO_SUCH__MAX_ATTEMPTS): unknown activity "no-such"`},
		{env: []string{"TOYGRES_BREAKER__FAILURE_RATIO=2"}, want: `breaker.failure_ratio (TOYGRES_BREAKER__FAILURE_RATIO): failure ratio "2" must be a number in (0, 1]`},
		{file: "retry:\n  deploy-postgres:\n    backoff: random\n", want: `retry.deploy-postgres.backoff`},
		{file: "retry:\n  deploy-postgres:\n    attempts: 3\n", want: `unknown retry field "attempts"`},
		{file: "retry:\n  deploy-postgres:\n    base: 1m\n", want: "retry.deploy-postgres.max (base from file): max 10s is below base 1m0s"},
	}
	for _, c := range cases {
		path := ""
		if c.file != "" {
			path = writeFile(t, "c.yaml", c.file)
		}
		_, err := config.Load(path, c.env, defaults)
		var ce *config.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %q: got %v, want one line containing %q", c.env, c.file, err, c.want)
		}
	}
}

func TestEnvName(t *testing.T) {
	if got := config.EnvName("retry.deploy-postgres.max_attempts"); got != "TOYGRES_RETRY__DEPLOY_POSTGRES__MAX_ATTEMPTS" {
		t.Fatal(got)
	}
}
