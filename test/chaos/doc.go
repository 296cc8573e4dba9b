// Package chaos runs berth clusters in Docker containers on a private
// network and injects faults into them while clients push and pull: SIGKILL
// and restart (docker kill, docker start), freezes (docker pause), real
// partitions (docker network disconnect) and kills of the current Raft
// leader, never more than a minority at once. After the last fault it heals
// everything and checks the invariants berth promises: every acknowledged
// push is pullable, with its exact digest and manifest bytes, from every
// node; every node reports the same applied index and state hash; no
// container log shows a panic, a fatal error or a data race. It prints a
// report and fails when an invariant does not hold.
//
// `make chaos` builds the image and runs TestCluster here; it is not part
// of `make test`. The tests skip unless CHAOS_IMAGE names the image to run.
// CHAOS_NODES (default 3), CHAOS_DURATION (of the fault phase, default 3m)
// and CHAOS_SEED (the fault schedule; printed at the start and in the
// report, so a run can be replayed) tune a run; see [LoadConfig] for the
// rest.
//
// The pieces are reusable by other scenarios: an [Env] owns one run's
// Docker objects (a network, containers, volumes, all named and labelled
// with the run, so that a later run removes what a crashed one left); a
// [Cluster] is a set of [Node]s that form one berth cluster; [Client]
// pushes and pulls; [Workload] and [Ledger] generate load and remember
// every acknowledged push; [NewSchedule] and [Faults] plan and inject
// faults; the checkers ([CheckImages], [CheckLogs], [Cluster.WaitConverged])
// verify; [Report] collects and prints the outcome. A scenario is one test
// function (TestCluster in cluster_test.go) that wires them: a multi-region
// one starts several clusters in one Env (each StartCluster with its own
// name and secret), runs one Faults over the nodes of all of them, and
// checks each region's ledger with CheckImages.
package chaos
