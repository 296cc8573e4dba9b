package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Triggers of a run (policy.RetentionRun.Trigger).
const (
	TriggerManual   = "manual"
	TriggerSchedule = "schedule"
)

// Actor is the audit log's actor of retention's deletions and run records.
const Actor = "retention"

// Log keys.
const (
	logProject = "project"
	logRun     = "run"
	logRepo    = "repo"
	logDigest  = "digest"
	logError   = "error"
	logDryRun  = "dry_run"
	logTrigger = "trigger"
	logKept    = "retained"
	logDeleted = "deleted"
	logTook    = "took"
	logSpec    = "schedule"
)

// Bounds of what a run records.
const (
	// maxDecisionTags bounds the tags a recorded decision lists, so that
	// a run's record stays a small command whatever the artifacts.
	maxDecisionTags = 32
	// recordFinalFor is how long a run keeps trying to record its end
	// (through a brief election), after which it stays "running" until
	// RunTimeout says it was interrupted.
	recordFinalFor = 30 * time.Second
	// staleMargin is added to RunTimeout before a run recorded as running
	// counts as interrupted (a run ends itself at RunTimeout).
	staleMargin = time.Minute
)

// Runner runs the retention policies of projects: manual runs on any
// node, scheduled runs (Run) on the leader.
type Runner struct {
	cfg    Config
	store  Store
	logger *slog.Logger
	m      *metrics

	mu      sync.Mutex
	running map[string]bool // projects with a run on this node
}

// New returns a Runner over store (cmd passes a *cluster.Node) with its
// metrics registered on reg (nil: none).
func New(cfg Config, store Store, logger *slog.Logger, reg prometheus.Registerer) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("retention: a store is required")
	}
	if logger == nil {
		logger = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Runner{
		cfg:     cfg,
		store:   store,
		logger:  logger.With("component", "retention"),
		m:       m,
		running: map[string]bool{},
	}, nil
}

// RunRetention runs project's retention policy now, by hand: for each
// repository a rule applies to, it deletes (unless dryRun) every artifact
// no rule retains, with its accessories. A dry run deletes nothing and
// lists what a real run would delete. The run is recorded; it is returned
// with its outcome, and the error is nil when it succeeded and its end
// was recorded. When the run could not start (unknown project,
// ErrNoPolicy, ErrRunning, no quorum to record it) the returned run is
// the zero value. The run stops when ctx ends: a caller answering a
// request should pass a context that outlives it.
func (r *Runner) RunRetention(ctx context.Context, project string, dryRun bool) (policy.RetentionRun, error) {
	p, err := r.store.Project(ctx, project)
	if err != nil {
		return policy.RetentionRun{}, fmt.Errorf("retention of project %s: %w", project, err)
	}
	if p.Retention == nil || len(p.Retention.Rules) == 0 {
		return policy.RetentionRun{}, fmt.Errorf("retention of project %s: %w", project, ErrNoPolicy)
	}
	if !r.begin(project) {
		return policy.RetentionRun{}, fmt.Errorf("retention of project %s: %w", project, ErrRunning)
	}
	defer r.end(project)
	return r.run(ctx, p, dryRun, TriggerManual)
}

// begin marks a run of project as in progress on this node, unless one is.
func (r *Runner) begin(project string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running[project] {
		return false
	}
	r.running[project] = true
	return true
}

func (r *Runner) end(project string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, project)
}

// stale reports whether run, recorded as running, was interrupted at now:
// a run ends itself by RunTimeout.
func (r *Runner) stale(run policy.RetentionRun, now time.Time) bool {
	return now.Sub(time.Unix(0, run.Started)) > r.cfg.RunTimeout+staleMargin
}

// run runs p's policy; the caller holds p's begin.
func (r *Runner) run(ctx context.Context, p policy.Project, dry bool, trigger string) (policy.RetentionRun, error) {
	start := time.Now()
	// Another node may be running it (a manual run through another node,
	// or the leader's schedule): its record says so. A record that says so
	// for too long is of a node that stopped: it is recorded interrupted.
	runs, err := r.store.RetentionRuns(ctx, p.Name, 1)
	if err != nil {
		return policy.RetentionRun{}, fmt.Errorf("retention of project %s: read its runs: %w", p.Name, err)
	}
	if len(runs) > 0 && runs[0].Status == policy.RunRunning {
		if !r.stale(runs[0], start) {
			return policy.RetentionRun{}, fmt.Errorf("retention of project %s: run %d, started %s, has not ended (an interrupted run counts as ended %s after its start): %w",
				p.Name, runs[0].ID, time.Unix(0, runs[0].Started).UTC().Format(time.RFC3339), r.cfg.RunTimeout+staleMargin, ErrRunning)
		}
		r.recordInterrupted(ctx, runs[0])
	}

	ctx = policy.WithActor(ctx, policy.Actor{Name: Actor})
	run := policy.RetentionRun{
		ID: uint64(start.UnixNano()), Project: p.Name, DryRun: dry, Trigger: trigger,
		Status: policy.RunRunning, Started: start.UnixNano(),
	}
	log := r.logger.With(logProject, p.Name, logRun, run.ID, logDryRun, dry, logTrigger, trigger)
	if err := r.store.PutRetentionRun(ctx, run); err != nil {
		return policy.RetentionRun{}, fmt.Errorf("retention of project %s: record the run: %w", p.Name, err)
	}
	log.Info("retention run started")

	rctx, cancel := context.WithTimeout(ctx, r.cfg.RunTimeout)
	t := &tally{}
	err = r.execute(rctx, *p.Retention, p.Name, start.UnixNano(), dry, t, log)
	cancel()
	if err == nil && t.refused > 0 {
		err = fmt.Errorf("%w: %d, the first: %v", ErrRefused, t.refused, t.firstRefusal)
	}

	run.Finished = time.Now().UnixNano()
	run.Retained, run.Deleted = t.retained, t.deleted
	run.Decisions = t.decisions()
	run.Status = policy.RunSucceeded
	if err != nil {
		run.Status = policy.RunFailed
		run.Error = clip(err.Error(), policy.MaxError)
	}
	r.m.runs.WithLabelValues(run.Status).Inc()
	if rerr := r.recordEnd(ctx, run); rerr != nil {
		log.Warn("record the end of a retention run", logError, rerr)
		if err == nil {
			err = fmt.Errorf("record the end of the run: %w", rerr)
		}
	}
	if err != nil {
		log.Warn("retention run failed", logKept, run.Retained, logDeleted, run.Deleted, logError, err)
		return run, fmt.Errorf("retention of project %s: %w", p.Name, err)
	}
	log.Info("retention run done", logKept, run.Retained, logDeleted, run.Deleted, logTook, time.Since(start).Round(time.Millisecond))
	return run, nil
}

// recordEnd records a finished run, also when ctx has ended, retrying
// through a brief election for up to recordFinalFor.
func (r *Runner) recordEnd(ctx context.Context, run policy.RetentionRun) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordFinalFor)
	defer cancel()
	wait := 100 * time.Millisecond
	for {
		err := r.store.PutRetentionRun(ctx, run)
		if err == nil || !errors.Is(err, oci.ErrUnavailable) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// execute applies policy pol to each repository of project, paged.
func (r *Runner) execute(ctx context.Context, pol policy.RetentionPolicy, project string, now int64, dry bool, t *tally, log *slog.Logger) error {
	last := ""
	for {
		repos, err := r.store.ProjectRepositories(ctx, project, last, r.cfg.PageSize)
		if err != nil {
			return fmt.Errorf("list repositories: %w", err)
		}
		for _, repo := range repos {
			if err := r.repository(ctx, pol, project, repo, now, dry, t, log); err != nil {
				return err
			}
		}
		if len(repos) < r.cfg.PageSize {
			return nil
		}
		last = strings.TrimPrefix(repos[len(repos)-1], project+"/")
	}
}

// repository applies pol to one repository.
func (r *Runner) repository(ctx context.Context, pol policy.RetentionPolicy, project, repo string, now int64, dry bool, t *tally, log *slog.Logger) error {
	rel := strings.TrimPrefix(repo, project+"/")
	if pol.Evaluate(rel, nil, now) == nil {
		return nil // no rule applies: not even read
	}
	arts, err := r.store.Artifacts(ctx, repo)
	if errors.Is(err, oci.ErrNotFound) {
		return nil // emptied since it was listed
	}
	if err != nil {
		return fmt.Errorf("list artifacts of %s: %w", repo, err)
	}
	children := map[oci.Digest][]oci.Digest{}
	for _, a := range arts {
		if len(a.Children) > 0 {
			children[a.Digest] = a.Children
		}
	}
	pl, ok := makePlan(pol, rel, arts, children, now)
	if !ok {
		return nil
	}
	decision := make(map[oci.Digest]policy.RetentionDecision, len(pl.decisions))
	for _, d := range pl.decisions {
		decision[d.Digest] = d
	}
	gone := map[oci.Digest]bool{}
	for _, dg := range pl.order {
		d := decision[dg]
		delete(decision, dg)
		if dry {
			t.add(d)
			continue
		}
		if i := indexNotGone(pl.after[dg], gone); i >= 0 {
			d.Retain = true
			d.Reason = "not deleted: " + string(pl.after[dg][i]) + " was to go first and did not"
			t.add(d)
			continue
		}
		err := r.store.DeleteManifest(ctx, repo, dg)
		switch {
		case err == nil:
			r.m.deleted.Inc()
		case errors.Is(err, oci.ErrNotFound):
			d.Reason += " (already deleted)"
		case errors.Is(err, oci.ErrDenied) && ctx.Err() == nil:
			// Refused by a rule that changed since the repository was
			// read: keep going with the rest; the run fails.
			log.Warn("retention deletion refused", logRepo, repo, logDigest, dg, logError, err)
			t.refuse(err)
			d.Retain, d.Reason = true, clip("not deleted: "+err.Error(), maxReason)
			t.add(d)
			continue
		default:
			return fmt.Errorf("delete %s@%s: %w", repo, dg, err)
		}
		gone[dg] = true
		t.add(d)
	}
	for _, d := range pl.decisions {
		if k, ok := decision[d.Digest]; ok {
			t.add(k)
		}
	}
	return nil
}

// indexNotGone returns the index of the first digest of ds not in gone,
// or -1.
func indexNotGone(ds []oci.Digest, gone map[oci.Digest]bool) int {
	for i, d := range ds {
		if !gone[d] {
			return i
		}
	}
	return -1
}

// maxReason bounds the reason of a recorded decision.
const maxReason = 512

// tally counts a run's decisions and keeps the first MaxRunDecisions of
// each kind.
type tally struct {
	retained, deleted int
	kept, dels        []policy.RetentionDecision
	refused           int
	firstRefusal      error
}

func (t *tally) add(d policy.RetentionDecision) {
	if len(d.Tags) > maxDecisionTags {
		d.Tags = d.Tags[:maxDecisionTags:maxDecisionTags]
	}
	if d.Retain {
		t.retained++
		if len(t.kept) < policy.MaxRunDecisions {
			t.kept = append(t.kept, d)
		}
		return
	}
	t.deleted++
	if len(t.dels) < policy.MaxRunDecisions {
		t.dels = append(t.dels, d)
	}
}

func (t *tally) refuse(err error) {
	if t.refused == 0 {
		t.firstRefusal = err
	}
	t.refused++
}

// decisions are the first MaxRunDecisions, deletions first.
func (t *tally) decisions() []policy.RetentionDecision {
	out := append(t.dels[:len(t.dels):len(t.dels)], t.kept...)
	return out[:min(len(out), policy.MaxRunDecisions)]
}

// clip bounds s to n bytes, keeping it valid UTF-8.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
