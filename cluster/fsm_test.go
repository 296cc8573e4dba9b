package cluster

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/hashicorp/raft"
)

func TestPutManifestAndRead(t *testing.T) {
	h := newHarness(t)
	cfg, layer := blobDigest(1), blobDigest(2)
	rec, payload := manifest("library/alpine", "m1", []oci.Digest{cfg, layer}, nil, "")
	h.mustApply(putCmd(rec, payload, "3.20"))

	gotRec, gotPayload, err := h.f.manifest("library/alpine", rec.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if string(gotPayload) != string(payload) || gotRec.Digest != rec.Digest || gotRec.Created != rec.Created {
		t.Fatalf("manifest = %+v %q", gotRec, gotPayload)
	}
	if d, err := h.f.tag("library/alpine", "3.20"); err != nil || d != rec.Digest {
		t.Fatalf("tag = %s, %v", d, err)
	}
	if repos, _ := h.f.repositories("", 10); !slices.Equal(repos, []string{"library/alpine"}) {
		t.Fatalf("repositories = %q", repos)
	}
	for _, tc := range []struct {
		repo string
		d    oci.Digest
		want bool
	}{
		{"library/alpine", cfg, true},
		{"library/alpine", layer, true},
		{"library/alpine", blobDigest(3), false},
		{"other", cfg, false},
	} {
		if got, err := h.f.blobLinked(tc.repo, tc.d); err != nil || got != tc.want {
			t.Errorf("blobLinked(%s, %s) = %v, %v; want %v", tc.repo, tc.d, got, err, tc.want)
		}
	}
	refs, _ := h.f.referencedBlobs()
	if len(refs) != 2 {
		t.Fatalf("referenced blobs = %v", refs)
	}
	if _, _, err := h.f.manifest("library/alpine", blobDigest(9)); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("missing manifest: %v", err)
	}
	if _, err := h.f.tag("library/alpine", "nope"); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("missing tag: %v", err)
	}
	checkInvariants(t, h.f)
}

func TestPutManifestTwiceCountsOnce(t *testing.T) {
	h := newHarness(t)
	b := blobDigest(1)
	// The same blob twice in one manifest (an empty config reused as a
	// layer) counts once too.
	rec, payload := manifest("r", "m1", []oci.Digest{b, b}, nil, "")
	h.mustApply(putCmd(rec, payload, "v1"))
	first := h.hash()
	h.mustApply(putCmd(rec, payload, "v1"))
	if h.hash() != first {
		t.Fatal("re-putting the same manifest and tag changed the state")
	}
	if n := h.count(bucketBlobRefs, []byte(b)); n != 1 {
		t.Fatalf("blob refs = %d, want 1", n)
	}
	if n := h.count(bucketRepos, []byte("r")); n != 1 {
		t.Fatalf("repo manifests = %d, want 1", n)
	}
	// A second repository referencing the blob counts separately.
	rec2, payload2 := manifest("s", "m1", []oci.Digest{b}, nil, "")
	h.mustApply(putCmd(rec2, payload2, ""))
	if n := h.count(bucketBlobRefs, []byte(b)); n != 2 {
		t.Fatalf("blob refs = %d, want 2", n)
	}
	h.mustApply(command{Op: opDeleteManifest, Repo: "r", Digest: rec.Digest})
	if n := h.count(bucketBlobRefs, []byte(b)); n != 1 {
		t.Fatalf("blob refs after delete = %d, want 1", n)
	}
	h.mustApply(command{Op: opDeleteManifest, Repo: "s", Digest: rec2.Digest})
	if refs, _ := h.f.referencedBlobs(); len(refs) != 0 {
		t.Fatalf("referenced blobs after deleting all = %v", refs)
	}
	checkInvariants(t, h.f)
}

func TestPutManifestMovesTag(t *testing.T) {
	h := newHarness(t)
	a, pa := manifest("r", "a", []oci.Digest{blobDigest(1)}, nil, "")
	b, pb := manifest("r", "b", []oci.Digest{blobDigest(2)}, nil, "")
	h.mustApply(putCmd(a, pa, "latest"))
	h.mustApply(putCmd(b, pb, "latest"))
	if d, _ := h.f.tag("r", "latest"); d != b.Digest {
		t.Fatalf("latest = %s, want %s", d, b.Digest)
	}
	// Deleting the old target must not take the moved tag with it.
	h.mustApply(command{Op: opDeleteManifest, Repo: "r", Digest: a.Digest})
	if d, err := h.f.tag("r", "latest"); err != nil || d != b.Digest {
		t.Fatalf("latest after deleting old target = %s, %v", d, err)
	}
	checkInvariants(t, h.f)
}

func TestDeleteManifest(t *testing.T) {
	h := newHarness(t)
	child, pc := manifest("r", "child", []oci.Digest{blobDigest(1)}, nil, "")
	index, pi := manifest("r", "index", nil, []oci.Digest{child.Digest}, "")
	sig, ps := manifest("r", "sig", []oci.Digest{blobDigest(2)}, nil, child.Digest)
	// The same child digest listed by an index in another repo does not
	// protect r's copy.
	otherChild, poc := manifest("o", "child", []oci.Digest{blobDigest(1)}, nil, "")
	otherIndex, poi := manifest("o", "index", nil, []oci.Digest{otherChild.Digest}, "")
	for _, c := range []command{
		putCmd(child, pc, "c1"), putCmd(child, pc, "c2"), putCmd(index, pi, "multi"),
		putCmd(sig, ps, ""), putCmd(otherChild, poc, ""), putCmd(otherIndex, poi, ""),
	} {
		h.mustApply(c)
	}

	missing := blobDigest(42)
	if err := h.apply(command{Op: opDeleteManifest, Repo: "r", Digest: missing}); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	before := h.hash()
	err := h.apply(command{Op: opDeleteManifest, Repo: "r", Digest: child.Digest})
	if !errors.Is(err, oci.ErrDenied) || !strings.Contains(err.Error(), string(index.Digest)) {
		t.Fatalf("delete child of an index: %v", err)
	}
	if h.hash() != before {
		t.Fatal("a refused delete changed the state")
	}

	h.mustApply(command{Op: opDeleteManifest, Repo: "r", Digest: index.Digest})
	if _, err := h.f.tag("r", "multi"); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("tag of deleted index: %v", err)
	}
	// The referrer is listed under its subject until the referrer goes.
	if refs, _ := h.f.referrers("r", child.Digest); len(refs) != 1 || refs[0].Digest != sig.Digest {
		t.Fatalf("referrers = %+v", refs)
	}
	h.mustApply(command{Op: opDeleteManifest, Repo: "r", Digest: child.Digest})
	for _, tag := range []string{"c1", "c2"} {
		if _, err := h.f.tag("r", tag); !errors.Is(err, oci.ErrNotFound) {
			t.Fatalf("tag %s of deleted manifest: %v", tag, err)
		}
	}
	// A referrer whose subject is gone stays (the spec allows it).
	if refs, _ := h.f.referrers("r", child.Digest); len(refs) != 1 {
		t.Fatalf("referrers after subject deleted = %+v", refs)
	}
	// Its upload link stays (until GC), but no manifest of r references it.
	if n := h.count(bucketRepoBlobRefs, key("r", string(blobDigest(1)))); n != 0 {
		t.Fatalf("r's manifests still reference blob 1 %d times", n)
	}
	if n := h.count(bucketBlobRefs, []byte(blobDigest(1))); n != 1 {
		t.Fatalf("refs of blob 1 = %d, want 1 (repo o)", n)
	}
	h.mustApply(command{Op: opDeleteManifest, Repo: "r", Digest: sig.Digest})
	if refs, _ := h.f.referrers("r", child.Digest); len(refs) != 0 {
		t.Fatalf("referrers after referrer deleted = %+v", refs)
	}
	if repos, _ := h.f.repositories("", 10); !slices.Equal(repos, []string{"o"}) {
		t.Fatalf("repositories = %q, want [o]", repos)
	}
	checkInvariants(t, h.f)
}

func TestReferrersSortedByDigest(t *testing.T) {
	h := newHarness(t)
	subject, p := manifest("r", "subject", []oci.Digest{blobDigest(1)}, nil, "")
	h.mustApply(putCmd(subject, p, ""))
	var want []oci.Digest
	for _, seed := range []string{"s1", "s2", "s3", "s4", "s5"} {
		rec, p := manifest("r", seed, []oci.Digest{blobDigest(2)}, nil, subject.Digest)
		rec.Annotations = map[string]string{"seed": seed}
		h.mustApply(putCmd(rec, p, ""))
		want = append(want, rec.Digest)
	}
	// Same subject in another repo is not listed.
	other, po := manifest("r2", "s9", []oci.Digest{blobDigest(2)}, nil, subject.Digest)
	h.mustApply(putCmd(other, po, ""))
	slices.Sort(want)
	refs, err := h.f.referrers("r", subject.Digest)
	if err != nil {
		t.Fatal(err)
	}
	var got []oci.Digest
	for _, d := range refs {
		got = append(got, d.Digest)
		if d.ArtifactType != "application/vnd.test" || d.Annotations["seed"] == "" || d.MediaType != oci.MediaTypeImageManifest {
			t.Fatalf("descriptor %+v", d)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("referrers %v, want %v", got, want)
	}
}

func TestDeleteTag(t *testing.T) {
	h := newHarness(t)
	rec, p := manifest("r", "m", []oci.Digest{blobDigest(1)}, nil, "")
	h.mustApply(putCmd(rec, p, "a"))
	h.mustApply(putCmd(rec, p, "b"))
	if err := h.apply(command{Op: opDeleteTag, Repo: "r", Tag: "zzz"}); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("delete missing tag: %v", err)
	}
	h.mustApply(command{Op: opDeleteTag, Repo: "r", Tag: "a"})
	if tags, _ := h.f.tags("r", "", 10); !slices.Equal(tags, []string{"b"}) {
		t.Fatalf("tags = %q", tags)
	}
	if _, _, err := h.f.manifest("r", rec.Digest); err != nil {
		t.Fatalf("manifest after tag delete: %v", err)
	}
	checkInvariants(t, h.f)
}

func TestLinkAndUnlinkBlobs(t *testing.T) {
	h := newHarness(t)
	loose, kept := blobDigest(1), blobDigest(2)
	for _, repo := range []string{"a", "b"} {
		h.mustApply(command{Op: opLinkBlob, Repo: repo, Digest: loose, Size: 10, Time: 5})
		h.mustApply(command{Op: opLinkBlob, Repo: repo, Digest: kept, Size: 20, Time: 5})
	}
	rec, p := manifest("a", "m", []oci.Digest{kept}, nil, "")
	h.mustApply(putCmd(rec, p, ""))
	if ok, _ := h.f.blobLinked("b", loose); !ok {
		t.Fatal("linked blob not linked")
	}
	h.mustApply(command{Op: opUnlinkBlobs, Digests: []oci.Digest{loose, kept, blobDigest(3)}})
	for _, repo := range []string{"a", "b"} {
		if ok, _ := h.f.blobLinked(repo, loose); ok {
			t.Fatalf("unlinked blob still linked to %s", repo)
		}
		if ok, _ := h.f.blobLinked(repo, kept); !ok {
			t.Fatalf("referenced blob unlinked from %s", repo)
		}
	}
	checkInvariants(t, h.f)
}

func TestUnlinkBlob(t *testing.T) {
	h := newHarness(t)
	linked, referenced := blobDigest(1), blobDigest(2)
	h.mustApply(command{Op: opLinkBlob, Repo: "a", Digest: linked, Size: 1})
	h.mustApply(command{Op: opLinkBlob, Repo: "b", Digest: linked, Size: 1})
	h.mustApply(command{Op: opLinkBlob, Repo: "a", Digest: referenced, Size: 1})
	rec, p := manifest("a", "m", []oci.Digest{referenced}, nil, "")
	h.mustApply(putCmd(rec, p, ""))

	h.mustApply(command{Op: opUnlinkBlob, Repo: "a", Digest: linked})
	if ok, _ := h.f.blobLinked("a", linked); ok {
		t.Fatal("unlinked blob still linked to a")
	}
	if ok, _ := h.f.blobLinked("b", linked); !ok {
		t.Fatal("unlinking from a unlinked b")
	}
	if err := h.apply(command{Op: opUnlinkBlob, Repo: "a", Digest: linked}); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("unlink twice: %v", err)
	}
	// A referenced blob loses its link but stays visible through the manifest.
	h.mustApply(command{Op: opUnlinkBlob, Repo: "a", Digest: referenced})
	if ok, _ := h.f.blobLinked("a", referenced); !ok {
		t.Fatal("referenced blob invisible after unlink")
	}
	h.mustApply(command{Op: opUnlinkBlob, Repo: "a", Digest: referenced})
	h.mustApply(command{Op: opDeleteManifest, Repo: "a", Digest: rec.Digest})
	if ok, _ := h.f.blobLinked("a", referenced); ok {
		t.Fatal("blob visible after its link and its manifest are gone")
	}
	checkInvariants(t, h.f)
}

func TestPutUser(t *testing.T) {
	h := newHarness(t)
	h.mustApply(command{Op: opPutUser, Name: "admin", Hash: []byte("h1"), Admin: true})
	u, found, err := h.f.user("admin")
	if err != nil || !found || string(u.Hash) != "h1" || !u.Admin {
		t.Fatalf("user = %+v %v %v", u, found, err)
	}
	h.mustApply(command{Op: opPutUser, Name: "admin", Hash: []byte("h2")})
	if u, _, _ := h.f.user("admin"); string(u.Hash) != "h2" || u.Admin {
		t.Fatalf("updated user = %+v", u)
	}
}

func TestRejectedCommands(t *testing.T) {
	h := newHarness(t)
	good, gp := manifest("r", "m", []oci.Digest{blobDigest(1)}, nil, "")
	h.mustApply(putCmd(good, gp, "v1"))
	h.mustApply(command{Op: opLinkBlob, Repo: "r", Digest: blobDigest(7), Size: 1})

	mutate := func(f func(r *oci.Record)) command {
		r := good
		r.Blobs = slices.Clone(good.Blobs)
		f(&r)
		return putCmd(r, gp, "")
	}
	for _, tc := range []struct {
		name string
		data []byte
		cmd  command
	}{
		{name: "not json", data: []byte("{nope")},
		{name: "unknown op", cmd: command{Op: "drop_everything"}},
		{name: "no record", cmd: command{Op: opPutManifest}},
		{name: "bad repo", cmd: mutate(func(r *oci.Record) { r.Repo = "Upper/Case" })},
		{name: "repo with separator", cmd: mutate(func(r *oci.Record) { r.Repo = "r\x00x" })},
		{name: "bad digest", cmd: mutate(func(r *oci.Record) { r.Digest = "sha256:abc" })},
		{name: "payload mismatch", cmd: mutate(func(r *oci.Record) { r.Digest = blobDigest(5) })},
		{name: "size mismatch", cmd: mutate(func(r *oci.Record) { r.Size++ })},
		{name: "bad blob digest", cmd: mutate(func(r *oci.Record) { r.Blobs = append(r.Blobs, "md5:00") })},
		{name: "bad child digest", cmd: mutate(func(r *oci.Record) { r.Children = []oci.Digest{"x"} })},
		{name: "bad subject", cmd: mutate(func(r *oci.Record) { r.Subject = "sha256:ZZ" })},
		{name: "bad tag", cmd: putCmd(good, gp, "-bad")},
		{name: "delete bad repo", cmd: command{Op: opDeleteManifest, Repo: "", Digest: good.Digest}},
		{name: "delete bad digest", cmd: command{Op: opDeleteManifest, Repo: "r", Digest: "nope"}},
		{name: "delete tag bad tag", cmd: command{Op: opDeleteTag, Repo: "r", Tag: "a\x00b"}},
		{name: "link negative size", cmd: command{Op: opLinkBlob, Repo: "r", Digest: blobDigest(2), Size: -1}},
		{name: "link bad repo", cmd: command{Op: opLinkBlob, Repo: "../etc", Digest: blobDigest(2)}},
		{name: "unlink one bad repo", cmd: command{Op: opUnlinkBlob, Repo: "A", Digest: blobDigest(7)}},
		{name: "unlink bad digest", cmd: command{Op: opUnlinkBlobs, Digests: []oci.Digest{blobDigest(7), "bad"}}},
		{name: "user without name", cmd: command{Op: opPutUser, Hash: []byte("h")}},
		{name: "user without hash", cmd: command{Op: opPutUser, Name: "u"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if data == nil {
				data = encode(t, tc.cmd)
			}
			before, idx := h.hash(), h.f.applied.Load()
			err := h.applyRaw(data)
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("apply = %v, want ErrBadCommand", err)
			}
			if h.hash() != before {
				t.Fatal("a rejected command changed the state")
			}
			if got := h.f.applied.Load(); got != idx+1 {
				t.Fatalf("applied index %d, want %d", got, idx+1)
			}
		})
	}
	checkInvariants(t, h.f)
}

func TestApplySkipsAppliedEntries(t *testing.T) {
	h := newHarness(t)
	rec, p := manifest("r", "m", nil, nil, "")
	h.mustApply(putCmd(rec, p, "v1")) // index 1
	before := h.hash()

	// A replayed index 1 carrying something else is skipped.
	other, po := manifest("r", "other", nil, nil, "")
	r := h.f.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: encode(t, putCmd(other, po, "v2"))})
	if r != nil || h.hash() != before || h.f.applied.Load() != 1 {
		t.Fatalf("replayed entry applied: resp %v, applied %d", r, h.f.applied.Load())
	}

	// Non-command entries advance the index and change nothing.
	resp := h.f.ApplyBatch([]*raft.Log{
		{Index: 2, Term: 2, Type: raft.LogConfiguration, Data: []byte("not a command")},
		{Index: 3, Term: 2, Type: raft.LogCommand, Data: encode(t, command{Op: opDeleteTag, Repo: "r", Tag: "nope"})},
		{Index: 4, Term: 2, Type: raft.LogCommand, Data: encode(t, command{Op: opDeleteTag, Repo: "r", Tag: "v1"})},
	})
	if resp[0] != nil || !errors.Is(resp[1].(error), oci.ErrNotFound) || resp[2] != nil {
		t.Fatalf("batch responses %v", resp)
	}
	if idx, term, _ := h.f.appliedMeta(); idx != 4 || term != 2 {
		t.Fatalf("applied meta = %d/%d, want 4/2", idx, term)
	}
	// A batch that overlaps what was applied applies only the new tail.
	resp = h.f.ApplyBatch([]*raft.Log{
		{Index: 4, Term: 2, Type: raft.LogCommand, Data: encode(t, putCmd(other, po, "dup"))},
		{Index: 5, Term: 2, Type: raft.LogCommand, Data: encode(t, putCmd(other, po, "v2"))},
	})
	if resp[0] != nil || resp[1] != nil {
		t.Fatalf("responses %v", resp)
	}
	if _, err := h.f.tag("r", "dup"); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("skipped entry was applied: %v", err)
	}
	if d, _ := h.f.tag("r", "v2"); d != other.Digest {
		t.Fatal("new entry of an overlapping batch was not applied")
	}
	checkInvariants(t, h.f)
}

func TestAppliedIndexSurvivesReopen(t *testing.T) {
	h := newHarness(t)
	rec, p := manifest("r", "m", []oci.Digest{blobDigest(1)}, nil, "")
	h.mustApply(putCmd(rec, p, "v1"))
	h.mustApply(command{Op: opLinkBlob, Repo: "r", Digest: blobDigest(2), Size: 3})
	want := h.hash()
	if err := h.f.close(); err != nil {
		t.Fatal(err)
	}
	f, err := openFSM(h.f.path, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if f.applied.Load() != h.idx {
		t.Fatalf("applied after reopen = %d, want %d", f.applied.Load(), h.idx)
	}
	if got, _ := f.hash(); got != want {
		t.Fatal("state changed across reopen")
	}
}
