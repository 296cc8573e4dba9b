package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-registry/berth/oci"
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
// machine it drives. Writes go through Raft (see propose); reads come from
// the local applied state.
type Node struct {
	cfg    Config
	logger *slog.Logger

	fsm       *fsm
	raft      *raft.Raft
	logStore  *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	metrics   *metrics

	observer *raft.Observer
	obsCh    chan raft.Observation
	obsDone  chan struct{}

	// startTarget is the last index of the log, at start, that the state
	// machine will see: Ready waits for the replay to reach it.
	startTarget uint64

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
	rc.BatchApplyCh = true
	if logger != nil {
		rc.Logger = logger
	}
	return rc
}

func validateRaftConfig(rc *raft.Config) error { return raft.ValidateConfig(rc) }

// New opens the state machine and the Raft stores under cfg.DataDir, starts
// Raft on cfg.RaftAddr and, when cfg.Bootstrap is set and there is no Raft
// state yet, bootstraps a one-node cluster. It does not wait for a leader:
// use WaitReady. A nil reg registers no metrics.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	n := &Node{cfg: cfg, logger: logger.With("component", "cluster", "node", cfg.NodeID)}
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
		}
	}()

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
	n.transport, err = raft.NewTCPTransportWithLogger(cfg.RaftAddr, nil, transportPool, transportWait, hlog)
	if err != nil {
		return nil, fmt.Errorf("raft transport on %s: %w", cfg.RaftAddr, err)
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
		if err := n.raft.BootstrapCluster(boot).Error(); err != nil {
			return nil, fmt.Errorf("bootstrap cluster: %w", err)
		}
		n.logger.Info("bootstrapped a one-node cluster", "raft_addr", n.transport.LocalAddr())
	}

	n.metrics, err = newMetrics(reg,
		func() float64 { return float64(f.applied.Load()) },
		func() float64 { return float64(n.raft.State()) })
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	n.observeLeaders()
	n.startTarget = n.fsmTarget()
	ok = true
	return n, nil
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
		}
	}()
}

// fsmTarget returns the index of the last entry in the log that the state
// machine will see (a command or a configuration change; raft keeps no-op
// and barrier entries from it). Entries missing from the log were compacted
// into a snapshot the state already holds.
func (n *Node) fsmTarget() uint64 {
	for idx := n.raft.LastIndex(); idx > 0; idx-- {
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

func (n *Node) leaderKnown() bool {
	_, id := n.raft.LeaderWithID()
	return id != ""
}

// Ready reports whether a leader is known and the state machine has
// applied the log this node had when it started.
func (n *Node) Ready() bool {
	return !n.closed.Load() && n.leaderKnown() && n.fsm.applied.Load() >= n.startTarget
}

// WaitReady returns once a leader is known and the state machine has
// applied the log as it was when WaitReady was called (on a restart: the
// replay of its own log is done), or when ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	if n.closed.Load() {
		return ErrClosed
	}
	target := n.fsmTarget()
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		if n.closed.Load() {
			return ErrClosed
		}
		if n.leaderKnown() && n.fsm.applied.Load() >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for cluster ready (applied %d of %d): %w", n.fsm.applied.Load(), target, ctx.Err())
		case <-t.C:
		}
	}
}

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// AppliedIndex is the index of the last log entry the state machine applied.
func (n *Node) AppliedIndex() uint64 { return n.fsm.applied.Load() }

// RaftAddr is the address the Raft transport listens on.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// StateHash is a sha256 over the whole state except the applied index: two
// nodes that applied the same log have the same hash.
func (n *Node) StateHash(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return n.fsm.hash()
}

// propose is the one way a write enters the cluster: it appends c to the
// Raft log and waits until this node has applied it, returning apply's
// result (or its error). On a follower it returns ErrNotLeader; forwarding
// to the leader belongs here. When ctx ends first, propose returns ctx's
// error and the command may still be applied.
func (n *Node) propose(ctx context.Context, c command) (any, error) {
	if n.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n.raft.State() != raft.Leader {
		return nil, fmt.Errorf("%s: %w", c.Op, ErrNotLeader)
	}
	b, err := encodeCommand(c)
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("%s: %w", c.Op, ctx.Err())
	case err := <-done:
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, fmt.Errorf("%s: %w", c.Op, ErrNotLeader)
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, fmt.Errorf("%s: %w", c.Op, ErrClosed)
		case err != nil:
			// Lost leadership, enqueue timeout: the outcome is unknown. A
			// retry is safe: a write repeats to the same state, a delete
			// repeats to "not found".
			return nil, fmt.Errorf("%s: %w: %w", c.Op, oci.ErrUnavailable, err)
		}
	}
	n.metrics.applyDuration.Observe(time.Since(start).Seconds())
	resp := future.Response()
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// Close shuts Raft down, then closes the transport, the Raft stores and the
// state file. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		n.closeErr = n.closeAll()
	})
	return n.closeErr
}

// closeAll releases whatever New managed to open, in reverse order.
func (n *Node) closeAll() error {
	var errs []error
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
	if n.transport != nil {
		if err := n.transport.Close(); err != nil {
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
