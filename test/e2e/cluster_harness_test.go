package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-registry/berth/cluster"
)

// Bounds of the cluster harness: how long a cluster may take to settle.
// Generous, as the machine is shared; they bound polls, they are not
// measurements.
const (
	clusterSettleTimeout = 90 * time.Second
	statusTimeout        = 5 * time.Second
	clusterPoll          = 50 * time.Millisecond
)

// clusterOptions configures startCluster.
type clusterOptions struct {
	// Args are added to the command line of every node.
	Args []string
}

// clusterNode is one `berth serve` process of a testCluster.
type clusterNode struct {
	*Server
	ID string
	// faults counts the faults injected into this node (kill, stop,
	// pause, leave) and the recoveries: a request that failed while it
	// changed failed because of the test.
	faults atomic.Int64
	down   atomic.Bool // the test has taken it out of service
}

// markDown takes the node out of the load's rotation before a fault.
func (n *clusterNode) markDown() {
	n.down.Store(true)
	n.faults.Add(1)
}

// markUp puts the node back into the load's rotation.
func (n *clusterNode) markUp() {
	n.faults.Add(1)
	n.down.Store(false)
}

// blobPath is where the node keeps blob d.
func (n *clusterNode) blobPath(d v1.Hash) string {
	return filepath.Join(n.BlobsDir(), d.Algorithm, d.Hex[:2], d.Hex)
}

// testCluster is berth processes on 127.0.0.1 that form one cluster: the
// first bootstraps it and generates the cluster secret, the others join it
// by gossip with --cluster-secret-file, as the README tells an operator to.
// Every node is given the same admin password.
type testCluster struct {
	t        *testing.T
	opts     clusterOptions
	password string
	nodes    []*clusterNode
	// rng picks victims and the moments of faults; its seed is logged
	// and E2E_SEED replays it.
	rng *rand.Rand
}

// startCluster starts n nodes, one after the other, and waits until every
// one of them is a voter. The nodes are stopped (SIGTERM, in parallel) when
// the test ends.
func startCluster(t *testing.T, n int, opts clusterOptions) *testCluster {
	t.Helper()
	c := &testCluster{t: t, opts: opts, password: "e2e-" + randomHex(12), rng: rand.New(rand.NewPCG(uint64(crashSeed(t)), 0))}
	start := time.Now()
	for range n {
		c.addNode()
	}
	// Registered after the nodes' own cleanups, so it runs before them.
	t.Cleanup(c.stopAll)
	c.waitVoters(c.nodes...)
	t.Logf("cluster of %d nodes ready, all voters, in %s", n, time.Since(start).Round(time.Millisecond))
	return c
}

// addNode starts one more node: the first bootstraps the cluster, every
// later one joins the gossip addresses of the nodes that run. It returns
// once the node is ready (it has a leader and caught up).
func (c *testCluster) addNode() *clusterNode {
	c.t.Helper()
	id := fmt.Sprintf("n%d", len(c.nodes)+1)
	args := append([]string{"--node-id", id, "--log-format", "text"}, c.opts.Args...)
	if len(c.nodes) > 0 {
		for _, o := range c.nodes {
			if o.running() {
				args = append(args, "--join", o.GossipAddr())
			}
		}
		args = append(args, "--cluster-secret-file", filepath.Join(c.nodes[0].DataDir(), "cluster.secret"))
	}
	srv := startBerth(c.t, Options{Args: args, Password: c.password})
	n := &clusterNode{Server: srv, ID: id}
	c.nodes = append(c.nodes, n)
	return n
}

// node returns the node with id.
func (c *testCluster) node(id string) *clusterNode {
	c.t.Helper()
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	c.t.Fatalf("no node %q in the cluster", id)
	return nil
}

// up returns the nodes that are not taken out of service.
func (c *testCluster) up() []*clusterNode {
	var out []*clusterNode
	for _, n := range c.nodes {
		if !n.down.Load() {
			out = append(out, n)
		}
	}
	return out
}

// pick returns one of nodes, chosen by the seeded rng.
func (c *testCluster) pick(nodes []*clusterNode) *clusterNode {
	return nodes[c.rng.IntN(len(nodes))]
}

// jitter waits a seeded random time of up to upTo before a fault, so that
// faults land at different points of the pushes in flight (fault
// injection, not a wait for a condition).
func (c *testCluster) jitter(upTo time.Duration) {
	d := time.Duration(c.rng.Int64N(int64(upTo)))
	c.t.Logf("fault after %s", d.Round(time.Millisecond))
	<-time.After(d)
}

// others returns the nodes but the given ones.
func (c *testCluster) others(not ...*clusterNode) []*clusterNode {
	var out []*clusterNode
	for _, n := range c.nodes {
		if !slices.Contains(not, n) {
			out = append(out, n)
		}
	}
	return out
}

// stopAll stops every running node with SIGTERM, all at once, and checks
// that each exits 0.
func (c *testCluster) stopAll() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		wg.Go(func() {
			if err := n.Stop(); err != nil {
				c.t.Errorf("stop %s: %v", n.ID, err)
			}
		})
	}
	wg.Wait()
}

// status asks node n for the cluster status (GET /api/v1/cluster).
func (c *testCluster) status(ctx context.Context, n *clusterNode, hash bool) (cluster.ClusterStatus, error) {
	var st cluster.ClusterStatus
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	path := "/api/v1/cluster"
	if hash {
		path += "?hash=true"
	}
	req, err := n.newRequest(ctx, http.MethodGet, path, nil, true)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("%s: GET %s: %w", n.ID, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, fmt.Errorf("%s: GET %s: %w", n.ID, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: GET %s: %s: %s", n.ID, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: GET %s: %w", n.ID, path, err)
	}
	return st, nil
}

// poll calls check every clusterPoll until it returns nil, and fails the
// test with its last error after timeout.
func (c *testCluster) poll(what string, timeout time.Duration, check func(ctx context.Context) error) time.Duration {
	c.t.Helper()
	ctx := deadlineCtx(c.t, timeout)
	start := time.Now()
	tick := time.NewTicker(clusterPoll)
	defer tick.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("%s: not reached within %s: %v", what, time.Since(start).Round(time.Millisecond), err)
		case <-tick.C:
		}
	}
}

// leader waits until a node among those up names a leader that is up too
// and says it leads, and returns it.
func (c *testCluster) leader() *clusterNode {
	c.t.Helper()
	var found *clusterNode
	c.poll("a leader among the nodes up", clusterSettleTimeout, func(ctx context.Context) error {
		var errs []error
		for _, n := range c.up() {
			st, err := c.status(ctx, n, false)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if st.Leader.ID == "" {
				errs = append(errs, fmt.Errorf("%s knows no leader", n.ID))
				continue
			}
			l := c.node(st.Leader.ID)
			if l.down.Load() {
				errs = append(errs, fmt.Errorf("%s names %s, which is down", n.ID, l.ID))
				continue
			}
			lst, err := c.status(ctx, l, false)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if lst.Raft.State != "leader" {
				errs = append(errs, fmt.Errorf("%s names %s, which is %s", n.ID, l.ID, lst.Raft.State))
				continue
			}
			found = l
			return nil
		}
		return errors.Join(errs...)
	})
	return found
}

// waitVoters waits until the Raft configuration holds every node given as
// an alive voter.
func (c *testCluster) waitVoters(nodes ...*clusterNode) {
	c.t.Helper()
	c.poll(fmt.Sprintf("%s all alive voters", ids(nodes)), clusterSettleTimeout, func(ctx context.Context) error {
		st, err := c.anyStatus(ctx, nodes, false)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			m, ok := findMember(st, n.ID)
			switch {
			case !ok:
				return fmt.Errorf("%s not listed by %s", n.ID, st.NodeID)
			case m.Suffrage != "voter" || m.State != string(cluster.StateAlive):
				return fmt.Errorf("%s is %s and %s", n.ID, m.State, m.Suffrage)
			}
		}
		return nil
	})
}

// anyStatus asks the nodes in turn for the status until one answers.
func (c *testCluster) anyStatus(ctx context.Context, nodes []*clusterNode, hash bool) (cluster.ClusterStatus, error) {
	var errs []error
	for _, n := range nodes {
		if n.down.Load() {
			continue
		}
		st, err := c.status(ctx, n, hash)
		if err == nil {
			return st, nil
		}
		errs = append(errs, err)
	}
	return cluster.ClusterStatus{}, fmt.Errorf("no node answered: %w", errors.Join(errs...))
}

// converged is what waitConverged found.
type converged struct {
	applied uint64
	hash    string
}

// waitConverged waits until the given nodes are alive voters that have
// applied the same log (the same applied index and state hash) and have
// nothing left to repair, and returns the index and hash they agree on.
func (c *testCluster) waitConverged(nodes ...*clusterNode) converged {
	c.t.Helper()
	var got converged
	took := c.poll(fmt.Sprintf("%s converged", ids(nodes)), clusterSettleTimeout, func(ctx context.Context) error {
		st, err := c.anyStatus(ctx, nodes, true)
		if err != nil {
			return err
		}
		got = converged{}
		for _, n := range nodes {
			m, ok := findMember(st, n.ID)
			switch {
			case !ok:
				return fmt.Errorf("%s not listed by %s", n.ID, st.NodeID)
			case m.Error != "":
				return fmt.Errorf("%s: %s", n.ID, m.Error)
			case m.Suffrage != "voter" || m.State != string(cluster.StateAlive):
				return fmt.Errorf("%s is %s and %s", n.ID, m.State, m.Suffrage)
			case m.BlobRepairBacklog != 0:
				return fmt.Errorf("%s has %d blobs to repair", n.ID, m.BlobRepairBacklog)
			case got.hash == "":
				got = converged{applied: m.AppliedIndex, hash: m.StateHash}
			case m.AppliedIndex != got.applied || m.StateHash != got.hash:
				return fmt.Errorf("%s applied %d with hash %.12s, %s applied %d with hash %.12s",
					nodes[0].ID, got.applied, got.hash, n.ID, m.AppliedIndex, m.StateHash)
			}
		}
		if got.hash == "" {
			return errors.New("no state hash reported")
		}
		return nil
	})
	c.t.Logf("%s converged in %s: applied index %d, state hash %.16s", ids(nodes), took.Round(time.Millisecond), got.applied, got.hash)
	return got
}

func findMember(st cluster.ClusterStatus, id string) (cluster.MemberStatus, bool) {
	for _, m := range st.Members {
		if m.ID == id {
			return m, true
		}
	}
	return cluster.MemberStatus{}, false
}

func ids(nodes []*clusterNode) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.ID)
	}
	return strings.Join(s, ",")
}

// waitBlobsOnDisk waits until every blob of ds is a file in the blob store
// of each node, then checks that each file hashes to its digest and that no
// blob file there is partial (checkBlobFiles).
func (c *testCluster) waitBlobsOnDisk(nodes []*clusterNode, ds []v1.Hash) {
	c.t.Helper()
	for _, n := range nodes {
		took := c.poll(fmt.Sprintf("%d blobs on %s's disk", len(ds), n.ID), clusterSettleTimeout, func(context.Context) error {
			missing := 0
			var first v1.Hash
			for _, d := range ds {
				if _, err := os.Stat(n.blobPath(d)); err != nil {
					if missing == 0 {
						first = d
					}
					missing++
				}
			}
			if missing > 0 {
				return fmt.Errorf("%d of %d missing, %s first", missing, len(ds), first)
			}
			return nil
		})
		for _, d := range ds {
			if got, err := fileSHA256(n.blobPath(d)); err != nil || got != d.Hex {
				c.t.Errorf("%s: blob file %s hashes to %s (%v)", n.ID, n.blobPath(d), got, err)
			}
		}
		checkBlobFiles(c.t, n.Server)
		c.t.Logf("%s holds all %d blobs (waited %s)", n.ID, len(ds), took.Round(time.Millisecond))
	}
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
