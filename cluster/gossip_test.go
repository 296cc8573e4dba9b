package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/registry"
	"github.com/prometheus/client_golang/prometheus"
)

var testSecret = []byte("test-cluster-secret-0123456789")

// member is one node of a real cluster in this process: TCP Raft, UDP+TCP
// gossip and the internal API on a loopback HTTP server.
type member struct {
	t     *testing.T
	cfg   cluster.Config
	node  *cluster.Node
	ln    net.Listener
	srv   *http.Server
	blobs *registry.BlobStore
}

func startMember(t *testing.T, id, dir string, join ...string) *member {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, dir, freeAddr(t))
	cfg.NodeID = id
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	cfg.ElectionTimeout = 200 * time.Millisecond
	cfg.LeaderLeaseTimeout = 100 * time.Millisecond
	cfg.GossipAddr = "127.0.0.1:0"
	cfg.HTTPAdvertise = ln.Addr().String()
	cfg.Secret = testSecret
	cfg.Join = join
	cfg.Bootstrap = len(join) == 0
	cfg.DeadPeerTimeout = 2 * time.Second
	return runMember(t, cfg, ln)
}

func runMember(t *testing.T, cfg cluster.Config, ln net.Listener) *member {
	t.Helper()
	n, err := cluster.New(cfg, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m := &member{t: t, cfg: cfg, node: n, ln: ln}
	m.blobs, err = registry.OpenBlobStore(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	bc := cluster.DefaultBlobConfig()
	bc.RepairInterval = 500 * time.Millisecond
	if err := n.AttachBlobs(m.blobs, bc); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(cluster.InternalPrefix, n.InternalHandler())
	m.srv = &http.Server{Handler: mux}
	go m.srv.Serve(ln)
	t.Cleanup(m.stop)
	return m
}

func (m *member) stop() {
	m.srv.Close()
	m.node.Close()
}

// restart starts the member again on its data directory and HTTP address.
func (m *member) restart() *member {
	m.t.Helper()
	m.stop()
	ln, err := net.Listen("tcp", m.cfg.HTTPAdvertise)
	if err != nil {
		m.t.Fatal(err)
	}
	cfg := m.cfg
	cfg.Join = []string{}
	cfg.GossipAddr = m.gossipAddr() // the same address, as a real restart has
	return runMember(m.t, cfg, ln)
}

func (m *member) gossipAddr() string { return m.node.GossipAddr() }

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func voters(t *testing.T, m *member) []string {
	t.Helper()
	st, err := m.node.Status(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ms := range st.Members {
		if ms.Suffrage == "voter" {
			out = append(out, ms.ID)
		}
	}
	return out
}

func leaderOf(ms ...*member) *member {
	for _, m := range ms {
		if m.node.IsLeader() {
			return m
		}
	}
	return nil
}

// TestGossipCluster forms a three-node cluster by gossip, writes through a
// follower, reads it at once on another follower, survives the loss of the
// leader, and removes and takes back a dead member.
func TestGossipCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a real cluster")
	}
	ctx := context.Background()
	a := startMember(t, "a", t.TempDir())
	readyCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := a.node.WaitReady(readyCtx); err != nil {
		t.Fatal(err)
	}
	b := startMember(t, "b", t.TempDir(), a.gossipAddr())
	c := startMember(t, "c", t.TempDir(), a.gossipAddr())
	all := []*member{a, b, c}
	for _, m := range all[1:] {
		if err := m.node.WaitReady(readyCtx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three voters", 20*time.Second, func() bool { return len(voters(t, a)) == 3 })

	// A write through a follower is forwarded; another follower sees it
	// at once (its not-found read catches up with the leader first).
	l := leaderOf(all...)
	var f1, f2 *member
	for _, m := range all {
		if m != l {
			if f1 == nil {
				f1 = m
			} else {
				f2 = m
			}
		}
	}
	for i := range 20 {
		d := oci.DigestOf([]byte(fmt.Sprintf("blob %d", i)))
		repo := fmt.Sprintf("team/app%d", i)
		if err := f1.node.LinkBlob(ctx, repo, d, 10); err != nil {
			t.Fatalf("write through follower %s: %v", f1.cfg.NodeID, err)
		}
		ok, err := f2.node.BlobLinked(ctx, repo, d)
		if err != nil || !ok {
			t.Fatalf("write %d through %s not visible on %s at once: %v %v", i, f1.cfg.NodeID, f2.cfg.NodeID, ok, err)
		}
	}
	// A rejected write comes back as the same error through a follower.
	if err := f1.node.DeleteTag(ctx, "team/none", "latest", oci.TagVersion{}, ""); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("forwarded delete of a missing tag: %v, want not found", err)
	}

	// Kill the leader: a new one is elected and writes go on.
	l.stop()
	rest := []*member{}
	for _, m := range all {
		if m != l {
			rest = append(rest, m)
		}
	}
	killed := time.Now()
	d := oci.DigestOf([]byte("after failover"))
	for {
		err := rest[0].node.LinkBlob(ctx, "team/failover", d, 1)
		if err == nil {
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("no write succeeded within 15s of killing the leader: %v", err)
		}
	}
	t.Logf("writes resumed %s after the leader was killed", time.Since(killed).Round(time.Millisecond))
	ok, err := rest[1].node.BlobLinked(ctx, "team/failover", d)
	if err != nil || !ok {
		t.Fatalf("write after failover not visible on %s: %v %v", rest[1].cfg.NodeID, ok, err)
	}

	// The dead member is removed after DeadPeerTimeout (two voters alive
	// of three keep a quorum), and taken back when it returns.
	waitFor(t, "the dead leader removed", 30*time.Second, func() bool { return len(voters(t, rest[0])) == 2 })
	back := l.restart()
	waitFor(t, "the returned member back as a voter", 30*time.Second, func() bool { return len(voters(t, rest[0])) == 3 })
	ok, err = back.node.BlobLinked(ctx, "team/failover", d)
	if err != nil || !ok {
		t.Fatalf("returned member misses a write: %v %v", ok, err)
	}
	h0, _ := rest[0].node.StateHash(ctx)
	waitFor(t, "equal state on the returned member", 10*time.Second, func() bool {
		h, _ := back.node.StateHash(ctx)
		return h == h0 && back.node.AppliedIndex() == rest[0].node.AppliedIndex()
	})
}

// testLogger writes to the test log when BERTH_TEST_LOG is set.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("BERTH_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startCluster starts n members, the first bootstrapping, and waits until
// all are voters.
func startCluster(t *testing.T, n int) []*member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := startMember(t, "m0", t.TempDir())
	if err := first.node.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	all := []*member{first}
	for i := 1; i < n; i++ {
		all = append(all, startMember(t, fmt.Sprintf("m%d", i), t.TempDir(), first.gossipAddr()))
	}
	for _, m := range all {
		if err := m.node.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, fmt.Sprintf("%d voters", n), 30*time.Second, func() bool { return len(voters(t, first)) == n })
	return all
}

// putBlob stores content on m and replicates it to the write quorum.
func putBlob(t *testing.T, m *member, content []byte) oci.Digest {
	t.Helper()
	d := oci.DigestOf(content)
	if _, err := m.blobs.Put(context.Background(), d, bytes.NewReader(content), 0); err != nil {
		t.Fatal(err)
	}
	if err := m.node.ReplicateBlob(context.Background(), d, int64(len(content))); err != nil {
		t.Fatalf("replicate %s: %v", d, err)
	}
	return d
}

func holders(ms []*member, d oci.Digest) int {
	n := 0
	for _, m := range ms {
		if _, _, err := m.blobs.Stat(d); err == nil {
			n++
		}
	}
	return n
}

// TestBlobQuorumAndRepair: an upload is on at least the write quorum (2 of
// 3) when it is acknowledged; once a manifest references it, repair brings
// it to every live node.
func TestBlobQuorumAndRepair(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a real cluster")
	}
	ctx := context.Background()
	ms := startCluster(t, 3)
	layer := []byte("a layer that must not be lost")
	d := putBlob(t, ms[1], layer)
	if got := holders(ms, d); got < 2 {
		t.Fatalf("blob on %d nodes after ReplicateBlob, want at least the quorum of 2", got)
	}
	// Take one holder down; the one without the blob fetches it once a
	// manifest references it.
	var down *member
	for _, m := range ms {
		if _, _, err := m.blobs.Stat(d); err == nil && m != ms[1] {
			down = m
		}
	}
	down.stop()
	if err := ms[1].node.LinkBlob(ctx, "app", d, int64(len(layer))); err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"schemaVersion":2,"layers":["x"]}`)
	rec := oci.Record{Repo: "app", Digest: oci.DigestOf(payload), MediaType: oci.MediaTypeImageManifest,
		Size: int64(len(payload)), Blobs: []oci.Digest{d}, Created: 1}
	if err := ms[1].node.PutManifest(ctx, rec, payload, "v1", oci.TagVersion{}); err != nil {
		t.Fatal(err)
	}
	var up []*member
	for _, m := range ms {
		if m != down {
			up = append(up, m)
		}
	}
	waitFor(t, "the blob on both live nodes", 20*time.Second, func() bool { return holders(up, d) == 2 })
	// FetchBlob reads it from a peer that has it.
	rc, size, err := up[0].node.FetchBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if size != int64(len(layer)) || !bytes.Equal(got, layer) {
		t.Fatalf("FetchBlob = %d bytes %q", size, got)
	}
}

// TestWrongSecretCannotJoin: a node with another cluster secret is refused
// by gossip (it cannot decrypt) and by Raft (its TLS key differs), and never
// becomes ready.
func TestWrongSecretCannotJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a real cluster")
	}
	ms := startCluster(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := ms[0].cfg
	cfg.NodeID, cfg.DataDir, cfg.RaftAddr, cfg.RaftAdvertise = "intruder", t.TempDir(), freeAddr(t), ""
	cfg.GossipAddr, cfg.GossipAdvertise, cfg.HTTPAdvertise = "127.0.0.1:0", "", ln.Addr().String()
	cfg.Secret = []byte("some-other-cluster-secret-456")
	cfg.Join, cfg.Bootstrap = []string{ms[0].gossipAddr()}, false
	intruder := runMember(t, cfg, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := intruder.node.WaitReady(ctx); err == nil {
		t.Fatal("a node with the wrong secret became ready")
	}
	for _, m := range ms[0].node.Members() {
		if m.ID == "intruder" {
			t.Fatalf("the leader's gossip lists the intruder: %+v", m)
		}
	}
	if v := voters(t, ms[0]); len(v) != 1 {
		t.Fatalf("voters %v", v)
	}
}

// TestLeave: a member that leaves is removed from the configuration at
// once, the others go on, and leaving is refused when it would lose the
// quorum.
func TestLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("forms a real cluster")
	}
	ctx := context.Background()
	ms := startCluster(t, 3)
	leaver := leaderOf(ms...) // the hardest case: it hands leadership over first
	if err := leaver.node.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	leaver.stop()
	var rest []*member
	for _, m := range ms {
		if m != leaver {
			rest = append(rest, m)
		}
	}
	if v := voters(t, rest[0]); len(v) != 2 {
		t.Fatalf("voters after leave %v, want 2", v)
	}
	if err := rest[0].node.LinkBlob(ctx, "app", oci.DigestOf([]byte("after leave")), 1); err != nil {
		t.Fatalf("write after a leave: %v", err)
	}
	// One of two dies: the last one may not leave (it would be alone with a
	// dead voter).
	rest[1].stop()
	waitFor(t, "gossip to see the dead member", 10*time.Second, func() bool {
		for _, m := range rest[0].node.Members() {
			if m.ID == rest[1].cfg.NodeID {
				return m.State == cluster.StateDead
			}
		}
		return false
	})
	if err := rest[0].node.Leave(ctx); !errors.Is(err, cluster.ErrUnsafe) {
		t.Fatalf("unsafe leave: %v, want ErrUnsafe", err)
	}
}
