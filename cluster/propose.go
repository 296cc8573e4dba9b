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
// ApplyTimeout, and it carries a write over a change of leader: an attempt
// that surely did not apply (refused as not leader, leader not reachable)
// is simply made again, and so is one whose outcome is unknown (the leader
// died, was cut off or lost leadership with the write in flight). Repeating
// a command is safe: every command but the deletes sets state to a value it
// carries, so applying it twice ends where applying it once does; a delete
// that finds nothing after an attempt of unknown outcome has done its job
// (whichever attempt it was), so it succeeds. When ctx ends first, propose
// returns ctx's error (wrapping oci.ErrUnavailable when no leader answered)
// and the command may still be applied.
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
	uncertain := false // an earlier attempt may have applied c
	for {
		res, err := n.proposeOnce(ctx, b)
		if err == nil {
			n.metrics.applyDuration.Observe(time.Since(start).Seconds())
			if uncertain && isDelete(c.Op) && errors.Is(res.Rejected, oci.ErrNotFound) {
				return nil
			}
			return res.Rejected
		}
		switch {
		case errors.Is(err, ErrClosed) || ctx.Err() != nil:
			return fmt.Errorf("%s: %w", c.Op, err)
		case retryable(err):
		case maybeApplied(err):
			uncertain = true
		default:
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

// isDelete reports whether op removes something, and so answers "not
// found" when it is repeated.
func isDelete(op string) bool {
	switch op {
	case opDeleteManifest, opDeleteTag, opUnlinkBlob, opDeleteEndpoint, opDeleteRule,
		opDeleteProject, opDeleteMember, opDeleteUser, opDeleteRobot:
		return true
	}
	return false
}

// retryable reports whether a failed attempt surely did not enqueue the
// command.
func retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader) || errors.Is(err, errNotSent)
}

// maybeApplied reports whether a failed attempt may have been applied: the
// leader, or the connection to it, failed with the command in flight.
func maybeApplied(err error) bool {
	if errors.Is(err, oci.ErrUnavailable) || errors.Is(err, errLeaderChanged) {
		return true
	}
	var re *remoteError
	// A transport failure (EOF, reset, timeout) of a forwarded write; a
	// failure the leader reported is a remoteError.
	return !errors.As(err, &re)
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
	res, err := n.forward(ctx, string(leader), b)
	if err != nil {
		return Applied{}, err
	}
	// The write is committed; it is acknowledged once it is visible here
	// too. A node that lags too far to apply it in time (Raft backs off,
	// for seconds, its retries to a follower it could not reach) must not
	// acknowledge it: a read here would still find the value it replaced,
	// and only a read that finds nothing catches up. The write happened;
	// the error says so and, like every unknown outcome, wraps
	// oci.ErrUnavailable (it is not retried here).
	if err := n.waitApplied(ctx, res.Index); err != nil {
		return Applied{}, fmt.Errorf("committed at index %d but not yet applied here: %w", res.Index, err)
	}
	return res, nil
}

// leaderWatch is how often a forwarded write checks that its leader still
// leads.
const leaderWatch = 50 * time.Millisecond

// forward sends b to leader and waits for its answer, but only while this
// node still follows that leader: a leader that is frozen or cut off keeps
// the connection open and never answers, and a new leader is elected in
// about a second. The outcome is then unknown, so the write is not retried
// here; the client's retry is safe (see propose).
func (n *Node) forward(ctx context.Context, leader string, b []byte) (Applied, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(leaderWatch)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, now := n.raft.LeaderWithID(); string(now) != leader {
					cancel(errLeaderChanged)
					return
				}
			}
		}
	}()
	res, err := n.peers.Apply(ctx, leader, b)
	if err != nil && errors.Is(context.Cause(ctx), errLeaderChanged) {
		return Applied{}, fmt.Errorf("forwarded to %s: %w: %w", leader, errLeaderChanged, oci.ErrUnavailable)
	}
	return res, err
}

// errLeaderChanged: the leader a write was forwarded to lost leadership
// before it answered; the write may or may not have been applied.
var errLeaderChanged = errors.New("the leader changed while the write was in flight; its outcome is unknown")

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
