package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/hashicorp/raft"
)

// raftAppliedPoll is how often a catch-up looks at Raft's applied index,
// which also moves on entries the state machine never sees (no-ops,
// barriers) and so wakes no waiter.
const raftAppliedPoll = 2 * time.Millisecond

// catchUp makes this node's state at least as new as every write any node
// has acknowledged before the call: it gets a read index from the leader
// (the leader confirms it still leads, then names its last log index) and
// waits until this node has applied that far. A read that would answer "not
// found" calls it first, so a push acknowledged anywhere is never a 404
// here. Concurrent callers share one request to the leader.
//
// When no leader can be reached within ReadIndexTimeout it fails (wrapping
// oci.ErrUnavailable) and the caller answers from its own state: pulls keep
// working without quorum.
func (n *Node) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ReadIndexTimeout)
	defer cancel()
	var idx uint64
	var err error
	if n.raft.State() == raft.Leader {
		idx, err = n.LeaderReadIndex(ctx)
	} else {
		idx, err = n.readIndex.get(ctx, n)
	}
	if err != nil {
		return err
	}
	return n.waitRaftApplied(ctx, idx)
}

// LeaderReadIndex confirms that this node is still the leader (a round of
// heartbeats with a quorum) and returns an index at or above every write it
// or an earlier leader acknowledged. Once it has applied the entries of
// earlier terms (markReadSafe), that is its own applied index: a write is
// acknowledged only after the leader applied it (a forwarded one too,
// before the leader answers the follower), so nothing acknowledged is
// beyond it, and a not-found read on the leader waits for nothing. Before
// that it is the last log index.
func (n *Node) LeaderReadIndex(ctx context.Context) (uint64, error) {
	if n.closed.Load() {
		return 0, ErrClosed
	}
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	f := n.raft.VerifyLeader()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case <-ctx.Done():
		return 0, fmt.Errorf("verify leadership: %w: %w", oci.ErrUnavailable, ctx.Err())
	case err := <-done:
		if err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return 0, ErrNotLeader
			}
			return 0, fmt.Errorf("verify leadership: %w: %w", oci.ErrUnavailable, err)
		}
	}
	if n.readSafeTerm.Load() == n.raft.CurrentTerm() {
		return n.fsm.applied.Load(), nil
	}
	return n.raft.LastIndex(), nil
}

// waitRaftApplied waits until Raft has applied idx and the state machine
// has applied the last entry at or below idx that it is given.
func (n *Node) waitRaftApplied(ctx context.Context, idx uint64) error {
	t := time.NewTicker(raftAppliedPoll)
	defer t.Stop()
	for n.raft.AppliedIndex() < idx {
		select {
		case <-ctx.Done():
			return fmt.Errorf("catch up to index %d (at %d): %w: %w", idx, n.raft.AppliedIndex(), oci.ErrUnavailable, ctx.Err())
		case <-t.C:
		}
	}
	return n.waitApplied(ctx, n.fsmIndexAtOrBelow(idx))
}

// waitApplied waits until the state machine has applied idx.
func (n *Node) waitApplied(ctx context.Context, idx uint64) error {
	for {
		ch := n.fsm.appliedCh()
		if n.fsm.applied.Load() >= idx {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w: %w", idx, n.fsm.applied.Load(), oci.ErrUnavailable, ctx.Err())
		case <-ch:
		case <-n.done:
			return ErrClosed
		}
	}
}

// fsmIndexAtOrBelow returns the index of the last log entry at or below
// idx that the state machine sees (a command or a configuration change;
// raft keeps no-op and barrier entries from it). Entries missing from the
// log were compacted into a snapshot the state already holds.
func (n *Node) fsmIndexAtOrBelow(idx uint64) uint64 {
	for ; idx > 0; idx-- {
		var l raft.Log
		if err := n.logStore.GetLog(idx, &l); err != nil {
			return 0
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return idx
		}
	}
	return 0
}

// readIndexer shares read-index requests to the leader: a caller joins the
// next request that starts after it arrived (a request already in flight
// may not cover its writes), so any number of concurrent callers cost at
// most two round trips.
type readIndexer struct {
	mu      sync.Mutex
	running bool
	next    *readRound // the round that the next caller joins
}

type readRound struct {
	done chan struct{}
	idx  uint64
	err  error
}

func (r *readIndexer) get(ctx context.Context, n *Node) (uint64, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &readRound{done: make(chan struct{})}
	}
	round := r.next
	if !r.running {
		r.running = true
		go r.run(n)
	}
	r.mu.Unlock()
	select {
	case <-round.done:
		return round.idx, round.err
	case <-ctx.Done():
		return 0, fmt.Errorf("read index: %w: %w", oci.ErrUnavailable, ctx.Err())
	}
}

// run serves rounds until no caller waits.
func (r *readIndexer) run(n *Node) {
	for {
		r.mu.Lock()
		round := r.next
		r.next = nil
		if round == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		round.idx, round.err = n.askReadIndex()
		close(round.done)
	}
}

// askReadIndex asks the current leader for its read index.
func (n *Node) askReadIndex() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ReadIndexTimeout)
	defer cancel()
	if n.raft.State() == raft.Leader {
		return n.LeaderReadIndex(ctx)
	}
	_, leader := n.raft.LeaderWithID()
	if leader == "" {
		return 0, ErrNoLeader
	}
	n.metrics.forwarded.WithLabelValues("readindex").Inc()
	return n.peers.ReadIndex(ctx, string(leader))
}
