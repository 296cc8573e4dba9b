package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
)

// freeLocalAddr returns a loopback address with a port free right now.
func freeLocalAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// internalNode starts a one-node cluster in dir on addr; opts change its
// configuration.
func internalNode(t *testing.T, dir, addr string, opts ...func(*Config)) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr = "n1", dir, addr
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	for _, o := range opts {
		o(&cfg)
	}
	n, err := New(cfg, quietLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRestartAfterSnapshot covers both ways a node comes back after Raft
// compacted its log into a snapshot: with its state file (the snapshot is
// not restored over it) and without (the snapshot is restored, then the
// rest of the log replayed).
func TestRestartAfterSnapshot(t *testing.T) {
	addr := freeLocalAddr(t)
	dir := t.TempDir()
	ctx := context.Background()

	n := internalNode(t, dir, addr)
	for i := range 20 {
		if err := n.LinkBlob(ctx, "r", blobDigest(i), int64(i)); err != nil {
			t.Fatal(err)
		}
		if i == 9 {
			if err := n.raft.Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	want, _ := n.StateHash(ctx)
	applied := n.AppliedIndex()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		prep func(t *testing.T)
	}{
		{"state file kept", func(*testing.T) {}},
		{"state file lost", func(t *testing.T) {
			if err := os.Remove(filepath.Join(dir, stateDBName)); err != nil {
				t.Fatal(err)
			}
		}},
		{"machine crashed with the state open", func(t *testing.T) {
			// The guard says the state was open, unclean, on another boot:
			// the unsynced file cannot be trusted, even though this one is
			// whole; garbage proves it is not read.
			path := filepath.Join(dir, stateDBName)
			if err := writeGuard(path, "an-earlier-boot", false); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("torn by a power loss"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"process killed with the state open", func(t *testing.T) {
			// Same boot, unclean: the page cache kept every commit.
			if err := writeGuard(filepath.Join(dir, stateDBName), bootID(), false); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.prep(t)
			n := internalNode(t, dir, addr)
			defer n.Close()
			if got := n.AppliedIndex(); got < applied {
				t.Fatalf("applied %d, want >= %d", got, applied)
			}
			if got, _ := n.StateHash(ctx); got != want {
				t.Fatal("state differs after restart")
			}
			for i := range 20 {
				if ok, _ := n.BlobLinked(ctx, "r", blobDigest(i)); !ok {
					t.Fatalf("blob %d lost", i)
				}
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUnlinkBlobsChunks(t *testing.T) {
	addr := freeLocalAddr(t)
	n := internalNode(t, t.TempDir(), addr)
	ctx := context.Background()
	var ds []oci.Digest
	for i := range unlinkChunk + 5 {
		ds = append(ds, oci.DigestOf(fmt.Appendf(nil, "b%d", i)))
	}
	for _, d := range []oci.Digest{ds[0], ds[len(ds)-1]} {
		if err := n.LinkBlob(ctx, "r", d, 1); err != nil {
			t.Fatal(err)
		}
	}
	before := n.AppliedIndex()
	if err := n.UnlinkBlobs(ctx, ds, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := n.AppliedIndex() - before; got != 2 {
		t.Fatalf("UnlinkBlobs of %d digests took %d entries, want 2", len(ds), got)
	}
	for _, d := range []oci.Digest{ds[0], ds[len(ds)-1]} {
		if ok, _ := n.BlobLinked(ctx, "r", d); ok {
			t.Fatalf("%s still linked", d)
		}
	}
}

// TestSnapshotBySize: a node takes a snapshot once the commands applied
// since the last one add up to SnapshotBytes, long before SnapshotThreshold
// entries.
func TestSnapshotBySize(t *testing.T) {
	old := snapshotCheckEvery
	snapshotCheckEvery = 20 * time.Millisecond
	t.Cleanup(func() { snapshotCheckEvery = old })
	addr := freeLocalAddr(t)
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr = "n1", dir, addr
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	cfg.SnapshotBytes = 4 << 10
	n, err := New(cfg, quietLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx := context.Background()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	snapshots := func() int {
		entries, _ := os.ReadDir(filepath.Join(dir, raftDirName, "snapshots"))
		return len(entries)
	}
	if got := snapshots(); got != 0 {
		t.Fatalf("%d snapshots before any write", got)
	}
	// About 6 KiB of commands in 16 entries: the entry threshold (8192) is
	// far.
	for i := range 16 {
		repo := fmt.Sprintf("team/%0200d", i)
		if err := n.LinkBlob(ctx, repo, oci.DigestOf(fmt.Appendf(nil, "blob %d", i)), 1); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for snapshots() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot after %d command bytes (threshold %d)", n.fsm.applyBytes.Load(), cfg.SnapshotBytes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n.fsm.applyBytes.Load() >= cfg.SnapshotBytes {
		t.Fatalf("the byte count was not reset by the snapshot: %d", n.fsm.applyBytes.Load())
	}
}
