package logging

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSetupWritesJSONToFileAndStdout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "server.log")
	var stdout bytes.Buffer
	l, err := Setup(Options{File: path, Stdout: &stdout, Level: "debug"})
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("hello", "k", "v")
	l.Info("second")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, stdout.Bytes()) {
		t.Errorf("file and stdout differ:\n%s\n---\n%s", b, stdout.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 records, got %q", lines)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["service_name"] != "toygres" || rec["msg"] != "hello" || rec["level"] != "DEBUG" || rec["k"] != "v" {
		t.Errorf("record: %v", rec)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("log file mode %v", st.Mode().Perm())
	}
}

func TestLevelFromEnv(t *testing.T) {
	t.Setenv(EnvLevel, "warn")
	var out bytes.Buffer
	l, err := Setup(Options{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("dropped")
	l.Warn("kept")
	if strings.Contains(out.String(), "dropped") || !strings.Contains(out.String(), "kept") {
		t.Errorf("output: %s", out.String())
	}
	if _, err := Setup(Options{Level: "loud"}); err == nil {
		t.Error("unknown level accepted")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"":                                    "",
		"postgres://u:secret@db:5432/x":       "postgres://u:xxxxx@db:5432/x",
		"postgres://db/x?password=secret&a=b": "postgres://db/x?a=b&password=xxxxx",
		"host=db password=secret":             "(redacted)",
	} {
		if got := Redact(in); got != want || strings.Contains(got, "secret") {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
