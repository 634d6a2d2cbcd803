package kubernetes_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/toygres/toygres/internal/dataplane"
	"github.com/toygres/toygres/internal/dataplane/kubernetes"
)

// Deploy a public instance into the "toygres" namespace of the cluster the
// kubeconfig designates, wait until it is ready and print its connection
// URL (without the password).
func Example() {
	ctx := context.Background()
	d, err := kubernetes.New(kubernetes.Options{
		Namespace:    "toygres",
		StorageClass: "managed-csi",
		DNSZone:      "westus3.cloudapp.azure.com",
		Resources:    kubernetes.Resources{CPURequest: "500m", MemoryRequest: "1Gi", MemoryLimit: "2Gi"},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := d.Check(ctx); err != nil { // RBAC
		log.Fatal(err)
	}
	spec := dataplane.Spec{Name: "orders-1a2b3c4d", PostgresVersion: "17", StorageGB: 10, DNSLabel: "orders"}
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
		time.Sleep(2 * time.Second)
	}
	ep, err := d.Endpoint(ctx, spec.Name)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ep.URL("")) // postgresql://postgres@orders.westus3.cloudapp.azure.com:5432/postgres
}
