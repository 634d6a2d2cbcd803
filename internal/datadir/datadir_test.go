package datadir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDefault(t *testing.T) {
	t.Setenv(Env, "/srv/tg")
	if got := Default(); got != "/srv/tg" {
		t.Fatalf("Default() with %s set = %q", Env, got)
	}
	t.Setenv(Env, "")
	want := Root
	if os.Geteuid() != 0 {
		h, _ := os.UserHomeDir()
		want = filepath.Join(h, ".toygres")
	}
	if got := Default(); got != want {
		t.Fatalf("Default() = %q, want %q", got, want)
	}
	if got := Instances("/d"); got != "/d/instances" {
		t.Fatalf("Instances = %q", got)
	}
}
