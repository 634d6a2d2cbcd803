package app_test

import (
	"testing"

	"github.com/toygres/toygres/duroxide/postgres/pgtest"
)

// cluster is a throwaway PostgreSQL server: the database of the PostgreSQL
// variants of the tests, and the server every test instance's health
// checks connect to.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) { pgtest.Main(m, &cluster) }
