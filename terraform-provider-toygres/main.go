// Command terraform-provider-toygres is the OpenTofu and Terraform provider
// for Toygres: resource toygres_instance and data sources toygres_instance
// and toygres_instances, over the public Go client
// (github.com/toygres/toygres/client).
//
// It lives in its own module so that the plugin framework's dependencies
// never reach the main module.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/toygres/toygres/terraform-provider-toygres/internal/provider"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	debug := flag.Bool("debug", false, "run with support for debuggers like delve")
	flag.Parse()
	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: provider.Address,
		Debug:   *debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}
