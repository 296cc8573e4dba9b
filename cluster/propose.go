package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/hashicorp/raft"
)

// leaderPoll is how often a write waiting for a leader looks again.
const leaderPoll = 20 * time.Millisecond

// propose is the one way a write enters the cluster. On the leader it
// appends c to the Raft log; on a follower it forwards c to the leader and
// returns the leader's answer. Either way it returns once this node has
// applied the command (so a client that wrote through this node reads its
// write here), with apply's verdict.
//
// While there is no leader (an election), propose waits for one, up to
// ApplyTimeout. It retries only what cannot have been applied: a leader
// that refused the command as not leader, or a leader it could not reach.
// Other failures leave the outcome unknown and wrap oci.ErrUnavailable;
// a client's retry is safe (a write repeats to the same state, a delete to
// "not found"). When ctx ends first, propose returns ctx's error and the
// command may still be applied.
func (n *Node) propose(ctx context.Context, c command) error {
	if n.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := encodeCommand(c)
	if err != nil {
		return err
	}
	if len(b) > maxCommandSize {
		return fmt.Errorf("%s: %w: command of %d bytes is larger than %d", c.Op, ErrBadCommand, len(b), maxCommandSize)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	for {
		res, err := n.proposeOnce(ctx, b)
		if err == nil {
			n.metrics.applyDuration.Observe(time.Since(start).Seconds())
			return res.Rejected
		}
		if !retryable(err) {
			return fmt.Errorf("%s: %w", c.Op, err)
		}
		select {
		case <-ctx.Done():
			if errors.Is(err, oci.ErrUnavailable) {
				return fmt.Errorf("%s: %w", c.Op, err)
			}
			return fmt.Errorf("%s: %w: %w", c.Op, ErrNoLeader, err)
		case <-time.After(leaderPoll):
		}
	}
}

// retryable reports whether a failed attempt surely did not enqueue the
// command.
func retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader) || errors.Is(err, errNotSent)
}

// proposeOnce makes one attempt: locally on the leader, else forwarded.
func (n *Node) proposeOnce(ctx context.Context, b []byte) (Applied, error) {
	if n.closed.Load() {
		return Applied{}, ErrClosed
	}
	if n.raft.State() == raft.Leader {
		return n.LeaderApply(ctx, b)
	}
	_, leader := n.raft.LeaderWithID()
	if leader == "" {
		return Applied{}, ErrNoLeader
	}
	if string(leader) == n.cfg.NodeID {
		return Applied{}, ErrNotLeader // stepping down right now
	}
	n.metrics.forwarded.WithLabelValues("apply").Inc()
	res, err := n.peers.Apply(ctx, string(leader), b)
	if err != nil {
		return Applied{}, err
	}
	// The write is committed; wait until it is visible here too. If this
	// node lags too far to see it in time, the write still happened: a
	// read that would miss it catches up with the leader first.
	if err := n.waitApplied(ctx, res.Index); err != nil {
		n.logger.Warn("forwarded write committed, but not yet applied here", "index", res.Index, "error", err)
	}
	return res, nil
}

// LeaderApply commits the encoded command b on this node, which must be the
// leader, and returns where it was applied and apply's verdict. The
// internal API calls it for followers' forwarded writes.
func (n *Node) LeaderApply(ctx context.Context, b []byte) (Applied, error) {
	if n.closed.Load() {
		return Applied{}, ErrClosed
	}
	if len(b) > maxCommandSize {
		return Applied{}, fmt.Errorf("%w: command of %d bytes is larger than %d", ErrBadCommand, len(b), maxCommandSize)
	}
	if n.raft.State() != raft.Leader {
		return Applied{}, ErrNotLeader
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	start := time.Now()
	future := n.raft.Apply(b, timeout)
	done := make(chan error, 1)
	go func() { done <- future.Error() }()
	select {
	case <-ctx.Done():
		return Applied{}, fmt.Errorf("%w: %w", oci.ErrUnavailable, ctx.Err())
	case err := <-done:
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// Refused before it was appended: a retry on the next leader
			// cannot apply it twice.
			return Applied{}, ErrNotLeader
		case errors.Is(err, raft.ErrRaftShutdown):
			return Applied{}, ErrClosed
		case err != nil:
			// Lost leadership, enqueue timeout: the outcome is unknown.
			return Applied{}, fmt.Errorf("%w: %w", oci.ErrUnavailable, err)
		}
	}
	n.metrics.commitDuration.Observe(time.Since(start).Seconds())
	res := Applied{Index: future.Index()}
	if err, ok := future.Response().(error); ok {
		res.Rejected = err
	}
	return res, nil
}
