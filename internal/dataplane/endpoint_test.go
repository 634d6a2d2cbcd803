package dataplane

import "testing"

func TestEndpointURLs(t *testing.T) {
	single := Endpoint{Host: "127.0.0.1", Port: 5432, User: "postgres", Database: "postgres"}
	multi := single
	multi.Standbys = []HostPort{{"127.0.0.1", 5433}, {"127.0.0.1", 5434}}
	multi.MultiHost = true
	svc := single
	svc.Host = "db-svc"
	svc.Standbys = []HostPort{{"db-1", 5432}}
	svc.ReadOnly = &HostPort{"db-ro", 5432}
	for _, c := range []struct {
		name      string
		got, want string
	}{
		{"single rw", single.URL("pw"), "postgresql://postgres:pw@127.0.0.1:5432/postgres"},
		{"single ro", single.ReadOnlyURL("pw"), ""},
		{"multi rw", multi.URL(""), "postgresql://postgres@127.0.0.1:5432,127.0.0.1:5433,127.0.0.1:5434/postgres?target_session_attrs=read-write"},
		{"multi ro", multi.ReadOnlyURL(""), "postgresql://postgres@127.0.0.1:5433,127.0.0.1:5434,127.0.0.1:5432/postgres?target_session_attrs=prefer-standby"},
		{"service rw", svc.URL(""), "postgresql://postgres@db-svc:5432/postgres"},
		{"service ro", svc.ReadOnlyURL(""), "postgresql://postgres@db-ro:5432/postgres"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %s, want %s", c.name, c.got, c.want)
		}
	}
}
