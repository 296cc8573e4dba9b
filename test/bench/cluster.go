package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-registry/berth/cluster"
)

// berthCluster is a cluster of `berth serve` processes on loopback, each
// with its own ports and data directory, sharing one cluster secret and
// admin password through the environment.
type berthCluster struct {
	nodes []*server // nodes[i].name is the node id, n1, n2, ...
	http  *http.Client
}

// startCluster starts size nodes in dir: n1 bootstraps the cluster, the
// others join it by gossip. It returns once every node is ready and the
// leader sees all of them as alive voters. logLevel is the nodes' log
// level (info logs every request and every leader change).
func startCluster(ctx context.Context, bin, dir string, size int, logLevel string) (*berthCluster, error) {
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	password := "bench-cluster-" + hex.EncodeToString(secret[:4])
	env := []string{"BERTH_CLUSTER_SECRET=" + hex.EncodeToString(secret), "BERTH_ADMIN_PASSWORD=" + password}
	c := &berthCluster{http: &http.Client{Timeout: 10 * time.Second}}
	var gossip []string
	for i := range size {
		ports := make([]int, 3) // http, raft, gossip
		for j := range ports {
			p, err := freePort()
			if err != nil {
				return nil, err
			}
			ports[j] = p
		}
		id := fmt.Sprintf("n%d", i+1)
		ndir := filepath.Join(dir, id)
		if err := os.MkdirAll(ndir, 0o700); err != nil {
			return nil, err
		}
		s := &server{
			name: id, url: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
			user: "admin", password: password,
			bin: bin,
			args: []string{"serve", // without --join; see below
				"--node-id", id,
				"--addr", fmt.Sprintf("127.0.0.1:%d", ports[0]),
				"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
				"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
				"--data", filepath.Join(ndir, "data"),
				"--gc-interval", "0s",
				"--log-format", "json", "--log-level", logLevel},
			env:     env,
			logPath: filepath.Join(ndir, id+".log"), readyPath: "/readyz",
		}
		gossip = append(gossip, fmt.Sprintf("127.0.0.1:%d", ports[2]))
		c.nodes = append(c.nodes, s)
	}
	// n1 bootstraps, the others join it. A restart joins the others,
	// whichever of them runs (n1 too: it finds its peers, it does not
	// bootstrap again).
	var base [][]string
	for i, s := range c.nodes {
		base = append(base, slices.Clip(s.args))
		if i > 0 {
			s.args = append(base[i], "--join", gossip[0])
		}
		if err := s.start(ctx); err != nil {
			c.stop()
			return nil, err
		}
	}
	for i, s := range c.nodes {
		others := append(append([]string{}, gossip[:i]...), gossip[i+1:]...)
		s.args = append(base[i], "--join", strings.Join(others, ","))
	}
	if _, err := c.waitHealthy(ctx, 60*time.Second); err != nil {
		c.stop()
		return nil, err
	}
	if err := c.nodes[0].createProject(ctx, benchProject); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// stop stops every node that runs (SIGTERM, in parallel).
func (c *berthCluster) stop() {
	done := make(chan struct{})
	for _, s := range c.nodes {
		go func() { s.stop(); done <- struct{}{} }()
	}
	for range c.nodes {
		<-done
	}
}

// node returns the node with id, or nil.
func (c *berthCluster) node(id string) *server {
	for _, s := range c.nodes {
		if s.name == id {
			return s
		}
	}
	return nil
}

// others returns the nodes other than s.
func (c *berthCluster) others(s *server) []*server {
	var out []*server
	for _, o := range c.nodes {
		if o != s {
			out = append(out, o)
		}
	}
	return out
}

// status asks node s for its view of the cluster.
func (c *berthCluster) status(ctx context.Context, s *server) (cluster.ClusterStatus, error) {
	var st cluster.ClusterStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/api/v1/cluster", nil)
	if err != nil {
		return st, err
	}
	req.SetBasicAuth(s.user, s.password)
	resp, err := c.http.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: GET /api/v1/cluster: %s", s.name, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitHealthy waits until every node runs and is ready, they all follow
// one leader, and the leader sees every node as an alive voter that has
// applied all it knows. It returns the leader.
func (c *berthCluster) waitHealthy(ctx context.Context, timeout time.Duration) (*server, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		leader, err := c.healthy(ctx)
		if err == nil {
			return leader, nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("cluster not healthy after %s: %w", timeout, last)
}

func (c *berthCluster) healthy(ctx context.Context) (*server, error) {
	leaderID := ""
	for _, s := range c.nodes {
		if !s.running() {
			return nil, fmt.Errorf("%s is not running", s.name)
		}
		if !s.ready(ctx) {
			return nil, fmt.Errorf("%s is not ready", s.name)
		}
	}
	for _, s := range c.nodes {
		st, err := c.status(ctx, s)
		if err != nil {
			return nil, err
		}
		switch {
		case st.Leader.ID == "":
			return nil, fmt.Errorf("%s knows no leader", s.name)
		case leaderID != "" && st.Leader.ID != leaderID:
			return nil, fmt.Errorf("nodes disagree on the leader: %s and %s", leaderID, st.Leader.ID)
		}
		leaderID = st.Leader.ID
	}
	leader := c.node(leaderID)
	if leader == nil {
		return nil, fmt.Errorf("leader %q is not a node of this cluster", leaderID)
	}
	st, err := c.status(ctx, leader)
	if err != nil {
		return nil, err
	}
	if len(st.Members) != len(c.nodes) {
		return nil, fmt.Errorf("leader sees %d members, want %d", len(st.Members), len(c.nodes))
	}
	for _, m := range st.Members {
		if m.State != string(cluster.StateAlive) || m.Suffrage != "voter" || m.Error != "" || m.Lag > 0 {
			return nil, fmt.Errorf("member %s: state %s, suffrage %s, lag %d %s", m.ID, m.State, m.Suffrage, m.Lag, m.Error)
		}
	}
	return leader, nil
}

// leaderOf returns the leader as the running node s sees it.
func (c *berthCluster) leaderOf(ctx context.Context, s *server) (*server, error) {
	st, err := c.status(ctx, s)
	if err != nil {
		return nil, err
	}
	l := c.node(st.Leader.ID)
	if l == nil {
		return nil, errors.New(s.name + " knows no leader")
	}
	return l, nil
}
