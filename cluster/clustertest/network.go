package clustertest

import (
	"context"
	"fmt"

	"github.com/berth-registry/berth/cluster"
	"github.com/berth-registry/berth/oci"
)

// Errors of the in-process PeerClient, as the HTTP one would fail across a
// cut network.
var (
	// ErrUnreachable: the call was not sent, because the link to the node
	// is cut or the node is killed (a dial that fails). It wraps
	// cluster.ErrNoLeader, so that a forwarded write retries it, as it
	// retries a request that never left.
	ErrUnreachable = fmt.Errorf("peer unreachable: %w", cluster.ErrNoLeader)
	// ErrReplyLost: the link was cut, or either node killed, while the call
	// was in flight; the callee may have acted on it. It wraps
	// oci.ErrUnavailable and nothing that makes a write retry it.
	ErrReplyLost = fmt.Errorf("reply lost: %w", oci.ErrUnavailable)
)

// Partition cuts the network into groups: nodes link to the nodes of
// their own group only. Nodes named in no group form one more group
// together. Partition() heals. It panics on an index out of range or named
// twice.
func (c *Cluster) Partition(groups ...[]int) {
	g := make([]int, len(c.ms))
	named := make([]bool, len(c.ms))
	for gi, grp := range groups {
		for _, i := range grp {
			if i < 0 || i >= len(c.ms) || named[i] {
				panic(fmt.Sprintf("clustertest: Partition(%v): node %d out of range or named twice", groups, i))
			}
			named[i] = true
			g[i] = gi + 1
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.group = g
	c.relink()
}

// Isolate cuts node i from every other node.
func (c *Cluster) Isolate(i int) { c.Partition([]int{i}) }

// Heal links every node with every other again.
func (c *Cluster) Heal() { c.Partition() }

// Linked reports whether nodes i and j are both live and can reach each
// other.
func (c *Cluster) Linked(i, j int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.linked(i, j)
}

func (c *Cluster) linked(i, j int) bool {
	return c.ms[i].node != nil && c.ms[j].node != nil && c.group[i] == c.group[j]
}

// relink makes the Raft transports match the live nodes and the groups.
// c.mu must be held.
func (c *Cluster) relink() {
	for i, a := range c.ms {
		if a.trans == nil {
			continue
		}
		for j, b := range c.ms {
			switch {
			case i == j:
			case b.trans != nil && c.group[i] == c.group[j]:
				a.trans.Connect(b.addr, b.trans)
			default:
				a.trans.Disconnect(b.addr)
			}
		}
	}
}

// peerClient is node from's PeerClient: it calls the target node's
// exported methods directly, while the link between them holds.
type peerClient struct {
	c    *Cluster
	from int
}

var _ cluster.PeerClient = peerClient{}

// call runs fn on node to when from can reach it. A cut of the link (or a
// restart of either node) while fn runs loses fn's answer.
func call[T any](p peerClient, to string, fn func(n *cluster.Node) (T, error)) (T, error) {
	var zero T
	j := p.c.index(to)
	p.c.mu.Lock()
	ok := j >= 0 && p.c.linked(p.from, j)
	var target, self *cluster.Node
	if ok {
		target, self = p.c.ms[j].node, p.c.ms[p.from].node
	}
	p.c.mu.Unlock()
	if !ok {
		return zero, fmt.Errorf("%s to %s: %w", p.c.ms[p.from].id, to, ErrUnreachable)
	}
	v, err := fn(target)
	p.c.mu.Lock()
	held := p.c.linked(p.from, j) && p.c.ms[j].node == target && p.c.ms[p.from].node == self
	p.c.mu.Unlock()
	if !held {
		return zero, fmt.Errorf("%s to %s: %w", p.c.ms[p.from].id, to, ErrReplyLost)
	}
	return v, err
}

// index returns the index of node id, or -1.
func (c *Cluster) index(id string) int {
	for i, m := range c.ms {
		if m.id == id {
			return i
		}
	}
	return -1
}

func (p peerClient) Apply(ctx context.Context, to string, cmd []byte) (cluster.Applied, error) {
	return call(p, to, func(n *cluster.Node) (cluster.Applied, error) { return n.LeaderApply(ctx, cmd) })
}

func (p peerClient) ReadIndex(ctx context.Context, to string) (uint64, error) {
	return call(p, to, func(n *cluster.Node) (uint64, error) { return n.LeaderReadIndex(ctx) })
}

func (p peerClient) Status(ctx context.Context, to string, hash bool) (cluster.NodeStatus, error) {
	return call(p, to, func(n *cluster.Node) (cluster.NodeStatus, error) { return n.LocalStatus(ctx, hash) })
}

func (p peerClient) RemoveServer(ctx context.Context, to, id string) error {
	_, err := call(p, to, func(n *cluster.Node) (struct{}, error) { return struct{}{}, n.LeaderRemoveServer(ctx, id) })
	return err
}
