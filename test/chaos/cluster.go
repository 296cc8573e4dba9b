package chaos

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// readyTimeout bounds the wait for a node to be ready after it started or
// a fault was healed: an election, a catch-up from the leader's log or a
// snapshot, on a loaded two-core machine.
const readyTimeout = 2 * time.Minute

// ClusterSpec describes one berth cluster of a run.
type ClusterSpec struct {
	// Name names the cluster within the run; its nodes are
	// <Name>-node1 … <Name>-nodeN.
	Name string
	// Nodes is the number of nodes, at least 1.
	Nodes int
	// Args are more `berth serve` flags, given to every node.
	Args []string
}

// Cluster is a set of nodes that form one berth cluster: the first one
// bootstrapped it, the others joined it.
type Cluster struct {
	Name   string
	Nodes  []*Node
	Secret string // the cluster secret of every node

	env *Env
}

// StartCluster starts the nodes of spec and waits until every one is ready
// and sees all of them as live voters. The first node starts alone and
// bootstraps; each other one joins the nodes started before it (restarted
// on its volume, a node rejoins by itself).
func (e *Env) StartCluster(ctx context.Context, spec ClusterSpec) (*Cluster, error) {
	if spec.Nodes < 1 {
		return nil, fmt.Errorf("cluster %s: %d nodes", spec.Name, spec.Nodes)
	}
	c := &Cluster{Name: spec.Name, Secret: "chaos-secret-" + randomHex(16), env: e}
	start := time.Now()
	for i := range spec.Nodes {
		short := fmt.Sprintf("%s-node%d", spec.Name, i+1)
		n, err := e.startNode(ctx, nodeSpec{
			name: short,
			args: c.serveArgs(e.Prefix+"-"+short, spec.Args),
			env:  []string{"BERTH_ADMIN_PASSWORD=" + e.Password, "BERTH_CLUSTER_SECRET=" + c.Secret},
		})
		if err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, n)
		if i == 0 {
			// The others join it: it must serve first.
			if err := n.WaitReady(ctx, readyTimeout); err != nil {
				return c, err
			}
		}
	}
	for _, n := range c.Nodes {
		if err := n.WaitReady(ctx, readyTimeout); err != nil {
			return c, err
		}
	}
	if err := c.WaitMembers(ctx, readyTimeout); err != nil {
		return c, err
	}
	// berth refuses pushes into a project that does not exist.
	if err := createProjects(ctx, c.Nodes[0], e.Password, workloadProjects...); err != nil {
		return c, err
	}
	e.logf("cluster %s: %d nodes ready in %s: %s", c.Name, len(c.Nodes), time.Since(start).Round(time.Millisecond), c.describe())
	return c, nil
}

// serveArgs are the command line of a new node of c named name: it
// advertises its container name, and joins the nodes started before it.
func (c *Cluster) serveArgs(name string, extra []string) []string {
	args := []string{"serve", "--node-id", name, "--log-format", "json",
		"--advertise", name,
		"--raft-addr", ":" + strconv.Itoa(raftPort),
		"--gossip-addr", ":" + strconv.Itoa(gossipPort)}
	var join []string
	for _, n := range c.Nodes {
		join = append(join, n.Name+":"+strconv.Itoa(gossipPort))
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	return append(args, extra...)
}

func (c *Cluster) describe() string {
	var s []string
	for _, n := range c.Nodes {
		s = append(s, n.Short+"="+n.IP.String())
	}
	return strings.Join(s, " ")
}

// Node returns the node whose node id is id, or nil.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.Name == id {
			return n
		}
	}
	return nil
}

// Leader asks the nodes of among, in order, for the current Raft leader
// and returns the first answer that names a node of the cluster.
func (c *Cluster) Leader(ctx context.Context, among []*Node) (*Node, error) {
	var errs []error
	for _, n := range among {
		st, err := n.Status(ctx, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if l := c.Node(st.Leader.ID); l != nil {
			return l, nil
		}
		errs = append(errs, fmt.Errorf("%s knows no leader (%q)", n.Short, st.Leader.ID))
	}
	return nil, fmt.Errorf("no leader: %w", errors.Join(errs...))
}

// WaitMembers polls until every node lists every node as a live voter and
// names the same leader.
func (c *Cluster) WaitMembers(ctx context.Context, timeout time.Duration) error {
	return c.poll(ctx, timeout, func(ctx context.Context) error {
		_, err := c.agree(ctx, false)
		return err
	})
}

// Convergence is the state every node of a converged cluster reports.
type Convergence struct {
	Leader       string
	AppliedIndex uint64
	StateHash    string
}

// WaitConverged polls until every node reports the same leader, lists every
// node as a live voter without error, and every member has the same applied
// index and state hash (GET /api/v1/cluster?hash=true), that is the same
// applied state. On timeout the error says what still differed.
func (c *Cluster) WaitConverged(ctx context.Context, timeout time.Duration) (Convergence, error) {
	var conv Convergence
	err := c.poll(ctx, timeout, func(ctx context.Context) error {
		var err error
		conv, err = c.agree(ctx, true)
		return err
	})
	return conv, err
}

// poll calls check until it returns nil or timeout passes; the error is
// then the last one check returned.
func (c *Cluster) poll(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s after %s: %w", c.Name, timeout, err)
		case <-tick.C:
		}
	}
}

// agree asks every node for its view and returns nil only when all views
// agree: one leader, every node a live voter without error, and (with hash)
// one applied index and state hash.
func (c *Cluster) agree(ctx context.Context, hash bool) (Convergence, error) {
	var conv Convergence
	for i, n := range c.Nodes {
		st, err := n.Status(ctx, hash)
		if err != nil {
			return conv, err
		}
		leader := c.Node(st.Leader.ID)
		switch {
		case leader == nil:
			return conv, fmt.Errorf("%s knows no leader (%q)", n.Short, st.Leader.ID)
		case i == 0:
			conv.Leader = leader.Short
		case leader.Short != conv.Leader:
			return conv, fmt.Errorf("%s says the leader is %s, %s says %s", c.Nodes[0].Short, conv.Leader, n.Short, leader.Short)
		}
		if err := c.checkMembers(n, st, hash, &conv); err != nil {
			return conv, err
		}
	}
	return conv, nil
}

// checkMembers checks one node's member list; with hash, every member's
// applied index and state hash must equal those in conv (the first seen).
func (c *Cluster) checkMembers(n *Node, st *Status, hash bool, conv *Convergence) error {
	if len(st.Members) != len(c.Nodes) {
		return fmt.Errorf("%s lists %d members, want %d", n.Short, len(st.Members), len(c.Nodes))
	}
	members := slices.Clone(st.Members)
	slices.SortFunc(members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	for _, m := range members {
		name := m.ID
		if mn := c.Node(m.ID); mn != nil {
			name = mn.Short
		}
		switch {
		case c.Node(m.ID) == nil:
			return fmt.Errorf("%s lists a member %q that is none of the cluster's nodes", n.Short, m.ID)
		case m.State != "alive" || m.Suffrage != "voter":
			return fmt.Errorf("%s sees %s %s, %s", n.Short, name, m.State, m.Suffrage)
		case m.Error != "":
			return fmt.Errorf("%s cannot reach %s: %s", n.Short, name, m.Error)
		case !hash:
			continue
		case m.StateHash == "":
			return fmt.Errorf("%s reports no state hash for %s", n.Short, name)
		case conv.StateHash == "":
			conv.AppliedIndex, conv.StateHash = m.AppliedIndex, m.StateHash
		case m.AppliedIndex != conv.AppliedIndex || m.StateHash != conv.StateHash:
			return fmt.Errorf("%s sees %s at applied index %d hash %.12s, another member at %d hash %.12s",
				n.Short, name, m.AppliedIndex, m.StateHash, conv.AppliedIndex, conv.StateHash)
		}
	}
	return nil
}

// workloadProjects are the projects the chaos workloads push into.
var workloadProjects = []string{"chaos", "chain", "pair"}

// createProjects creates projects through n's management API as admin;
// one that exists already is fine.
func createProjects(ctx context.Context, n *Node, password string, projects ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, p := range projects {
		body, _ := json.Marshal(map[string]any{"name": p, "public": true})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL()+"/api/v1/projects", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.SetBasicAuth("admin", password)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("create project %s: %w", p, err)
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
			return fmt.Errorf("create project %s: %s: %s", p, resp.Status, msg)
		}
	}
	return nil
}
