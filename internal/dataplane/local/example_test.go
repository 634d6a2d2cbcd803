package local_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/dataplane/local"
)

// Deploy an instance, wait until it accepts connections and print its
// connection URL (without the password).
func Example() {
	ctx := context.Background()
	d, err := local.New(local.Options{Dir: local.DefaultDir()})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close() // ends the supervision; the servers keep running
	// At start-up: take over the servers of an earlier run.
	report, err := d.Adopt(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range report.Problems {
		log.Printf("instance %s: %s: %v", p.Instance, p.Kind, p.Err)
	}

	spec := dataplane.Spec{Name: "orders-1a2b3c4d", Internal: true, StorageGB: 1}
	if err := d.Deploy(ctx, spec, "correct horse battery staple"); err != nil {
		log.Fatal(err)
	}
	for {
		st, err := d.Status(ctx, spec.Name)
		if err != nil {
			log.Fatal(err)
		}
		if st.Ready {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ep, err := d.Endpoint(ctx, spec.Name)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ep.URL("")) // e.g. postgresql://postgres@127.0.0.1:15432/postgres

	if err := d.Delete(ctx, spec.Name); err != nil {
		log.Fatal(err)
	}
}
