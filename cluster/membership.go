package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Membership timing.
const (
	// reconcileEvery is how often the leader compares gossip with the Raft
	// configuration even when gossip reports no change.
	reconcileEvery = time.Second
	// promoteLag is how far (in log entries) a non-voter may be behind the
	// leader's commit index to be promoted: a voter that still has a
	// snapshot to install would hold up every write.
	promoteLag = 64
	// configChangeTimeout bounds one Raft configuration change.
	configChangeTimeout = 10 * time.Second
)

// runMembership keeps the Raft configuration in step with gossip while
// this node leads, and reconnects lost members on every node, until ctx
// ends.
func (n *Node) runMembership(ctx context.Context) {
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	rejoin := time.NewTicker(rejoinEvery)
	defer rejoin.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.gossip.changed:
		case <-n.leaderCh:
		case <-tick.C:
		case <-rejoin.C:
			n.gossip.rejoin(n.configuredIDs())
			continue
		}
		if n.raft.State() == raft.Leader {
			if err := n.reconcile(ctx); err != nil && ctx.Err() == nil {
				n.logger.Warn("reconcile membership", "error", err)
			}
		} else {
			n.missingSince = nil
		}
	}
}

// configuredIDs returns the ids of the servers in the Raft configuration.
func (n *Node) configuredIDs() []string {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var ids []string
	for _, s := range f.Configuration().Servers {
		ids = append(ids, string(s.ID))
	}
	return ids
}

// reconcile makes one pass of the leader's membership rules:
//   - an alive member that is not in the configuration joins it as a
//     non-voter, and one whose address changed is updated;
//   - a non-voter that has caught up is promoted while there are fewer than
//     MaxVoters voters;
//   - a member that left, or has been dead for DeadPeerTimeout, is removed,
//     but only when the voters that remain alive still form a quorum of the
//     configuration without it; a non-voter then takes its place.
//
// A member that comes back after removal is alive and not configured, so
// the first rule takes it back.
func (n *Node) reconcile(ctx context.Context) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	servers := f.Configuration().Servers
	members := map[string]Member{}
	for _, m := range n.gossip.snapshot() {
		members[m.ID] = m
	}
	now := time.Now()
	if n.missingSince == nil {
		n.missingSince = map[string]time.Time{}
	}
	configured := map[string]raft.Server{}
	voters := 0
	for _, s := range servers {
		configured[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	var errs []error

	// Removals first, so that a promotion can fill the place.
	for _, s := range servers {
		id := string(s.ID)
		if id == n.cfg.NodeID {
			continue
		}
		m, seen := members[id]
		var gone time.Time
		switch {
		case seen && (m.State == StateAlive || m.State == StateSuspect):
			delete(n.missingSince, id)
			continue
		case seen && m.State == StateLeft:
			gone = time.Time{} // left: no need to wait
		case seen && m.State == StateDead:
			gone = m.Since
		default:
			// In the configuration, never seen by gossip since this node
			// became leader: count from when it was first missed.
			if _, ok := n.missingSince[id]; !ok {
				n.missingSince[id] = now
			}
			gone = n.missingSince[id]
		}
		if !(seen && m.State == StateLeft) && now.Sub(gone) < n.cfg.DeadPeerTimeout {
			continue
		}
		if err := n.safeToRemove(servers, members, id); err != nil {
			n.logger.Debug("keep dead member", "member", id, "reason", err)
			continue
		}
		n.logger.Info("removing member from the raft configuration", "member", id, "state", m.State, "gone_for", now.Sub(gone).Round(time.Second).String())
		if err := n.raft.RemoveServer(s.ID, 0, configChangeTimeout).Error(); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", id, err))
			continue
		}
		if s.Suffrage == raft.Voter {
			voters--
		}
		delete(configured, id)
		delete(n.missingSince, id)
		if !seen || m.State != StateAlive {
			n.gossip.forget(id)
		}
	}

	// Additions, address changes and promotions.
	for _, m := range members {
		if m.ID == n.cfg.NodeID || m.State != StateAlive || m.RaftAddr == "" {
			continue
		}
		s, ok := configured[m.ID]
		addr := raft.ServerAddress(m.RaftAddr)
		switch {
		case !ok:
			n.logger.Info("adding member to the raft configuration as a non-voter", "member", m.ID, "raft_addr", m.RaftAddr)
			if err := n.raft.AddNonvoter(raft.ServerID(m.ID), addr, 0, configChangeTimeout).Error(); err != nil {
				errs = append(errs, fmt.Errorf("add %s: %w", m.ID, err))
			}
		case s.Address != addr:
			n.logger.Info("member moved; updating its raft address", "member", m.ID, "from", s.Address, "to", m.RaftAddr)
			var err error
			if s.Suffrage == raft.Voter {
				err = n.raft.AddVoter(s.ID, addr, 0, configChangeTimeout).Error()
			} else {
				err = n.raft.AddNonvoter(s.ID, addr, 0, configChangeTimeout).Error()
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("update %s: %w", m.ID, err))
			}
		case s.Suffrage == raft.Nonvoter && voters < n.cfg.MaxVoters:
			if !n.caughtUp(ctx, m.ID) {
				continue
			}
			n.logger.Info("promoting member to voter", "member", m.ID)
			if err := n.raft.AddVoter(s.ID, s.Address, 0, configChangeTimeout).Error(); err != nil {
				errs = append(errs, fmt.Errorf("promote %s: %w", m.ID, err))
				continue
			}
			voters++
		}
	}
	return errors.Join(errs...)
}

// caughtUp reports whether member id has applied the log to within
// promoteLag entries of this leader's commit index.
func (n *Node) caughtUp(ctx context.Context, id string) bool {
	ctx, cancel := context.WithTimeout(ctx, peerStatusWait)
	defer cancel()
	st, err := n.peers.Status(ctx, id, false)
	if err != nil {
		return false
	}
	commit := n.raft.CommitIndex()
	return st.AppliedIndex+promoteLag >= commit
}

// safeToRemove reports why removing server id from servers would leave the
// cluster without a quorum of alive voters, or nil when it is safe.
func (n *Node) safeToRemove(servers []raft.Server, members map[string]Member, id string) error {
	voters, alive := 0, 0
	for _, s := range servers {
		if s.Suffrage != raft.Voter || string(s.ID) == id {
			continue
		}
		voters++
		if string(s.ID) == n.cfg.NodeID {
			alive++
			continue
		}
		if m, ok := members[string(s.ID)]; ok && (m.State == StateAlive || m.State == StateSuspect) {
			alive++
		}
	}
	if voters == 0 {
		return fmt.Errorf("%w: %s is the last voter", ErrUnsafe, id)
	}
	if alive < voters/2+1 {
		return fmt.Errorf("%w: without %s, %d of %d voters are alive", ErrUnsafe, id, alive, voters)
	}
	return nil
}

// LeaderRemoveServer removes server id from the Raft configuration, on
// this node, which must lead, when that leaves a quorum of alive voters.
// The internal API calls it for a node that leaves.
func (n *Node) LeaderRemoveServer(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	servers := f.Configuration().Servers
	found := false
	for _, s := range servers {
		found = found || string(s.ID) == id
	}
	if !found {
		return nil
	}
	members := map[string]Member{}
	if n.gossip != nil {
		for _, m := range n.gossip.snapshot() {
			members[m.ID] = m
		}
	} else {
		// Without gossip every configured server counts as alive.
		for _, s := range servers {
			members[string(s.ID)] = Member{NodeInfo: NodeInfo{ID: string(s.ID)}, State: StateAlive}
		}
	}
	// The leaving node is alive until it is gone; what matters is the rest.
	if err := n.safeToRemove(servers, members, id); err != nil {
		return err
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, configChangeTimeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return ErrNotLeader
		}
		return fmt.Errorf("remove %s: %w", id, err)
	}
	n.logger.Info("removed member from the raft configuration", "member", id)
	return nil
}

// Leave takes this node out of the cluster for good: it checks that the
// voters left would still form a quorum, hands leadership over if it leads,
// tells the others by gossip that it leaves (so the leader does not add it
// back), and has the leader remove it from the Raft configuration. The node
// should be closed afterwards.
func (n *Node) Leave(ctx context.Context) error {
	if n.closed.Load() {
		return ErrClosed
	}
	id := n.cfg.NodeID
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("leave: read configuration: %w", err)
	}
	servers := f.Configuration().Servers
	if len(servers) < 2 {
		return fmt.Errorf("leave: %w: this is the only node of the cluster", ErrUnsafe)
	}
	members := map[string]Member{}
	if n.gossip != nil {
		for _, m := range n.gossip.snapshot() {
			members[m.ID] = m
		}
	}
	if err := n.safeToRemove(servers, members, id); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if n.raft.State() == raft.Leader {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("leave: hand over leadership: %w", err)
		}
	}
	if n.gossip != nil {
		if err := n.gossip.leave(5 * time.Second); err != nil {
			n.logger.Warn("gossip leave", "error", err)
		}
	}
	for {
		_, leader := n.raft.LeaderWithID()
		var err error
		switch {
		case leader == "":
			err = ErrNoLeader
		case string(leader) == id:
			err = n.LeaderRemoveServer(ctx, id)
		default:
			err = n.peers.RemoveServer(ctx, string(leader), id)
		}
		if err == nil {
			break
		}
		if !retryable(err) {
			return fmt.Errorf("leave: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("leave: %w", err)
		case <-time.After(leaderPoll):
		}
	}
	n.logger.Info("left the cluster")
	return nil
}
