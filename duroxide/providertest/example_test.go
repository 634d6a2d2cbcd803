package providertest_test

import (
	"testing"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/duroxide/providertest"
)

// openMyStore stands in for a store constructor such as sqlite.Open.
func openMyStore(t *testing.T) duroxide.Store {
	t.Skip("example store")
	return nil
}

// A store package runs the suite from one test function.
func Example() {
	_ = func(t *testing.T) { // func TestConformance(t *testing.T)
		providertest.Run(t, providertest.Factory{
			New:         openMyStore,
			LockTimeout: 400 * time.Millisecond,
			Skip: map[string]string{
				"notifier": "this store does not push notifications",
			},
		})
	}
}
