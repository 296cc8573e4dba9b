package clustertest_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/cluster/clustertest"
	"github.com/berth-registry/berth/oci"
)

// convergeWithin bounds WaitConverged after a heal or restart: Raft backs
// off its retries to a node it could not reach, by up to a few seconds
// after a partition of a second or two.
const convergeWithin = 20 * time.Second

// TestForwardedWritesVisibleEverywhere writes through one follower and
// reads through the other at once: the write is forwarded to the leader,
// and a read that would answer "not found" catches up with the leader
// first, so no acknowledged write is a 404 anywhere.
func TestForwardedWritesVisibleEverywhere(t *testing.T) {
	c := clustertest.New(t, 3)
	ctx := t.Context()
	f := c.Others(c.Leader(t))
	w, r := c.Node(f[0]), c.Node(f[1])
	for i := range 20 {
		repo := fmt.Sprintf("team/app%d", i)
		d := blob("%d", i)
		if err := retry(t, func() error { return w.LinkBlob(ctx, repo, d, 10) }); err != nil {
			t.Fatalf("write %d through follower %s: %v", i, w.ID(), err)
		}
		if ok, err := r.BlobLinked(ctx, repo, d); err != nil || !ok {
			t.Fatalf("write %d through %s not visible on %s at once: %v, %v", i, w.ID(), r.ID(), ok, err)
		}
		rec := push(t, c, f[0], repo, "v1")
		if d, err := r.Tag(ctx, repo, "v1"); err != nil || d != rec.Digest {
			t.Fatalf("tag %s:v1 pushed through %s is %s, %v on %s", repo, w.ID(), d, err, r.ID())
		}
	}
	// A rejected write comes back through a follower as the leader's
	// verdict.
	if err := retry(t, func() error { return w.DeleteTag(ctx, "team/none", "latest") }); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("forwarded delete of a missing tag: %v, want not found", err)
	}
	c.WaitConverged(t, convergeWithin)
}

// TestPartitionedLeaderMinority cuts the leader and one follower off from
// the other three of five: the three elect a leader and keep taking writes
// through any of them; the two refuse writes and apply nothing; after the
// heal every node has every acknowledged write and none of the refused.
func TestPartitionedLeaderMinority(t *testing.T) {
	c := clustertest.New(t, 5, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		cfg.ApplyTimeout = time.Second
	}))
	ctx := t.Context()
	old := c.Leader(t)
	minority := []int{old, c.Others(old)[0]}
	majority := c.Others(minority...)
	before := push(t, c, old, "before/app", "v1")
	c.WaitConverged(t, convergeWithin)
	oldHash, oldApplied := hashOf(t, c.Node(old)), c.Node(old).AppliedIndex()

	c.Partition(minority)
	leader := c.Leader(t, majority...)
	if leader == old {
		t.Fatalf("the old leader %s leads the majority", c.ID(old))
	}
	var acked []oci.Record
	for i, j := range append(majority, majority...) {
		rec := push(t, c, j, "during/app", fmt.Sprintf("v%d", i))
		acked = append(acked, rec)
	}

	// Both sides of the minority refuse writes: the old leader steps down
	// for want of a quorum, and no write it takes meanwhile commits.
	var refused []oci.Digest
	for k, i := range minority {
		d := blob("refused %d", k)
		err := c.Node(i).LinkBlob(ctx, "refused/app", d, 1)
		if !errors.Is(err, oci.ErrUnavailable) {
			t.Fatalf("write through %s in the minority: %v, want unavailable", c.ID(i), err)
		}
		refused = append(refused, d)
	}
	if got := c.Node(old).AppliedIndex(); got != oldApplied {
		t.Errorf("the old leader applied up to %d in the minority, had %d", got, oldApplied)
	}
	if got := hashOf(t, c.Node(old)); got != oldHash {
		t.Error("the old leader's state changed in the minority")
	}
	checkPushed(t, c, old, before, "v1") // reads go on

	c.Heal()
	c.WaitConverged(t, convergeWithin)
	for i := range c.N() {
		checkPushed(t, c, i, before, "v1")
		for k, rec := range acked {
			checkPushed(t, c, i, rec, fmt.Sprintf("v%d", k))
		}
		for _, d := range refused {
			if ok, err := c.Node(i).BlobLinked(ctx, "refused/app", d); err != nil || ok {
				t.Errorf("%s: a refused write is linked (%v, %v)", c.ID(i), ok, err)
			}
		}
	}
	// The old minority takes writes again.
	for _, i := range minority {
		if err := retry(t, func() error { return c.Node(i).LinkBlob(ctx, "after/app", blob("after %d", i), 1) }); err != nil {
			t.Fatalf("write through %s after the heal: %v", c.ID(i), err)
		}
	}
	c.WaitConverged(t, convergeWithin)
}

// TestSnapshotCatchUp keeps a follower down while the leader compacts its
// log past what the follower has: back up, the follower can only catch up
// by installing the leader's snapshot.
func TestSnapshotCatchUp(t *testing.T) {
	const trailing = 8
	c := clustertest.New(t, 3, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = trailing
		cfg.SnapshotInterval = 20 * time.Millisecond
	}))
	ctx := t.Context()
	leader := c.Leader(t)
	f := c.Others(leader)[0]
	live := c.Others(f)
	first := push(t, c, leader, "early/app", "v1")
	c.WaitConverged(t, convergeWithin)
	st, err := c.Node(f).LocalStatus(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(f)

	// A leader's log starts after its newest snapshot less the trailing
	// entries it keeps: at snapshot-trailing+1 or later. Once that is past
	// the follower's next entry on every live node, whichever leads cannot
	// send the follower the log it misses.
	var snapIndex uint64
	var written []oci.Record
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; snapIndex <= st.LastIndex+trailing; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot past index %d on every live node (newest on all: %d)", st.LastIndex+trailing, snapIndex)
		}
		written = append(written, push(t, c, live[i%2], "late/app", fmt.Sprintf("v%d", i)))
		snapIndex = newestSnapshotOnAll(t, c, live)
	}
	c.Restart(f)
	c.WaitConverged(t, convergeWithin)
	snaps, err := c.Snapshots(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) == 0 || snaps[0].Index < snapIndex {
		t.Fatalf("%s caught up without installing the leader's snapshot at %d (its snapshots: %v)", c.ID(f), snapIndex, snaps)
	}
	t.Logf("%s went down at index %d; %d pushes later every live node had a snapshot at %d or later; %s installed one at %d",
		c.ID(f), st.LastIndex, len(written), snapIndex, c.ID(f), snaps[0].Index)
	checkPushed(t, c, f, first, "v1")
	for i, rec := range written {
		checkPushed(t, c, f, rec, fmt.Sprintf("v%d", i))
	}
}

// newestSnapshotOnAll returns the lowest of the nodes' newest snapshot
// indexes (0 when one has none).
func newestSnapshotOnAll(t *testing.T, c *clustertest.Cluster, nodes []int) uint64 {
	t.Helper()
	var low uint64
	for k, i := range nodes {
		snaps, err := c.Snapshots(i)
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps) == 0 {
			return 0
		}
		if k == 0 || snaps[0].Index < low {
			low = snaps[0].Index
		}
	}
	return low
}

// TestIsolatedMinorityReads cuts two of five nodes off, with and without
// the leader among them: both keep answering reads of what they had from
// their own state at once, and a read of something they do not have waits
// for a leader no longer than ReadIndexTimeout before it answers "not
// found".
func TestIsolatedMinorityReads(t *testing.T) {
	const readIndexTimeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name       string
		withLeader bool
	}{
		{"followers", false},
		{"leader and a follower", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clustertest.New(t, 5, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
				cfg.ReadIndexTimeout = readIndexTimeout
				cfg.ApplyTimeout = 10 * time.Second // far longer: a read must not wait for it
			}))
			ctx := t.Context()
			leader := c.Leader(t)
			rec := push(t, c, leader, "lib/app", "v1")
			c.WaitConverged(t, convergeWithin)
			minority := c.Others(leader)[:2]
			if tc.withLeader {
				minority = []int{leader, c.Others(leader)[0]}
			}
			c.Partition(minority)

			var wg sync.WaitGroup
			for _, i := range minority {
				wg.Go(func() {
					n := c.Node(i)
					start := time.Now()
					d, err := n.Tag(ctx, "lib/app", "v1")
					_, payload, merr := n.Manifest(ctx, "lib/app", rec.Digest)
					if err != nil || d != rec.Digest || merr != nil || oci.DigestOf(payload) != rec.Digest {
						t.Errorf("%s: read in the minority: %s %v, manifest %v", n.ID(), d, err, merr)
					}
					if took := time.Since(start); took >= readIndexTimeout {
						t.Errorf("%s: reads of local data took %s in the minority", n.ID(), took)
					}
					start = time.Now()
					if _, err := n.Tag(ctx, "lib/app", "missing"); !errors.Is(err, oci.ErrNotFound) {
						t.Errorf("%s: missing tag in the minority: %v, want not found", n.ID(), err)
					}
					if took := time.Since(start); took > readIndexTimeout+time.Second {
						t.Errorf("%s: a not-found read took %s in the minority, ReadIndexTimeout is %s", n.ID(), took, readIndexTimeout)
					}
				})
			}
			wg.Wait()
			c.Heal()
			c.WaitConverged(t, convergeWithin)
		})
	}
}

// TestHealedFollowerReadsItsWrites moves a tag through a follower right
// after a partition heals and reads it back through the same follower.
// Raft backs off its retries to a follower it could not reach (to 1.28 s
// after 1.3 s of failures), while forwarding writes to the leader works at
// once: the write commits before the follower receives it. The follower
// must not acknowledge a write it cannot show yet: its read would find the
// tag's old digest, without asking the leader (only a read that finds
// nothing catches up).
func TestHealedFollowerReadsItsWrites(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		cfg.ApplyTimeout = 300 * time.Millisecond
		cfg.ReadIndexTimeout = 200 * time.Millisecond
	}))
	ctx := t.Context()
	leader := c.Leader(t)
	f := c.Others(leader)[0]
	old := push(t, c, leader, "lib/app", "v1")
	c.WaitConverged(t, convergeWithin)
	c.Isolate(f)
	time.Sleep(1600 * time.Millisecond) // the partition lasts; no assertion waits here
	c.Heal()

	n := c.Node(f)
	rec, payload := image("lib/app", "v1 moved", old.Blobs...)
	err := retry(t, func() error { return n.PutManifest(ctx, rec, payload, "v1") })
	if err != nil {
		t.Fatalf("move the tag through %s: %v", n.ID(), err)
	}
	if d, err := n.Tag(ctx, "lib/app", "v1"); err != nil || d != rec.Digest {
		t.Fatalf("%s acknowledged moving lib/app:v1 to %s, and reads %s (%v) (the old digest is %s)", n.ID(), rec.Digest, d, err, old.Digest)
	}
	c.WaitConverged(t, convergeWithin)
}
