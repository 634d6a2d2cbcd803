package api_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/toygres/toygres/internal/api"
	"github.com/toygres/toygres/internal/app"
)

// Serving the API over an open control plane, as "toygres server start"
// does: the admin password comes from the environment or is generated once.
func Example() {
	ctx := context.Background()
	a, err := app.Open(ctx, app.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close(context.Background())

	srv, err := api.New(a, api.Options{
		AdminPassword: os.Getenv("TOYGRES_ADMIN_PASSWORD"),
		LogFile:       "/var/lib/toygres/server.log",
		Version:       "0.1.0",
	})
	if err != nil {
		log.Fatal(err)
	}
	if pw := srv.GeneratedPassword(); pw != "" {
		fmt.Println("admin password (shown once):", pw)
	}
	// A token for the local CLI's credential file.
	if _, err := srv.IssueToken(30 * 24 * time.Hour); err != nil {
		log.Fatal(err)
	}
	hs := &http.Server{
		Addr:              "127.0.0.1:8080",
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	log.Fatal(hs.ListenAndServe())
}
