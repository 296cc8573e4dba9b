package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// The audit batcher: pulls and failed logins happen far too often for a
// Raft write each. They are counted in memory, per actor, address and
// target, and written every AuditFlushInterval as one append_audit
// command (with the pull counts retention needs). What a crash loses is
// at most one interval of counts; changes are never batched (their event
// travels in their own command).

// maxPendingAudit bounds the distinct entries waiting for a flush; more
// are dropped (and counted) until the next flush.
const maxPendingAudit = 10000

type auditKey struct {
	actor, addr, op, resource, target, project string
}

type auditBatch struct {
	mu      sync.Mutex
	events  map[auditKey]*policy.AuditEvent
	order   []auditKey
	pulls   map[[2]string]*PullCount
	dropped int
}

func newAuditBatch() *auditBatch {
	return &auditBatch{events: map[auditKey]*policy.AuditEvent{}, pulls: map[[2]string]*PullCount{}}
}

// add counts e (same actor, address, operation and target: one entry).
func (b *auditBatch) add(e policy.AuditEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := auditKey{e.Actor, e.Addr, e.Op, e.Resource, e.Target, e.Project}
	if cur, ok := b.events[k]; ok {
		cur.Count += max(e.Count, 1)
		cur.Time = max(cur.Time, e.Time)
		return
	}
	if len(b.events) >= maxPendingAudit {
		b.dropped++
		return
	}
	e.Count = max(e.Count, 1)
	b.events[k] = &e
	b.order = append(b.order, k)
}

// pull counts p (one manifest's pulls) with those of the same manifest.
func (b *auditBatch) pull(p PullCount) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := [2]string{p.Repo, string(p.Digest)}
	if cur, ok := b.pulls[k]; ok {
		cur.Count += p.Count
		cur.Last = max(cur.Last, p.Last)
		return
	}
	if len(b.pulls) >= maxPendingAudit {
		b.dropped++
		return
	}
	b.pulls[k] = &p
}

// take empties the batch into at most maxAuditBatch events and pulls; what
// does not fit stays for the next flush.
func (b *auditBatch) take() ([]policy.AuditEvent, []PullCount, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var events []policy.AuditEvent
	n := min(len(b.order), maxAuditBatch)
	for _, k := range b.order[:n] {
		events = append(events, *b.events[k])
		delete(b.events, k)
	}
	b.order = b.order[n:]
	var pulls []PullCount
	for k, p := range b.pulls {
		if len(pulls) >= maxAuditBatch {
			break
		}
		pulls = append(pulls, *p)
		delete(b.pulls, k)
	}
	dropped := b.dropped
	b.dropped = 0
	return events, pulls, dropped
}

// putBack returns a batch that could not be written, as far as it fits.
func (b *auditBatch) putBack(events []policy.AuditEvent, pulls []PullCount) {
	for _, e := range events {
		b.add(e)
	}
	for _, p := range pulls {
		b.pull(p)
	}
}

// RecordEvent counts an audit event that is not part of a change: a
// failed login, a refused push. It never blocks.
func (n *Node) RecordEvent(e policy.AuditEvent) {
	if e.Time == 0 {
		e.Time = now()
	}
	n.audits.add(e.Clip())
}

// RecordPull counts a pull of repo@d by actor, for the audit log and for
// retention's "pulled" rules. It never blocks.
func (n *Node) RecordPull(repo string, d oci.Digest, actor policy.Actor) {
	t := now()
	project, _ := policy.ProjectOf(repo)
	n.audits.add(policy.AuditEvent{
		Time: t, Actor: actor.Name, Addr: actor.Addr, Op: policy.AuditPull, Resource: policy.AuditArtifact,
		Target: repo + "@" + string(d), Project: project,
	}.Clip())
	n.audits.pull(PullCount{Repo: repo, Digest: d, Count: 1, Last: t})
}

// runAudit flushes the batch every AuditFlushInterval and, on the leader,
// prunes the log to AuditRetention and AuditMaxEvents every
// auditPruneEvery. At the end it flushes once more.
func (n *Node) runAudit(ctx context.Context) {
	flush := time.NewTicker(n.cfg.AuditFlushInterval)
	defer flush.Stop()
	prune := time.NewTicker(auditPruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			n.flushAudit(fctx)
			cancel()
			return
		case <-flush.C:
			n.flushAudit(ctx)
		case <-prune.C:
			if n.IsLeader() {
				n.pruneAudit(ctx)
			}
		}
	}
}

// auditPruneEvery is how often the leader prunes the audit log.
const auditPruneEvery = 10 * time.Minute

func (n *Node) flushAudit(ctx context.Context) {
	events, pulls, dropped := n.audits.take()
	if dropped > 0 {
		n.logger.Warn("audit events dropped: too many distinct ones waiting for the cluster", "dropped", dropped)
	}
	if len(events) == 0 && len(pulls) == 0 {
		return
	}
	err := n.propose(ctx, command{Op: opAppendAudit, Events: events, Pulls: pulls, Time: now()})
	if err != nil {
		n.logger.Debug("audit batch not written yet; keeping it", "events", len(events), "pulls", len(pulls), "error", err)
		n.audits.putBack(events, pulls)
	}
}

// pruneAudit proposes prune_audit while it has something to drop: each
// command deletes at most pruneAuditChunk events, so a few rounds catch up
// with a large backlog, and a log within its bounds costs no Raft write.
func (n *Node) pruneAudit(ctx context.Context) {
	before := time.Now().Add(-n.cfg.AuditRetention).UnixNano()
	for range 20 {
		ok, err := n.fsm.auditPrunable(n.cfg.AuditMaxEvents, before)
		if err == nil && ok {
			err = n.propose(ctx, command{Op: opPruneAudit, Time: before, Keep: n.cfg.AuditMaxEvents})
		}
		if err != nil {
			n.logger.Warn("prune the audit log", "error", err)
		}
		if err != nil || !ok {
			return
		}
	}
}
