package cluster

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// NodeStatus is one node's view of itself.
type NodeStatus struct {
	ID                string `json:"id"`
	Version           string `json:"version"`
	RaftState         string `json:"raft_state"`
	Term              uint64 `json:"term"`
	LeaderID          string `json:"leader_id"`
	LastIndex         uint64 `json:"last_index"`
	CommitIndex       uint64 `json:"commit_index"`
	AppliedIndex      uint64 `json:"applied_index"`
	BlobRepairBacklog int    `json:"blob_repair_backlog"`
	// StateHash is the hash of the applied state, when asked for.
	StateHash string `json:"state_hash,omitempty"`
}

// ClusterStatus is the cluster as one node sees it: GET /api/v1/cluster and
// `berth cluster status`.
type ClusterStatus struct {
	NodeID  string         `json:"node_id"`
	Leader  LeaderStatus   `json:"leader"`
	Raft    RaftStatus     `json:"raft"`
	Members []MemberStatus `json:"members"`
}

// LeaderStatus names the leader this node follows ("" while there is none).
type LeaderStatus struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
}

// RaftStatus is this node's Raft state.
type RaftStatus struct {
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
}

// MemberStatus is one member: what gossip and the Raft configuration say
// of it, and what it reports of itself (Error says why it could not be
// asked).
type MemberStatus struct {
	ID                string `json:"id"`
	State             string `json:"state"`    // gossip: alive, suspect, dead, left, unknown
	Suffrage          string `json:"suffrage"` // raft: voter, nonvoter, none
	RaftAddr          string `json:"raft_addr"`
	HTTPAddr          string `json:"http_addr"`
	GossipAddr        string `json:"gossip_addr"`
	Version           string `json:"version"`
	RaftState         string `json:"raft_state,omitempty"`
	AppliedIndex      uint64 `json:"applied_index"`
	Lag               uint64 `json:"lag"`
	BlobRepairBacklog int    `json:"blob_repair_backlog"`
	StateHash         string `json:"state_hash,omitempty"`
	Error             string `json:"error,omitempty"`
}

// LocalStatus returns this node's view of itself; with hash it also hashes
// the whole applied state (which reads all of it).
func (n *Node) LocalStatus(ctx context.Context, hash bool) (NodeStatus, error) {
	_, leader := n.raft.LeaderWithID()
	st := NodeStatus{
		ID:           n.cfg.NodeID,
		Version:      n.cfg.Version,
		RaftState:    strings.ToLower(n.raft.State().String()),
		Term:         n.raft.CurrentTerm(),
		LeaderID:     string(leader),
		LastIndex:    n.raft.LastIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.fsm.applied.Load(),
	}
	if n.repair != nil {
		st.BlobRepairBacklog = n.repair.backlog()
	}
	if hash {
		h, err := n.StateHash(ctx)
		if err != nil {
			return st, err
		}
		st.StateHash = h
		// The hash and the index must describe the same state: read the
		// index again and hash again if an apply slipped in between.
		for i := 0; i < 3 && n.fsm.applied.Load() != st.AppliedIndex; i++ {
			st.AppliedIndex = n.fsm.applied.Load()
			if st.StateHash, err = n.StateHash(ctx); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

// Status asks every member for its own view and puts the answers together
// with this node's gossip and Raft views; with hash every member hashes its
// state. Members that do not answer within a couple of seconds are listed
// with the error.
func (n *Node) Status(ctx context.Context, hash bool) (ClusterStatus, error) {
	self, err := n.LocalStatus(ctx, false)
	if err != nil {
		return ClusterStatus{}, err
	}
	cs := ClusterStatus{
		NodeID: n.cfg.NodeID,
		Leader: LeaderStatus{ID: self.LeaderID},
		Raft: RaftStatus{
			State: self.RaftState, Term: self.Term, LastIndex: self.LastIndex,
			CommitIndex: self.CommitIndex, AppliedIndex: self.AppliedIndex,
		},
	}
	byID := map[string]*MemberStatus{}
	get := func(id string) *MemberStatus {
		m := byID[id]
		if m == nil {
			m = &MemberStatus{ID: id, State: "unknown", Suffrage: "none"}
			byID[id] = m
		}
		return m
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			m := get(string(s.ID))
			m.RaftAddr = string(s.Address)
			if s.Suffrage == raft.Voter {
				m.Suffrage = "voter"
			} else {
				m.Suffrage = "nonvoter"
			}
		}
	}
	if n.gossip != nil {
		for _, gm := range n.gossip.snapshot() {
			m := get(gm.ID)
			m.State = string(gm.State)
			m.HTTPAddr, m.GossipAddr, m.Version = gm.HTTPAddr, gm.GossipAddr, gm.Version
			if m.RaftAddr == "" {
				m.RaftAddr = gm.RaftAddr
			}
		}
	}
	me := get(n.cfg.NodeID)
	me.State = string(StateAlive)
	me.Version = n.cfg.Version
	me.HTTPAddr = n.cfg.HTTPAdvertise
	if l, ok := byID[cs.Leader.ID]; ok {
		cs.Leader.HTTPAddr = l.HTTPAddr
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	for id, m := range byID {
		wg.Go(func() {
			var st NodeStatus
			var err error
			if id == n.cfg.NodeID {
				st, err = n.LocalStatus(ctx, hash)
			} else if m.State == string(StateLeft) {
				return
			} else {
				qctx, cancel := context.WithTimeout(ctx, peerStatusWait)
				st, err = n.peers.Status(qctx, id, hash)
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				m.Error = err.Error()
				return
			}
			m.RaftState, m.AppliedIndex, m.BlobRepairBacklog, m.StateHash = st.RaftState, st.AppliedIndex, st.BlobRepairBacklog, st.StateHash
			if st.Version != "" {
				m.Version = st.Version
			}
		})
	}
	wg.Wait()
	var newest uint64
	for _, m := range byID {
		if m.Error == "" {
			newest = max(newest, m.AppliedIndex)
		}
	}
	for _, m := range byID {
		if m.Error == "" {
			m.Lag = newest - m.AppliedIndex
		}
		cs.Members = append(cs.Members, *m)
	}
	slices.SortFunc(cs.Members, func(a, b MemberStatus) int { return strings.Compare(a.ID, b.ID) })
	return cs, nil
}
