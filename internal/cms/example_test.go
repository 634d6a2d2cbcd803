package cms_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/toygres/toygres/internal/cms"
)

// The CMS normally shares the SQLite file of the durable-execution store.
// The secret key is generated on first use and kept in a file next to it.
func ExampleOpenSQLite() {
	dir, err := os.MkdirTemp("", "cms-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	st, err := cms.OpenSQLite(ctx, filepath.Join(dir, "toygres.db"), cms.Options{
		KeyFile: filepath.Join(dir, "cms.key"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	inst, err := st.CreateInstance(ctx, cms.Instance{
		Name:                  "orders",
		InternalName:          "orders-1a2b3c4d",
		Driver:                "local",
		PostgresVersion:       "16",
		StorageGB:             1,
		CreateOrchestrationID: "create-orders-1a2b3c4d",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(inst.Name, inst.State, inst.Health)

	// The name is held while the instance is active.
	_, err = st.CreateInstance(ctx, cms.Instance{Name: "orders", InternalName: "orders-99999999"})
	fmt.Println(errors.Is(err, cms.ErrNameTaken))

	if _, err := st.UpdateState(ctx, inst.InternalName, cms.StateRunning, cms.StateUpdate{
		Host: "127.0.0.1", Port: 54321, Message: "deployed",
	}); err != nil {
		log.Fatal(err)
	}
	if err := st.SetPassword(ctx, inst.InternalName, "correct horse"); err != nil {
		log.Fatal(err)
	}
	if err := st.UpdateHealth(ctx, inst.InternalName, cms.HealthHealthy); err != nil {
		log.Fatal(err)
	}

	got, err := st.Get(ctx, "orders")
	if err != nil {
		log.Fatal(err)
	}
	pw, err := st.Password(ctx, got.InternalName)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.State, got.Health, got.Host, got.Port, pw)

	events, err := st.Events(ctx, got.InternalName, 0)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range events {
		fmt.Printf("%s %q→%q %s\n", e.Type, e.OldState, e.NewState, e.Message)
	}
	// Output:
	// orders creating unknown
	// true
	// running healthy 127.0.0.1 54321 correct horse
	// health_change ""→"" health unknown -> healthy
	// state_change "creating"→"running" deployed
	// state_change ""→"creating" instance created
}

// With PostgreSQL the CMS lives in its own schema (toygres_cms by default)
// of the database that also holds the durable-execution store.
func ExampleOpenPostgres() {
	ctx := context.Background()
	st, err := cms.OpenPostgres(ctx, "postgres://toygres@db.example.com/toygres", cms.Options{
		SecretKey: []byte("0123456789abcdef0123456789abcdef"), // 32 bytes; load it from a secret store
	})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	running, err := st.List(ctx, cms.ListOptions{States: []cms.State{cms.StateRunning}})
	if err != nil {
		log.Fatal(err)
	}
	for _, inst := range running {
		fmt.Println(inst.Name, inst.Health, inst.ConnectionString)
	}
}
