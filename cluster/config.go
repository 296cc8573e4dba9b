package cluster

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config configures a Node. Start from DefaultConfig: the zero value of
// Bootstrap is false, and New fills only zero durations and the address.
type Config struct {
	// NodeID is this node's stable Raft server id. Required.
	NodeID string
	// DataDir holds raft/ (log, stable store, snapshots) and state.db.
	// Required.
	DataDir string
	// RaftAddr is the address the Raft TCP transport binds to and
	// advertises; it must name a specific IP.
	RaftAddr string
	// Bootstrap makes a node without existing Raft state bootstrap a
	// one-node cluster of itself.
	Bootstrap bool
	// ApplyTimeout bounds how long a write waits to be enqueued in Raft.
	ApplyTimeout time.Duration
	// SnapshotThreshold is the number of log entries after which Raft
	// takes a snapshot and compacts its log.
	SnapshotThreshold uint64
	// SnapshotInterval is how often Raft checks SnapshotThreshold.
	SnapshotInterval time.Duration

	// Raft timing, tuned for a LAN; tests shrink them.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// RaftLogLevel is the lowest level of hashicorp/raft's own log lines
	// that reach the slog logger (component=raft).
	RaftLogLevel slog.Level
}

// DefaultConfig returns the defaults of a one-node cluster; NodeID and
// DataDir are left for the caller.
func DefaultConfig() Config {
	return Config{
		RaftAddr:           "127.0.0.1:5001",
		Bootstrap:          true,
		ApplyTimeout:       10 * time.Second,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		RaftLogLevel:       slog.LevelWarn,
	}
}

// withDefaults fills the zero-valued fields (except Bootstrap and
// RaftLogLevel, whose zero values are meaningful) from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.RaftAddr = cmp.Or(c.RaftAddr, d.RaftAddr)
	c.ApplyTimeout = cmp.Or(c.ApplyTimeout, d.ApplyTimeout)
	c.SnapshotThreshold = cmp.Or(c.SnapshotThreshold, d.SnapshotThreshold)
	c.SnapshotInterval = cmp.Or(c.SnapshotInterval, d.SnapshotInterval)
	c.HeartbeatTimeout = cmp.Or(c.HeartbeatTimeout, d.HeartbeatTimeout)
	c.ElectionTimeout = cmp.Or(c.ElectionTimeout, d.ElectionTimeout)
	c.LeaderLeaseTimeout = cmp.Or(c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	c.CommitTimeout = cmp.Or(c.CommitTimeout, d.CommitTimeout)
	return c
}

// Validate reports the first problem of c.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return fmt.Errorf("%w: node id is required", ErrConfig)
	case c.DataDir == "":
		return fmt.Errorf("%w: data dir is required", ErrConfig)
	case c.ApplyTimeout <= 0:
		return fmt.Errorf("%w: apply timeout must be positive", ErrConfig)
	case c.SnapshotThreshold == 0:
		return fmt.Errorf("%w: snapshot threshold must be positive", ErrConfig)
	case c.SnapshotInterval <= 0:
		return fmt.Errorf("%w: snapshot interval must be positive", ErrConfig)
	}
	host, _, err := net.SplitHostPort(c.RaftAddr)
	if err != nil {
		return fmt.Errorf("%w: raft addr %q: %v", ErrConfig, c.RaftAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%w: raft addr %q must name a specific IP to advertise", ErrConfig, c.RaftAddr)
	}
	if err := validateRaftConfig(c.raftConfig(nil)); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}
