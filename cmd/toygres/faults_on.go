//go:build toygres_faults

package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/dataplane/faulty"
)

// EnvTestFaults selects the faults a toygres_faults build injects, as
// "deploy=N,connection=N" (see faulty.ParseFaults). The end-to-end tests
// build the binary with the toygres_faults tag and set it on the server
// they start; a background server inherits it. Release builds lack this
// file: fault injection is not a feature of the product.
const EnvTestFaults = "TOYGRES_TEST_FAULTS"

func testFaults(log *slog.Logger) (func(dataplane.Driver) dataplane.Driver, error) {
	spec := os.Getenv(EnvTestFaults)
	if spec == "" {
		return nil, nil
	}
	f, err := faulty.ParseFaults(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvTestFaults, err)
	}
	log.Warn("test build: injecting data-plane faults", "deploy_failures", f.DeployFailures, "connection_failures", f.ConnectionFailures)
	return func(d dataplane.Driver) dataplane.Driver {
		w, _ := faulty.Wrap(d, f) // its proxies live as long as the process
		return w
	}, nil
}
