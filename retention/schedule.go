package retention

import (
	"context"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/berth-registry/berth/policy"
)

// lookBack is how many recent runs of a project the scheduler reads to
// find the last scheduled one.
const lookBack = 50

// scheduled is what the leader remembers of a project's schedule.
type scheduled struct {
	spec  string
	sched cron.Schedule // nil: spec does not parse (logged once)
	// last is the last due time the leader acted on (ran, or skipped as a
	// backlog); the next run is due at sched.Next(last).
	last time.Time
}

// Run starts, while this node leads, the scheduled runs of every project
// whose retention policy has a schedule, each when it is due; it returns
// when ctx ends, after the runs it started have recorded their end.
//
// A node that becomes leader takes each schedule's last due time from the
// project's newest scheduled run (or the policy's last change, if later):
// a run that was due while no node ran it is made once, not once per
// missed time. A run that is due while the project's previous run is still
// going is skipped.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	var (
		leading bool
		state   = map[string]*scheduled{}
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !r.store.IsLeader() {
			if leading {
				r.logger.Debug("not leading: scheduled retention runs stop here")
			}
			leading = false
			clear(state)
			continue
		}
		leading = true
		r.tick(ctx, time.Now(), state, &wg)
	}
}

// tick starts the runs that are due at now.
func (r *Runner) tick(ctx context.Context, now time.Time, state map[string]*scheduled, wg *sync.WaitGroup) {
	seen := map[string]bool{}
	last := ""
	for {
		projects, err := r.store.Projects(ctx, last, r.cfg.PageSize)
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Warn("list projects for retention schedules", logError, err)
			}
			return // state is kept: try again at the next tick
		}
		for _, p := range projects {
			if p.Retention == nil || p.Retention.Schedule == "" || len(p.Retention.Rules) == 0 {
				continue
			}
			seen[p.Name] = true
			s := state[p.Name]
			if s == nil || s.spec != p.Retention.Schedule {
				s = r.firstSight(ctx, p, now)
				state[p.Name] = s
			}
			if s.sched == nil || s.sched.Next(s.last).After(now) {
				continue
			}
			// Due. A backlog of due times is one run: the next is due
			// after now.
			s.last = now
			if !r.begin(p.Name) {
				r.logger.Info("scheduled retention run skipped: the previous run has not ended", logProject, p.Name)
				continue
			}
			wg.Go(func() {
				defer r.end(p.Name)
				// A run that started logs and records its outcome itself.
				if run, err := r.run(ctx, p, false, TriggerSchedule); err != nil && run.ID == 0 {
					r.logger.Warn("scheduled retention run did not start", logProject, p.Name, logError, err)
				}
			})
		}
		if len(projects) < r.cfg.PageSize {
			break
		}
		last = projects[len(projects)-1].Name
	}
	for name := range state {
		if !seen[name] {
			delete(state, name)
		}
	}
}

// firstSight returns the schedule state of a project the leader had not
// seen with this schedule: its last due time is the start of the
// project's newest scheduled run, or the policy's last change when later
// (a schedule just set is not due for the time before it was set), or now
// when neither is known. A run left "running" by a node that stopped long
// enough ago is recorded as failed on the way.
func (r *Runner) firstSight(ctx context.Context, p policy.Project, now time.Time) *scheduled {
	s := &scheduled{spec: p.Retention.Schedule, last: now}
	sched, err := policy.ParseSchedule(s.spec)
	if err != nil {
		r.logger.Warn("retention schedule does not parse; not scheduled", logProject, p.Name, logSpec, s.spec, logError, err)
		return s
	}
	s.sched = sched
	base := max(p.Created, p.Updated)
	runs, err := r.store.RetentionRuns(ctx, p.Name, lookBack)
	if err != nil {
		r.logger.Warn("read retention runs; the schedule starts from now", logProject, p.Name, logError, err)
		return s
	}
	for _, run := range runs {
		if run.Trigger == TriggerSchedule {
			base = max(base, run.Started)
			break
		}
	}
	if len(runs) > 0 && runs[0].Status == policy.RunRunning && r.stale(runs[0], now) {
		r.markInterrupted(ctx, runs[0])
	}
	if base > 0 && base < now.UnixNano() {
		s.last = time.Unix(0, base)
	}
	return s
}

// markInterrupted records, as failed, a run whose node stopped before it
// recorded its end — unless a run of the project is going on this node.
func (r *Runner) markInterrupted(ctx context.Context, run policy.RetentionRun) {
	if !r.begin(run.Project) {
		return
	}
	defer r.end(run.Project)
	r.recordInterrupted(ctx, run)
}

// recordInterrupted records run as failed: its node stopped before it
// recorded its end. The caller holds the project's begin.
func (r *Runner) recordInterrupted(ctx context.Context, run policy.RetentionRun) {
	run.Status = policy.RunFailed
	run.Error = "interrupted: its node stopped before the run ended"
	run.Finished = run.Started + int64(r.cfg.RunTimeout)
	if err := r.store.PutRetentionRun(policy.WithActor(ctx, policy.Actor{Name: Actor}), run); err != nil {
		r.logger.Warn("record an interrupted retention run", logProject, run.Project, logRun, run.ID, logError, err)
	}
}
