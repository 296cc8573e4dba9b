package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/oci"
	"github.com/prometheus/client_golang/prometheus"
)

var testSecret = []byte("test-cluster-secret-0123456789")

// member is one node of a real cluster in this process: TCP Raft, UDP+TCP
// gossip and the internal API on a loopback HTTP server.
type member struct {
	t    *testing.T
	cfg  cluster.Config
	node *cluster.Node
	ln   net.Listener
	srv  *http.Server
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
	if err := f1.node.DeleteTag(ctx, "team/none", "latest"); !errors.Is(err, oci.ErrNotFound) {
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
