package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
)

const (
	raftDirName     = "raft"
	raftDBName      = "raft.db"
	stateDBName     = "state.db"
	snapshotsRetain = 2
	transportPool   = 3
	transportWait   = 10 * time.Second
	readyPoll       = 10 * time.Millisecond
)

// Node is one member of the metadata cluster: a Raft instance and the state
// machine it drives, gossip membership, and the peer services built on
// them (forwarded writes, read-index, blob repair). Writes go through Raft
// (see propose); reads come from the local applied state.
type Node struct {
	cfg       Config
	logger    *slog.Logger
	keys      keys
	clusterID string // origin of this cluster's tag versions

	fsm       *fsm
	raft      *raft.Raft
	logStore  *raftboltdb.BoltStore
	transport raft.Transport
	metrics   *metrics

	gossip      *gossip // nil when gossip is off
	peers       PeerClient
	client      *http.Client // requests to peers' internal API
	fetchClient *http.Client // blob reads from peers: a short wait for the header
	readIndex   readIndexer
	repair      *blobRepair // nil until AttachBlobs
	audits      *auditBatch
	tokens      *tokenSealer

	observer *raft.Observer
	obsCh    chan raft.Observation
	obsDone  chan struct{}
	leaderCh chan struct{} // signalled (non-blocking) on every leader change
	// readSafeTerm is the term in which this node, as leader, has applied
	// every entry of earlier terms: from then on its commit index covers
	// every acknowledged write (see LeaderReadIndex).
	readSafeTerm atomic.Uint64

	// missingSince is the leader's record of configured servers that gossip
	// does not see; only the membership goroutine touches it.
	missingSince map[string]time.Time

	// startTarget is the last index of the log, at start, that the state
	// machine will see: Ready waits for the replay to reach it.
	startTarget uint64

	// Background loops run until Close cancels bgCtx.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	done     chan struct{} // closed by Close

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func (c Config) raftConfig(logger hclog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	rc.BatchApplyCh = true
	if logger != nil {
		rc.Logger = logger
	}
	return rc
}

func validateRaftConfig(rc *raft.Config) error { return raft.ValidateConfig(rc) }

// New opens the state machine and the Raft stores under cfg.DataDir, starts
// Raft and, when cfg.Bootstrap is set and there is no Raft state yet,
// bootstraps a one-node cluster. With gossip on it starts memberlist and
// joins cfg.Join (and the peers it remembers) in the background. It does
// not wait for a leader: use WaitReady. A nil reg registers no metrics.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	n := &Node{
		cfg:         cfg,
		logger:      logger.With("component", "cluster"),
		leaderCh:    make(chan struct{}, 1),
		done:        make(chan struct{}),
		client:      newPeerHTTPClient(30 * time.Second),
		fetchClient: newPeerHTTPClient(5 * time.Second),
	}
	n.bgCtx, n.bgCancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
		}
	}()
	var err error
	if n.keys, err = deriveKeys(cfg.Secret); err != nil {
		return nil, fmt.Errorf("derive cluster keys: %w", err)
	}
	n.clusterID = clusterID(cfg.Secret)
	n.audits = newAuditBatch()
	if n.tokens, err = newTokenSealer(cfg.Secret); err != nil {
		return nil, fmt.Errorf("derive token key: %w", err)
	}

	raftDir := filepath.Join(cfg.DataDir, raftDirName)
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", raftDir, err)
	}
	f, err := openFSM(filepath.Join(cfg.DataDir, stateDBName), n.logger)
	if err != nil {
		return nil, err
	}
	n.fsm = f

	hlog := newHCLogger(logger, cfg.RaftLogLevel)
	n.logStore, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(raftDir, raftDBName),
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", raftDir, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, snapshotsRetain, hlog)
	if err != nil {
		return nil, fmt.Errorf("open snapshots %s: %w", raftDir, err)
	}
	if cfg.Transport != nil {
		n.transport = cfg.Transport
	} else if n.transport, err = newTCPTransport(cfg.RaftAddr, cfg.RaftAdvertise, cfg.Secret, hlog); err != nil {
		return nil, err
	}

	rc := cfg.raftConfig(hlog)
	// The state file already holds everything up to its applied index, so
	// a snapshot that is not newer need not be restored over it at start;
	// the log after the snapshot is replayed and apply skips what the file
	// has. A newer snapshot (the file was lost) is restored as usual.
	metas, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	rc.NoSnapshotRestoreOnStart = len(metas) > 0 && metas[0].Index <= f.applied.Load()

	existing, err := raft.HasExistingState(n.logStore, n.logStore, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	n.raft, err = raft.NewRaft(rc, f, n.logStore, n.logStore, snaps, n.transport)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if cfg.Bootstrap && !existing {
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(cfg.NodeID),
			Address:  n.transport.LocalAddr(),
		}}}
		if len(cfg.InitialServers) > 0 {
			boot.Servers = nil
			for _, s := range cfg.InitialServers {
				boot.Servers = append(boot.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.RaftAddr)})
			}
		}
		if err := n.raft.BootstrapCluster(boot).Error(); err != nil {
			return nil, fmt.Errorf("bootstrap cluster: %w", err)
		}
		n.logger.Info("bootstrapped the cluster", "voters", len(boot.Servers), "raft_addr", n.transport.LocalAddr())
	}

	n.metrics, err = newMetrics(reg, n)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	n.observeLeaders()
	n.startTarget = n.fsmTarget()

	if cfg.GossipAddr != "" {
		if n.gossip, err = newGossip(cfg, n.keys, logger); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.Peers != nil:
		n.peers = cfg.Peers
	default:
		n.peers = newHTTPPeers(cfg.NodeID, n.keys.api, n.lookup, n.client)
	}
	if n.gossip != nil {
		n.bg.Go(func() { n.gossip.join(n.bgCtx, cfg.Join) })
		n.bg.Go(func() { n.runMembership(n.bgCtx) })
	}
	if cfg.SnapshotBytes > 0 || cfg.SnapshotMaxAge > 0 {
		f.lastSnapshot.Store(time.Now().UnixNano())
		n.bg.Go(func() { n.runSnapshots(n.bgCtx) })
	}
	n.bg.Go(func() { n.runAudit(n.bgCtx) })
	n.bg.Go(func() { n.rotateTokenKeys(n.bgCtx) })
	ok = true
	return n, nil
}

// lookup finds a member's addresses, from gossip.
func (n *Node) lookup(id string) (Member, bool) {
	if n.gossip == nil {
		return Member{}, false
	}
	return n.gossip.member(id)
}

// snapshotCheckEvery is how often the size and age triggers of snapshots
// look.
var snapshotCheckEvery = 5 * time.Second

// runSnapshots takes a snapshot whenever the commands applied since the
// last one add up to SnapshotBytes (a log of large manifests is compacted
// before it counts SnapshotThreshold entries), or the last one is older
// than SnapshotMaxAge and something was applied since (a restart replays a
// bounded log). Raft's own trigger (SnapshotThreshold entries, checked
// every SnapshotInterval) runs besides.
func (n *Node) runSnapshots(ctx context.Context) {
	t := time.NewTicker(snapshotCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		bytes := n.fsm.applyBytes.Load()
		age := time.Since(time.Unix(0, n.fsm.lastSnapshot.Load()))
		var reason string
		switch {
		case n.cfg.SnapshotBytes > 0 && bytes >= n.cfg.SnapshotBytes:
			reason = "size"
		case n.cfg.SnapshotMaxAge > 0 && age >= n.cfg.SnapshotMaxAge && bytes > 0:
			reason = "age"
		default:
			continue
		}
		err := n.raft.Snapshot().Error()
		switch {
		case errors.Is(err, raft.ErrNothingNewToSnapshot):
			n.fsm.lastSnapshot.Store(time.Now().UnixNano())
		case err != nil:
			n.logger.Warn("snapshot", "trigger", reason, "error", err)
		default:
			n.logger.Info("took a snapshot", "trigger", reason, "bytes_since_last", bytes, "age", age.Round(time.Second).String())
		}
	}
}

// observeLeaders counts leader changes.
func (n *Node) observeLeaders() {
	n.obsCh = make(chan raft.Observation, 16)
	n.obsDone = make(chan struct{})
	n.observer = raft.NewObserver(n.obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	go func() {
		defer close(n.obsDone)
		var last raft.ServerID
		for o := range n.obsCh {
			lo := o.Data.(raft.LeaderObservation)
			if lo.LeaderID != "" && lo.LeaderID != last {
				n.metrics.leaderChanges.Inc()
				n.logger.Info("raft leader", "leader", lo.LeaderID, "addr", lo.LeaderAddr)
			}
			last = lo.LeaderID
			if string(lo.LeaderID) == n.cfg.NodeID {
				go n.markReadSafe()
			}
			select {
			case n.leaderCh <- struct{}{}:
			default:
			}
		}
	}()
}

// markReadSafe waits, on a new leader, until every entry before its term
// is applied (a barrier), and then records the term as safe for read
// indexes at the commit index.
func (n *Node) markReadSafe() {
	term := n.raft.CurrentTerm()
	if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
		return
	}
	if n.raft.CurrentTerm() == term && n.raft.State() == raft.Leader {
		n.readSafeTerm.Store(term)
	}
}

// fsmTarget returns the index of the last entry in the log that the state
// machine will see (see fsmIndexAtOrBelow).
func (n *Node) fsmTarget() uint64 { return n.fsmIndexAtOrBelow(n.raft.LastIndex()) }

func (n *Node) leaderKnown() bool {
	_, id := n.raft.LeaderWithID()
	return id != ""
}

// readyLag is how many committed entries a node may still have to apply
// and be ready.
const readyLag = 256

// Ready reports whether a leader is known, the state machine has applied
// the log this node had when it started, and it is not far behind the
// commit index it knows of.
func (n *Node) Ready() bool {
	if n.closed.Load() || !n.leaderKnown() || !n.replayed(n.startTarget) {
		return false
	}
	return n.raft.AppliedIndex()+readyLag >= n.raft.CommitIndex()
}

// replayed reports whether the state machine has applied the log up to
// target, as far as the log still holds it: an uncommitted tail that a new
// leader truncated (this node led, cut off, and appended writes it could
// not commit) is never applied, and the entries that replace it may be
// no-ops, which the state machine never sees.
func (n *Node) replayed(target uint64) bool {
	return n.fsm.applied.Load() >= n.fsmIndexAtOrBelow(target)
}

// WaitReady returns once a leader is known and this node has caught up
// with it: the state machine has applied every write the cluster had
// acknowledged when WaitReady was called (on a restart, also the replay of
// its own log). A node that joins waits here until the leader has added it
// and it has received the state. It returns early when ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	if n.closed.Load() {
		return ErrClosed
	}
	target := n.fsmTarget()
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	var last error
	for {
		if n.closed.Load() {
			return ErrClosed
		}
		if n.leaderKnown() && n.replayed(target) {
			err := n.catchUp(ctx)
			if err == nil {
				return nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("wait for cluster ready (applied %d of %d): %w (last: %v)", n.fsm.applied.Load(), target, ctx.Err(), last)
			}
			return fmt.Errorf("wait for cluster ready (applied %d of %d): %w", n.fsm.applied.Load(), target, ctx.Err())
		case <-t.C:
		}
	}
}

// StepDown hands leadership to another voter when this node leads one of
// several, so that a node that is shutting down does not leave the cluster
// without a leader for an election timeout. It waits at most until ctx
// ends.
func (n *Node) StepDown(ctx context.Context) error {
	if n.closed.Load() || n.raft.State() != raft.Leader {
		return nil
	}
	voters := 0
	for _, id := range n.configuredIDs() {
		if id != n.cfg.NodeID {
			voters++
		}
	}
	if voters == 0 {
		return nil
	}
	f := n.raft.LeadershipTransfer()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("transfer leadership: %w", err)
		}
		_, leader := n.raft.LeaderWithID()
		n.logger.Info("handed leadership over", "leader", leader)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("transfer leadership: %w", ctx.Err())
	}
}

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// AppliedIndex is the index of the last log entry the state machine applied.
func (n *Node) AppliedIndex() uint64 { return n.fsm.applied.Load() }

// RaftAddr is the address other nodes dial for Raft.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// GossipAddr is the address other nodes gossip with ("" when gossip is
// off).
func (n *Node) GossipAddr() string {
	if n.gossip == nil {
		return ""
	}
	return n.gossip.self.GossipAddr
}

// Members returns gossip's view of the cluster (only this node when gossip
// is off), sorted by id.
func (n *Node) Members() []Member {
	if n.gossip == nil {
		return []Member{{NodeInfo: NodeInfo{ID: n.cfg.NodeID, RaftAddr: n.RaftAddr(), HTTPAddr: n.cfg.HTTPAdvertise, Version: n.cfg.Version}, State: StateAlive}}
	}
	return n.gossip.snapshot()
}

// Leader returns the id of the leader this node knows, or "".
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// StateHash is a sha256 over the whole state except the applied index: two
// nodes that applied the same log have the same hash.
func (n *Node) StateHash(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return n.fsm.hash()
}

// Close stops the background work and gossip (the others see this node as
// dead, not as gone: a restart is not a leave), shuts Raft down, then
// closes the transport, the Raft stores and the state file. It is
// idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		close(n.done)
		n.closeErr = n.closeAll()
	})
	return n.closeErr
}

// closeAll releases whatever New managed to open, in reverse order.
func (n *Node) closeAll() error {
	var errs []error
	if n.bgCancel != nil {
		n.bgCancel()
	}
	if n.repair != nil {
		n.repair.stop()
	}
	if n.gossip != nil {
		if err := n.gossip.shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("stop gossip: %w", err))
		}
	}
	n.bg.Wait()
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("shutdown raft: %w", err))
		}
		if n.observer != nil {
			n.raft.DeregisterObserver(n.observer)
			close(n.obsCh)
			<-n.obsDone
		}
	}
	if n.metrics != nil {
		n.metrics.unregister()
	}
	if c, ok := n.transport.(raft.WithClose); ok && n.cfg.Transport == nil {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
	}
	if n.logStore != nil {
		if err := n.logStore.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	if n.fsm != nil {
		if err := n.fsm.close(); err != nil {
			errs = append(errs, fmt.Errorf("close state: %w", err))
		}
	}
	return errors.Join(errs...)
}
