//go:build !toygres_faults

package main

import (
	"log/slog"

	"github.com/toygres/toygres/internal/dataplane"
)

// testFaults is the fault-injection hook of test builds (faults_on.go); a
// release build injects nothing and has no way to.
func testFaults(*slog.Logger) (func(dataplane.Driver) dataplane.Driver, error) { return nil, nil }
