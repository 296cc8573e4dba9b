package clustertest

import (
	"testing"
	"time"

	"github.com/berth-registry/berth/cluster"
)

// SingleAuditFlush is how often a SingleNode writes its batched audit
// events (pulls, failed logins): soon enough that a test reading the audit
// log polls briefly.
const SingleAuditFlush = 20 * time.Millisecond

// SingleNode starts a one-node cluster, bootstrapped and ready, and closes
// it when the test ends: the real state machine behind tests of what uses
// it (the registry, the management API, retention). It has New's node
// (in-memory transport, bbolt and raft-boltdb in t.TempDir()) with the
// cluster's default apply and read timeouts, which nothing here needs to
// cut short, and audit flushes every SingleAuditFlush. opts change it as
// they change New's (WithConfig's index is 0).
func SingleNode(t testing.TB, opts ...Option) *cluster.Node {
	t.Helper()
	defaults := WithConfig(func(_ int, cfg *cluster.Config) {
		d := cluster.DefaultConfig()
		cfg.ApplyTimeout = d.ApplyTimeout
		cfg.ReadIndexTimeout = d.ReadIndexTimeout
		cfg.AuditFlushInterval = SingleAuditFlush
	})
	return New(t, 1, append([]Option{defaults}, opts...)...).Node(0)
}
