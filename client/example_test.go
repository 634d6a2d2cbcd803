package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/toygres/toygres/client"
)

// The examples run against the test server that TestMain starts: serverURL,
// fingerprint and token stand for what `toygres server start` prints and
// `toygres login` (or the server's credentials.json) gives.

func ExampleNew() {
	c, err := client.New(serverURL, client.WithToken(token), client.WithFingerprint(fingerprint))
	if err != nil {
		log.Fatal(err)
	}
	h, err := c.Health(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(h.Status)
	// Output: healthy
}

func ExampleClient_CreateInstance() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := client.New(serverURL, client.WithToken(token), client.WithFingerprint(fingerprint))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.CreateInstance(ctx, client.CreateInstanceRequest{Name: "example-orders", Password: "s3cret-passw0rd", StorageGB: 1}); err != nil {
		log.Fatal(err)
	}
	in, err := c.WaitForInstance(ctx, "example-orders", client.WaitOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(in.Name, in.State) // in.ConnectionString holds the password

	if _, err := c.DeleteInstance(ctx, "example-orders"); err != nil {
		log.Fatal(err)
	}
	if _, err := c.WaitForInstance(ctx, "example-orders", client.WaitOptions{State: client.StateDeleted}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("deleted")
	// Output:
	// example-orders running
	// deleted
}

func ExampleError() {
	ctx := context.Background()
	c, err := client.New(serverURL, client.WithToken(token), client.WithFingerprint(fingerprint))
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.GetInstance(ctx, "no-such-instance", client.GetInstanceOptions{})
	fmt.Println(errors.Is(err, client.ErrNotFound))

	_, err = c.CreateInstance(ctx, client.CreateInstanceRequest{Name: "example-bad", Password: "short"})
	var ae *client.Error
	if errors.As(err, &ae) {
		fmt.Println(ae.Status, ae.Field)
	}
	// Output:
	// true
	// 400 password
}

func ExampleClient_ListInstances() {
	c, err := client.New(serverURL, client.WithToken(token), client.WithFingerprint(fingerprint))
	if err != nil {
		log.Fatal(err)
	}
	l, err := c.ListInstances(context.Background(), client.ListInstancesOptions{States: []string{"running"}, Name: "nothing-by-this-name"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Count)
	// Output: 0
}
