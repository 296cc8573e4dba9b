package replicate

import (
	"context"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// ConfigStore keeps endpoints and rules in the state machine; cmd passes a
// *cluster.Node. Lookups of something absent wrap oci.ErrNotFound; a
// write that fails validation wraps policy.ErrInvalid.
type ConfigStore interface {
	Endpoints(ctx context.Context) ([]policy.Endpoint, error)
	Endpoint(ctx context.Context, name string) (policy.Endpoint, error)
	// PutEndpoint creates or replaces an endpoint.
	PutEndpoint(ctx context.Context, e policy.Endpoint) error
	// DeleteEndpoint removes an endpoint; it is refused (oci.ErrDenied)
	// while a rule uses it.
	DeleteEndpoint(ctx context.Context, name string) error

	Rules(ctx context.Context) ([]policy.Rule, error)
	Rule(ctx context.Context, name string) (policy.Rule, error)
	// PutRule creates or replaces a rule; it is refused (oci.ErrNotFound)
	// when its endpoint does not exist.
	PutRule(ctx context.Context, r policy.Rule) error
	// DeleteRule removes a rule and stops its active tasks.
	DeleteRule(ctx context.Context, name string) error
}

// TaskStore keeps executions and tasks in the state machine. Event-based
// tasks are made by the state machine itself, in the same apply as the
// push or delete that causes them (the outbox); the engine adds the others
// and runs them all.
type TaskStore interface {
	// StartExecution records a new execution of rule with its first tasks
	// (their ID, Execution, Status and times are set by the state machine)
	// and returns its id. With done, those are all its tasks (none: it is
	// recorded as succeeded at once); without, the execution stays running
	// until AddTasks says done and its tasks are final.
	StartExecution(ctx context.Context, rule, trigger string, tasks []policy.Task, done bool, now time.Time) (uint64, error)
	// AddTasks adds tasks to a running execution (large scans add them in
	// chunks); done marks the last chunk, after which the execution ends
	// when its tasks do.
	AddTasks(ctx context.Context, exec uint64, tasks []policy.Task, done bool, now time.Time) error
	// ClaimTasks takes a lease until now+lease on at most max claimable
	// tasks for node, under the claim id claim: pending ones, retrying ones
	// whose NextAttempt has come, and running ones whose lease expired
	// (their node died). It never takes more of a rule's tasks than the
	// rule's concurrency allows in the whole cluster, nor a task while
	// another task of the same rule, destination repository and reference
	// runs. Claimed tasks come back running, with Attempts counted.
	ClaimTasks(ctx context.Context, node, claim string, max int, now time.Time, lease time.Duration) ([]policy.Task, error)
	// UpdateTasks applies what workers report, in one command. An update
	// whose claim no longer holds the task (the lease expired and another
	// node took it, or the execution was stopped) is ignored.
	UpdateTasks(ctx context.Context, updates []policy.TaskUpdate, now time.Time) error
	// StopExecution stops an execution: its active tasks become stopped.
	StopExecution(ctx context.Context, exec uint64, now time.Time) error

	Execution(ctx context.Context, id uint64) (policy.Execution, error)
	// Executions pages through executions, newest first, of one rule ("":
	// all) with ids below before (0: from the newest).
	Executions(ctx context.Context, rule string, before uint64, n int) ([]policy.Execution, error)
	// Tasks pages through an execution's tasks in id order after after,
	// of one status ("": all).
	Tasks(ctx context.Context, exec uint64, status string, after uint64, n int) ([]policy.Task, error)
	// LatestTask returns the newest task of rule for the source repo and
	// ref (a tag, or a digest for digest-only tasks), and whether there is
	// one.
	LatestTask(ctx context.Context, rule, repo, ref string) (policy.Task, bool, error)
	// ActiveTasks returns every pending, running and retrying task (for
	// metrics and for the replication lag).
	ActiveTasks(ctx context.Context) ([]policy.Task, error)
	// PruneHistory forgets final executions (and their tasks) that ended
	// before before, and the oldest final ones beyond keep.
	PruneHistory(ctx context.Context, before time.Time, keep int) error
}

// VersionStore reads and keeps the versions of tags (see oci.TagVersion).
type VersionStore interface {
	// TagVersion returns the version of repo:tag (zero for a tag written
	// before versions), or of its tombstone when deleted (found false).
	TagVersion(ctx context.Context, repo, tag string) (v oci.TagVersion, found bool, err error)
	// Tombstones pages through the tombstones of repo after tag last.
	Tombstones(ctx context.Context, repo, last string, n int) ([]policy.Tombstone, error)
	// PurgeTombstones forgets tombstones of deletes made before before.
	PurgeTombstones(ctx context.Context, before time.Time) error
	// ClusterID is the origin of this cluster's versions.
	ClusterID() string
}

// Store is everything the engine needs from the state machine.
type Store interface {
	ConfigStore
	TaskStore
	VersionStore
}

// Leadership tells the engine whether this node leads its cluster: only the
// leader reconciles, runs schedules and prunes history; every node runs
// tasks.
type Leadership interface {
	IsLeader() bool
}
