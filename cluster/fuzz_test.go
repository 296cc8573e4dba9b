package cluster

import (
	"errors"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
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
		versionedPut(child, pc, "v2", 5, oci.TagVersion{HLC: 1 << 20, Origin: "cb"}),
		deleteTagCmd("app/web", "latest", 5, oci.TagVersion{}, child.Digest),
		ruleCmd(policy.Rule{Name: "all", Endpoint: "mirror", Trigger: policy.TriggerEvent, Enabled: true}),
		{Op: opDeleteEndpoint, Name: "mirror"},
		{Op: opStartExecution, Name: "ev", Trigger: "manual", Tasks: []policy.Task{{Kind: "copy", Repo: "a", Digest: blobDigest(1)}}, Time: 1},
		{Op: opClaimTasks, Node: "n", Claim: "c", Max: 5, Time: 1, Until: 9},
		{Op: opUpdateTasks, Updates: []policy.TaskUpdate{{ID: 1, Claim: "c", Status: "failed"}}, Time: 2},
		{Op: opStopExecution, Exec: 1, Time: 3},
		{Op: opPruneHistory, Time: 9, Keep: 1},
		{Op: opPurgeTombstones, Time: 9},
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
			known := false
			for _, s := range []error{ErrBadCommand, oci.ErrNotFound, oci.ErrDenied, oci.ErrManifestBlobUnknown, oci.ErrSuperseded, oci.ErrPreconditionFailed, policy.ErrInvalid} {
				known = known || errors.Is(err, s)
			}
			if !known {
				t.Fatalf("unexpected kind of rejection: %v", err)
			}
			if h.hash() != before {
				t.Fatalf("rejected command %q changed the state: %v", data, err)
			}
		}
		checkInvariants(t, h.f)
	})
}
