package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"go.etcd.io/bbolt"
)

// Tag versions and tombstones (see oci.TagVersion and DESIGN.md, "Tag
// versions and tombstones"). A tag's version is kept beside it; a delete
// leaves a tombstone with the version of the delete, so that a replicated
// write older than the delete cannot bring the tag back.

// tagWrite is what a put_manifest does to its tag.
type tagWrite struct {
	version oci.TagVersion // the tag's version after the write
	changed bool           // the tag moved or its version rose: the write makes events
}

// checkVersioning validates the version fields of a put or delete.
func checkVersioning(c command) error {
	if c.Origin != "" {
		if _, err := oci.ParseTagVersion("1." + c.Origin); err != nil {
			return badf("origin %q: %v", c.Origin, err)
		}
	}
	if !c.Version.IsZero() {
		if v, err := oci.ParseTagVersion(c.Version.String()); err != nil || v != c.Version {
			return badf("version %+v: %v", c.Version, err)
		}
	}
	return nil
}

// localVersion is the version of a local write of c over a tag whose last
// version was prev; a command from before versions (no origin) leaves the
// tag unversioned.
func localVersion(prev oci.TagVersion, c command) oci.TagVersion {
	if c.Origin == "" {
		return oci.TagVersion{}
	}
	return oci.Next(prev, time.Unix(0, c.Time), c.Origin)
}

// tagVersion reads the version of repo:tag (zero: unversioned or absent).
func (w *writer) tagVersion(repo, tag string) (oci.TagVersion, error) {
	var v oci.TagVersion
	_, err := w.getJSON(bucketTagVersions, key(repo, tag), &v)
	return v, err
}

// tagPut decides what a put_manifest of digest d tagged repo:tag does to
// the tag. A local write (c.Version zero) gets the next version, except
// that a re-push of the digest the tag holds changes nothing. A replicated
// write keeps its version if it is higher than the tag's and than its
// tombstone's, and is refused (oci.ErrSuperseded) otherwise, unless the
// tag already holds exactly that write: then it changes nothing.
func (w *writer) tagPut(repo, tag string, d oci.Digest, c command) (tagWrite, error) {
	prev := oci.Digest(w.get(bucketTags, key(repo, tag)))
	cur, err := w.tagVersion(repo, tag)
	if err != nil {
		return tagWrite{}, err
	}
	floor := cur
	var ts policy.Tombstone
	found, err := w.getJSON(bucketTombstones, key(repo, tag), &ts)
	if err != nil {
		return tagWrite{}, err
	}
	if found && ts.Version.Compare(floor) > 0 {
		floor = ts.Version
	}
	v := c.Version
	switch {
	case prev == d && (v.IsZero() || v == cur):
		return tagWrite{version: cur}, nil
	case v.IsZero():
		return tagWrite{version: localVersion(floor, c), changed: true}, nil
	case v.Compare(floor) <= 0:
		return tagWrite{}, fmt.Errorf("put %s:%s at version %s: it is at %s: %w", repo, tag, v, floor, oci.ErrSuperseded)
	}
	return tagWrite{version: v, changed: true}, nil
}

// setVersion records the version of repo:tag.
func (w *writer) setVersion(repo, tag string, v oci.TagVersion) {
	if v.IsZero() {
		w.del(bucketTagVersions, key(repo, tag))
		return
	}
	w.putJSON(bucketTagVersions, key(repo, tag), v)
}

// dropTag removes the tag of ts and leaves ts as its tombstone.
func (w *writer) dropTag(ts policy.Tombstone) {
	tk := key(ts.Repo, ts.Tag)
	w.del(bucketTags, tk)
	w.del(bucketTagsByDigest, key(ts.Repo, string(ts.Digest), ts.Tag))
	w.del(bucketTagVersions, tk)
	w.putJSON(bucketTombstones, tk, ts)
}

// purgeTombstones forgets the tombstones of deletes made before before
// (unix nanoseconds).
func (w *writer) purgeTombstones(before int64) error {
	var old [][]byte
	err := w.tx.Bucket(bucketTombstones).ForEach(func(k, v []byte) error {
		var ts policy.Tombstone
		if err := json.Unmarshal(v, &ts); err != nil {
			return &storageError{err: fmt.Errorf("decode tombstone %q: %w", k, err)}
		}
		if ts.Time < before {
			old = append(old, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range old {
		w.del(bucketTombstones, k)
	}
	return nil
}

// tagVersion returns the version of repo:tag and true, or, when the tag
// does not exist, its tombstone's version (zero without one) and false.
func (f *fsm) tagVersion(repo, tag string) (oci.TagVersion, bool, error) {
	var (
		v     oci.TagVersion
		found bool
	)
	if hasSep(repo) || hasSep(tag) {
		return v, false, nil
	}
	k := key(repo, tag)
	err := f.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTagVersions).Get(k)
		found = tx.Bucket(bucketTags).Get(k) != nil
		if !found {
			var ts policy.Tombstone
			if t := tx.Bucket(bucketTombstones).Get(k); t != nil {
				if err := json.Unmarshal(t, &ts); err != nil {
					return fmt.Errorf("decode tombstone of %s:%s: %w", repo, tag, err)
				}
			}
			v = ts.Version
			return nil
		}
		if b == nil {
			return nil
		}
		return json.Unmarshal(b, &v)
	})
	return v, found, err
}

// tombstones pages through the tombstones of repo, by tag, after last.
func (f *fsm) tombstones(repo, last string, n int) ([]policy.Tombstone, error) {
	out := []policy.Tombstone{}
	if hasSep(repo) || hasSep(last) {
		return out, nil
	}
	err := f.pageValues(bucketTombstones, prefix(repo), []byte(last), n, func(_, v []byte) error {
		var ts policy.Tombstone
		if err := json.Unmarshal(v, &ts); err != nil {
			return fmt.Errorf("decode tombstone in %s: %w", repo, err)
		}
		out = append(out, ts)
		return nil
	})
	return out, err
}

// pageValues calls fn with at most n entries of bucket under prefix p whose
// key after p is strictly after last, in byte order. It seeks, so it costs
// O(n) whatever the bucket's size.
func (f *fsm) pageValues(bucket, p, last []byte, n int, fn func(k, v []byte) error) error {
	if n <= 0 {
		return nil
	}
	return f.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		start := append(bytes.Clone(p), last...)
		k, v := c.Seek(start)
		if len(last) > 0 && bytes.Equal(k, start) {
			k, v = c.Next()
		}
		for i := 0; k != nil && bytes.HasPrefix(k, p) && i < n; k, v = c.Next() {
			if err := fn(k[len(p):], v); err != nil {
				return err
			}
			i++
		}
		return nil
	})
}
