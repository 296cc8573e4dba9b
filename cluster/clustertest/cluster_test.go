package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// first, so no acknowledged write is a 404 anywhere. (A follower that
// cannot catch up in time, on a loaded machine, answers unavailable; the
// read is retried.)
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
		var ok bool
		if err := retry(t, func() (err error) { ok, err = r.BlobLinked(ctx, repo, d); return err }); err != nil || !ok {
			t.Fatalf("write %d through %s not visible on %s at once: %v, %v", i, w.ID(), r.ID(), ok, err)
		}
		rec := push(t, c, f[0], repo, "v1")
		var got oci.Digest
		if err := retry(t, func() (err error) { got, err = r.Tag(ctx, repo, "v1"); return err }); err != nil || got != rec.Digest {
			t.Fatalf("tag %s:v1 pushed through %s is %s, %v on %s", repo, w.ID(), got, err, r.ID())
		}
	}
	// A rejected write comes back through a follower as the leader's
	// verdict.
	if err := retry(t, func() error { return w.DeleteTag(ctx, "team/none", "latest", oci.TagVersion{}, "") }); !errors.Is(err, oci.ErrNotFound) {
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
	err := retry(t, func() error { return n.PutManifest(ctx, rec, payload, "v1", oci.TagVersion{}) })
	if err != nil {
		t.Fatalf("move the tag through %s: %v", n.ID(), err)
	}
	if d, err := n.Tag(ctx, "lib/app", "v1"); err != nil || d != rec.Digest {
		t.Fatalf("%s acknowledged moving lib/app:v1 to %s, and reads %s (%v) (the old digest is %s)", n.ID(), rec.Digest, d, err, old.Digest)
	}
	c.WaitConverged(t, convergeWithin)
}

// TestHealedFollowerNoFalse404 pushes through the leader while a follower
// is cut off, and reads through the follower right after the heal, while
// Raft's replication to it still backs off: the follower reaches the
// leader but cannot apply what it misses within ReadIndexTimeout. Once
// it follows the leader again, it must not answer "not found" for a push
// the cluster acknowledged: it answers unavailable until it has caught
// up, and then the push.
func TestHealedFollowerNoFalse404(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		cfg.ReadIndexTimeout = 200 * time.Millisecond
	}))
	ctx := t.Context()
	leader := c.Leader(t)
	f := c.Others(leader)[0]
	c.Isolate(f)
	rec := push(t, c, leader, "lib/app", "v1")
	time.Sleep(1600 * time.Millisecond) // the partition lasts; no assertion waits here
	c.Heal()
	// Until the leader's first heartbeat the follower knows no leader,
	// and answers from its own state by design.
	c.Leader(t)

	n := c.Node(f)
	deadline := time.Now().Add(writeWithin)
	for {
		d, err := n.Tag(ctx, "lib/app", "v1")
		if err == nil && d == rec.Digest {
			break
		}
		if !errors.Is(err, oci.ErrUnavailable) {
			t.Fatalf("%s right after the heal: tag lib/app:v1 = %q, %v; want %s or unavailable", n.ID(), d, err, rec.Digest)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: tag lib/app:v1 still unavailable %s after the heal: %v", n.ID(), writeWithin, err)
		}
	}
	c.WaitConverged(t, convergeWithin)
}

// TestRestartedOldLeaderReady restarts a leader that appended a write it
// could not commit (it was cut off with no follower); meanwhile the others
// elected a new leader, whose log replaces that tail. Once it can reach
// them, the old leader must become ready (WaitReady returns, Ready is
// true), although no command ever takes the index its log ended at.
func TestRestartedOldLeaderReady(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		cfg.ApplyTimeout = 300 * time.Millisecond
	}))
	ctx := t.Context()
	old := c.Leader(t)
	push(t, c, old, "lib/app", "v1")
	c.WaitConverged(t, convergeWithin)
	c.Isolate(old)
	// Appended to the old leader's log before it notices it is alone.
	if err := c.Node(old).LinkBlob(ctx, "lib/app", blob("uncommitted"), 1); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("write through the cut-off leader: %v, want unavailable", err)
	}
	c.Leader(t, c.Others(old)...)
	c.Restart(old) // still cut off
	// As berth serve does: wait for ready right after the start.
	ready := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ready <- c.Node(old).WaitReady(rctx)
	}()
	c.Heal()
	st := c.WaitConverged(t, convergeWithin)
	if err := <-ready; err != nil {
		t.Fatalf("%s: WaitReady after the heal: %v (the cluster converged at applied index %d)", c.ID(old), err, st.AppliedIndex)
	}
	if !c.Node(old).Ready() {
		t.Fatalf("%s is not ready (the cluster converged at applied index %d)", c.ID(old), st.AppliedIndex)
	}
}

// TestLeave takes a follower, and then the leader, out of a cluster wired
// by hand (no gossip): each leaves the Raft configuration, and the voters
// left go on taking writes.
func TestLeave(t *testing.T) {
	c := clustertest.New(t, 4)
	ctx := t.Context()
	for _, who := range []string{"a follower", "the leader"} {
		leader := c.Leader(t)
		i := leader
		if who == "a follower" {
			i = c.Others(leader)[0]
		}
		// A leader hands over first, within one election timeout; a
		// loaded machine misses that now and then, and the caller tries
		// again.
		var err error
		for try := 0; try < 5; try++ {
			if err = c.Node(i).Leave(ctx); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s (%s) leaves: %v", who, c.ID(i), err)
		}
		c.Kill(i)
		rest := liveNodes(c)
		rec := push(t, c, rest[0], "lib/app", "after-"+c.ID(i))
		st := c.WaitConverged(t, convergeWithin)
		for _, j := range rest {
			checkPushed(t, c, j, rec, "after-"+c.ID(i))
		}
		if got := voters(t, c.Node(rest[0])); len(got) != len(rest) || slices.Contains(got, c.ID(i)) {
			t.Fatalf("after %s left: voters %v, want the %d live nodes (applied index %d)", c.ID(i), got, len(rest), st.AppliedIndex)
		}
	}
}

// liveNodes returns the nodes that are not killed.
func liveNodes(c *clustertest.Cluster) []int {
	var out []int
	for i := range c.N() {
		if c.Node(i) != nil {
			out = append(out, i)
		}
	}
	return out
}

// voters returns the ids of the voters in n's Raft configuration.
func voters(t *testing.T, n *cluster.Node) []string {
	t.Helper()
	st, err := n.Status(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range st.Members {
		if m.Suffrage == "voter" {
			out = append(out, m.ID)
		}
	}
	return out
}

// TestEnsureUserOnStaleFollower changes a user through the leader while a
// follower is cut off, then asks the follower to ensure the user as it
// was. The follower's own state still matches the request; EnsureUser must
// not report "unchanged" from it, since the cluster holds something else.
// (bcrypt makes this test take seconds under the race detector.)
func TestEnsureUserOnStaleFollower(t *testing.T) {
	c := clustertest.New(t, 3)
	ctx := t.Context()
	leader := c.Leader(t)
	f := c.Others(leader)[0]
	if _, err := c.Node(leader).EnsureUser(ctx, "alice", "pw", false); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged(t, convergeWithin)
	c.Isolate(f)
	if changed, err := c.Node(leader).EnsureUser(ctx, "alice", "pw", true); err != nil || !changed {
		t.Fatalf("make alice an admin through the leader: %v, %v", changed, err)
	}
	changed, err := c.Node(f).EnsureUser(ctx, "alice", "pw", false)
	if err == nil && !changed {
		t.Fatalf("%s, cut off, reports alice unchanged as a non-admin; the cluster made her an admin", c.ID(f))
	}
	if !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("EnsureUser on %s, cut off: %v, %v; want unavailable", c.ID(f), changed, err)
	}
	c.Heal()
	c.WaitConverged(t, convergeWithin)
}

// TestRestartAll stops every node and starts them again, one of them
// without its state file (restored from its snapshot, then the rest of
// the log replayed): the cluster elects a leader, every node has what it
// had, and writes go on.
func TestRestartAll(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		cfg.SnapshotThreshold = 8
		cfg.TrailingLogs = 4
		cfg.SnapshotInterval = 20 * time.Millisecond
	}))
	leader := c.Leader(t)
	var recs []oci.Record
	for i := range 12 {
		recs = append(recs, push(t, c, leader, "lib/app", fmt.Sprintf("v%d", i)))
	}
	before := c.WaitConverged(t, convergeWithin)
	if snaps, err := c.Snapshots(1); err != nil || len(snaps) == 0 {
		t.Fatalf("%s took no snapshot to restore from (%v)", c.ID(1), err)
	}
	for i := range c.N() {
		c.Kill(i)
	}
	lost := filepath.Join(c.Dir(1), "state.db")
	if err := os.Remove(lost); err != nil {
		t.Fatal(err)
	}
	for i := range c.N() {
		c.Restart(i)
	}
	c.WaitReady(t)
	after := c.WaitConverged(t, convergeWithin)
	if after.StateHash != before.StateHash {
		t.Fatalf("state changed across the restart: applied %d, was %d", after.AppliedIndex, before.AppliedIndex)
	}
	for i := range c.N() {
		for k, rec := range recs {
			checkPushed(t, c, i, rec, fmt.Sprintf("v%d", k))
		}
	}
	push(t, c, c.Leader(t), "lib/app", "after")
	c.WaitConverged(t, convergeWithin)
}

// TestStatus asks a follower for the cluster's status: every member with
// its suffrage, applied index and state hash; a member cut off from it is
// listed with the error.
func TestStatus(t *testing.T) {
	c := clustertest.New(t, 3)
	ctx := t.Context()
	leader := c.Leader(t)
	push(t, c, leader, "lib/app", "v1")
	want := c.WaitConverged(t, convergeWithin)
	f := c.Others(leader)
	st, err := c.Node(f[0]).Status(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader.ID != c.ID(leader) || len(st.Members) != 3 {
		t.Fatalf("status from %s: leader %q, %d members", c.ID(f[0]), st.Leader.ID, len(st.Members))
	}
	for _, m := range st.Members {
		if m.Error != "" || m.Suffrage != "voter" || m.StateHash != want.StateHash || m.AppliedIndex != want.AppliedIndex || m.Lag != 0 {
			t.Errorf("member %+v; want a voter at applied index %d with the cluster's hash", m, want.AppliedIndex)
		}
	}

	c.Partition([]int{f[0], leader}, []int{f[1]})
	st, err = c.Node(f[0]).Status(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if cut := m.ID == c.ID(f[1]); cut != (m.Error != "") {
			t.Errorf("member %s (cut off: %v): error %q", m.ID, cut, m.Error)
		}
	}
}

// TestReadDuringElection reads, through a follower that lacks a push, in
// the moment the leader is lost: the follower knows no leader until the
// others elect one. A not-found read waits up to ReadIndexTimeout for a
// leader to catch up with; it must not answer "not found" for the push
// while the election runs.
func TestReadDuringElection(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.WithConfig(func(_ int, cfg *cluster.Config) {
		cfg.ReadIndexTimeout = 5 * time.Second
	}))
	ctx := t.Context()
	leader := c.Leader(t)
	f := c.Others(leader)
	c.Isolate(f[1])
	rec := push(t, c, leader, "lib/app", "v1") // f[0] has it, f[1] not
	c.Partition([]int{leader})                 // f[1] back with f[0], the leader gone
	if d, err := c.Node(f[1]).Tag(ctx, "lib/app", "v1"); err != nil || d != rec.Digest {
		t.Fatalf("%s during the election: tag lib/app:v1 = %q, %v; want %s", c.ID(f[1]), d, err, rec.Digest)
	}
	c.Heal()
	c.WaitConverged(t, convergeWithin)
}
