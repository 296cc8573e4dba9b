package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// harness drives one fsm directly with raft.Log values.
type harness struct {
	t   testing.TB
	f   *fsm
	idx uint64
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	f, err := openFSM(filepath.Join(t.TempDir(), "state.db"), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.close() })
	return &harness{t: t, f: f}
}

func encode(t testing.TB, c command) []byte {
	t.Helper()
	b, err := encodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// applyRaw applies data as the next log entry and returns apply's error.
func (h *harness) applyRaw(data []byte) error {
	h.idx++
	r := h.f.Apply(&raft.Log{Index: h.idx, Term: 1, Type: raft.LogCommand, Data: data})
	if r == nil {
		return nil
	}
	return r.(error)
}

// apply applies c. A manifest's blobs are linked into its repository
// first, each by its own entry, as the registry does before it puts a
// manifest (apply refuses a manifest whose blobs are not linked).
func (h *harness) apply(c command) error {
	h.t.Helper()
	if c.Op == opPutManifest && c.Record != nil {
		for _, b := range c.Record.Blobs {
			if err := h.applyRaw(encode(h.t, linkCmd(c.Record.Repo, b))); err != nil {
				return err
			}
		}
	}
	return h.applyRaw(encode(h.t, c))
}

func linkCmd(repo string, d oci.Digest) command {
	return command{Op: opLinkBlob, Repo: repo, Digest: d, Size: 1, Time: 1700000000000000000}
}

func (h *harness) mustApply(c command) {
	h.t.Helper()
	if err := h.apply(c); err != nil {
		h.t.Fatalf("apply %s: %v", c.Op, err)
	}
}

func (h *harness) hash() string {
	h.t.Helper()
	s, err := h.f.hash()
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// count reads a counter bucket.
func (h *harness) count(bucket, k []byte) uint64 {
	h.t.Helper()
	var n uint64
	if err := h.f.view(func(tx *bbolt.Tx) error {
		n = decodeUint(tx.Bucket(bucket).Get(k))
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func blobDigest(i int) oci.Digest { return oci.DigestOf(fmt.Appendf(nil, "blob-%d", i)) }

// manifest builds a record and payload; seed makes the bytes (and digest)
// unique. With children it is an index.
func manifest(repo, seed string, blobs, children []oci.Digest, subject oci.Digest) (oci.Record, []byte) {
	payload := fmt.Appendf(nil, `{"schemaVersion":2,"seed":%q}`, seed)
	mt := oci.MediaTypeImageManifest
	if children != nil {
		mt = oci.MediaTypeImageIndex
	}
	return oci.Record{
		Repo:         repo,
		Digest:       oci.DigestOf(payload),
		MediaType:    mt,
		Size:         int64(len(payload)),
		ArtifactType: "application/vnd.test",
		Subject:      subject,
		Blobs:        blobs,
		Children:     children,
		Created:      1700000000000000000,
	}, payload
}

func putCmd(rec oci.Record, payload []byte, tag string) command {
	return command{Op: opPutManifest, Record: &rec, Payload: payload, Tag: tag}
}

// checkInvariants recomputes every index from the manifests and tags and
// compares it with what apply maintained.
func checkInvariants(t testing.TB, f *fsm) {
	t.Helper()
	err := f.view(func(tx *bbolt.Tx) error {
		want := map[string]map[string][]byte{}
		for _, b := range [][]byte{bucketRepos, bucketBlobRefs, bucketRepoBlobRefs, bucketChildren, bucketReferrers, bucketTagsByDigest} {
			want[string(b)] = map[string][]byte{}
		}
		addCount := func(b []byte, k []byte) {
			m := want[string(b)]
			m[string(k)] = encodeUint(decodeUint(m[string(k)]) + 1)
		}
		err := tx.Bucket(bucketManifests).ForEach(func(k, v []byte) error {
			var r oci.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if !bytes.Equal(k, key(r.Repo, string(r.Digest))) {
				return fmt.Errorf("manifest key %q holds %s in %s", k, r.Digest, r.Repo)
			}
			if tx.Bucket(bucketPayloads).Get(k) == nil {
				return fmt.Errorf("manifest %q has no payload", k)
			}
			addCount(bucketRepos, []byte(r.Repo))
			for _, b := range uniq(r.Blobs) {
				addCount(bucketBlobRefs, []byte(b))
				addCount(bucketRepoBlobRefs, key(r.Repo, string(b)))
			}
			for _, c := range uniq(r.Children) {
				want[string(bucketChildren)][string(key(r.Repo, string(c), string(r.Digest)))] = []byte{}
			}
			if r.Subject != "" {
				d, _ := json.Marshal(r.Descriptor())
				want[string(bucketReferrers)][string(key(r.Repo, string(r.Subject), string(r.Digest)))] = d
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketTags).ForEach(func(k, v []byte) error {
			repo, tag, _ := bytes.Cut(k, []byte(sep))
			if tx.Bucket(bucketManifests).Get(key(string(repo), string(v))) == nil {
				return fmt.Errorf("tag %q points to missing manifest %s", k, v)
			}
			want[string(bucketTagsByDigest)][string(key(string(repo), string(v), string(tag)))] = []byte{}
			return nil
		})
		if err != nil {
			return err
		}
		if tx.Bucket(bucketPayloads).Stats().KeyN != tx.Bucket(bucketManifests).Stats().KeyN {
			return fmt.Errorf("payloads and manifests differ in number")
		}
		for name, m := range want {
			got := map[string][]byte{}
			tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
				got[string(k)] = bytes.Clone(v)
				return nil
			})
			if len(got) != len(m) {
				return fmt.Errorf("bucket %s: %d entries, want %d", name, len(got), len(m))
			}
			for k, v := range m {
				if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
					return fmt.Errorf("bucket %s key %q = %x (present %v), want %x", name, k, g, ok, v)
				}
			}
		}
		// links and links_by_blob mirror each other.
		var links, rev []string
		tx.Bucket(bucketLinks).ForEach(func(k, _ []byte) error { links = append(links, string(k)); return nil })
		tx.Bucket(bucketLinksByBlob).ForEach(func(k, _ []byte) error {
			d, repo, _ := bytes.Cut(k, []byte(sep))
			rev = append(rev, string(key(string(repo), string(d))))
			return nil
		})
		slices.Sort(rev)
		if !slices.Equal(links, rev) {
			return fmt.Errorf("links %q and links_by_blob %q differ", links, rev)
		}
		return checkReplication(tx)
	})
	if err != nil {
		t.Fatalf("invariant: %v", err)
	}
	checkUsage(t, f)
	checkAudit(t, f)
}
