package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The replication store: endpoints, rules, executions, tasks, tag versions
// and tombstones, for the replication engine (replicate.Store, which this
// package does not import). Writes go through propose; reads come from
// the local applied state.

// unixNano is t in unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// readFound runs read and, when it finds nothing, catches up with the
// leader and runs it again (see caughtUpNow): a lookup right after a write
// through another node does not answer a false "not found".
func readFound[T any](ctx context.Context, n *Node, read func() (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, err
	}
	v, err := read()
	if errors.Is(err, oci.ErrNotFound) && n.caughtUpNow(ctx, &err) {
		v, err = read()
	}
	return v, err
}

// ClusterID is the origin of this cluster's tag versions, derived from the
// cluster secret: the same on every node.
func (n *Node) ClusterID() string { return n.clusterID }

// Endpoints returns every endpoint, by name.
func (n *Node) Endpoints(ctx context.Context) ([]policy.Endpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.endpoints()
}

// Endpoint returns endpoint name (oci.ErrNotFound when absent).
func (n *Node) Endpoint(ctx context.Context, name string) (policy.Endpoint, error) {
	return readFound(ctx, n, func() (policy.Endpoint, error) { return n.fsm.endpoint(name) })
}

// PutEndpoint creates or replaces an endpoint; an invalid one wraps
// policy.ErrInvalid. Created is kept from the endpoint it replaces.
func (n *Node) PutEndpoint(ctx context.Context, e policy.Endpoint) error {
	if err := e.Validate(); err != nil {
		return err
	}
	return n.propose(ctx, command{Op: opPutEndpoint, Endpoint: &e, Time: time.Now().UnixNano(),
		Audit: event(ctx, policy.AuditUpdate, policy.AuditEndpoint, e.Name, "", "url="+e.URL+" type="+e.Type+" user="+e.User)})
}

// DeleteEndpoint removes an endpoint; it is refused (oci.ErrDenied) while a
// rule uses it.
func (n *Node) DeleteEndpoint(ctx context.Context, name string) error {
	return n.propose(ctx, command{Op: opDeleteEndpoint, Name: name, Time: time.Now().UnixNano(),
		Audit: event(ctx, policy.AuditDelete, policy.AuditEndpoint, name, "", "")})
}

// Rules returns every rule, by name.
func (n *Node) Rules(ctx context.Context) ([]policy.Rule, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.rules()
}

// Rule returns rule name (oci.ErrNotFound when absent).
func (n *Node) Rule(ctx context.Context, name string) (policy.Rule, error) {
	return readFound(ctx, n, func() (policy.Rule, error) { return n.fsm.rule(name) })
}

// PutRule creates or replaces a rule; an invalid one wraps
// policy.ErrInvalid, one whose endpoint does not exist oci.ErrNotFound.
func (n *Node) PutRule(ctx context.Context, r policy.Rule) error {
	if err := r.Validate(); err != nil {
		return err
	}
	return n.propose(ctx, command{Op: opPutRule, Rule: &r, Time: time.Now().UnixNano(),
		Audit: event(ctx, policy.AuditUpdate, policy.AuditReplication, r.Name, "", ruleDetail(r))})
}

// DeleteRule removes a rule and stops its running executions and their
// active tasks; the history stays until pruned.
func (n *Node) DeleteRule(ctx context.Context, name string) error {
	return n.propose(ctx, command{Op: opDeleteRule, Name: name, Time: time.Now().UnixNano(),
		Audit: event(ctx, policy.AuditDelete, policy.AuditReplication, name, "", "")})
}

// newToken returns a random id for one start_execution.
func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("execution token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// StartExecution records a new execution of rule with tasks (the state
// machine sets their ID, Execution, Status and times; an empty Endpoint or
// DestRepo is the rule's) and returns its id. With done, the execution ends
// when its tasks do (one without tasks has succeeded at once); without, it
// stays open, running, until AddTasks(done=true): a scan that finds its
// tasks as it goes records the execution first.
// A rule that does not exist is oci.ErrNotFound; a disabled one may run.
// Large task lists take several commands; when a later one fails, the id
// is returned with the error.
func (n *Node) StartExecution(ctx context.Context, rule, trigger string, tasks []policy.Task, done bool, now time.Time) (uint64, error) {
	token, err := newToken()
	if err != nil {
		return 0, err
	}
	first := tasks[:min(len(tasks), taskChunk)]
	rest := tasks[len(first):]
	c := command{Op: opStartExecution, Name: rule, Trigger: trigger, Token: token, Tasks: first, Done: done && len(rest) == 0, Time: unixNano(now)}
	if err := n.propose(ctx, c); err != nil {
		return 0, err
	}
	id, found, err := n.fsm.execByToken(token)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("start execution of %s: the new execution was pruned at once", rule)
	}
	if len(rest) > 0 {
		return id, n.AddTasks(ctx, id, rest, done, now)
	}
	return id, nil
}

// AddTasks adds tasks to execution exec; done says no more will come, and
// the execution then ends when its tasks do. An execution that had ended
// meanwhile runs again; a stopped one refuses them (oci.ErrDenied).
func (n *Node) AddTasks(ctx context.Context, exec uint64, tasks []policy.Task, done bool, now time.Time) error {
	for {
		chunk := tasks[:min(len(tasks), taskChunk)]
		tasks = tasks[len(chunk):]
		last := len(tasks) == 0
		if err := n.propose(ctx, command{Op: opAddTasks, Exec: exec, Tasks: chunk, Done: done && last, Time: unixNano(now)}); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}

// ClaimTasks takes a lease until now+lease on at most max claimable tasks
// for node under claim (unique per call) and returns them, running (see
// claimTasks for what is claimable).
func (n *Node) ClaimTasks(ctx context.Context, node, claim string, max int, now time.Time, lease time.Duration) ([]policy.Task, error) {
	c := command{Op: opClaimTasks, Node: node, Claim: claim, Max: max, Time: unixNano(now), Until: unixNano(now.Add(lease))}
	if err := n.propose(ctx, c); err != nil {
		return nil, err
	}
	// Apply is deterministic and has run here: the claimed tasks are the
	// running ones that hold the claim.
	return n.fsm.indexedTasks(bucketTasksRunning, func(t policy.Task) bool { return t.Claim == claim && t.Owner == node })
}

// UpdateTasks applies what workers report; an update whose claim no longer
// holds its task is ignored. Many updates take several commands.
func (n *Node) UpdateTasks(ctx context.Context, updates []policy.TaskUpdate, now time.Time) error {
	for len(updates) > 0 {
		chunk := slices.Clone(updates[:min(len(updates), updateChunk)])
		updates = updates[len(chunk):]
		for i := range chunk {
			// A remote's whole error page must not make the command too
			// large; apply would cut it anyway.
			chunk[i].Error, chunk[i].Note = truncate(chunk[i].Error), truncate(chunk[i].Note)
		}
		if err := n.propose(ctx, command{Op: opUpdateTasks, Updates: chunk, Time: unixNano(now)}); err != nil {
			return err
		}
	}
	return nil
}

// StopExecution stops a running execution: its active tasks become
// stopped. Stopping one that ended does nothing.
func (n *Node) StopExecution(ctx context.Context, exec uint64, now time.Time) error {
	return n.propose(ctx, command{Op: opStopExecution, Exec: exec, Time: unixNano(now)})
}

// Execution returns execution id (oci.ErrNotFound when absent).
func (n *Node) Execution(ctx context.Context, id uint64) (policy.Execution, error) {
	return readFound(ctx, n, func() (policy.Execution, error) { return n.fsm.execution(id) })
}

// Executions pages through the executions of rule ("": all), newest
// first, with ids below before (0: from the newest).
func (n *Node) Executions(ctx context.Context, rule string, before uint64, count int) ([]policy.Execution, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.executions(rule, before, count)
}

// Tasks pages through the tasks of execution exec in id order after
// after, of one status ("": all).
func (n *Node) Tasks(ctx context.Context, exec uint64, status string, after uint64, count int) ([]policy.Task, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.tasks(exec, status, after, count)
}

// LatestTask returns the newest task of rule for the source repo and ref
// (a tag, or a digest for digest-only tasks), and whether there is one.
func (n *Node) LatestTask(ctx context.Context, rule, repo, ref string) (policy.Task, bool, error) {
	if err := ctx.Err(); err != nil {
		return policy.Task{}, false, err
	}
	return n.fsm.latestTask(rule, repo, ref)
}

// ActiveTasks returns every pending, running and retrying task, in id
// order.
func (n *Node) ActiveTasks(ctx context.Context) ([]policy.Task, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.indexedTasks(bucketTasksActive, func(policy.Task) bool { return true })
}

// PruneHistory forgets final executions (and their tasks) that ended
// before before, and the oldest final ones beyond keep (0: no bound).
func (n *Node) PruneHistory(ctx context.Context, before time.Time, keep int) error {
	return n.propose(ctx, command{Op: opPruneHistory, Time: unixNano(before), Keep: keep})
}

// TagVersion returns the version of repo:tag (zero for a tag written
// before versions) and true, or, when the tag does not exist, the version
// of its tombstone (zero without one) and false.
func (n *Node) TagVersion(ctx context.Context, repo, tag string) (oci.TagVersion, bool, error) {
	if err := ctx.Err(); err != nil {
		return oci.TagVersion{}, false, err
	}
	return n.fsm.tagVersion(repo, tag)
}

// Tombstones pages through the tombstones of repo, by tag, after last.
func (n *Node) Tombstones(ctx context.Context, repo, last string, count int) ([]policy.Tombstone, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return n.fsm.tombstones(repo, last, count)
}

// PurgeTombstones forgets the tombstones of deletes made before before.
func (n *Node) PurgeTombstones(ctx context.Context, before time.Time) error {
	return n.propose(ctx, command{Op: opPurgeTombstones, Time: unixNano(before)})
}

// ruleDetail describes a replication rule for the audit log.
func ruleDetail(r policy.Rule) string {
	return fmt.Sprintf("endpoint=%s repos=%q tags=%q trigger=%s %s delete=%t enabled=%t",
		r.Endpoint, r.Repos, r.Tags, r.Trigger, r.Cron, r.Delete, r.Enabled)
}
