package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/toygres/toygres/duroxide"
)

// countingStore wraps a duroxide store in profile mode and counts the
// fetches that found work and those that found none (an empty fetch still
// costs a write-path round trip). It is never used for timed comparisons.
type countingStore struct {
	duroxide.Store
	notifier                                   duroxide.Notifier
	orchFound, orchEmpty, workFound, workEmpty atomic.Int64
}

func (c *countingStore) Watch(fn func(q duroxide.Queue)) func() { return c.notifier.Watch(fn) }

func (c *countingStore) FetchOrchestrationItem(ctx context.Context, d time.Duration) (*duroxide.OrchestrationItem, error) {
	it, err := c.Store.FetchOrchestrationItem(ctx, d)
	if it != nil {
		c.orchFound.Add(1)
	} else {
		c.orchEmpty.Add(1)
	}
	return it, err
}

func (c *countingStore) FetchWorkItem(ctx context.Context, d time.Duration) (*duroxide.WorkItemLease, error) {
	it, err := c.Store.FetchWorkItem(ctx, d)
	if it != nil {
		c.workFound.Add(1)
	} else {
		c.workEmpty.Add(1)
	}
	return it, err
}

// countingLocalStore is a countingStore over a store with local dispatch
// and one-statement starts, which it passes through uncounted.
type countingLocalStore struct {
	*countingStore
	duroxide.LocalDispatcher
	duroxide.Starter
}

// wrapCounting wraps s, keeping its local dispatch and starts if it has them.
func wrapCounting(s duroxide.Store) (duroxide.Store, *countingStore) {
	cs := &countingStore{Store: s, notifier: s.(duroxide.Notifier)}
	ld, ok1 := s.(duroxide.LocalDispatcher)
	st, ok2 := s.(duroxide.Starter)
	if ok1 && ok2 {
		return &countingLocalStore{countingStore: cs, LocalDispatcher: ld, Starter: st}, cs
	}
	return cs, cs
}

func (c *countingStore) write(path, extra string) {
	s := fmt.Sprintf("FetchOrchestrationItem: %d found work, %d empty\nFetchWorkItem: %d found work, %d empty\n",
		c.orchFound.Load(), c.orchEmpty.Load(), c.workFound.Load(), c.workEmpty.Load()) + extra
	_ = os.WriteFile(path, []byte(s), 0o644)
}
