package cluster

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func snapshotBytes(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed %v cancelled %v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// populate fills h with manifests, tags, links and a user, and with
// replication state: an endpoint, an event rule, the tasks of the pushes
// (one claimed), versions and a tombstone.
func populate(h *harness) (oci.Record, oci.Record) {
	h.mustApply(endpointCmd("mirror"))
	h.mustApply(ruleCmd(testRule()))
	child, pc := manifest("app/web", "child", []oci.Digest{blobDigest(1), blobDigest(2)}, nil, "")
	index, pi := manifest("app/web", "index", nil, []oci.Digest{child.Digest}, "")
	sig, ps := manifest("app/web", "sig", []oci.Digest{blobDigest(3)}, nil, child.Digest)
	h.mustApply(putCmd(child, pc, "amd64"))
	h.mustApply(putCmd(index, pi, "latest"))
	h.mustApply(putCmd(sig, ps, ""))
	h.mustApply(command{Op: opLinkBlob, Repo: "app/db", Digest: blobDigest(9), Size: 9, Time: 1})
	h.mustApply(command{Op: opPutUser, Name: "admin", Hash: []byte("hash"), Admin: true})
	h.mustApply(versionedPut(child, pc, "v1", 1000, oci.TagVersion{}))
	h.mustApply(versionedPut(index, pi, "v2", 1000, oci.TagVersion{}))
	h.mustApply(deleteTagCmd("app/web", "v2", 2000, oci.TagVersion{}, ""))
	h.mustApply(command{Op: opClaimTasks, Node: "n1", Claim: "c1", Max: 1, Time: ms(3000), Until: ms(4000)})
	return child, index
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := newHarness(t)
	child, index := populate(src)
	data := snapshotBytes(t, src.f)

	dst := newHarness(t)
	// Restore replaces whatever the target held.
	dst.mustApply(command{Op: opLinkBlob, Repo: "stale", Digest: blobDigest(5), Size: 1})
	dst.mustApply(command{Op: opLinkBlob, Repo: "stale", Digest: blobDigest(6), Size: 1})
	dst.mustApply(command{Op: opLinkBlob, Repo: "stale", Digest: blobDigest(7), Size: 1})
	dst.mustApply(command{Op: opLinkBlob, Repo: "stale", Digest: blobDigest(8), Size: 1})
	dst.mustApply(command{Op: opLinkBlob, Repo: "stale", Digest: blobDigest(9), Size: 1})
	dst.mustApply(command{Op: opLinkBlob, Repo: "stale", Digest: blobDigest(10), Size: 1})
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if dst.hash() != src.hash() {
		t.Fatal("restored state hash differs")
	}
	if got, want := dst.f.applied.Load(), src.f.applied.Load(); got != want {
		t.Fatalf("restored applied index %d, want %d", got, want)
	}
	if ok, _ := dst.f.blobLinked("stale", blobDigest(5)); ok {
		t.Fatal("state from before the restore survived")
	}
	for _, f := range []*fsm{src.f, dst.f} {
		if d, err := f.tag("app/web", "latest"); err != nil || d != index.Digest {
			t.Fatalf("tag latest = %s, %v", d, err)
		}
		if refs, _ := f.referrers("app/web", child.Digest); len(refs) != 1 {
			t.Fatalf("referrers = %+v", refs)
		}
		if repos, _ := f.repositories("", 10); !slices.Equal(repos, []string{"app/web"}) {
			t.Fatalf("repositories = %q", repos)
		}
		if _, found, _ := f.user("admin"); !found {
			t.Fatal("user missing")
		}
		if r, err := f.rule("ev"); err != nil || r.Endpoint != "mirror" {
			t.Fatalf("rule = %+v, %v", r, err)
		}
		if v, found, _ := f.tagVersion("app/web", "v1"); !found || v.Origin != "ca" {
			t.Fatalf("version of v1 = %s, %v", v, found)
		}
		if ts, _ := f.tombstones("app/web", "", 10); len(ts) != 1 || ts[0].Tag != "v2" {
			t.Fatalf("tombstones = %+v", ts)
		}
		active, _ := f.indexedTasks(bucketTasksActive, func(policy.Task) bool { return true })
		if len(active) != 2 || active[0].Status != policy.StatusRunning || active[0].Claim != "c1" || active[1].Kind != policy.TaskDelete {
			t.Fatalf("active tasks = %+v", active)
		}
	}
	checkInvariants(t, dst.f)

	// Entries after the snapshot apply on top of the restored state, and
	// those it holds are skipped.
	dst.idx = dst.f.applied.Load() - 1
	if err := dst.apply(command{Op: opDeleteTag, Repo: "app/web", Tag: "amd64"}); err != nil {
		t.Fatalf("replayed entry: %v", err)
	}
	if _, err := dst.f.tag("app/web", "amd64"); err != nil {
		t.Fatal("entry at the snapshot's index was applied again")
	}
	dst.mustApply(command{Op: opDeleteTag, Repo: "app/web", Tag: "amd64"})
	if _, err := dst.f.tag("app/web", "amd64"); err == nil {
		t.Fatal("entry after the snapshot was not applied")
	}
}

func TestSnapshotIsConsistent(t *testing.T) {
	h := newHarness(t)
	populate(h)
	want := h.hash()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Applies go on while the snapshot is being written.
	h.mustApply(command{Op: opDeleteTag, Repo: "app/web", Tag: "latest"})
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst := newHarness(t)
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if dst.hash() != want {
		t.Fatal("snapshot saw an apply made after it started")
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	h := newHarness(t)
	populate(h)
	want := h.hash()
	if err := h.f.Restore(io.NopCloser(bytes.NewReader([]byte("not a bolt file")))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
	if h.hash() != want {
		t.Fatal("failed restore changed the state")
	}
}

func nopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

// TestRestoreAbandonsOpenSnapshot: a snapshot that Raft took but has not
// persisted (it waits for Raft's main loop, which waits for this Restore)
// must not keep Restore from closing the state file; its Persist then
// fails and Raft takes another.
func TestRestoreAbandonsOpenSnapshot(t *testing.T) {
	src := newHarness(t)
	populate(src)
	data := snapshotBytes(t, src.f)

	dst := newHarness(t)
	dst.mustApply(command{Op: opLinkBlob, Repo: "stale", Digest: blobDigest(5), Size: 1})
	open, err := dst.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- dst.f.Restore(io.NopCloser(bytes.NewReader(data))) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Restore blocked behind an open snapshot")
	}
	if dst.hash() != src.hash() {
		t.Fatal("restored state hash differs")
	}
	sink := &memSink{}
	if err := open.Persist(sink); !errors.Is(err, errSnapshotAbandoned) {
		t.Fatalf("Persist of the abandoned snapshot: %v", err)
	}
	open.Release()
}
