package clustertest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
)

// Leader waits until exactly one live node of among (every node when
// among is empty) leads and every live node of among follows it, and
// returns its index. It fails the test after the cluster's wait (see
// WithWait), with every node's state.
func (c *Cluster) Leader(t testing.TB, among ...int) int {
	t.Helper()
	if len(among) == 0 {
		among = c.Others()
	}
	leader := -1
	c.poll(t, c.wait, fmt.Sprintf("a leader that nodes %v follow", among), false, func(sts []status) bool {
		leader = agreedLeader(sts, among)
		return leader >= 0
	})
	return leader
}

// agreedLeader returns the node of among that leads and that every live
// node of among follows, or -1.
func agreedLeader(sts []status, among []int) int {
	leader := -1
	for _, i := range among {
		if sts[i].live && sts[i].RaftState == "leader" {
			if leader >= 0 {
				return -1 // two leaders: the old one has not noticed yet
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1
	}
	for _, i := range among {
		if sts[i].live && sts[i].LeaderID != sts[leader].ID {
			return -1
		}
	}
	return leader
}

// WaitReady waits until the given nodes (every live node when none is
// given) are ready: cluster.Node.WaitReady, within the cluster's wait.
func (c *Cluster) WaitReady(t testing.TB, nodes ...int) {
	t.Helper()
	if len(nodes) == 0 {
		nodes = c.Others()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.wait)
	defer cancel()
	for _, i := range nodes {
		n := c.Node(i)
		if n == nil {
			continue
		}
		if err := n.WaitReady(ctx); err != nil {
			t.Fatalf("node %s not ready: %v\n%s", c.ID(i), err, table(c.statuses(false)))
		}
	}
}

// WaitConverged waits until every live node agrees on the leader and has
// the same last, commit and applied index and the same StateHash, and
// returns the leader's status. It fails the test after timeout with a
// table of every node's indexes and hash.
func (c *Cluster) WaitConverged(t testing.TB, timeout time.Duration) cluster.NodeStatus {
	t.Helper()
	var st cluster.NodeStatus
	c.poll(t, timeout, "every live node to converge", true, func(sts []status) bool {
		leader := agreedLeader(sts, c.Others())
		if leader < 0 {
			return false
		}
		want := sts[leader].NodeStatus
		for _, s := range sts {
			if !s.live {
				continue
			}
			if s.err != nil || s.LastIndex != want.LastIndex || s.CommitIndex != want.CommitIndex ||
				s.AppliedIndex != want.AppliedIndex || s.StateHash != want.StateHash {
				return false
			}
		}
		st = want
		return true
	})
	return st
}

// poll calls ok with every node's status until it returns true, and fails
// the test after d.
func (c *Cluster) poll(t testing.TB, d time.Duration, what string, hash bool, ok func([]status) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		sts := c.statuses(hash)
		if ok(sts) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s:\n%s", d, what, table(sts))
		}
		time.Sleep(pollEvery)
	}
}

// status is one node's state as the harness sees it.
type status struct {
	cluster.NodeStatus
	live  bool
	group int
	err   error
}

// statuses asks every live node for its LocalStatus.
func (c *Cluster) statuses(hash bool) []status {
	c.mu.Lock()
	sts := make([]status, len(c.ms))
	nodes := make([]*cluster.Node, len(c.ms))
	for i, m := range c.ms {
		nodes[i] = m.node
		sts[i] = status{NodeStatus: cluster.NodeStatus{ID: m.id}, live: m.node != nil, group: c.group[i]}
	}
	c.mu.Unlock()
	for i, n := range nodes {
		if n != nil {
			st, err := n.LocalStatus(context.Background(), hash)
			st.ID = sts[i].ID
			sts[i].NodeStatus, sts[i].err = st, err
		}
	}
	return sts
}

// table formats statuses, one node a line.
func table(sts []status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-4s %-6s %-5s %-9s %5s %-6s %6s %6s %7s  %s\n", "node", "live", "group", "raft", "term", "leader", "last", "commit", "applied", "state hash")
	hashes := map[string]int{}
	for _, s := range sts {
		if s.StateHash != "" {
			hashes[s.StateHash]++
		}
	}
	for _, s := range sts {
		live := "yes"
		if !s.live {
			live = "killed"
		}
		h := s.StateHash
		if len(h) > 12 {
			h = h[:12]
		}
		if len(hashes) > 1 && h != "" {
			h += fmt.Sprintf(" (%d of %d)", hashes[s.StateHash], len(sts))
		}
		if s.err != nil {
			h += " error: " + s.err.Error()
		}
		fmt.Fprintf(&b, "%-4s %-6s %-5d %-9s %5d %-6s %6d %6d %7d  %s\n", s.ID, live, s.group, s.RaftState, s.Term, s.LeaderID, s.LastIndex, s.CommitIndex, s.AppliedIndex, h)
	}
	return strings.TrimRight(b.String(), "\n")
}
