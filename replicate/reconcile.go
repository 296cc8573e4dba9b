package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// pageSize is how many repositories, tags or tombstones a scan reads at a
// time, and taskChunk how many tasks it adds per command.
const (
	pageSize  = 500
	taskChunk = 200
)

// pruneInterval is how often the leader forgets old history and tombstones.
const pruneInterval = 10 * time.Minute

// ParseCron parses a rule's cron spec: five fields, or a descriptor such
// as @hourly or @every 10m.
func ParseCron(spec string) (cron.Schedule, error) {
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: cron %q: %v", policy.ErrInvalid, spec, err)
	}
	return s, nil
}

// leaderLoop runs, while this node leads, the periodic reconciliation of
// every enabled event or cron rule, the cron schedules, and the pruning of history.
func (e *Engine) leaderLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var (
		leading       bool
		lastReconcile = map[string]time.Time{} // rule → last scan
		nextCron      = map[string]time.Time{} // rule → next fire
		lastPrune     time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !e.lead.IsLeader() {
			leading = false
			continue
		}
		now := time.Now()
		if !leading {
			// A new leader starts its clocks now: the first reconciliation
			// comes one interval later (the old leader did one recently),
			// and cron rules fire at their next time from now.
			leading = true
			clear(lastReconcile)
			clear(nextCron)
		}
		rules, err := e.store.Rules(ctx)
		if err != nil {
			continue
		}
		for _, r := range rules {
			if !r.Enabled {
				continue
			}
			if _, ok := lastReconcile[r.Name]; !ok {
				lastReconcile[r.Name] = now
			}
			if r.Trigger == policy.TriggerCron {
				if next, ok := nextCron[r.Name]; !ok {
					if s, err := ParseCron(r.Cron); err == nil {
						nextCron[r.Name] = s.Next(now)
					}
				} else if !now.Before(next) {
					e.scanAsync(ctx, r, policy.TriggerCron, 0)
					if s, err := ParseCron(r.Cron); err == nil {
						nextCron[r.Name] = s.Next(now)
					}
					lastReconcile[r.Name] = now
					continue
				}
			}
			// A manual policy copies only when someone runs it (a run is
			// a reconciliation); the others are reconciled periodically.
			if r.Trigger == policy.TriggerManual {
				continue
			}
			if now.Sub(lastReconcile[r.Name]) >= e.cfg.ReconcileInterval || e.takeCameBack(r.Endpoint) {
				lastReconcile[r.Name] = now
				e.scanAsync(ctx, r, policy.TriggerReconcile, 0)
			}
		}
		if now.Sub(lastPrune) >= pruneInterval {
			lastPrune = now
			if err := e.store.PruneHistory(ctx, now.Add(-e.cfg.HistoryAge), e.cfg.HistoryCount); err != nil {
				e.logger.Warn("prune replication history", "error", err)
			}
			if err := e.store.PurgeTombstones(ctx, now.Add(-e.cfg.TombstoneTTL)); err != nil {
				e.logger.Warn("purge tombstones", "error", err)
			}
		}
	}
}

// scanAsync scans rule in the background unless a scan of it runs.
func (e *Engine) scanAsync(ctx context.Context, r policy.Rule, trigger string, exec uint64) {
	e.mu.Lock()
	busy := e.scanning[r.Name] > 0
	if busy && exec == 0 {
		// A scan of this rule is running; a manual run (exec) scans anyway,
		// as its execution must account for what it found.
		e.mu.Unlock()
		return
	}
	e.scanning[r.Name]++
	e.mu.Unlock()
	go func() {
		defer func() {
			e.mu.Lock()
			if e.scanning[r.Name]--; e.scanning[r.Name] <= 0 {
				delete(e.scanning, r.Name)
			}
			e.mu.Unlock()
		}()
		if _, err := e.scan(ctx, r, trigger, exec); err != nil && ctx.Err() == nil {
			e.logger.Warn("reconcile policy", "policy", r.Name, "trigger", trigger, "error", err)
		}
	}()
}

// healthLoop checks every endpoint each HealthInterval. An endpoint that
// was unreachable and answers again is marked, so that the leader
// reconciles its rules at once.
func (e *Engine) healthLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		eps, err := e.store.Endpoints(ctx)
		if err != nil {
			continue
		}
		for _, ep := range eps {
			cctx, cancel := context.WithTimeout(ctx, e.cfg.HealthInterval)
			h := e.check(cctx, ep)
			cancel()
			e.mu.Lock()
			prev, seen := e.health[ep.Name]
			if seen && !prev.Reachable && h.Reachable {
				e.cameBack[ep.Name] = true
				e.logger.Info("endpoint reachable again; reconciling its policies", "endpoint", ep.Name)
			}
			e.health[ep.Name] = h
			e.mu.Unlock()
		}
	}
}

// takeCameBack reports, once, that endpoint name came back.
func (e *Engine) takeCameBack(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ok := e.cameBack[name]
	delete(e.cameBack, name)
	return ok
}

// check pings an endpoint.
func (e *Engine) check(ctx context.Context, ep policy.Endpoint) Health {
	now := time.Now()
	r, err := e.remote(ctx, ep.Name)
	if err == nil {
		err = r.Ping(ctx)
	}
	h := Health{Reachable: err == nil, Checked: now.UnixNano(), LatencyMS: time.Since(now).Milliseconds()}
	if err != nil {
		h.Error = err.Error()
	}
	return h
}

// scan compares rule's source and destination and queues a task for each
// artifact that differs: a copy where the destination lacks the tag, has
// another digest or an older version, or lacks an accessory; with
// rule.Delete, a delete where the destination still has a tag that the
// source deleted (its tombstone says which digest). It records one
// execution (for a reconciliation, only when something differs) and
// returns its id (0: none).
//
// exec, when not 0, is the execution to add the tasks to (a manual run
// records it before the scan starts, so that it can be followed at once).
func (e *Engine) scan(ctx context.Context, r policy.Rule, trigger string, exec uint64) (uint64, error) {
	e.m.scans.WithLabelValues(trigger).Inc()
	remote, err := e.remote(ctx, r.Endpoint)
	if err != nil {
		if exec != 0 {
			_ = e.store.AddTasks(context.WithoutCancel(ctx), exec, nil, true, time.Now())
		}
		return exec, err
	}
	var pending []policy.Task
	// flush records the tasks found so far (the execution first, unless a
	// reconciliation found nothing); done ends the execution's scan.
	flush := func(done bool) error {
		if exec == 0 {
			if len(pending) == 0 && (trigger == policy.TriggerReconcile || !done) {
				return nil
			}
			id, err := e.store.StartExecution(ctx, r.Name, trigger, nil, false, time.Now())
			if err != nil {
				return err
			}
			exec = id
		}
		for len(pending) > 0 || done {
			chunk := pending[:min(len(pending), taskChunk)]
			pending = pending[len(chunk):]
			last := done && len(pending) == 0
			if err := e.store.AddTasks(ctx, exec, chunk, last, time.Now()); err != nil {
				return err
			}
			if last {
				break
			}
		}
		return nil
	}
	err = e.walk(ctx, r, func(repo string) error {
		ts, err := e.diffRepo(ctx, r, remote, repo)
		if err != nil {
			return err
		}
		pending = append(pending, ts...)
		if len(pending) >= taskChunk {
			return flush(false)
		}
		return nil
	})
	if err != nil {
		if exec != 0 {
			// End the execution with what was queued; the next scan
			// finds the rest.
			_ = e.store.AddTasks(context.WithoutCancel(ctx), exec, pending, true, time.Now())
		}
		return exec, err
	}
	if err := flush(true); err != nil {
		return exec, err
	}
	if exec != 0 {
		e.Kick()
	}
	return exec, nil
}

// walk calls fn for each local repository that r selects.
func (e *Engine) walk(ctx context.Context, r policy.Rule, fn func(repo string) error) error {
	last := ""
	for {
		repos, err := e.local.Repositories(ctx, last, pageSize)
		if err != nil {
			return err
		}
		for _, repo := range repos {
			if r.MatchRepo(repo) {
				if err := fn(repo); err != nil {
					return err
				}
			}
		}
		if len(repos) < pageSize {
			return nil
		}
		last = repos[len(repos)-1]
	}
}

// diffRepo returns the tasks that bring repo's selected tags (and, with
// rule.Delete, its tombstones) to the destination.
func (e *Engine) diffRepo(ctx context.Context, r policy.Rule, remote *Remote, repo string) ([]policy.Task, error) {
	dest := r.DestRepo(repo)
	var out []policy.Task
	add := func(t policy.Task) error {
		// A task already queued for the same artifact does the job.
		if lt, ok, err := e.store.LatestTask(ctx, r.Name, repo, t.Ref()); err != nil {
			return err
		} else if ok && lt.Active() {
			return nil
		}
		t.Policy, t.Endpoint, t.Repo, t.DestRepo = r.Name, r.Endpoint, repo, dest
		out = append(out, t)
		return nil
	}
	last := ""
	for {
		tags, err := e.local.Tags(ctx, repo, last, pageSize)
		if errors.Is(err, oci.ErrNotFound) {
			break // the repository went away while we walked
		}
		if err != nil {
			return nil, err
		}
		for _, tag := range tags {
			if !r.MatchTag(tag) {
				continue
			}
			need, d, v, err := e.differs(ctx, remote, repo, dest, tag)
			if err != nil {
				return nil, err
			}
			if need {
				if err := add(policy.Task{Kind: policy.TaskCopy, Tag: tag, Digest: d, Version: v}); err != nil {
					return nil, err
				}
			}
		}
		if len(tags) < pageSize {
			break
		}
		last = tags[len(tags)-1]
	}
	if !r.Delete {
		return out, nil
	}
	last = ""
	for {
		tombs, err := e.store.Tombstones(ctx, repo, last, pageSize)
		if err != nil {
			return nil, err
		}
		for _, tb := range tombs {
			if !r.MatchTag(tb.Tag) {
				continue
			}
			desc, dv, found, err := remote.Head(ctx, dest, tb.Tag)
			if err != nil {
				return nil, err
			}
			// The tag still holds what was deleted, or (berth) a write
			// older than the delete.
			older := !dv.IsZero() && !tb.Version.IsZero() && dv.Compare(tb.Version) < 0
			if found && (desc.Digest == tb.Digest || older) {
				if err := add(policy.Task{Kind: policy.TaskDelete, Tag: tb.Tag, Digest: tb.Digest, Version: tb.Version}); err != nil {
					return nil, err
				}
			}
		}
		if len(tombs) < pageSize {
			break
		}
		last = tombs[len(tombs)-1].Tag
	}
	return out, nil
}

// differs reports whether repo:tag must be copied to dest, with the
// source's digest and version.
func (e *Engine) differs(ctx context.Context, remote *Remote, repo, dest, tag string) (bool, oci.Digest, oci.TagVersion, error) {
	d, err := e.local.Tag(ctx, repo, tag)
	if errors.Is(err, oci.ErrNotFound) {
		return false, "", oci.TagVersion{}, nil
	}
	if err != nil {
		return false, "", oci.TagVersion{}, err
	}
	v, _, err := e.store.TagVersion(ctx, repo, tag)
	if err != nil {
		return false, "", oci.TagVersion{}, err
	}
	desc, dv, found, err := remote.Head(ctx, dest, tag)
	if err != nil {
		return false, "", oci.TagVersion{}, err
	}
	switch {
	case !found:
		// Absent, or deleted there by a newer delete (its tombstone's
		// version comes back with the 404): that delete wins.
		return dv.Compare(v) < 0 || dv.IsZero(), d, v, nil
	case desc.Digest != d:
		return dv.IsZero() || dv.Compare(v) < 0, d, v, nil
	case !dv.IsZero() && dv.Compare(v) < 0:
		return true, d, v, nil // same content, older version: carry ours
	}
	missing, err := e.accessoriesMissing(ctx, remote, repo, dest, d)
	return missing, d, v, err
}

// accessoriesMissing reports whether the destination lacks a cosign
// accessory tag or a referrer that the source has for subject d.
func (e *Engine) accessoriesMissing(ctx context.Context, remote *Remote, repo, dest string, d oci.Digest) (bool, error) {
	for _, s := range policy.AccessorySuffixes {
		tag := policy.AccessoryTag(d, s)
		sd, err := e.local.Tag(ctx, repo, tag)
		if errors.Is(err, oci.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		desc, _, found, err := remote.Head(ctx, dest, tag)
		if err != nil {
			return false, err
		}
		if !found || desc.Digest != sd {
			return true, nil
		}
	}
	refs, err := e.local.Referrers(ctx, repo, d)
	if err != nil || len(refs) == 0 {
		return false, err
	}
	have, _, err := remote.Referrers(ctx, dest, d)
	if err != nil {
		return false, err
	}
	got := map[oci.Digest]bool{}
	for _, h := range have {
		got[h.Digest] = true
	}
	for _, rd := range refs {
		if !got[rd.Digest] {
			return true, nil
		}
	}
	return false, nil
}
