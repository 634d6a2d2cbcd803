package duroxide

// The engine cache: orchestration engines kept between turns (LRU).

import (
	"sync"
)

type engineCache struct {
	mu    sync.Mutex
	max   int
	items map[string]*cacheEntry
	head  *cacheEntry // most recent
	tail  *cacheEntry
}

type cacheEntry struct {
	key        string
	e          *engine
	prev, next *cacheEntry
}

func newEngineCache(max int) *engineCache {
	return &engineCache{max: max, items: map[string]*cacheEntry{}}
}

func (c *engineCache) unlink(n *cacheEntry) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		c.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		c.tail = n.prev
	}
	n.prev, n.next = nil, nil
}

// take removes and returns the cached engine of an instance.
func (c *engineCache) take(key string) *engine {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.items[key]
	if !ok {
		return nil
	}
	c.unlink(n)
	delete(c.items, key)
	return n.e
}

// put caches an engine and returns one evicted to make room, if any.
func (c *engineCache) put(key string, e *engine) *engine {
	if c.max < 0 {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var evicted *engine
	if old, ok := c.items[key]; ok {
		c.unlink(old)
		if old.e != e {
			evicted = old.e
		}
	}
	n := &cacheEntry{key: key, e: e, next: c.head}
	if c.head != nil {
		c.head.prev = n
	}
	c.head = n
	if c.tail == nil {
		c.tail = n
	}
	c.items[key] = n
	if len(c.items) > c.max && c.tail != nil && evicted == nil {
		t := c.tail
		c.unlink(t)
		delete(c.items, t.key)
		evicted = t.e
	}
	return evicted
}

func (c *engineCache) closeAll() {
	c.mu.Lock()
	items := c.items
	c.items, c.head, c.tail = map[string]*cacheEntry{}, nil, nil
	c.mu.Unlock()
	for _, n := range items {
		n.e.close()
	}
}
