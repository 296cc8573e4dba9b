package clustertest_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
)

// blob returns the digest of a made-up blob.
func blob(format string, args ...any) oci.Digest {
	return oci.DigestOf(fmt.Appendf(nil, "blob "+format, args...))
}

// image returns the record and payload of a made-up image manifest in
// repo with the given layers; seed makes its bytes unique.
func image(repo, seed string, layers ...oci.Digest) (oci.Record, []byte) {
	payload := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"seed":%q}`, oci.MediaTypeImageManifest, seed)
	return oci.Record{
		Repo:      repo,
		Digest:    oci.DigestOf(payload),
		MediaType: oci.MediaTypeImageManifest,
		Size:      int64(len(payload)),
		Blobs:     layers,
		Created:   1700000000000000000,
	}, payload
}

// push links a layer into repo and puts a manifest of it tagged tag,
// through node i, and returns the manifest's record.
func push(t *testing.T, c *clustertest.Cluster, i int, repo, tag string) oci.Record {
	t.Helper()
	ctx := t.Context()
	layer := blob("%s:%s", repo, tag)
	rec, payload := image(repo, tag, layer)
	if err := retry(t, func() error { return c.Node(i).LinkBlob(ctx, repo, layer, 10) }); err != nil {
		t.Fatalf("link %s through %s: %v", layer, c.ID(i), err)
	}
	if err := retry(t, func() error { return c.Node(i).PutManifest(ctx, rec, payload, tag, oci.TagVersion{}) }); err != nil {
		t.Fatalf("put %s:%s through %s: %v", repo, tag, c.ID(i), err)
	}
	return rec
}

// checkPushed fails unless node i has repo:tag pointing at rec, its
// payload, and its layer.
func checkPushed(t *testing.T, c *clustertest.Cluster, i int, rec oci.Record, tag string) {
	t.Helper()
	ctx := t.Context()
	n := c.Node(i)
	if d, err := n.Tag(ctx, rec.Repo, tag); err != nil || d != rec.Digest {
		t.Errorf("%s: tag %s:%s = %s, %v; want %s", c.ID(i), rec.Repo, tag, d, err, rec.Digest)
	}
	if got, _, err := n.Manifest(ctx, rec.Repo, rec.Digest); err != nil || got.Digest != rec.Digest {
		t.Errorf("%s: manifest %s@%s: %v", c.ID(i), rec.Repo, rec.Digest, err)
	}
	for _, l := range rec.Blobs {
		if ok, err := n.BlobLinked(ctx, rec.Repo, l); err != nil || !ok {
			t.Errorf("%s: layer %s of %s: linked %v, %v", c.ID(i), l, rec.Repo, ok, err)
		}
	}
}

// writeWithin bounds the retries of one write.
const writeWithin = 10 * time.Second

// retry calls op until it fails with something other than
// oci.ErrUnavailable, and returns that (or nil). A busy test machine (two
// CPUs, the race detector) sees a leader change now and then, and writes
// fail while it lasts (the writes of these tests repeat to the same
// state); a follower that falls behind answers reads as unavailable. It
// fails the test when op is still unavailable after writeWithin.
func retry(t *testing.T, op func() error) error {
	t.Helper()
	deadline := time.Now().Add(writeWithin)
	for {
		err := op()
		if !errors.Is(err, oci.ErrUnavailable) {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("still unavailable after %s: %v", writeWithin, err)
		}
	}
}

// hashOf returns node i's StateHash.
func hashOf(t *testing.T, n *cluster.Node) string {
	t.Helper()
	h, err := n.StateHash(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return h
}
