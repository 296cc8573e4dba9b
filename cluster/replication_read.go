package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"go.etcd.io/bbolt"
)

// Reads of the replication state: endpoints, rules, executions, tasks. Like
// every read they are bbolt read transactions on the local applied state.

// decodeAt decodes the value of k in bucket into v and reports whether
// there is one.
func decodeAt(tx *bbolt.Tx, bucket, k []byte, v any) (bool, error) {
	b := tx.Bucket(bucket).Get(k)
	if b == nil {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decode %s %q: %w", bucket, k, err)
	}
	return true, nil
}

// all decodes every value of bucket, in key order.
func all[T any](f *fsm, bucket []byte) ([]T, error) {
	out := []T{}
	err := f.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, b []byte) error {
			var v T
			if err := json.Unmarshal(b, &v); err != nil {
				return fmt.Errorf("decode %s %q: %w", bucket, k, err)
			}
			out = append(out, v)
			return nil
		})
	})
	return out, err
}

// one decodes the value of k in bucket; a missing one is oci.ErrNotFound,
// described by what.
func one[T any](f *fsm, bucket, k []byte, what string) (T, error) {
	var v T
	found := false
	err := f.view(func(tx *bbolt.Tx) error {
		var err error
		found, err = decodeAt(tx, bucket, k, &v)
		return err
	})
	if err == nil && !found {
		err = fmt.Errorf("%s: %w", what, oci.ErrNotFound)
	}
	return v, err
}

func (f *fsm) endpoints() ([]policy.Endpoint, error) { return all[policy.Endpoint](f, bucketEndpoints) }

func (f *fsm) endpoint(name string) (policy.Endpoint, error) {
	return one[policy.Endpoint](f, bucketEndpoints, []byte(name), fmt.Sprintf("endpoint %q", name))
}

func (f *fsm) rules() ([]policy.Rule, error) { return all[policy.Rule](f, bucketRules) }

func (f *fsm) rule(name string) (policy.Rule, error) {
	return one[policy.Rule](f, bucketRules, []byte(name), fmt.Sprintf("rule %q", name))
}

func (f *fsm) execution(id uint64) (policy.Execution, error) {
	e, err := one[execution](f, bucketExecutions, idKey(id), fmt.Sprintf("execution %d", id))
	return e.Execution, err
}

// execByToken returns the id of the execution that the start_execution
// with token made.
func (f *fsm) execByToken(token string) (uint64, bool, error) {
	var id uint64
	err := f.view(func(tx *bbolt.Tx) error {
		id = decodeUint(tx.Bucket(bucketExecTokens).Get([]byte(token)))
		return nil
	})
	return id, id != 0, err
}

// executions pages through the executions of rule ("": all), newest
// first, with ids below before (0: from the newest).
func (f *fsm) executions(rule string, before uint64, n int) ([]policy.Execution, error) {
	out := []policy.Execution{}
	if n <= 0 || hasSep(rule) {
		return out, nil
	}
	bucket, p := bucketExecutions, []byte(nil)
	if rule != "" {
		bucket, p = bucketRuleExecs, prefix(rule)
	}
	err := f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		var k []byte
		if before == 0 {
			k = lastWithPrefix(c, p)
		} else if k, _ = c.Seek(append(bytes.Clone(p), idKey(before)...)); k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, p) && len(out) < n; k, _ = c.Prev() {
			var e execution
			found, err := decodeAt(tx, bucketExecutions, k[len(p):], &e)
			if err != nil {
				return err
			}
			if found {
				out = append(out, e.Execution)
			}
		}
		return nil
	})
	return out, err
}

// lastWithPrefix moves c to the last key starting with p (nil: the last
// key) and returns it, or a key before them all when there is none.
func lastWithPrefix(c *bbolt.Cursor, p []byte) []byte {
	if len(p) == 0 {
		k, _ := c.Last()
		return k
	}
	// p ends with sep (0x00): the keys after all of p's start with p
	// but for a last byte of 0x01.
	end := bytes.Clone(p)
	end[len(end)-1]++
	if k, _ := c.Seek(end); k == nil {
		k, _ = c.Last()
		return k
	}
	k, _ := c.Prev()
	return k
}

// tasks pages through the tasks of execution exec in id order after after,
// of one status ("": all).
func (f *fsm) tasks(exec uint64, status string, after uint64, n int) ([]policy.Task, error) {
	out := []policy.Task{}
	var last []byte
	if after > 0 {
		last = idKey(after)
	}
	err := f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketExecTasks).Cursor()
		p := idKey(exec)
		start := append(bytes.Clone(p), last...)
		k, _ := c.Seek(start)
		if last != nil && bytes.Equal(k, start) {
			k, _ = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, p) && len(out) < n; k, _ = c.Next() {
			var t policy.Task
			found, err := decodeAt(tx, bucketTasks, k[len(p):], &t)
			if err != nil {
				return err
			}
			if found && (status == "" || t.Status == status) {
				out = append(out, t)
			}
		}
		return nil
	})
	return out, err
}

// latestTask returns the newest task of rule for repo and ref.
func (f *fsm) latestTask(rule, repo, ref string) (policy.Task, bool, error) {
	var (
		t     policy.Task
		found bool
	)
	if hasSep(rule) || hasSep(repo) || hasSep(ref) {
		return t, false, nil
	}
	err := f.view(func(tx *bbolt.Tx) error {
		id := tx.Bucket(bucketTaskLatest).Get(key(rule, repo, ref))
		if id == nil {
			return nil
		}
		var err error
		found, err = decodeAt(tx, bucketTasks, id, &t)
		return err
	})
	return t, found, err
}

// indexedTasks returns the tasks listed in an index bucket (active or
// running) for which keep is true, in id order.
func (f *fsm) indexedTasks(index []byte, keep func(policy.Task) bool) ([]policy.Task, error) {
	out := []policy.Task{}
	err := f.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(index).ForEach(func(k, _ []byte) error {
			var t policy.Task
			found, err := decodeAt(tx, bucketTasks, k, &t)
			if err == nil && found && keep(t) {
				out = append(out, t)
			}
			return err
		})
	})
	return out, err
}
