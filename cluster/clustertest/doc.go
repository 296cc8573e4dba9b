// Package clustertest runs a cluster of cluster.Nodes in one test process,
// for fast tests of the state machine under faults: every node has the
// real bbolt state machine and raft-boltdb stores in t.TempDir(), an
// in-memory Raft transport, and an in-process PeerClient in place of the
// internal HTTP API. Gossip is off; the nodes are bootstrapped as one
// configuration of N voters.
//
// The network is a table of links the test changes: Partition, Isolate and
// Heal cut and restore both the Raft RPCs and the PeerClient calls between
// nodes (a forwarded write to a leader across a cut fails as a dial would:
// not sent; a reply that a cut interrupts is lost: outcome unknown). Kill
// closes a node and Restart starts it again on the same directories.
// Leader and WaitConverged poll with deadlines and fail with a table of
// every node's Raft state.
//
// Logs are dropped unless BERTH_TEST_LOG is set; then they go to t.Log.
// A panic in any node (its state machine panics when storage fails) ends
// the test binary, so a test that finishes saw none.
//
// It is modelled on hashicorp/raft's testing.go and fuzzy suite.
package clustertest
