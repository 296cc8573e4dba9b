// Package cluster holds berth's metadata: a hashicorp/raft node whose state
// machine is a bbolt file (state.db) of repositories, manifests, tags, the
// referrers index, blob links and reference counts, and user accounts.
//
// Every change is a command in the Raft log, applied deterministically by
// every node in one bbolt transaction that also records the applied index,
// so a restart skips what it already applied. Reads come from the local
// applied state and never wait for Raft. A *Node implements the registry's
// State and PasswordChecker interfaces; cmd wires it in. See DESIGN.md for
// the invariants.
package cluster
