package cluster

import (
	"errors"
	"testing"

	"github.com/berth-registry/berth/oci"
)

// FuzzApply feeds arbitrary bytes to apply on a populated state: it must
// never panic, a rejected command must not change the state, and an
// accepted one must keep every index consistent.
func FuzzApply(f *testing.F) {
	child, pc := manifest("app/web", "child", []oci.Digest{blobDigest(1)}, nil, "")
	seeds := []command{
		putCmd(child, pc, "v1"),
		{Op: opDeleteManifest, Repo: "app/web", Digest: child.Digest},
		{Op: opDeleteTag, Repo: "app/web", Tag: "amd64"},
		{Op: opLinkBlob, Repo: "x", Digest: blobDigest(2), Size: 4, Time: 9},
		{Op: opUnlinkBlob, Repo: "app/db", Digest: blobDigest(9)},
		{Op: opUnlinkBlobs, Digests: []oci.Digest{blobDigest(1), blobDigest(9)}},
		{Op: opPutUser, Name: "admin", Hash: []byte("h")},
	}
	for _, c := range seeds {
		b, _ := encodeCommand(c)
		f.Add(b)
	}
	f.Add([]byte(`{"op":"put_manifest","record":{"repo":"a","digest":"sha256:00"},"payload":"AA=="}`))
	f.Add([]byte(`{"op":"delete_manifest","repo":"a\u0000b"}`))
	f.Add([]byte(`{"op":7}`))
	f.Add([]byte{})
	f.Add([]byte("null"))

	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		populate(h)
		before := h.hash()
		err := h.applyRaw(data)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) && !errors.Is(err, oci.ErrNotFound) && !errors.Is(err, oci.ErrDenied) && !errors.Is(err, oci.ErrManifestBlobUnknown) {
				t.Fatalf("unexpected kind of rejection: %v", err)
			}
			if h.hash() != before {
				t.Fatalf("rejected command %q changed the state: %v", data, err)
			}
		}
		checkInvariants(t, h.f)
	})
}
