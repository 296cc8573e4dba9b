package cluster

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// Config configures a Node. Start from DefaultConfig: the zero value of
// Bootstrap is false, and New fills only zero durations and addresses.
type Config struct {
	// NodeID is this node's stable Raft server id and gossip name. Required.
	NodeID string
	// DataDir holds raft/ (log, stable store, snapshots) and state.db.
	// Required.
	DataDir string
	// RaftAddr is the address the Raft TCP transport binds to.
	RaftAddr string
	// RaftAdvertise is the host:port other nodes dial for Raft; a host name
	// is allowed (it is resolved at each dial). Empty means RaftAddr, which
	// must then name a specific IP.
	RaftAdvertise string
	// HTTPAdvertise is the host:port of this node's HTTP server as other
	// nodes reach it: forwarded writes, read-index, blob transfers and
	// proxied upload requests go there. Required when gossip is on.
	HTTPAdvertise string
	// GossipAddr is the memberlist bind address (TCP and UDP). Empty turns
	// gossip off: the node forms no cluster with others by itself (one-node
	// registries, and tests that wire nodes together by hand).
	GossipAddr string
	// GossipAdvertise is the host:port other nodes gossip with; a host name
	// is resolved once at start. Empty means GossipAddr.
	GossipAdvertise string
	// Join lists gossip addresses (host:port) of existing members to join at
	// start. Addresses of peers seen before are remembered in the data
	// directory and joined too, so a restarted node finds its cluster again.
	Join []string
	// Secret is the cluster secret, the same on every node: it keys gossip
	// encryption and authenticates the internal API. Required when gossip
	// is on; at least MinSecretLen bytes.
	Secret []byte
	// Version is this node's berth version, gossiped to the others.
	Version string
	// Bootstrap makes a node without existing Raft state bootstrap a
	// one-node cluster of itself. A node that joins others must not.
	Bootstrap bool
	// InitialServers, with Bootstrap, bootstraps a cluster of exactly these
	// voters instead (every one of them must be given the same list). For
	// clusters wired by hand, without gossip (cluster/clustertest).
	InitialServers []Server
	// MaxVoters bounds the Raft voters; further members join as non-voters
	// and are promoted when a voter goes.
	MaxVoters int
	// DeadPeerTimeout is how long the leader waits before it removes a
	// member that gossip reports dead from the Raft configuration (only
	// when the voters left still form a safe quorum). A member that comes
	// back is added again.
	DeadPeerTimeout time.Duration
	// ApplyTimeout bounds how long a write waits for a leader and to be
	// enqueued in Raft.
	ApplyTimeout time.Duration
	// ReadIndexTimeout bounds how long a read that would answer "not found"
	// waits to catch up with the leader before it answers from the local
	// state (pulls keep working without quorum).
	ReadIndexTimeout time.Duration
	// SnapshotThreshold is the number of log entries after which Raft
	// takes a snapshot and compacts its log.
	SnapshotThreshold uint64
	// SnapshotBytes makes the node take a snapshot once the commands
	// applied since the last one add up to this many bytes (manifests make
	// entries of very different sizes). 0 turns the size trigger off.
	SnapshotBytes int64
	// SnapshotInterval is how often Raft checks SnapshotThreshold.
	SnapshotInterval time.Duration
	// SnapshotMaxAge makes the node take a snapshot when the last one is
	// older than this and commands were applied since, so that a restart
	// replays a bounded log. 0 turns the age trigger off.
	SnapshotMaxAge time.Duration
	// TrailingLogs is how many entries a snapshot leaves in the log; a
	// follower further behind catches up by snapshot.
	TrailingLogs uint64

	// Raft timing, tuned for a LAN; tests shrink them.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// AuditFlushInterval is how often counted audit events (pulls, failed
	// logins) are written, in one command.
	AuditFlushInterval time.Duration
	// AuditRetention is how long audit events are kept; AuditMaxEvents
	// bounds how many (the oldest go first).
	AuditRetention time.Duration
	AuditMaxEvents int
	// TokenKeyRotation is the age at which the leader replaces the token
	// signing key (the last few stay to verify what they signed); 0 never.
	TokenKeyRotation time.Duration

	// RaftLogLevel is the lowest level of hashicorp/raft's own log lines
	// that reach the slog logger (component=raft).
	RaftLogLevel slog.Level

	// Transport replaces the Raft TCP transport (cluster/clustertest uses
	// in-memory transports). RaftAddr is then not bound.
	Transport raft.Transport
	// Peers replaces the HTTP client that forwards writes and read-index
	// requests to the leader (cluster/clustertest calls the leader's
	// methods in process).
	Peers PeerClient
}

// Server is a Raft voter of an initial configuration.
type Server struct {
	ID       string
	RaftAddr string
}

// MinSecretLen is the shortest cluster secret accepted.
const MinSecretLen = 16

// DefaultConfig returns the defaults of a one-node cluster; NodeID and
// DataDir are left for the caller.
//
// The Raft timing is chosen for a LAN: a follower that misses heartbeats
// for 500 ms-1 s starts an election (pre-vote keeps a returning node from
// disrupting a healthy leader), so a killed leader is replaced in about
// 1-1.5 s and writes resume within 2 s.
func DefaultConfig() Config {
	return Config{
		RaftAddr:           "127.0.0.1:5001",
		Bootstrap:          true,
		MaxVoters:          5,
		DeadPeerTimeout:    5 * time.Minute,
		ApplyTimeout:       10 * time.Second,
		ReadIndexTimeout:   2 * time.Second,
		SnapshotThreshold:  8192,
		SnapshotBytes:      256 << 20,
		SnapshotInterval:   2 * time.Minute,
		SnapshotMaxAge:     time.Hour,
		TrailingLogs:       10240,
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		RaftLogLevel:       slog.LevelWarn,
		AuditFlushInterval: time.Second,
		AuditRetention:     90 * 24 * time.Hour,
		AuditMaxEvents:     100000,
		TokenKeyRotation:   30 * 24 * time.Hour,
	}
}

// withDefaults fills the zero-valued fields (except Bootstrap, SnapshotBytes,
// SnapshotMaxAge and RaftLogLevel, whose zero values are meaningful) from
// DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.RaftAddr = cmp.Or(c.RaftAddr, d.RaftAddr)
	c.RaftAdvertise = cmp.Or(c.RaftAdvertise, c.RaftAddr)
	c.GossipAdvertise = cmp.Or(c.GossipAdvertise, c.GossipAddr)
	c.MaxVoters = cmp.Or(c.MaxVoters, d.MaxVoters)
	c.DeadPeerTimeout = cmp.Or(c.DeadPeerTimeout, d.DeadPeerTimeout)
	c.ApplyTimeout = cmp.Or(c.ApplyTimeout, d.ApplyTimeout)
	c.ReadIndexTimeout = cmp.Or(c.ReadIndexTimeout, d.ReadIndexTimeout)
	c.SnapshotThreshold = cmp.Or(c.SnapshotThreshold, d.SnapshotThreshold)
	c.SnapshotInterval = cmp.Or(c.SnapshotInterval, d.SnapshotInterval)
	c.TrailingLogs = cmp.Or(c.TrailingLogs, d.TrailingLogs)
	c.HeartbeatTimeout = cmp.Or(c.HeartbeatTimeout, d.HeartbeatTimeout)
	c.ElectionTimeout = cmp.Or(c.ElectionTimeout, d.ElectionTimeout)
	c.LeaderLeaseTimeout = cmp.Or(c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	c.CommitTimeout = cmp.Or(c.CommitTimeout, d.CommitTimeout)
	c.AuditFlushInterval = cmp.Or(c.AuditFlushInterval, d.AuditFlushInterval)
	c.AuditRetention = cmp.Or(c.AuditRetention, d.AuditRetention)
	c.AuditMaxEvents = cmp.Or(c.AuditMaxEvents, d.AuditMaxEvents)
	return c
}

// Validate reports the first problem of c (after New's defaults are filled
// in).
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.NodeID == "":
		return fmt.Errorf("%w: node id is required", ErrConfig)
	case c.DataDir == "":
		return fmt.Errorf("%w: data dir is required", ErrConfig)
	case c.ApplyTimeout <= 0:
		return fmt.Errorf("%w: apply timeout must be positive", ErrConfig)
	case c.ReadIndexTimeout <= 0:
		return fmt.Errorf("%w: read-index timeout must be positive", ErrConfig)
	case c.SnapshotThreshold == 0:
		return fmt.Errorf("%w: snapshot threshold must be positive", ErrConfig)
	case c.SnapshotBytes < 0:
		return fmt.Errorf("%w: snapshot bytes must not be negative", ErrConfig)
	case c.SnapshotMaxAge < 0:
		return fmt.Errorf("%w: snapshot max age must not be negative", ErrConfig)
	case c.SnapshotInterval <= 0:
		return fmt.Errorf("%w: snapshot interval must be positive", ErrConfig)
	case c.MaxVoters < 1:
		return fmt.Errorf("%w: max voters must be at least 1", ErrConfig)
	case c.DeadPeerTimeout <= 0:
		return fmt.Errorf("%w: dead peer timeout must be positive", ErrConfig)
	case c.TokenKeyRotation < 0:
		return fmt.Errorf("%w: token key rotation must not be negative", ErrConfig)
	case c.AuditFlushInterval <= 0 || c.AuditRetention <= 0 || c.AuditMaxEvents <= 0:
		return fmt.Errorf("%w: audit flush interval, retention and max events must be positive", ErrConfig)
	}
	if c.Transport == nil {
		if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
			return fmt.Errorf("%w: raft addr %q: %v", ErrConfig, c.RaftAddr, err)
		}
		if err := checkAdvertise("raft advertise address", c.RaftAdvertise); err != nil {
			return err
		}
	}
	if c.GossipAddr != "" {
		if _, _, err := net.SplitHostPort(c.GossipAddr); err != nil {
			return fmt.Errorf("%w: gossip addr %q: %v", ErrConfig, c.GossipAddr, err)
		}
		if err := checkAdvertise("gossip advertise address", c.GossipAdvertise); err != nil {
			return err
		}
		if err := checkAdvertise("http advertise address", c.HTTPAdvertise); err != nil {
			return err
		}
		if len(c.Secret) < MinSecretLen {
			return fmt.Errorf("%w: a cluster secret of at least %d bytes is required", ErrConfig, MinSecretLen)
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("%w: join address %q: %v", ErrConfig, j, err)
		}
	}
	if err := validateRaftConfig(c.raftConfig(nil)); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}

// checkAdvertise checks that addr is host:port with a host other nodes can
// dial: not empty and not an unspecified IP such as 0.0.0.0.
func checkAdvertise(what, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrConfig, what, addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%w: %s %q: port must be 0-65535", ErrConfig, what, addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%w: %s %q must name a host or specific IP that other nodes can reach", ErrConfig, what, addr)
	}
	return nil
}
