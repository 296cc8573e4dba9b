package clustertest

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// LogEnv names the environment variable that sends the nodes' logs to
// t.Log (any value but empty).
const LogEnv = "BERTH_TEST_LOG"

// Raft timing of the nodes. hashicorp/raft's in-memory tests use 50 ms,
// with in-memory stores; here every entry is fsynced by raft-boltdb and by
// the state machine, and under the race detector on a two-CPU machine a
// follower now and then answers a heartbeat 150 ms late. 100 ms keeps
// leader changes rare and still elects a leader in a few hundred
// milliseconds.
const (
	HeartbeatTimeout   = 100 * time.Millisecond
	ElectionTimeout    = 100 * time.Millisecond
	LeaderLeaseTimeout = 100 * time.Millisecond
	CommitTimeout      = 5 * time.Millisecond
)

// Defaults of the nodes' other timeouts and of the harness's waits.
const (
	DefaultApplyTimeout     = 2 * time.Second
	DefaultReadIndexTimeout = 500 * time.Millisecond
	DefaultWait             = 10 * time.Second
)

// pollEvery is how often the waits look again.
const pollEvery = 10 * time.Millisecond

// Cluster is N nodes in this process, wired by in-memory transports. Its
// methods are safe for concurrent use, except that Kill and Restart of the
// same node run one at a time.
type Cluster struct {
	t    testing.TB
	wait time.Duration
	logw *testWriter

	life sync.Mutex // serializes Kill, Restart and the final close

	mu     sync.Mutex // guards what follows and the links of the transports
	ms     []*member
	group  []int // partition group of each node; nodes link within a group
	closed bool
}

// member is one node slot: its identity and directories stay across
// restarts; the transport and the Node are new on each start.
type member struct {
	id    string
	addr  raft.ServerAddress
	dir   string
	cfg   cluster.Config
	reg   *prometheus.Registry // kept across restarts: Close must unregister
	trans *raft.InmemTransport // nil while killed
	node  *cluster.Node        // nil while killed
}

// Option changes how New builds the cluster.
type Option func(*settings)

type settings struct {
	configure []func(i int, cfg *cluster.Config)
	wait      time.Duration
}

// WithConfig lets fn change node i's configuration before its first start;
// restarts reuse it. The harness sets Transport and Peers itself, after fn.
func WithConfig(fn func(i int, cfg *cluster.Config)) Option {
	return func(s *settings) { s.configure = append(s.configure, fn) }
}

// WithWait sets how long New, Leader and WaitReady wait (DefaultWait).
func WithWait(d time.Duration) Option {
	return func(s *settings) { s.wait = d }
}

// New starts n nodes bootstrapped as one configuration of n voters, waits
// until they agree on a leader and every node is ready, and closes them all
// when the test ends.
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("clustertest.New: %d nodes", n)
	}
	s := settings{wait: DefaultWait}
	for _, o := range opts {
		o(&s)
	}
	c := &Cluster{t: t, wait: s.wait, logw: &testWriter{t: t}, group: make([]int, n)}
	var servers []cluster.Server
	for i := range n {
		id := fmt.Sprintf("n%d", i)
		servers = append(servers, cluster.Server{ID: id, RaftAddr: id})
		c.ms = append(c.ms, &member{id: id, addr: raft.ServerAddress(id), dir: t.TempDir(), reg: prometheus.NewRegistry()})
	}
	for i, m := range c.ms {
		m.cfg = nodeConfig(m, servers)
		for _, fn := range s.configure {
			fn(i, &m.cfg)
		}
		m.cfg.Transport = nil // set by start
		m.cfg.Peers = peerClient{c: c, from: i}
	}
	t.Cleanup(c.close)
	for i := range c.ms {
		if err := c.start(i); err != nil {
			t.Fatalf("start node %d: %v", i, err)
		}
	}
	c.Leader(t)
	c.WaitReady(t)
	return c
}

// nodeConfig is the harness's configuration of member m.
func nodeConfig(m *member, servers []cluster.Server) cluster.Config {
	cfg := cluster.DefaultConfig()
	cfg.NodeID = m.id
	cfg.DataDir = m.dir
	cfg.GossipAddr = ""
	cfg.Bootstrap = true
	cfg.InitialServers = servers
	cfg.HeartbeatTimeout = HeartbeatTimeout
	cfg.ElectionTimeout = ElectionTimeout
	cfg.LeaderLeaseTimeout = LeaderLeaseTimeout
	cfg.CommitTimeout = CommitTimeout
	cfg.ApplyTimeout = DefaultApplyTimeout
	cfg.ReadIndexTimeout = DefaultReadIndexTimeout
	return cfg
}

// N is the number of nodes, live or killed.
func (c *Cluster) N() int { return len(c.ms) }

// ID is node i's id ("n0", "n1", ...), also its Raft address.
func (c *Cluster) ID(i int) string { return c.ms[i].id }

// Dir is node i's data directory (raft/ and state.db).
func (c *Cluster) Dir(i int) string { return c.ms[i].dir }

// Node returns node i, or nil while it is killed. A restart makes a new
// *cluster.Node: fetch it again rather than keep it.
func (c *Cluster) Node(i int) *cluster.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ms[i].node
}

// Others returns the indexes of the nodes that are not in except, in order.
func (c *Cluster) Others(except ...int) []int {
	var out []int
	for i := range c.ms {
		if !slices.Contains(except, i) {
			out = append(out, i)
		}
	}
	return out
}

// start starts node i on its directories with a new transport, linked as
// the current partition says.
func (c *Cluster) start(i int) error {
	m := c.ms[i]
	_, trans := raft.NewInmemTransport(m.addr)
	cfg := m.cfg
	cfg.Transport = trans
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv(LogEnv) != "" {
		logger = slog.New(slog.NewTextHandler(c.logw, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", m.id)
	}
	n, err := cluster.New(cfg, logger, m.reg)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.Join(errors.New("cluster closed"), n.Close())
	}
	m.trans, m.node = trans, n
	c.relink()
	return nil
}

// Kill closes node i, as a crash would leave it: it is cut from the
// network first, so it sends nothing while it shuts down. Its directories
// stay for Restart. Killing a killed node does nothing.
func (c *Cluster) Kill(i int) {
	c.life.Lock()
	defer c.life.Unlock()
	c.kill(i)
}

func (c *Cluster) kill(i int) {
	c.mu.Lock()
	m := c.ms[i]
	n, trans := m.node, m.trans
	m.node, m.trans = nil, nil
	if trans != nil {
		trans.DisconnectAll()
	}
	c.relink()
	c.mu.Unlock()
	if n == nil {
		return
	}
	if err := n.Close(); err != nil {
		c.t.Errorf("close node %s: %v", m.id, err)
	}
}

// Restart starts node i again on its directories, with a new in-memory
// transport at the same address; a live node is killed first. It does not
// wait for the node to be ready (see WaitReady). A failure to start fails
// the test and leaves the node killed.
func (c *Cluster) Restart(i int) {
	c.life.Lock()
	defer c.life.Unlock()
	c.kill(i)
	if err := c.start(i); err != nil {
		c.t.Errorf("restart node %s: %v", c.ms[i].id, err)
	}
}

// close closes every live node, at the end of the test.
func (c *Cluster) close() {
	c.life.Lock()
	defer c.life.Unlock()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i := range c.ms {
		wg.Go(func() { c.kill(i) })
	}
	wg.Wait()
	c.logw.stop()
}

// Snapshots lists the Raft snapshots in node i's store, newest first, read
// from its directory (the node may be live or killed).
func (c *Cluster) Snapshots(i int) ([]*raft.SnapshotMeta, error) {
	store, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(c.ms[i].dir, "raft"), 1, hclog.NewNullLogger())
	if err != nil {
		return nil, err
	}
	return store.List()
}

// testWriter writes log lines to t.Log until stop.
type testWriter struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// stop drops later lines: t.Log after the test has ended panics.
func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
}
