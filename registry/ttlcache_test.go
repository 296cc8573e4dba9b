package registry

import (
	"testing"
	"time"
)

// len is the number of entries, expired ones included.
func (c *ttlCache[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func TestTTLCacheBounded(t *testing.T) {
	c := newTTLCache[int, int](8)
	now := time.Now()
	for i := range 100 {
		c.put(i, i, now, now.Add(time.Minute))
		if c.len() > 8 {
			t.Fatalf("cache holds %d entries, bound 8", c.len())
		}
	}
	if v, ok := c.get(99, now); !ok || v != 99 {
		t.Fatalf("newest entry = %d, %t", v, ok)
	}
	if _, ok := c.get(99, now.Add(time.Minute)); ok {
		t.Fatal("an expired entry was served")
	}
}

// TestTTLCacheSweep: a full cache drops its expired entries first, and
// makes room for an eighth of its size at once, so that the next puts do
// not sweep it again.
func TestTTLCacheSweep(t *testing.T) {
	const size = 64
	c := newTTLCache[int, int](size)
	now := time.Now()
	for i := range size {
		c.put(i, i, now, now.Add(time.Duration(i+1)*time.Second))
	}
	// Entries 0..9 have expired 10 s on: the sweep drops exactly them.
	later := now.Add(10 * time.Second)
	c.put(size, size, later, later.Add(time.Minute))
	if n := c.len(); n != size-10+1 {
		t.Fatalf("after a sweep of 10 expired entries the cache holds %d, want %d", n, size-10+1)
	}
	for i := 10; i <= size; i++ {
		if _, ok := c.get(i, later); !ok {
			t.Fatalf("live entry %d was dropped though expired ones made room", i)
		}
	}
	// Nothing expired: arbitrary entries go, down to 7/8 of the size.
	for i := size + 1; c.len() < size; i++ {
		c.put(i, i, later, later.Add(time.Minute))
	}
	c.put(-1, -1, later, later.Add(time.Minute))
	if n := c.len(); n != size-size/8+1 {
		t.Fatalf("after a sweep of a full cache it holds %d, want %d", n, size-size/8+1)
	}
	if _, ok := c.get(-1, later); !ok {
		t.Fatal("the new entry is missing")
	}
}
