package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/berth-registry/berth/oci"
	"go.etcd.io/bbolt"
)

// Reads of the local applied state. None of them goes through Raft.

func (f *fsm) manifest(repo string, d oci.Digest) (oci.Record, []byte, error) {
	var (
		rec     oci.Record
		payload []byte
		found   bool
	)
	if !hasSep(repo) && !hasSep(string(d)) {
		k := key(repo, string(d))
		err := f.view(func(tx *bbolt.Tx) error {
			v := tx.Bucket(bucketManifests).Get(k)
			if v == nil {
				return nil
			}
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode manifest %s in %s: %w", d, repo, err)
			}
			payload = bytes.Clone(tx.Bucket(bucketPayloads).Get(k))
			found = true
			return nil
		})
		if err != nil {
			return oci.Record{}, nil, err
		}
	}
	if !found {
		return oci.Record{}, nil, fmt.Errorf("manifest %s in %s: %w", d, repo, oci.ErrNotFound)
	}
	return rec, payload, nil
}

func (f *fsm) tag(repo, tag string) (oci.Digest, error) {
	var d oci.Digest
	if !hasSep(repo) && !hasSep(tag) {
		err := f.view(func(tx *bbolt.Tx) error {
			d = oci.Digest(tx.Bucket(bucketTags).Get(key(repo, tag)))
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	if d == "" {
		return "", fmt.Errorf("tag %s in %s: %w", tag, repo, oci.ErrNotFound)
	}
	return d, nil
}

func (f *fsm) blobLinked(repo string, d oci.Digest) (bool, error) {
	if hasSep(repo) || hasSep(string(d)) {
		return false, nil
	}
	var ok bool
	k := key(repo, string(d))
	err := f.view(func(tx *bbolt.Tx) error {
		ok = tx.Bucket(bucketLinks).Get(k) != nil || tx.Bucket(bucketRepoBlobRefs).Get(k) != nil
		return nil
	})
	return ok, err
}

// page returns at most n key suffixes after p, strictly after last, in byte
// order. It seeks, so it costs O(n) whatever the bucket's size.
func (f *fsm) page(bucket, p []byte, last string, n int) ([]string, error) {
	out := []string{}
	if n <= 0 || hasSep(last) {
		return out, nil
	}
	err := f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		start := append(bytes.Clone(p), last...)
		k, _ := c.Seek(start)
		if last != "" && bytes.Equal(k, start) {
			k, _ = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, p) && len(out) < n; k, _ = c.Next() {
			out = append(out, string(k[len(p):]))
		}
		return nil
	})
	return out, err
}

// tags pages through repo's tags; a repository without manifests does not
// exist, so it is oci.ErrNotFound (the registry's NAME_UNKNOWN) rather than
// an empty list.
func (f *fsm) tags(repo, last string, n int) ([]string, error) {
	exists := false
	if !hasSep(repo) {
		if err := f.view(func(tx *bbolt.Tx) error {
			exists = tx.Bucket(bucketRepos).Get([]byte(repo)) != nil
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if !exists {
		return nil, fmt.Errorf("repository %q: %w", repo, oci.ErrNotFound)
	}
	return f.page(bucketTags, prefix(repo), last, n)
}

func (f *fsm) repositories(last string, n int) ([]string, error) {
	return f.page(bucketRepos, nil, last, n)
}

func (f *fsm) referrers(repo string, subject oci.Digest) ([]oci.Descriptor, error) {
	out := []oci.Descriptor{}
	if hasSep(repo) || hasSep(string(subject)) {
		return out, nil
	}
	p := prefix(repo, string(subject))
	err := f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketReferrers).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var d oci.Descriptor
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("decode referrer %s of %s in %s: %w", k[len(p):], subject, repo, err)
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

func (f *fsm) referencedBlobs() (map[oci.Digest]struct{}, error) {
	out := map[oci.Digest]struct{}{}
	err := f.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketBlobRefs).ForEach(func(k, v []byte) error {
			if decodeUint(v) > 0 {
				out[oci.Digest(k)] = struct{}{}
			}
			return nil
		})
	})
	return out, err
}

// liveBlobs returns every blob that a manifest references or that a
// repository linked at or after since (unix nanoseconds; 0: ever).
func (f *fsm) liveBlobs(since int64) (map[oci.Digest]struct{}, error) {
	out, err := f.referencedBlobs()
	if err != nil {
		return nil, err
	}
	err = f.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketLinks).ForEach(func(k, v []byte) error {
			if since != 0 && linkTime(v) < since {
				return nil
			}
			i := bytes.LastIndexByte(k, sep[0])
			if i >= 0 {
				out[oci.Digest(k[i+1:])] = struct{}{}
			}
			return nil
		})
	})
	return out, err
}

// isReferenced reports whether a committed manifest references blob d.
func (f *fsm) isReferenced(d oci.Digest) bool {
	var ok bool
	_ = f.view(func(tx *bbolt.Tx) error {
		ok = decodeUint(tx.Bucket(bucketBlobRefs).Get([]byte(d))) > 0
		return nil
	})
	return ok
}

func (f *fsm) user(name string) (user, bool, error) {
	var (
		u     user
		found bool
	)
	err := f.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(name))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &u)
	})
	if err != nil {
		return user{}, false, fmt.Errorf("read user %s: %w", name, err)
	}
	return u, found, nil
}

// hash is a sha256 over every bucket but meta: bucket names, keys and
// values, each marked with its kind and length-prefixed, in bbolt's (byte)
// order.
func (f *fsm) hash() (string, error) {
	h := sha256.New()
	write := func(kind byte, b []byte) {
		var n [9]byte
		n[0] = kind
		binary.BigEndian.PutUint64(n[1:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	err := f.view(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			if bytes.Equal(name, bucketMeta) {
				return nil
			}
			write('b', name)
			return b.ForEach(func(k, v []byte) error {
				write('k', k)
				write('v', v)
				return nil
			})
		})
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
