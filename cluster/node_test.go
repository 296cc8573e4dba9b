package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/registry"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// registry.State changes with tag versions; cmd checks that *cluster.Node
// implements it (and replicate.Store).
var _ registry.PasswordChecker = (*cluster.Node)(nil)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func testConfig(t *testing.T, dir, addr string) cluster.Config {
	t.Helper()
	cfg := cluster.DefaultConfig()
	cfg.NodeID = "node1"
	cfg.DataDir = dir
	cfg.RaftAddr = addr
	cfg.HeartbeatTimeout = 50 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	return cfg
}

func startNode(t *testing.T, cfg cluster.Config, reg prometheus.Registerer) *cluster.Node {
	t.Helper()
	n, err := cluster.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if !n.Ready() || !n.IsLeader() {
		t.Fatalf("after WaitReady: ready %v leader %v", n.Ready(), n.IsLeader())
	}
	return n
}

func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestConfigValidate(t *testing.T) {
	ok := cluster.DefaultConfig()
	ok.NodeID, ok.DataDir = "n", "/tmp/x"
	for _, tc := range []struct {
		name   string
		mutate func(c *cluster.Config)
		valid  bool
	}{
		{"defaults", func(*cluster.Config) {}, true},
		{"no node id", func(c *cluster.Config) { c.NodeID = "" }, false},
		{"no data dir", func(c *cluster.Config) { c.DataDir = "" }, false},
		{"no port", func(c *cluster.Config) { c.RaftAddr = "127.0.0.1" }, false},
		{"unspecified ip", func(c *cluster.Config) { c.RaftAddr = "0.0.0.0:5001" }, false},
		{"no host", func(c *cluster.Config) { c.RaftAddr = ":5001" }, false},
		{"negative apply timeout", func(c *cluster.Config) { c.ApplyTimeout = -time.Second }, false},
		{"gossip without secret", func(c *cluster.Config) { c.GossipAddr, c.HTTPAdvertise = "127.0.0.1:0", "127.0.0.1:5000" }, false},
		{"gossip without http advertise", func(c *cluster.Config) {
			c.GossipAddr, c.Secret = "127.0.0.1:0", []byte("0123456789abcdef")
		}, false},
		{"gossip", func(c *cluster.Config) {
			c.GossipAddr, c.HTTPAdvertise, c.Secret = "127.0.0.1:0", "127.0.0.1:5000", []byte("0123456789abcdef")
		}, true},
		{"short secret", func(c *cluster.Config) {
			c.GossipAddr, c.HTTPAdvertise, c.Secret = "127.0.0.1:0", "127.0.0.1:5000", []byte("short")
		}, false},
		{"bind any, advertise a name", func(c *cluster.Config) { c.RaftAddr, c.RaftAdvertise = ":5001", "node1:5001" }, true},
		{"bad join address", func(c *cluster.Config) { c.Join = []string{"node1"} }, false},
		{"lease above heartbeat", func(c *cluster.Config) { c.LeaderLeaseTimeout = time.Second }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			if tc.valid != (err == nil) {
				t.Fatalf("Validate() = %v, want valid %v", err, tc.valid)
			}
			if err != nil && !errors.Is(err, cluster.ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestNodeWritesAndRestart(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	reg := prometheus.NewRegistry()
	ctx := context.Background()
	n := startNode(t, testConfig(t, dir, addr), reg)

	layer := oci.DigestOf([]byte("layer"))
	if err := n.LinkBlob(ctx, "lib/app", layer, 5); err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	rec := oci.Record{Repo: "lib/app", Digest: oci.DigestOf(payload), MediaType: oci.MediaTypeImageManifest,
		Size: int64(len(payload)), Blobs: []oci.Digest{layer}, Created: time.Now().UnixNano()}
	if err := n.PutManifest(ctx, rec, payload, "v1", oci.TagVersion{}); err != nil {
		t.Fatal(err)
	}
	// An FSM error comes back through the future's response.
	if err := n.DeleteTag(ctx, "lib/app", "missing", oci.TagVersion{}, ""); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("delete missing tag: %v", err)
	}
	if err := n.PutManifest(ctx, rec, []byte("other bytes"), "", oci.TagVersion{}); !errors.Is(err, cluster.ErrBadCommand) {
		t.Fatalf("mismatched payload: %v", err)
	}
	if changed, err := n.EnsureUser(ctx, "admin", "s3cret", true); err != nil || !changed {
		t.Fatalf("EnsureUser = %v, %v", changed, err)
	}
	if changed, err := n.EnsureUser(ctx, "admin", "s3cret", true); err != nil || changed {
		t.Fatalf("EnsureUser again = %v, %v; want unchanged", changed, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := n.DeleteTag(cancelled, "lib/app", "v1", oci.TagVersion{}, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("write with a cancelled context: %v", err)
	}

	if got := gauge(t, reg, "berth_raft_state"); got != 2 {
		t.Fatalf("berth_raft_state = %v, want 2 (leader)", got)
	}
	if got := gauge(t, reg, "berth_raft_last_applied_index"); got != float64(n.AppliedIndex()) {
		t.Fatalf("berth_raft_last_applied_index = %v, want %d", got, n.AppliedIndex())
	}
	if got := gauge(t, reg, "berth_raft_leader_changes_total"); got < 1 {
		t.Fatalf("berth_raft_leader_changes_total = %v", got)
	}
	if got := gauge(t, reg, "berth_raft_apply_duration_seconds"); got < 4 {
		t.Fatalf("apply duration samples = %v, want >= 4", got)
	}

	hash, err := n.StateHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	applied := n.AppliedIndex()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := n.DeleteTag(ctx, "lib/app", "v1", oci.TagVersion{}, ""); !errors.Is(err, cluster.ErrClosed) || !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("write after Close: %v", err)
	}

	// Same directory, same address, same registry (Close unregistered).
	n2 := startNode(t, testConfig(t, dir, addr), reg)
	if got := n2.AppliedIndex(); got < applied {
		t.Fatalf("applied index went back from %d to %d", applied, got)
	}
	if h, _ := n2.StateHash(ctx); h != hash {
		t.Fatal("state hash changed across a restart")
	}
	got, gotPayload, err := n2.Manifest(ctx, "lib/app", rec.Digest)
	if err != nil || string(gotPayload) != string(payload) || got.Created != rec.Created {
		t.Fatalf("manifest after restart: %+v %q %v", got, gotPayload, err)
	}
	if d, err := n2.Tag(ctx, "lib/app", "v1"); err != nil || d != rec.Digest {
		t.Fatalf("tag after restart: %s %v", d, err)
	}
	if ok, err := n2.BlobLinked(ctx, "lib/app", layer); err != nil || !ok {
		t.Fatalf("blob link after restart: %v %v", ok, err)
	}
	if ok, admin, err := n2.CheckPassword(ctx, "admin", "s3cret"); err != nil || !ok || !admin {
		t.Fatalf("CheckPassword = %v %v %v", ok, admin, err)
	}
	if ok, _, _ := n2.CheckPassword(ctx, "admin", "wrong"); ok {
		t.Fatal("wrong password accepted")
	}
	if ok, _, _ := n2.CheckPassword(ctx, "nobody", "s3cret"); ok {
		t.Fatal("unknown user accepted")
	}
	if exists, _ := n2.UserExists(ctx, "admin"); !exists {
		t.Fatal("admin does not exist")
	}
	// The restarted node takes writes.
	if err := n2.DeleteManifest(ctx, "lib/app", rec.Digest); err != nil {
		t.Fatal(err)
	}
	if repos, _ := n2.Repositories(ctx, "", 10); len(repos) != 0 {
		t.Fatalf("repositories after delete = %q", repos)
	}
	if refs, _ := n2.ReferencedBlobs(ctx); len(refs) != 0 {
		t.Fatalf("referenced blobs after delete = %v", refs)
	}
	if err := n2.UnlinkBlob(ctx, "lib/other", layer); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("UnlinkBlob of a blob the repo does not have: %v", err)
	}
	if err := n2.UnlinkBlobs(ctx, []oci.Digest{layer}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := n2.BlobLinked(ctx, "lib/app", layer); ok {
		t.Fatal("blob still linked after UnlinkBlobs")
	}
}

func TestNodeWithoutLeader(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), freeAddr(t))
	cfg.Bootstrap = false // no cluster to join: never a leader
	cfg.ApplyTimeout = 300 * time.Millisecond
	n, err := cluster.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	// A write waits for a leader up to ApplyTimeout, then gives up.
	if err := n.DeleteTag(ctx, "r", "t", oci.TagVersion{}, ""); !errors.Is(err, cluster.ErrNoLeader) || !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("write without a leader: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := n.WaitReady(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady without a leader: %v", err)
	}
	if n.Ready() {
		t.Fatal("ready without a leader")
	}
	// Reads work without a leader.
	if _, err := n.Tag(ctx, "r", "t"); !errors.Is(err, oci.ErrNotFound) {
		t.Fatalf("read without a leader: %v", err)
	}
}

func TestTwoNodesInOneProcess(t *testing.T) {
	// Separate registries, separate dirs: no collisions of metrics or files.
	var hashes []string
	for i := range 2 {
		cfg := testConfig(t, t.TempDir(), freeAddr(t))
		cfg.NodeID = fmt.Sprintf("n%d", i)
		n := startNode(t, cfg, prometheus.NewRegistry())
		if _, err := n.EnsureUser(context.Background(), "admin", "pw", true); err != nil {
			t.Fatal(err)
		}
		h, _ := n.StateHash(context.Background())
		hashes = append(hashes, h)
	}
	// Different bcrypt salts: the states differ, as they should.
	if hashes[0] == hashes[1] {
		t.Fatal("independent clusters with different salts hash equal")
	}
}
