package registry

import (
	"sync"
	"time"
)

// ttlCache is a bounded map whose entries expire. Auth uses it for
// credentials, accounts and verified tokens: all small, all hot, all
// safe to forget.
type ttlCache[K comparable, V any] struct {
	size int

	mu      sync.Mutex
	entries map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	value   V
	expires time.Time
}

func newTTLCache[K comparable, V any](size int) *ttlCache[K, V] {
	return &ttlCache[K, V]{size: size, entries: make(map[K]ttlEntry[V])}
}

// get returns the value of k while it has not expired at now.
func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.value, true
}

// put remembers v under k until expires. A full cache first drops its
// expired entries, then arbitrary ones, down to seven eighths of its size:
// the sweep over every entry (under the lock every get takes) is paid once
// per size/8 new entries, not on each one while the cache stays full.
func (c *ttlCache[K, V]) put(k K, v V, now, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.size {
		for key, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, key)
			}
		}
		keep := c.size - max(c.size/8, 1)
		for key := range c.entries {
			if len(c.entries) <= keep {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = ttlEntry[V]{value: v, expires: expires}
}

// drop forgets k.
func (c *ttlCache[K, V]) drop(k K) {
	c.mu.Lock()
	delete(c.entries, k)
	c.mu.Unlock()
}
