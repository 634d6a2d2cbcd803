package postgres

import "github.com/toygres/toygres/duroxide/postgres/pgtest"

// ScaleoutCluster exposes the cluster shared by this test binary (started
// in TestMain) to the external test package postgres_test, whose scale-out
// and restart tests (scaleout_*_test.go) run in the same binary.
func ScaleoutCluster() *pgtest.Cluster { return cluster }
