// Package logging sets up Toygres' server logs: JSON log/slog records, each
// with service_name="toygres", written to the server log file (appended) and,
// for a server in the foreground, to stdout as well.
//
// Secrets are never logged: callers pass no passwords or tokens, and
// Redact strips the password from a database URL before it is logged.
package logging

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// ServiceName is the value of every record's service_name attribute (the
// label the founding document's log queries select on: {service_name="toygres"}).
const ServiceName = "toygres"

// EnvLevel names the environment variable that sets the level.
const EnvLevel = "TOYGRES_LOG_LEVEL"

// Options configure Setup.
type Options struct {
	// File is the log file (created with mode 0600 and its directory if
	// missing, appended to). Empty: no file.
	File string
	// Stdout, when non-nil, receives a copy of every record (write errors
	// on it are ignored, so a closed terminal never stops logging).
	Stdout io.Writer
	// Level is "debug", "info", "warn" or "error"; empty means
	// $TOYGRES_LOG_LEVEL, or info.
	Level string
}

// Logger is a configured logger and the file it writes.
type Logger struct {
	*slog.Logger
	Level slog.Level
	file  *os.File
}

// Close closes the log file.
func (l *Logger) Close() error {
	if l.file == nil {
		return nil
	}
	return l.file.Close()
}

// ParseLevel parses a level name (case-insensitive; "warning" is warn).
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

// Setup builds the logger.
func Setup(o Options) (*Logger, error) {
	levelName := o.Level
	if levelName == "" {
		levelName = os.Getenv(EnvLevel)
	}
	level, err := ParseLevel(levelName)
	if err != nil {
		return nil, err
	}
	l := &Logger{Level: level}
	var outs []io.Writer
	if o.File != "" {
		if err := os.MkdirAll(filepath.Dir(o.File), 0o755); err != nil {
			return nil, fmt.Errorf("create log directory: %w", err)
		}
		f, err := os.OpenFile(o.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		l.file = f
		outs = append(outs, f)
	}
	w := &tee{primary: outs, secondary: o.Stdout}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	l.Logger = slog.New(WithTrace(h)).With("service_name", ServiceName)
	return l, nil
}

// tee writes each record to the log file (whose errors are reported) and
// to stdout (whose errors are ignored). slog's JSON handler writes a whole
// record per Write call, under its own lock; the mutex keeps the copies of
// concurrent handlers in the same order.
type tee struct {
	mu        sync.Mutex
	primary   []io.Writer
	secondary io.Writer
}

func (t *tee) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, w := range t.primary {
		if _, err := w.Write(p); err != nil {
			errs = append(errs, err)
		}
	}
	if t.secondary != nil {
		_, _ = t.secondary.Write(p)
	}
	return len(p), errors.Join(errs...)
}

// Redact returns a database URL without its password (for logs and
// messages). Strings that do not parse as URLs are replaced entirely when
// they might hold a secret.
func Redact(databaseURL string) string {
	if databaseURL == "" {
		return ""
	}
	u, err := url.Parse(databaseURL)
	if err != nil || u.Scheme == "" {
		if strings.Contains(databaseURL, "password") {
			return "(redacted)"
		}
		return databaseURL
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
